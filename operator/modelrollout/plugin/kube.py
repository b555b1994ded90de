"""The plugin's few API calls, made with the user's kubeconfig as kubectl would."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from modelrollout.api.resource import GROUP, KIND, PLURAL, VERSION
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus, parse_timestamp

Obj = dict[str, Any]
REQUEST_TIMEOUT_SECONDS = 15.0


class PluginError(Exception):
    """Something the user must be told about; the command exits 1 and writes nothing."""


@dataclass(frozen=True)
class Rollout:
    """A ModelRollout as read, with spec and status parsed by the API models.

    `spec` is None when it no longer parses (a manifest from a newer version, say):
    the views then show what status alone says.
    """

    name: str
    namespace: str
    uid: str
    resource_version: str
    generation: int
    created: datetime | None
    annotations: dict[str, str]
    spec: ModelRolloutSpec | None
    status: ModelRolloutStatus
    raw: Obj = field(repr=False)

    @classmethod
    def from_object(cls, obj: Obj) -> Rollout:
        meta = obj.get("metadata") or {}
        try:
            spec: ModelRolloutSpec | None = ModelRolloutSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            spec = None
        try:
            status = ModelRolloutStatus.model_validate(obj.get("status") or {})
        except ValidationError as error:
            raise PluginError(f"{meta.get('name')}: unreadable status: {error}") from error
        created = meta.get("creationTimestamp")
        return cls(
            name=meta.get("name", ""),
            namespace=meta.get("namespace", ""),
            uid=meta.get("uid", ""),
            resource_version=meta.get("resourceVersion", ""),
            generation=int(meta.get("generation", 0)),
            created=parse_timestamp(created) if created else None,
            annotations=dict(meta.get("annotations") or {}),
            spec=spec,
            status=status,
            raw=obj,
        )


class Cluster:
    """One namespace of one cluster, reached through a kubeconfig."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None, namespace: str | None) -> Cluster:
        """Like kubectl: --kubeconfig, else KUBECONFIG (a list of paths), else
        ~/.kube/config; the namespace from -n, else the context's, else default."""
        path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        try:
            contexts, active = config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
            chosen = active
            if context is not None:
                chosen = next((c for c in contexts if c["name"] == context), None)
                if chosen is None:
                    raise PluginError(f"context {context!r} is not in the kubeconfig {path}")
            api_client = config.new_client_from_config(config_file=path, context=context)  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError) as error:
            raise PluginError(f"cannot load the kubeconfig {path}: {error}") from error
        default = (chosen or {}).get("context", {}).get("namespace") or "default"
        return cls(api_client, namespace or default)

    def rollout(self, name: str) -> Rollout:
        obj = self._call(
            self.custom.get_namespaced_custom_object,
            GROUP, VERSION, self.namespace, PLURAL, name,
            missing=f"modelrollout {name!r} not found in namespace {self.namespace}",
        )  # fmt: skip
        return Rollout.from_object(obj)

    def rollouts(self, all_namespaces: bool = False) -> list[Rollout]:
        if all_namespaces:
            listing = self._call(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        else:
            listing = self._call(
                self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL
            )
        items = [Rollout.from_object(o) for o in listing.get("items", [])]
        return sorted(items, key=lambda r: (r.namespace, r.name))

    def events(self, rollout: Rollout) -> list[Any]:
        """Events about this rollout (not an earlier one of the same name), oldest first."""
        selector = f"involvedObject.kind={KIND},involvedObject.name={rollout.name}"
        listing = self._call(
            self.core.list_namespaced_event, rollout.namespace, field_selector=selector
        )
        mine = [e for e in listing.items if e.involved_object.uid in (None, "", rollout.uid)]
        return sorted(mine, key=event_time)

    def annotate(self, rollout: Rollout, key: str, value: str) -> Rollout:
        """Merge-patch one annotation, only onto the version that was checked: a
        rollout that moved on in between gets a 409 instead of a stale action."""
        patch = {
            "metadata": {
                "resourceVersion": rollout.resource_version,
                "annotations": {key: value},
            }
        }
        obj = self._call(
            self.custom.patch_namespaced_custom_object,
            GROUP, VERSION, rollout.namespace, PLURAL, rollout.name, patch,
            _content_type="application/merge-patch+json",
            missing=f"modelrollout {rollout.name!r} was deleted",
        )  # fmt: skip
        return Rollout.from_object(obj)

    def _call(self, fn: Any, *args: Any, missing: str | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_SECONDS)
        try:
            return fn(*args, **kwargs)
        except ApiException as error:
            if error.status == 404 and missing:
                raise PluginError(missing) from error
            if error.status == 409:
                raise
            said = f"the API server said {error.status} {error.reason}: {_detail(error)}"
            raise PluginError(said) from error
        except HTTPError as error:
            raise PluginError(f"cannot reach the API server: {error}") from error


def event_time(event: Any) -> datetime:
    stamp = (
        event.last_timestamp
        or event.event_time
        or event.first_timestamp
        or event.metadata.creation_timestamp
    )
    return stamp if isinstance(stamp, datetime) else datetime.min.replace(tzinfo=UTC)


def _detail(error: ApiException) -> str:
    try:
        message = json.loads(error.body or "{}").get("message")
    except ValueError:
        message = None
    return str(message or error.body or error)
