"""--follow-rollout: copy to the candidate only while its ModelRollout mirrors.

Once the shadow stage is over the candidate takes real traffic, and the request
metrics the SLO analysis reads must be its own, not inflated by copies. So every few
seconds the comparator reads the rollout's `status.mirroring` and shadows at --share
while it is true, else not at all. A failed read keeps the last share (and is
counted and logged): an API server hiccup neither floods nor starves the candidate.
A rollout that does not exist mirrors nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelrollout.shadow.metrics import ShadowMetrics
from modelrollout.shadow.settings import Settings
from modelrollout.shadow.shadowing import Shadower

log = logging.getLogger("modelrollout.shadow")
GROUP, VERSION, PLURAL = "rollouts.mlops.io", "v1alpha1", "modelrollouts"
REQUEST_TIMEOUT_SECONDS = 5.0


class NoCredentials(RuntimeError):
    """Neither in-cluster credentials nor a kubeconfig."""


def api_client() -> Any:
    """In-cluster credentials when present, else the kubeconfig ($KUBECONFIG)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    except config.ConfigException:
        pass
    try:
        return config.new_client_from_config()  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as error:
        raise NoCredentials(
            f"--follow-rollout needs in-cluster credentials or a kubeconfig: {error}"
        ) from error


class RolloutFollower:
    def __init__(
        self, settings: Settings, metrics: ShadowMetrics, shadower: Shadower, api: Any
    ) -> None:
        self.settings, self.metrics, self.shadower = settings, metrics, shadower
        self.custom = client.CustomObjectsApi(api)
        self._last_problem: str | None = None
        self._mirroring: bool | None = None

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.settings.follow_interval)

    async def refresh(self) -> None:
        where = f"modelrollout {self.settings.namespace}/{self.settings.rollout}"
        try:
            rollout = await asyncio.to_thread(self._read)
        except ApiException as error:
            if error.status == 404:  # a definite answer: nothing mirrors to the candidate
                self.metrics.follow_errors["not_found"].inc()
                self._last_problem = None
                self._set(False, f"{where} does not exist")
                return
            reason = {401: "unauthorized", 403: "forbidden"}.get(error.status, "api_error")
            self._problem(reason, f"cannot read {where}: {error.status} {error.reason}")
            return
        except Exception as error:  # connection refused, timeouts, TLS, bad answers
            self._problem("unreachable", f"cannot read {where}: {error!r}")
            return
        self._last_problem = None
        status = rollout.get("status") if isinstance(rollout, dict) else None
        mirroring = isinstance(status, dict) and status.get("mirroring") is True
        self._set(mirroring, f"{where} status.mirroring is {str(mirroring).lower()}")

    def _read(self) -> Any:
        s = self.settings
        return self.custom.get_namespaced_custom_object(
            GROUP, VERSION, s.namespace, PLURAL, s.rollout, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )

    def _set(self, mirroring: bool, why: str) -> None:
        share = self.settings.share if mirroring else 0.0
        if mirroring != self._mirroring:
            log.info("%s: copying %g of requests to the candidate", why, share)
        self._mirroring = mirroring
        self.shadower.set_share(share)

    def _problem(self, reason: str, message: str) -> None:
        self.metrics.follow_errors[reason].inc()
        if message != self._last_problem:  # once per new problem, not every few seconds
            log.warning("%s; the share stays %g", message, self.shadower.share)
        self._last_problem = message
