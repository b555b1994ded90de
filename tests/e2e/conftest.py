"""End-to-end fixtures: the integration fixtures (control plane, operator, API
helpers) plus the data plane of tests/e2e/stack.py."""

from __future__ import annotations

from collections.abc import Iterator

import kubernetes
import pytest

from integration.conftest import Api, api, helm, operator, operator_factory  # noqa: F401
from testbed import Prometheus

from .stack import Stack


@pytest.fixture
def stack(
    api: Api,  # noqa: F811
    k8s: kubernetes.client.ApiClient,
    namespace: str,
    prometheus: Prometheus,
) -> Iterator[Stack]:
    running = Stack(k8s, namespace, prometheus, api.apply, api.control_plane.kubeconfig)
    try:
        yield running
    finally:
        running.close()
