"""The Kubernetes kinds the operator reads and writes, named once.

Routing-object kinds are declared by their routing models in `spec.py` (each
`trafficRouting` method names the kind it drives); the kinds here are the ones every
rollout touches.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectKind:
    """A resource kind with what it takes to address it in the API."""

    kind: str
    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """`plural.group`, as RBAC and `kubectl auth can-i` name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


DEPLOYMENT = ObjectKind("Deployment", "apps", "v1", "deployments")
SERVICE = ObjectKind("Service", "", "v1", "services")
CONFIG_MAP = ObjectKind("ConfigMap", "", "v1", "configmaps")
SECRET = ObjectKind("Secret", "", "v1", "secrets")
JOB = ObjectKind("Job", "batch", "v1", "jobs")
POD = ObjectKind("Pod", "", "v1", "pods")


@dataclass(frozen=True, order=True)
class ObjectRef:
    """One named object in the rollout's namespace."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"
