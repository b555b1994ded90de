"""The `Objects` port on the Kubernetes API: reads as plain manifests, and
server-side apply with our field manager."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from modelrollout.api.objects import ObjectKind
from modelrollout.api.resource import FIELD_MANAGER
from modelrollout.kube.client import Kube, is_not_found
from modelrollout.ports import Manifest

APPLY = "application/apply-patch+yaml"


def _snake(kind: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


Key = tuple[str, str, str]  # kind, namespace, name


class KubeObjects:
    """Reads skip the client's model classes (`_preload_content=False`): a manifest
    is all the adapters want, and decoding it is most of a read's cost.

    Objects the operator watches (its routing objects) are served from the watch
    when the watched copy is exactly the version this process last read or wrote:
    nothing newer is known then, and a read would return the same. Anything else
    (the watch behind our own write, or someone else's write) is read afresh."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._known: dict[Key, str] = {}  # resourceVersion last read or written
        self._watched: dict[Key, Manifest] = {}

    def seen(self, kind: ObjectKind, body: Manifest, deleted: bool = False) -> None:
        """A watch event of an object; kept only for objects this process reads."""
        meta = body.get("metadata") or {}
        key = (kind.kind, str(meta.get("namespace")), str(meta.get("name")))
        if deleted:
            self._watched.pop(key, None)
            self._known.pop(key, None)
        elif key in self._known:
            self._watched[key] = body

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
        found = await self._read(kind, namespace, name)
        self._remember(kind, found)
        return found

    async def _read(self, kind: ObjectKind, namespace: str, name: str) -> Manifest | None:
        kube = self.kube
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
