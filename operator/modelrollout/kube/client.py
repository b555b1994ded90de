"""One Kubernetes client and a bounded pool for its blocking calls.

The kubernetes client is synchronous. Its calls run in a small, fixed pool so a
slow API server can never block kopf's event loop nor spawn a thread per rollout.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client import rest
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")
REQUEST_TIMEOUT_SECONDS = 15.0


class Kube:
    """The typed entry points the adapters use, all awaited through bounded pools.

    Writes have a pool of their own, so a rollback's weight change never queues
    behind a thousand rollouts' reads; the HTTP connection pool holds a connection
    for every thread, so none is opened and thrown away per call."""

    def __init__(self, api_client: Any, max_workers: int = 8, writers: int = 4) -> None:
        configuration = api_client.configuration
        if (configuration.connection_pool_maxsize or 0) < max_workers + writers:
            configuration.connection_pool_maxsize = max_workers + writers
            api_client.rest_client = rest.RESTClientObject(configuration)
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="kube")
        self._writes = ThreadPoolExecutor(writers, thread_name_prefix="kube-write")

    @classmethod
    def from_environment(cls, max_workers: int = 8) -> Kube:
        return cls(api_client_from_environment(), max_workers)

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """A read (or anything else) through the shared pool."""
        return await self._run(self._pool, fn, args, kwargs)

    async def write(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """A write through the writers' own pool."""
        return await self._run(self._writes, fn, args, kwargs)

    async def _run(
        self, pool: ThreadPoolExecutor, fn: Callable[..., T], args: Any, kwargs: dict[str, Any]
    ) -> T:
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_SECONDS)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        for pool in (self._pool, self._writes):
            pool.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()


def api_client_from_environment() -> Any:
    """In-cluster credentials when present, else the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()  # type: ignore[no-untyped-call]


def is_not_found(error: BaseException) -> bool:
    return isinstance(error, ApiException) and error.status == 404


def is_conflict(error: BaseException) -> bool:
    return isinstance(error, ApiException) and error.status == 409
