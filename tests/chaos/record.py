"""The independent recorder: every stored version of the soak's ModelRollouts,
HTTPRoutes and Deployments, read from etcd (etcdwatch.py), reduced to what the
invariants need. It never asks the operator anything."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from chaos.etcdwatch import EtcdWatch, Write, deployment_replicas, latest_revisions

PREFIXES = {
    "rollout": "/registry/rollouts.mlops.io/modelrollouts/",
    "route": "/registry/gateway.networking.k8s.io/httproutes/",
    "deployment": "/registry/deployments/",
}
TERMINAL = ("Succeeded", "RolledBack", "Failed")


def epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class RolloutVersion:
    revision: int
    seen: float
    name: str
    phase: str
    stage: int
    weight: int
    last: dict[str, Any] | None  # the newest history entry
    stage_started: float | None
    read_at: float | None = None  # when the analysis last read Prometheus (checkedAt)


@dataclass(frozen=True)
class RouteVersion:
    revision: int
    seen: float
    name: str
    stable: int | None
    candidate: int | None
    managers: dict[str, str | None]  # field manager -> the time of its last write

    @property
    def weights(self) -> tuple[int | None, int | None]:
        return self.stable, self.candidate


@dataclass(frozen=True)
class DeploymentVersion:
    revision: int
    seen: float
    name: str
    replicas: int | None


def _name(key: str) -> str:
    return key.rsplit("/", 1)[1]


def rollout_version(write: Write) -> RolloutVersion | None:
    if write.value is None:
        return None
    obj = json.loads(write.value)
    status = obj.get("status") or {}
    history = status.get("history") or []
    return RolloutVersion(
        revision=write.revision,
        seen=write.seen,
        name=_name(write.key),
        phase=status.get("phase") or "Pending",
        stage=int(status.get("stage") or 0),
        weight=int(status.get("weight") or 0),
        last=history[-1] if history else None,
        stage_started=epoch(status.get("stageStartedAt")),
        read_at=max(
            (t for m in status.get("analysis") or [] if (t := epoch(m.get("checkedAt")))),
            default=None,
        ),
    )


def route_version(write: Write, stable: str, candidate: str) -> RouteVersion | None:
    if write.value is None:
        return None
    obj = json.loads(write.value)
    refs = {ref.get("name"): ref.get("weight") for ref in obj["spec"]["rules"][0]["backendRefs"]}
    managers = {
        entry["manager"]: entry.get("time") for entry in obj["metadata"].get("managedFields") or ()
    }
    return RouteVersion(
        write.revision,
        write.seen,
        _name(write.key),
        refs.get(stable),
        refs.get(candidate),
        managers,
    )


class Recorder:
    """Three etcd watches of one namespace; `on_rollout` is called (in the watch
    thread) with every new ModelRollout version, for the soak's own reactions."""

    def __init__(
        self,
        etcd_url: str,
        namespace: str,
        on_rollout: Callable[[RolloutVersion], None] | None = None,
        archive: Path | None = None,
    ) -> None:
        self.etcd_url, self.namespace, self.on_rollout = etcd_url, namespace, on_rollout
        self.archive: IO[str] | None = None
        if archive is not None:  # closed by stop()
            self.archive = gzip.open(archive, "wt")  # noqa: SIM115
        self.rollouts: list[RolloutVersion] = []
        self.routes: list[RouteVersion] = []
        self.deployments: list[DeploymentVersion] = []
        self.problems: list[str] = []
        self.latest: dict[str, RolloutVersion] = {}
        self._seen: dict[str, int] = {}  # key -> newest revision delivered
        self._lock = threading.Lock()
        self.watches = [
            EtcdWatch(etcd_url, f"{prefix}{namespace}/", self._on_write)
            for prefix in PREFIXES.values()
        ]

    def start(self) -> Recorder:
        for watch in self.watches:
            watch.start()
        return self

    def stop(self) -> None:
        for watch in self.watches:
            watch.stop()
            self.problems += watch.lost
        if self.archive is not None:
            self.archive.close()

    def caught_up(self) -> bool:
        """True once every key's current revision in etcd has been delivered."""
        for prefix in PREFIXES.values():
            for key, revision in latest_revisions(
                self.etcd_url, f"{prefix}{self.namespace}/"
            ).items():
                if self._seen.get(key, 0) < revision:
                    return False
        return True

    def wait_caught_up(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.caught_up():
            if time.monotonic() > deadline:
                self.problems.append(f"the recorder did not catch up with etcd in {timeout:.0f}s")
                return
            time.sleep(0.5)

    def _on_write(self, write: Write) -> None:
        try:
            self._keep(write)
            self._record(write)
        except Exception as error:  # a version we cannot read is itself a finding
            self.problems.append(f"unreadable write {write.key}@{write.revision}: {error}")
        self._seen[write.key] = write.revision

    def _keep(self, write: Write) -> None:
        """Every custom resource's version, without managedFields, for a post-mortem."""
        if self.archive is None or write.value is None or not write.value.startswith(b"{"):
            return
        obj = json.loads(write.value)
        obj["metadata"].pop("managedFields", None)
        line = {"revision": write.revision, "seen": write.seen, "key": write.key, "object": obj}
        with self._lock:
            self.archive.write(json.dumps(line) + "\n")

    def _record(self, write: Write) -> None:
        key = write.key
        if key.startswith(PREFIXES["rollout"]):
            version = rollout_version(write)
            if version is None:
                return
            with self._lock:
                self.rollouts.append(version)
                self.latest[version.name] = version
            if self.on_rollout is not None:
                self.on_rollout(version)
        elif key.startswith(PREFIXES["route"]):
            name = _name(key)
            route = route_version(write, f"{name}-v1", f"{name}-v2")
            if route is not None:
                with self._lock:
                    self.routes.append(route)
        elif key.startswith(PREFIXES["deployment"]) and write.value is not None:
            name, replicas = deployment_replicas(write.value)
            with self._lock:
                self.deployments.append(
                    DeploymentVersion(write.revision, write.seen, name, replicas)
                )

    def snapshot(self) -> tuple[list[RolloutVersion], list[RouteVersion], list[DeploymentVersion]]:
        with self._lock:
            return list(self.rollouts), list(self.routes), list(self.deployments)
