"""In-memory stand-ins for the two outward ports, for unit tests of the adapters'
logic: `FakeObjects` (Kubernetes objects) and `InMemorySource` (a metrics source).

They implement `modelrollout.ports.Objects` and `MetricsSource`; the operator's own
adapters run on top of them unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelrollout.api.objects import ObjectKind
from modelrollout.core.types import NoData, Reading, Series
from modelrollout.ports import Manifest, MetricsSource, Objects, Shared

Key = tuple[str, str, str]  # kind, namespace, name


class Conflict(Exception):
    """A write carried a resourceVersion that is no longer current (HTTP 409)."""


def _merged(old: Any, new: Any) -> Any:
    """Server-side apply, roughly: maps merge, lists and values are replaced whole."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{k: _merged(old.get(k), v) for k, v in new.items()}}
    return copy.deepcopy(new)


@dataclass
class FakeObjects:
    """Objects in a dict. Every apply bumps the resourceVersion and is recorded with
    the object as it stood after it; a stale resourceVersion raises Conflict."""

    store: dict[Key, Manifest] = field(default_factory=dict)
    applied: list[tuple[str, Manifest]] = field(default_factory=list)
    deleted: list[Key] = field(default_factory=list)
    version: int = 1

    def put(self, kind: ObjectKind, manifest: Manifest) -> None:
        meta = manifest.setdefault("metadata", {})
        meta.setdefault("namespace", "ns")
        meta["resourceVersion"] = str(self.version)
        self.version += 1
        self.store[(kind.kind, meta["namespace"], meta["name"])] = copy.deepcopy(manifest)

    async def get(self, kind: ObjectKind, namespace: str, name: str) -> Manifest | None:
        found = self.store.get((kind.kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def apply(self, kind: ObjectKind, manifest: Manifest) -> None:
        meta = manifest["metadata"]
        key = (kind.kind, meta["namespace"], meta["name"])
        current = self.store.get(key, {"metadata": dict(meta)})
        wanted = meta.get("resourceVersion")
        if wanted is not None and wanted != current["metadata"].get("resourceVersion"):
            raise Conflict(f"{key}: resourceVersion {wanted} is stale")
        body = copy.deepcopy(manifest)
        body["metadata"].pop("resourceVersion", None)
        self.put(kind, _merged(current, body))
        self.applied.append((kind.kind, copy.deepcopy(self.store[key])))

    async def delete(self, kind: ObjectKind, namespace: str, name: str) -> None:
        self.deleted.append((kind.kind, namespace, name))
        self.store.pop((kind.kind, namespace, name), None)

    def seen(self, kind: ObjectKind, body: Manifest, deleted: bool = False) -> None:
        pass  # every read here is fresh

    async def list(self, kind: ObjectKind, namespace: str, selector: str) -> list[Manifest]:
        wanted = dict(pair.split("=", 1) for pair in selector.split(",") if pair)
        return [
            copy.deepcopy(m)
            for (k, ns, _), m in self.store.items()
            if k == kind.kind
            and ns == namespace
            and wanted.items() <= (m["metadata"].get("labels") or {}).items()
        ]


Answer = Reading | Series | list[float]
EMPTY = NoData("empty")


@dataclass
class InMemorySource:
    """Answers each query from `answer(query)`: a Reading, an instant vector, or a
    range's points. Records what was asked, per method."""

    answer: Callable[[str], Answer]
    asked: list[tuple[str, str]] = field(default_factory=list)
    closed: bool = False

    @classmethod
    def of(cls, answers: Mapping[str, Answer], default: Answer = EMPTY) -> InMemorySource:
        """Answers by the first key found in the query, else `default`."""
        return cls(lambda q: next((a for k, a in answers.items() if k in q), default))

    async def instant(self, query: str, shared: Shared | None = None) -> Reading:
        self.asked.append(("instant", query))
        found = self.answer(query)
        assert not isinstance(found, list), f"a vector or points for an instant query: {query}"
        return found

    async def vector(self, query: str, shared: Shared | None = None) -> Series | Reading:
        self.asked.append(("vector", query))
        return self.answer(query)  # type: ignore[return-value]

    async def series(
        self, query: str, start: datetime, end: datetime, step: str
    ) -> list[float] | Reading:
        self.asked.append(("series", query))
        return self.answer(query)  # type: ignore[return-value]

    def close(self) -> None:
        self.closed = True


def _implements_the_ports(objects: FakeObjects, source: InMemorySource) -> None:
    """mypy checks here that the fakes fit the Protocols."""
    _: Objects = objects
    __: MetricsSource = source
