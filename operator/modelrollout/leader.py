"""Leader election on a coordination.k8s.io Lease, as controller-runtime does it.

Only the holder of the Lease runs the operator. A standby polls until the holder's
record has not changed for a whole lease duration (as seen on the standby's own
clock, so clocks need not agree), then takes it with an optimistic write: of two
standbys racing, one wins. The holder renews every `retry` seconds; if it cannot
renew for `renew_deadline` seconds (less than the lease duration) it stops the
process at once, before anyone else may take over, so two replicas never write at
the same time. A SIGKILLed holder is replaced once its lease runs out.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("modelrollout.leader")

LEASE_SECONDS = 15.0
RENEW_DEADLINE_SECONDS = 10.0
RETRY_SECONDS = 2.0


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class LeaderElection:
    api: Any  # a kubernetes ApiClient
    namespace: str
    name: str
    identity: str
    lease_seconds: float = LEASE_SECONDS
    renew_deadline: float = RENEW_DEADLINE_SECONDS
    retry: float = RETRY_SECONDS
    _seen: tuple[Any, ...] | None = field(default=None, init=False)
    _seen_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if not self.retry < self.renew_deadline < self.lease_seconds:
            raise ValueError("need retry < renew deadline < lease duration")
        self.leases = client.CoordinationV1Api(self.api)

    def _body(self, version: str | None, transitions: int, acquired: datetime) -> Any:
        spec = client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=int(self.lease_seconds),
            acquire_time=acquired,
            renew_time=_now(),
            lease_transitions=transitions,
        )
        meta = client.V1ObjectMeta(name=self.name, namespace=self.namespace)
        if version is not None:
            meta.resource_version = version
        return client.V1Lease(metadata=meta, spec=spec)

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True while this replica holds the Lease."""
        try:
            lease = self.leases.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            try:
                self.leases.create_namespaced_lease(self.namespace, self._body(None, 0, _now()))
            except ApiException as conflict:
                if conflict.status == 409:
                    return False
                raise
            return True
        spec, meta = lease.spec or client.V1LeaseSpec(), lease.metadata or client.V1ObjectMeta()
        record = (spec.holder_identity, spec.renew_time, spec.lease_transitions)
        if record != self._seen:  # the holder is alive, as far as we can tell
            self._seen, self._seen_at = record, time.monotonic()
        mine = spec.holder_identity == self.identity
        expired = time.monotonic() - self._seen_at >= (spec.lease_duration_seconds or 0)
        if not mine and spec.holder_identity and not expired:
            return False
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        acquired = spec.acquire_time if mine and spec.acquire_time else _now()
        body = self._body(meta.resource_version, transitions, acquired)
        try:
            self.leases.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as conflict:
            if conflict.status == 409:
                return False  # someone else wrote first
            raise
        return True

    def acquire(self) -> None:
        """Block until this replica holds the Lease."""
        log.info("waiting to lead: Lease %s/%s", self.namespace, self.name)
        while not self._attempt():
            time.sleep(self.retry)
        log.info("leading: Lease %s/%s held by %s", self.namespace, self.name, self.identity)

    def _attempt(self) -> bool:
        try:
            return self.try_acquire_or_renew()
        except Exception as error:  # the API server unreachable: not held, try again
            log.warning("Lease %s/%s: %s", self.namespace, self.name, error)
            return False

    def keep(self, lost: Callable[[], None]) -> threading.Thread:
        """Renew in the background; call `lost` (which must stop every write at once)
        when the Lease could not be renewed within the renew deadline."""

        def renew() -> None:
            last = time.monotonic()
            while True:
                time.sleep(self.retry)
                if self._attempt():
                    last = time.monotonic()
                elif time.monotonic() - last >= self.renew_deadline:
                    log.error("lost the Lease %s/%s: stopping", self.namespace, self.name)
                    lost()
                    return

        thread = threading.Thread(target=renew, name="lease", daemon=True)
        thread.start()
        return thread


@contextlib.contextmanager
def standby_health(url: str | None) -> Iterator[None]:
    """Answer 200 on the liveness URL's port while waiting to lead; the port is freed
    when leading begins, for kopf's own health endpoint."""
    if url is None:
        yield
        return
    parts = urlsplit(url)

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == parts.path else 404)
            self.end_headers()
            self.wfile.write(b"standby\n")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((parts.hostname or "", parts.port or 80), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
