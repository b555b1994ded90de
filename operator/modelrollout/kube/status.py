"""Writing status with an optimistic lock, and only what changed."""

from __future__ import annotations

from typing import Any, cast

from modelrollout.api.resource import GROUP, PLURAL, VERSION
from modelrollout.kube.client import Kube


def merge_patch(old: Any, new: Any) -> Any:
    """RFC 7386 patch turning `old` into `new`: removed keys become null."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch


async def write_status(
    kube: Kube,
    namespace: str,
    name: str,
    resource_version: str,
    old: dict[str, Any],
    new: dict[str, Any],
) -> dict[str, Any]:
    """Patch status, failing with 409 if the object changed since we read it, so a
    status computed from a stale spec is never stored."""
    body = {"metadata": {"resourceVersion": resource_version}, "status": merge_patch(old, new)}
    result = await kube.write(
        kube.custom.patch_namespaced_custom_object_status,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        body,
        _content_type="application/merge-patch+json",
    )
    return cast(dict[str, Any], result)


async def remove_annotation(
    kube: Kube, namespace: str, name: str, resource_version: str, key: str
) -> str:
    """Remove an annotation if the object is still at `resource_version`; return the
    new resourceVersion for the status write that follows."""
    body = {"metadata": {"resourceVersion": resource_version, "annotations": {key: None}}}
    result: Any = await kube.write(
        kube.custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        body,
        _content_type="application/merge-patch+json",
    )
    return str(result["metadata"]["resourceVersion"])


async def read_rollout(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    result: Any = await kube.call(
        kube.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
    )
    return cast(dict[str, Any], result)
