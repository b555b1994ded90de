"""Server-side apply and raw reads, with our field manager."""

from __future__ import annotations

import json
from typing import Any

from modelrollout.api.resource import FIELD_MANAGER
from modelrollout.kube.client import Kube, is_not_found

APPLY = "application/apply-patch+yaml"


async def read_deployment(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        response: Any = await kube.call(
            kube.apps.read_namespaced_deployment, name, namespace, _preload_content=False
        )
    except Exception as error:
        if is_not_found(error):
            return None
        raise
    data: dict[str, Any] = json.loads(response.data)
    return data


async def read_custom(
    kube: Kube, group: str, version: str, namespace: str, plural: str, name: str
) -> dict[str, Any] | None:
    try:
        response: Any = await kube.call(
            kube.custom.get_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            name,
            _preload_content=False,
        )
    except Exception as error:
        if is_not_found(error):
            return None
        raise
    data: dict[str, Any] = json.loads(response.data)
    return data


async def apply_deployment_replicas(kube: Kube, namespace: str, name: str, replicas: int) -> None:
    """Own `spec.replicas` and nothing else of the Deployment."""
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas},
    }
    await kube.call(
        kube.apps.patch_namespaced_deployment,
        name,
        namespace,
        body,
        field_manager=FIELD_MANAGER,
        force=True,
        _content_type=APPLY,
    )


async def apply_custom(
    kube: Kube,
    group: str,
    version: str,
    namespace: str,
    plural: str,
    body: dict[str, Any],
) -> None:
    """Apply `body` (which carries the resourceVersion it was computed from, so a
    concurrent change fails with 409 instead of being overwritten)."""
    await kube.call(
        kube.custom.patch_namespaced_custom_object,
        group,
        version,
        namespace,
        plural,
        body["metadata"]["name"],
        body,
        field_manager=FIELD_MANAGER,
        force=True,
        _content_type=APPLY,
    )
