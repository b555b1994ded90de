"""Metrics sources shared by rollouts with the same connection settings.

Secrets are read every tick, so a rotated token or CA applies at the next one. A
source is kept per connection (its address, header names and Secret references, and
the namespace when it reads Secrets); new credentials replace that connection's
source, so rotations do not pile up sources. A replaced source is dropped, not
closed: a query of another rollout may still be using it. A CA bundle is written
once per content and removed when no source uses it any more.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from base64 import b64decode
from concurrent.futures import Executor
from datetime import datetime
from pathlib import Path
from typing import Any

from modelrollout.api.durations import parse_duration
from modelrollout.api.objects import SECRET
from modelrollout.api.spec import PrometheusConnection, SecretKeyRef
from modelrollout.core.types import QueryFailed, Reading, Series
from modelrollout.egress import AddressNotAllowed, AddressPolicy
from modelrollout.metrics.prometheus import PrometheusSource, reason
from modelrollout.ports import MetricsSource, Objects, Shared

CREDENTIAL_ADDRESSES = "rollouts.mlops.io/allowed-addresses"
# on (default) or off: whether rollouts sharing a metric's template share its query.
SHARING_ENVIRONMENT = "MODELROLLOUT_QUERY_SHARING"


class SecretProblem(Exception):
    """A referenced Secret or key is missing: the analysis cannot connect."""


class Connections:
    def __init__(
        self, objects: Objects, pool: Executor, policy: AddressPolicy, shared: bool = True
    ) -> None:
        self.objects, self.pool, self.policy, self.shared = objects, pool, policy, shared
        self._sources: dict[tuple[Any, ...], tuple[tuple[Any, ...], MetricsSource]] = {}
        self._ca_dir = Path(tempfile.mkdtemp(prefix="modelrollout-ca-"))

    async def _secret(self, namespace: str, ref: SecretKeyRef, address: str | None = None) -> bytes:
        """A Secret's key. With `address`, the value is a credential: a Secret that
        names its addresses (annotation rollouts.mlops.io/allowed-addresses) may be
        sent only there, whatever the operator's allowlist admits."""
        try:
            secret = await self.objects.get(SECRET, namespace, ref.name)
        except Exception as error:
            raise SecretProblem(reason(f"cannot read Secret {ref.name}: {error}")) from error
        if secret is None:
            raise SecretProblem(f"Secret {ref.name} not found")
        bound = ((secret.get("metadata") or {}).get("annotations") or {}).get(CREDENTIAL_ADDRESSES)
        if address is not None and bound is not None:
            await self._check(address, AddressPolicy.parse(bound), f"Secret {ref.name}")
        data = (secret.get("data") or {}).get(ref.key)
        if data is None:
            raise SecretProblem(f"Secret {ref.name} has no key {ref.key}")
        return b64decode(data)

    async def _check(self, address: str, policy: AddressPolicy, whose: str) -> None:
        """AddressNotAllowed, or SecretProblem when the name does not resolve."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.pool, policy.check_url, address)
        except AddressNotAllowed as error:
            raise AddressNotAllowed(f"{whose}: {error}") from None
        except OSError as error:
            raise SecretProblem(reason(f"Prometheus unreachable: {error}")) from None

    def _ca_file(self, ca: bytes) -> Path:
        path = self._ca_dir / f"{hashlib.sha256(ca).hexdigest()[:16]}.pem"
        if not path.exists():
            path.write_bytes(ca)
        return path

    async def source(self, connection: PrometheusConnection, namespace: str) -> MetricsSource:
        """The source for a rollout's connection, made or replaced as its Secrets say;
        one whose every query fails, saying why, when a Secret or key is missing.
        Raises AddressNotAllowed, before anything is sent, for an address that the
        operator's allowlist, or the token Secret's own, does not admit."""
        try:
            return await self._source(connection, namespace)
        except SecretProblem as problem:
            return FailingSource(str(problem))

    async def _source(self, connection: PrometheusConnection, namespace: str) -> MetricsSource:
        address = connection.address
        await self._check(address, self.policy, "analysis.prometheus.address")
        headers = dict(connection.headers or {})
        token_ref, ca_ref = connection.bearer_token_secret_ref, connection.ca_secret_ref
        if token_ref is not None:
            token = await self._secret(namespace, token_ref, address)
            headers["Authorization"] = f"Bearer {token.decode().strip()}"
        ca_file = self._ca_file(await self._secret(namespace, ca_ref)) if ca_ref else None
        key = (
            namespace if token_ref or ca_ref else None,
            connection.address,
            connection.timeout,
            tuple(sorted(connection.headers or {})),
            (token_ref.name, token_ref.key) if token_ref else None,
            (ca_ref.name, ca_ref.key) if ca_ref else None,
        )
        settings = (tuple(sorted(headers.items())), ca_file)
        known = self._sources.get(key)
        if known is not None and known[0] == settings:
            return known[1]
        session = self.policy.session()
        session.headers.update(headers)
        session.verify = str(ca_file) if ca_file else True
        source = PrometheusSource(
            connection.address,
            session=session,
            timeout_seconds=parse_duration(connection.timeout).total_seconds(),
            pool=self.pool,
            shared=self.shared,
        )
        self._sources[key] = (settings, source)
        self._forget_ca_files()
        return source

    def _forget_ca_files(self) -> None:
        used = {settings[1] for settings, _ in self._sources.values()}
        for path in self._ca_dir.glob("*.pem"):
            if path not in used:
                path.unlink(missing_ok=True)

    @property
    def connections(self) -> int:
        return len(self._sources)

    def close(self) -> None:
        for _, source in self._sources.values():
            source.close()
        shutil.rmtree(self._ca_dir, ignore_errors=True)


class FailingSource:
    """What a connection that cannot be made answers: every query failed, with why
    (so a missing Secret pauses the analysis exactly as an unreachable server does)."""

    def __init__(self, message: str) -> None:
        self.message = message

    async def instant(self, query: str, shared: Shared | None = None) -> Reading:
        return QueryFailed(self.message)

    async def vector(self, query: str, shared: Shared | None = None) -> Series | Reading:
        return QueryFailed(self.message)

    async def series(
        self, query: str, start: datetime, end: datetime, step: str
    ) -> list[float] | Reading:
        return QueryFailed(self.message)

    def close(self) -> None:
        pass
