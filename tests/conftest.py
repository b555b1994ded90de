"""Fixtures for tests that need the real test bed (see tests/testbed/).

control_plane / k8s: one control plane per session (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok with fake Nodes), with Gateway API, Istio
and our own CRDs installed. namespace, prometheus, spawn: per test. A missing tool skips the
test outside CI and fails it under CI=true.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import kubernetes
import pytest

from testbed import ControlPlane, MissingPrerequisite, Prometheus, in_ci, procs
from testbed.controlplane import exists
from testbed.paths import ROOT
from testbed.procs import Spawn

INTEGRATION_FIXTURES = {"control_plane", "k8s", "namespace", "prometheus", "spawn"}
_first_proc = pytest.StashKey[int]()
_worker_leaks = pytest.StashKey[list[str]]()


def _unavailable(err: MissingPrerequisite) -> NoReturn:
    if in_ci():
        pytest.fail(f"test bed prerequisite missing under CI: {err}", pytrace=False)
    pytest.skip(f"test bed prerequisite missing: {err}")


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """Session-wide control plane with Gateway API, Istio and ./crds installed."""
    try:
        cp = ControlPlane()
    except MissingPrerequisite as err:
        _unavailable(err)
    try:
        cp.start()
        cp.install_gateway_and_istio_crds()
        if any((ROOT / "crds").glob("*.yaml")):
            cp.install_crds(ROOT / "crds")
        yield cp
    except MissingPrerequisite as err:
        _unavailable(err)
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def k8s(control_plane: ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    """Admin (system:masters) ApiClient for the session's API server."""
    with control_plane.api_client() as client:
        yield client


@pytest.fixture
def namespace(k8s: kubernetes.client.ApiClient) -> Iterator[str]:
    """A fresh namespace, handed over once it has its `default` ServiceAccount.

    kube-controller-manager creates that ServiceAccount a moment after the namespace;
    until then the API server refuses Pods in it. Deleted afterwards (without waiting:
    the namespace controller finishes that in the background).
    """
    core = kubernetes.client.CoreV1Api(k8s)
    name = f"test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(kubernetes.client.V1Namespace(metadata={"name": name}))
    procs.wait_until(
        lambda: exists(lambda: core.read_namespaced_service_account("default", name)),
        30,
        f"ServiceAccount {name}/default (kube-controller-manager)",
    )
    yield name
    core.delete_namespace(name)


@pytest.fixture
def prometheus() -> Iterator[Prometheus]:
    """A fresh Prometheus (1s scrape/eval); add targets with `prometheus.set_targets`."""
    try:
        prom = Prometheus()
    except MissingPrerequisite as err:
        _unavailable(err)
    with prom:
        yield prom


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """`spawn(name, argv, **kw)` starts a logged process that is stopped after the test."""
    started: list[procs.Proc] = []

    def _spawn(name: str, argv: Sequence[str | Path], **kwargs: object) -> procs.Proc:
        proc = procs.spawn(name, argv, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield _spawn
    for proc in reversed(started):
        proc.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_first_proc] = len(procs.started())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the log tail of every process started for the test or session."""
    report: pytest.TestReport = yield
    if report.failed:
        everything = procs.started()
        mine = everything[item.stash.get(_first_proc, len(everything)) :]
        shown = mine + [p for p in everything if p not in mine and p.alive()]
        for proc in shown:
            report.sections.append((f"{proc.name} log ({proc.log})", proc.tail(40)))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run if a process the test bed started outlived its fixture.

    Under pytest-xdist each worker hands its leaks to the controller (workeroutput),
    whose exit status is the run's."""
    leaked = procs.leaked()
    names = [f"{p.name} (pid {p.pid}, log {p.log})" for p in leaked]
    if leaked:
        procs.stop_all()
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["testbed_leaks"] = names
        return
    names += session.config.stash.get(_worker_leaks, [])
    if not names:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        message = f"TESTBED LEAK: still running after the session: {', '.join(names)}"
        reporter.write_sep("!", message, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist, in the controller: collect a finished worker's leaks."""
    leaks = getattr(node, "workeroutput", {}).get("testbed_leaks", [])
    config: pytest.Config = node.config
    config.stash[_worker_leaks] = [*config.stash.get(_worker_leaks, []), *leaks]
