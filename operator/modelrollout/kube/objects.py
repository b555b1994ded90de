"""The `Objects` port on the Kubernetes API: reads as plain manifests, and
server-side apply with our field manager."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from typing import Any

from modelrollout import telemetry
from modelrollout.api.objects import ObjectKind
from modelrollout.api.resource import FIELD_MANAGER
from modelrollout.kube.client import Kube, is_not_found
from modelrollout.ports import Manifest

APPLY = "application/apply-patch+yaml"


def _snake(kind: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


Key = tuple[str, str, str]  # kind, namespace, name


def _slim(body: Manifest) -> Manifest:
    meta = body.get("metadata") or {}
    if "managedFields" not in meta:
        return body
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


class KubeObjects:
    """Reads skip the client's model classes (`_preload_content=False`): a manifest
    is all the adapters want, and decoding it is most of a read's cost.

    Objects of the kinds the operator watches (routing objects, Deployments,
    ConfigMaps) are served from memory when the copy held is exactly the version
    this process last read or wrote and the watch has reported nothing newer: a
    read would return the same. Anything else (the watch behind our own write, or
    someone else's write) is read afresh. At a thousand rollouts this is the
    difference between one API call per pass (the status write) and four.

    Copies are kept without `managedFields`, which no adapter reads and which are
    a third of a Deployment's size."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._known: dict[Key, str] = {}  # resourceVersion last read or written
        self._watched: dict[Key, Manifest] = {}
        self._watching: set[str] = set()  # kinds whose watch has delivered events
        # Watch events per key read or being read: a read during which one came in may
        # be older than that event, so it is not kept (the next pass reads again).
        self._events: dict[Key, int] = {}
        self._reading: dict[Key, int] = {}  # reads in flight
        self._flights: dict[Key, asyncio.Future[Manifest | None]] = {}

    def seen(self, kind: ObjectKind, body: Manifest, deleted: bool = False) -> None:
        """A watch event of an object; kept only for objects this process reads."""
        self._watching.add(kind.kind)
        meta = body.get("metadata") or {}
        key = (kind.kind, str(meta.get("namespace")), str(meta.get("name")))
        if key in self._reading or key in self._known:
            self._events[key] = self._events.get(key, 0) + 1
        if deleted:
            self._watched.pop(key, None)
            self._known.pop(key, None)
            if key not in self._reading:
                self._events.pop(key, None)
        elif key in self._known:
            self._watched[key] = _slim(body)

    def _remember(self, kind: ObjectKind, manifest: Manifest | None) -> None:
        meta = (manifest or {}).get("metadata") or {}
        if meta.get("resourceVersion"):
            key = (kind.kind, str(meta.get("namespace")), str(meta.get("name")))
            self._known[key] = str(meta["resourceVersion"])

    async def get(self, kind: ObjectKind, namespace: str, name: str) -> Manifest | None:
        key = (kind.kind, namespace, name)
        watched = self._watched.get(key)
        version = (watched or {}).get("metadata", {}).get("resourceVersion")
        if watched is not None and version is not None and self._known.get(key) == version:
            return copy.deepcopy(watched)
        if kind.group:
            return await self._fresh(kind, key)
        # A core kind (ConfigMap, Secret, Service), which the operator never writes: a
        # read already in flight answers everyone who asks meanwhile, so a thousand
        # rollouts starting together read their shared reference once.
        flight = self._flights.get(key)
        if flight is not None:
            await asyncio.wait({flight})
            if not flight.cancelled():  # else its reader was cancelled: read anew
                return copy.deepcopy(flight.result())
            return await self._fresh(kind, key)
        flight = self._flights[key] = asyncio.get_running_loop().create_future()
        try:
            found = await self._fresh(kind, key)
        except asyncio.CancelledError:
            flight.cancel()
            raise
        except Exception as error:
            flight.set_exception(error)
            flight.exception()  # retrieved: a flight nobody joined must not warn
            raise
        else:
            flight.set_result(copy.deepcopy(found))
            return found
        finally:
            del self._flights[key]

    async def _fresh(self, kind: ObjectKind, key: Key) -> Manifest | None:
        _, namespace, name = key
        events = self._events.get(key, 0)
        self._reading[key] = self._reading.get(key, 0) + 1
        try:
            found = await self._read(kind, namespace, name)
        finally:
            self._reading[key] -= 1
            if not self._reading[key]:
                del self._reading[key]
        overtaken = self._events.get(key, 0) != events
        self._remember(kind, found)
        if found is None and key not in self._reading:
            self._events.pop(key, None)
        if found is not None and kind.kind in self._watching and not overtaken:
            # the latest version known: served until the watch reports a change
            self._watched[key] = _slim(copy.deepcopy(found))
        return found

    async def _read(self, kind: ObjectKind, namespace: str, name: str) -> Manifest | None:
        kube = self.kube
        telemetry.KUBE_READS.labels(kind.kind).inc()
        try:
            if kind.group:
                response: Any = await kube.call(
                    kube.custom.get_namespaced_custom_object,
                    kind.group, kind.version, namespace, kind.plural, name,
                    _preload_content=False,
                )  # fmt: skip
            else:
                read = getattr(kube.core, f"read_namespaced_{_snake(kind.kind)}")
                response = await kube.call(read, name, namespace, _preload_content=False)
        except Exception as error:
            if is_not_found(error):
                return None
            raise
        data: Manifest = json.loads(response.data)
        return data

    async def apply(self, kind: ObjectKind, manifest: Manifest) -> None:
        assert kind.group, "the operator applies only grouped kinds"
        metadata = manifest["metadata"]
        body = {"apiVersion": kind.api_version, "kind": kind.kind, **manifest}
        written: Any = await self.kube.write(
            self.kube.custom.patch_namespaced_custom_object,
            kind.group, kind.version, metadata["namespace"], kind.plural, metadata["name"], body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
        )  # fmt: skip
        self._remember(kind, written if isinstance(written, dict) else None)

    async def delete(self, kind: ObjectKind, namespace: str, name: str) -> None:
        kube = self.kube
        try:
            if kind.group:
                await kube.write(
                    kube.custom.delete_namespaced_custom_object,
                    kind.group, kind.version, namespace, kind.plural, name,
                    propagation_policy="Background",
                )  # fmt: skip
            else:
                delete = getattr(kube.core, f"delete_namespaced_{_snake(kind.kind)}")
                await kube.write(delete, name, namespace, propagation_policy="Background")
        except Exception as error:
            if not is_not_found(error):
                raise

    async def list(self, kind: ObjectKind, namespace: str, selector: str) -> list[Manifest]:
        kube = self.kube
        if kind.group:
            response: Any = await kube.call(
                kube.custom.list_namespaced_custom_object,
                kind.group, kind.version, namespace, kind.plural,
                label_selector=selector, _preload_content=False,
            )  # fmt: skip
        else:
            read = getattr(kube.core, f"list_namespaced_{_snake(kind.kind)}")
            response = await kube.call(
                read, namespace, label_selector=selector, _preload_content=False
            )
        items: list[Manifest] = json.loads(response.data).get("items", [])
        return items
