"""Outbound calls go only where the operator's allowlist, and a credential's own
Secret, say; what a server answers reaches status and Events as one short line.

The servers here are real listeners on loopback, counting every connection."""

from __future__ import annotations

import asyncio
import http.server
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from modelrollout.api.spec import PrometheusConnection
from modelrollout.core.types import QueryFailed
from modelrollout.egress import AddressPolicy
from modelrollout.metrics.connections import Connections
from modelrollout.metrics.prometheus import MAX_BODY_BYTES, REASON_CHARS
from testbed import free_port
from testbed.serving import LoopbackServer

from .conftest import Api, OperatorFactory, condition, phase, story
from .scenario import setup

STAGES = [{"weight": 10, "duration": "5s"}, {"weight": 100, "duration": "1s"}]
SECRET_BODY = "the-body-must-never-show"


@dataclass
class Listener:
    """An HTTP server on loopback answering `answer(path)` and counting connections."""

    answer: Callable[[str], tuple[int, dict[str, str], bytes]]
    port: int = field(default_factory=free_port)
    connections: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.headers.append(dict(self.headers))
                code, headers, body = listener.answer(self.path)
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            def get_request(self) -> Any:
                listener.connections += 1
                return super().get_request()

        self.server = LoopbackServer(Handler, self.port, Server)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def listen() -> Iterator[Callable[..., Listener]]:
    made: list[Listener] = []

    def make(answer: Callable[[str], tuple[int, dict[str, str], bytes]]) -> Listener:
        made.append(Listener(answer))
        return made[-1]

    yield make
    for listener in made:
        listener.close()


def answering(code: int, body: bytes, content_type: str = "application/json") -> Any:
    return lambda path: (code, {"Content-Type": content_type}, body)


def analysis(address: str, **connection: Any) -> dict[str, Any]:
    query = "vector(0)"
    return {
        "interval": "5s",
        "prometheus": {"address": address, "timeout": "3s", **connection},
        "metrics": [{"name": "error-rate", "query": query, "slo": {"max": 0.1}}],
    }


def test_a_disallowed_address_fails_the_rollout_without_any_connection(
    api: Api, operator_factory: OperatorFactory, listen: Callable[..., Listener]
) -> None:
    listener = listen(answering(200, b'{"status":"success","data":{"result":[]}}'))
    operator_factory([api.namespace], args=["--allowed-addresses", "*.svc"])
    read = setup(api, "gatewayAPI", {"stages": STAGES}, analysis=analysis(listener.url))
    failed = api.wait_phase("model", "Failed", timeout=60)
    stalled = condition(failed, "Stalled")
    assert stalled is not None
    assert (stalled["status"], stalled["reason"]) == ("True", "AddressNotAllowed"), story(failed)
    assert "allowed addresses (*.svc) do not include" in stalled["message"]
    assert "no traffic was moved" in stalled["message"]
    assert read() == (100, 0, False)
    assert listener.connections == 0
    api.wait_events("model", lambda e: e["reason"] == "AddressNotAllowed", "AddressNotAllowed")


def test_a_token_bound_to_other_addresses_is_never_sent(
    api: Api, operator_factory: OperatorFactory, listen: Callable[..., Listener]
) -> None:
    listener = listen(answering(200, b'{"status":"success","data":{"result":[]}}'))
    api.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "prometheus-auth",
                "annotations": {"rollouts.mlops.io/allowed-addresses": "prometheus.monitoring.svc"},
            },
            "stringData": {"token": "s3cret"},
        }
    )
    operator_factory([api.namespace])  # the operator itself admits loopback
    token = {"bearerTokenSecretRef": {"name": "prometheus-auth", "key": "token"}}
    setup(api, "gatewayAPI", {"stages": STAGES}, analysis=analysis(listener.url, **token))
    failed = api.wait_phase("model", "Failed", timeout=60)
    stalled = condition(failed, "Stalled")
    assert stalled is not None
    assert stalled["reason"] == "AddressNotAllowed", story(failed)
    assert "Secret prometheus-auth" in stalled["message"]
    assert "(prometheus.monitoring.svc)" in stalled["message"]
    assert listener.connections == 0
    assert "s3cret" not in json.dumps(failed["status"])


UNAVAILABLE = {"status": "error", "errorType": "unavailable", "error": "line one\nline two"}
HOSTILE = {
    "404 in plain text": (answering(404, b"404 page not found " * 4, "text/plain"), "HTTP 404"),
    "500 with 1 MiB": (answering(500, SECRET_BODY.encode() * 40_000), "HTTP 500"),
    "200 that is not JSON": (answering(200, b"<html>" + SECRET_BODY.encode()), "not JSON"),
    "200 without data": (answering(200, b'{"status":"success"}'), "no data.result"),
    "200 too large": (answering(200, b" " * (MAX_BODY_BYTES + 10)), "larger than"),
    "a redirect": (
        lambda path: (302, {"Location": "http://169.254.169.254/"}, b""),
        "HTTP 302",
    ),
    "an error with its reason": (
        answering(
            503,
            json.dumps(
                {"status": "error", "errorType": "unavailable", "error": "line one\nline two"}
            ).encode(),
        ),
        "HTTP 503: unavailable: line one line two",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_prometheus_yields_a_one_line_reason(
    case: str, listen: Callable[..., Listener]
) -> None:
    answer, expected = HOSTILE[case]
    listener = listen(answer)

    async def ask() -> Any:
        connections = Connections(
            _NoObjects(), ThreadPoolExecutor(1), AddressPolicy.parse("127.0.0.0/8")
        )
        try:
            connection = PrometheusConnection.model_validate({"address": listener.url})
            source = await connections.source(connection, "ns")
            return [await source.instant("up"), await source.vector("up")]
        finally:
            connections.close()

    for reading in asyncio.run(ask()):
        assert isinstance(reading, QueryFailed), reading
        assert expected in reading.message
        assert "\n" not in reading.message
        assert len(reading.message) <= REASON_CHARS
        assert SECRET_BODY not in reading.message
    assert listener.connections >= 1


def test_a_failing_prometheus_reaches_status_as_one_line(
    api: Api, operator_factory: OperatorFactory, listen: Callable[..., Listener]
) -> None:
    body = json.dumps({"status": "error", "errorType": "internal", "error": SECRET_BODY * 9000})
    listener = listen(answering(500, body.encode()))
    operator_factory([api.namespace])
    setup(api, "gatewayAPI", {"stages": STAGES}, analysis=analysis(listener.url))
    paused = api.wait_phase("model", "Paused", timeout=60)
    blind = condition(paused, "AnalysisUnavailable")
    assert blind is not None
    assert "HTTP 500: internal" in blind["message"]
    assert len(blind["message"]) < 2 * REASON_CHARS
    assert SECRET_BODY * 20 not in json.dumps(paused["status"])
    assert phase(api.rollout("model")) == "Paused"


class _NoObjects:
    async def get(self, kind: Any, namespace: str, name: str) -> None:
        return None

    async def apply(self, kind: Any, manifest: Any) -> None:
        raise AssertionError("nothing is written")
