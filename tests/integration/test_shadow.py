"""The shadow comparator (`python -m modelrollout.shadow`) as a real process on loopback,
between two real model servers (e2e/modelserver/server.py) and scraped by a real
Prometheus; --follow-rollout against the test bed's real kube-apiserver, under the
RBAC the chart gives it.

Every test checks the client's side too: what comes back is the stable's answer.
"""

from __future__ import annotations

import gzip
import http.client
import json
import math
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from testbed import ControlPlane, Prometheus, free_port, procs
from testbed.helm import render
from testbed.paths import ROOT
from testbed.procs import Spawn

from . import objects

SERVER = ROOT / "e2e" / "modelserver" / "server.py"
ROW = {"amount": 95.0, "age": 40.0, "tenure": 6.0, "balance": 1000.0, "country": "DE"}
ROLLOUT = "ranker"
GROUP, VERSION, PLURAL = "rollouts.mlops.io", "v1alpha1", "modelrollouts"
Obj = dict[str, Any]


def rows(n: int) -> list[Obj]:
    """`n` distinct feature rows (different amounts and ages)."""
    return [{**ROW, "amount": 20.0 + 3 * i, "age": 20.0 + i % 40} for i in range(n)]


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> list[str]:
        # Whitespace around a field value is not part of it (RFC 9110 5.5); the model
        # server sends "modelserver/1 ", a parser reads "modelserver/1".
        return [v.strip() for k, v in self.headers if k.lower() == name.lower()]

    def fields(self, *leave_out: str) -> list[tuple[str, str]]:
        return [(k, v.strip()) for k, v in self.headers if k not in leave_out]


def call(port: int, method: str, path: str, body: bytes | None = None, **headers: str) -> Answer:
    """One HTTP/1.1 exchange on a fresh connection: only these headers (and Host, and
    Content-Length with a body) are sent; the answer's headers and body as they came."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return Answer(response.status, response.getheaders(), response.read())
    finally:
        connection.close()


def predict(port: int, features: Obj) -> Answer:
    body = json.dumps({"features": features}).encode()
    return call(port, "POST", "/predict", body, **{"Content-Type": "application/json"})


@dataclass
class ModelServer:
    proc: procs.Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> float:
        """Predictions it has answered (model_requests_total over all codes)."""
        text = call(self.port, "GET", "/metrics").body.decode()
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "model_requests_total"
        )


@dataclass
class Comparator:
    proc: procs.Proc
    port: int
    metrics_port: int

    def samples(self) -> dict[tuple[str, str], float]:
        """(series name, the reason or result label) -> value, from its /metrics."""
        text = call(self.metrics_port, "GET", "/metrics").body.decode()
        out: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                assert s.labels.get("rollout") == ROLLOUT, s
                key = s.labels.get("result") or s.labels.get("reason") or s.labels.get("le", "")
                out[(s.name, key)] = s.value
        return out

    def value(self, name: str, key: str = "") -> float:
        return self.samples()[(name, key)]

    def wait_value(
        self, name: str, key: str, predicate: Callable[[float], bool], what: str
    ) -> None:
        procs.wait_until(lambda: predicate(self.value(name, key)), 30, what, self.proc)

    def settled(self) -> bool:
        """No copy under way (each counted once it finished)."""
        return self.value("modelrollout_shadow_in_flight") == 0


@pytest.fixture
def model_server(spawn: Spawn) -> Callable[..., ModelServer]:
    def start(*args: str) -> ModelServer:
        port = free_port()
        argv = [sys.executable, SERVER, "--host", "127.0.0.1", "--port", str(port), *args]
        server = ModelServer(spawn("modelserver", argv), port)
        procs.wait_until(lambda: _answers(port, "/healthz"), 20, "the model server", server.proc)
        return server

    return start


@pytest.fixture
def comparator(spawn: Spawn) -> Callable[..., Comparator]:
    """`comparator(stable_url, candidate_url, *flags, env=...)`, once /healthz answers."""

    def start(
        stable: str, candidate: str, *args: str, env: dict[str, str] | None = None
    ) -> Comparator:
        port, metrics_port = free_port(), free_port()
        argv = [
            sys.executable, "-m", "modelrollout.shadow",
            f"--listen=127.0.0.1:{port}", f"--metrics-listen=127.0.0.1:{metrics_port}",
            f"--stable={stable}", f"--candidate={candidate}", f"--rollout={ROLLOUT}", *args,
        ]  # fmt: skip
        shadow = Comparator(spawn("shadow", argv, env=env), port, metrics_port)
        procs.wait_until(
            lambda: _answers(metrics_port, "/healthz") and _listening(port),
            30,
            "the comparator",
            shadow.proc,
        )
        return shadow

    return start


def _answers(port: int, path: str) -> bool:
    try:
        return call(port, "GET", path).status == 200
    except OSError:
        return False


def _listening(port: int) -> bool:
    try:
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).connect()
    except OSError:
        return False
    return True


# -- Prometheus: the match rate as the rollout's gate computes it ------------------------

COMPARISONS = f'modelrollout_shadow_comparisons_total{{rollout="{ROLLOUT}"}}'
MATCH_RATE = (
    f'sum(increase(modelrollout_shadow_comparisons_total{{rollout="{ROLLOUT}",result="match"}}[10m]))'
    f" / sum(increase({COMPARISONS}[10m]))"
)


def scrape(prometheus: Prometheus, shadow: Comparator) -> None:
    """Point Prometheus at the comparator; return once it holds the three result
    series, at 0 before any traffic, so increase() counts every comparison."""
    prometheus.set_targets([{"targets": [f"127.0.0.1:{shadow.metrics_port}"]}])
    result = prometheus.wait_for(COMPARISONS, lambda r: len(r) == 3)
    assert {r["metric"]["result"]: float(r["value"][1]) for r in result} == {
        "match": 0.0, "mismatch": 0.0, "error": 0.0,
    }  # fmt: skip


def counted(prometheus: Prometheus, total: int) -> dict[str, float]:
    """The comparison counters once Prometheus has scraped `total` of them."""
    result = prometheus.wait_for(
        COMPARISONS, lambda r: sum(float(x["value"][1]) for x in r) == total
    )
    return {r["metric"]["result"]: float(r["value"][1]) for r in result}


def match_rate(prometheus: Prometheus) -> float:
    (sample,) = prometheus.query(MATCH_RATE)["result"]
    return float(sample["value"][1])


def send(shadow: Comparator, features: list[Obj], stable: ModelServer, clients: int = 4) -> None:
    """Each row through the comparator (`clients` at a time); every answer must be the
    stable's own, as it answers the same row directly."""

    def check(row: Obj) -> None:
        via = predict(shadow.port, row)
        direct = predict(stable.port, row)
        assert via.status == direct.status == 200
        assert via.json() == direct.json(), row
        assert via.header("Content-Type") == direct.header("Content-Type")
        assert via.header("Server") == direct.header("Server") == ["modelserver/1"]

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(check, features))  # re-raises the first failed check


# -- the match rate ----------------------------------------------------------------------

RULES = ["--compare=$.score~1e-9", "--compare=$.version"]


def test_an_identical_candidate_has_a_match_rate_of_one(
    model_server: Callable[..., ModelServer],
    comparator: Callable[..., Comparator],
    prometheus: Prometheus,
) -> None:
    stable, candidate = model_server("--version", "v1"), model_server("--version", "v1")
    shadow = comparator(stable.url, candidate.url, *RULES)
    scrape(prometheus, shadow)
    send(shadow, rows(60), stable)
    assert counted(prometheus, 60) == {"match": 60, "mismatch": 0, "error": 0}
    assert match_rate(prometheus) == 1.0
    assert candidate.requests() == 60  # every request was copied (share 1)
    latency = prometheus.query(
        f'modelrollout_shadow_candidate_latency_seconds_count{{rollout="{ROLLOUT}"}}'
    )["result"]
    assert [float(r["value"][1]) for r in latency] == [60.0]


def test_a_candidate_differing_on_15_percent_has_a_match_rate_near_85_percent(
    model_server: Callable[..., ModelServer],
    comparator: Callable[..., Comparator],
    prometheus: Prometheus,
) -> None:
    stable = model_server("--version", "v1")
    candidate = model_server("--version", "v1", "--disagree", "0.15", "--seed", "13")
    shadow = comparator(stable.url, candidate.url, *RULES)
    scrape(prometheus, shadow)
    n = 400
    send(shadow, rows(n), stable)
    counts = counted(prometheus, n)
    assert counts["error"] == 0
    rate = match_rate(prometheus)
    assert rate == pytest.approx(counts["match"] / n, rel=1e-12)
    # Binomial(400, 0.85): sd 0.018; 4.5 sd either side fails by chance ~1e-5.
    bound = 4.5 * math.sqrt(0.85 * 0.15 / n)
    assert abs(rate - 0.85) <= bound, (rate, counts)


def test_the_client_sees_only_the_stable_answers(
    model_server: Callable[..., ModelServer],
    comparator: Callable[..., Comparator],
    prometheus: Prometheus,
) -> None:
    """Stable v1, candidate v2: they differ in `version` on every answer, and every
    client answer is v1, byte for byte the stable's (but its Date)."""
    stable, candidate = model_server("--version", "v1"), model_server("--version", "v2")
    shadow = comparator(stable.url, candidate.url, *RULES)
    scrape(prometheus, shadow)
    send(shadow, rows(40), stable)
    for row in rows(5):
        via, direct = predict(shadow.port, row), predict(stable.port, row)
        assert via.json()["version"] == "v1"
        assert via.body == direct.body
        assert via.fields("Date") == direct.fields("Date")
    # Bad input reaches the stable and its 400 reaches the client; it is not compared.
    bad = call(shadow.port, "POST", "/predict", b"{not json")
    assert bad.status == 400
    assert "not JSON" in bad.json()["error"]
    assert call(shadow.port, "GET", "/nowhere").status == 404
    assert counted(prometheus, 45) == {"match": 0, "mismatch": 45, "error": 0}
    assert match_rate(prometheus) == 0.0
    procs.wait_until(shadow.settled, 10, "the copies to finish", shadow.proc)
    assert shadow.value("modelrollout_shadow_uncompared_total", "stable_status") == 2
    assert shadow.value("modelrollout_shadow_requests_total") == 47


# -- the candidate never affects the client ---------------------------------------------


def test_a_candidate_slower_than_the_timeout_never_delays_the_client(
    model_server: Callable[..., ModelServer],
    comparator: Callable[..., Comparator],
    prometheus: Prometheus,
) -> None:
    """The candidate sleeps a minute before each answer; the comparator gives up after
    a second. The clients have all their answers while it has answered none."""
    stable = model_server("--version", "v1")
    candidate = model_server("--version", "v1", "--added-latency", "60")
    shadow = comparator(stable.url, candidate.url, *RULES, "--candidate-timeout=1")
    scrape(prometheus, shadow)
    send(shadow, rows(5), stable)
    assert candidate.requests() == 0  # not one candidate answer yet, and the clients have theirs
    assert counted(prometheus, 5) == {"match": 0, "mismatch": 0, "error": 5}
    assert shadow.value("modelrollout_shadow_candidate_errors_total", "timeout") == 5
    assert candidate.requests() == 0  # still asleep: every copy was cut by the timeout
    # Timeouts are errors, not latencies: nothing answered, nothing observed.
    assert shadow.value("modelrollout_shadow_candidate_latency_seconds_count") == 0


def test_a_flood_with_a_slow_candidate_drops_copies_and_holds_the_in_flight_cap(
    model_server: Callable[..., ModelServer],
    comparator: Callable[..., Comparator],
    prometheus: Prometheus,
) -> None:
    stable = model_server("--version", "v1")
    candidate = model_server("--version", "v1", "--added-latency", "60")
    cap = 4
    shadow = comparator(
        stable.url, candidate.url, *RULES, "--candidate-timeout=2", f"--max-in-flight={cap}"
    )
    scrape(prometheus, shadow)
    seen: list[float] = []
    done = threading.Event()

    def watch() -> None:  # the in-flight gauge, as often as /metrics answers
        while not done.is_set():
            seen.append(shadow.value("modelrollout_shadow_in_flight"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    n, clients = 256, 32
    try:
        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(lambda row: predict(shadow.port, row), rows(n)))
        procs.wait_until(shadow.settled, 30, "the copies to time out", shadow.proc)
    finally:
        done.set()
        watcher.join()
    assert [a.status for a in answers] == [200] * n
    assert {a.json()["version"] for a in answers} == {"v1"}
    assert max(seen) <= cap, max(seen)
    dropped = shadow.value("modelrollout_shadow_dropped_total", "in_flight_limit")
    assert dropped > 0  # a copy is only dropped while `cap` are under way
    # Every request was either copied (and timed out) or dropped; none was lost.
    counts = counted(prometheus, n - int(dropped))
    assert counts == {"match": 0, "mismatch": 0, "error": n - dropped}
    peak = prometheus.query(
        f'max_over_time(modelrollout_shadow_in_flight{{rollout="{ROLLOUT}"}}[10m])'
    )["result"]
    assert 0 < float(peak[0]["value"][1]) <= cap
    assert candidate.requests() == 0


# -- what passes through ----------------------------------------------------------------


@dataclass
class Recorder:
    """A plain HTTP server that records each request as it arrived and answers a fixed,
    gzip-encoded JSON: to see on the wire what the comparator forwards."""

    answer: bytes
    requests: list[tuple[str, str, list[tuple[str, str]], bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Recorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                recorder.requests.append((self.command, self.path, self.headers.items(), body))
                payload = gzip.compress(recorder.answer)
                self.send_response(201, "Made")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Set-Cookie", "a=1")
                self.send_header("Set-Cookie", "b=2")
                self.send_header("X-Model", "recorder")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorders() -> Iterator[tuple[Recorder, Recorder]]:
    answer = json.dumps({"score": 0.25, "label": "ok"}).encode()
    with Recorder(answer) as stable, Recorder(answer) as candidate:
        yield stable, candidate


def test_requests_and_answers_pass_through_unchanged(
    recorders: tuple[Recorder, Recorder], comparator: Callable[..., Comparator]
) -> None:
    stable, candidate = recorders
    shadow = comparator(stable.url, candidate.url, "--compare=$.score~0.01", "--max-body=4096")
    body = json.dumps({"features": ROW}).encode()
    answer = call(
        shadow.port, "PUT", "/v1/models/ranker:predict?explain=true&x=%20y", body,
        **{"Content-Type": "application/json", "X-Request-Id": "abc", "Connection": "keep-alive"},
    )  # fmt: skip
    # The client gets the stable's status, reason, headers (repeats too) and its
    # still-encoded body.
    assert (answer.status, answer.header("X-Model"), answer.header("Set-Cookie")) == (
        201, ["recorder"], ["a=1", "b=2"],
    )  # fmt: skip
    assert answer.header("Content-Encoding") == ["gzip"]
    assert gzip.decompress(answer.body) == stable.answer

    ((method, path, headers, got),) = stable.requests
    assert (method, path, got) == ("PUT", "/v1/models/ranker:predict?explain=true&x=%20y", body)
    sent = {name.title(): value for name, value in headers}  # names are case-insensitive
    assert sent["Content-Type"] == "application/json"
    assert sent["X-Request-Id"] == "abc"
    assert sent["Host"] == stable.url.removeprefix("http://")
    assert sent["X-Forwarded-For"] == "127.0.0.1"
    assert sent["Content-Length"] == str(len(body))
    # a proxy adds no defaults of its own, and hop-by-hop headers stay behind
    assert "User-Agent" not in sent
    assert "Accept" not in sent
    assert "Accept-Encoding" not in sent
    assert "keep-alive" not in sent.get("Connection", "").lower()

    procs.wait_until(lambda: len(candidate.requests) == 1, 10, "the copy", shadow.proc)
    ((c_method, c_path, c_headers, c_body),) = candidate.requests
    assert (c_method, c_path, c_body) == (method, path, body)
    copy = {name.title(): value for name, value in c_headers}
    assert copy["X-Modelrollout-Shadow"] == "1"
    assert copy["X-Request-Id"] == "abc"
    # The stable's gzip answer is decoded for the comparison: the answers match.
    shadow.wait_value("modelrollout_shadow_comparisons_total", "match", lambda v: v == 1, "a match")

    # A body over --max-body reaches the stable whole, and is not copied.
    big = json.dumps({"features": ROW, "pad": "x" * 5000}).encode()
    assert call(shadow.port, "POST", "/predict", big).status == 201
    assert stable.requests[-1][3] == big
    assert shadow.value("modelrollout_shadow_dropped_total", "body_too_large") == 1
    assert len(candidate.requests) == 1

    # A chunked body within --max-body reaches both whole, framed by a Content-Length.
    connection = http.client.HTTPConnection("127.0.0.1", shadow.port, timeout=30)
    chunks = [body[:10], body[10:]]
    connection.request("POST", "/predict", body=iter(chunks), encode_chunked=True)
    response = connection.getresponse()
    assert (response.status, gzip.decompress(response.read())) == (201, stable.answer)
    connection.close()
    assert stable.requests[-1][3] == body
    procs.wait_until(lambda: len(candidate.requests) == 2, 10, "the second copy", shadow.proc)
    assert candidate.requests[-1][3] == body
    shadow.wait_value("modelrollout_shadow_comparisons_total", "match", lambda v: v == 2, "2")


def test_a_stable_that_is_down_gets_the_client_a_clear_502(
    model_server: Callable[..., ModelServer], comparator: Callable[..., Comparator]
) -> None:
    candidate = model_server("--version", "v1")
    closed = free_port()  # nothing listens there
    shadow = comparator(f"http://127.0.0.1:{closed}", candidate.url, *RULES)
    answer = predict(shadow.port, ROW)
    assert answer.status == 502
    assert "the stable model is unreachable" in answer.json()["error"]
    procs.wait_until(shadow.settled, 10, "the copy", shadow.proc)
    assert shadow.value("modelrollout_shadow_uncompared_total", "stable_error") == 1
    assert shadow.value("modelrollout_shadow_comparisons_total", "error") == 0
    assert shadow.proc.alive()


def test_follow_rollout_without_credentials_refuses_to_start(spawn: Spawn, tmp_path: Path) -> None:
    argv = [
        sys.executable, "-m", "modelrollout.shadow", "--stable=http://127.0.0.1:1",
        "--candidate=http://127.0.0.1:2", f"--rollout={ROLLOUT}", "--follow-rollout",
        f"--listen=127.0.0.1:{free_port()}", f"--metrics-listen=127.0.0.1:{free_port()}",
    ]  # fmt: skip
    proc = spawn("shadow", argv, env={"KUBECONFIG": str(tmp_path / "missing")})
    assert proc.popen is not None
    assert proc.popen.wait(30) == 2
    assert "--follow-rollout needs in-cluster credentials or a kubeconfig" in proc.tail()


# -- --follow-rollout against the real API server --------------------------------------


def chart_rbac(helm: str, control_plane: ControlPlane, namespace: str) -> Path:
    """The chart's ServiceAccount, Role and RoleBinding for the comparator, applied; a
    kubeconfig with that ServiceAccount's token."""
    values = {
        "shadowComparator": {
            "enabled": True,
            "rollout": ROLLOUT,
            "stable": "http://stable:8080",
            "candidate": "http://candidate:8080",
        }
    }
    docs = yaml.safe_load_all(
        render(helm, values, "--show-only", "templates/shadow.yaml", namespace=namespace)
    )
    rbac = [d for d in docs if d and d["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    assert sorted(d["kind"] for d in rbac) == ["Role", "RoleBinding", "ServiceAccount"]
    control_plane.apply("\n---\n".join(yaml.safe_dump(d) for d in rbac) + "\n")
    account = next(d["metadata"]["name"] for d in rbac if d["kind"] == "ServiceAccount")
    user = f"system:serviceaccount:{namespace}:{account}"
    procs.wait_until(
        lambda: control_plane.kubectl(
            "auth", "can-i", "get", f"modelrollouts.rollouts.mlops.io/{ROLLOUT}", f"--as={user}",
            "-n", namespace,
        ).strip() == "yes",
        10,
        "the comparator's Role to reach the authorizer",
    )  # fmt: skip
    token = control_plane.kubectl("create", "token", account, "-n", namespace).strip()
    return control_plane.kubeconfig_for_token(token)


def test_follow_rollout_shadows_only_while_the_rollout_mirrors(
    helm: str,
    control_plane: ControlPlane,
    k8s: kubernetes.client.ApiClient,
    namespace: str,
    model_server: Callable[..., ModelServer],
    comparator: Callable[..., Comparator],
) -> None:
    custom = kubernetes.client.CustomObjectsApi(k8s)
    kubeconfig = chart_rbac(helm, control_plane, namespace)
    rollout = objects.rollout(ROLLOUT, "ranker-v1", "ranker-v2", {"replicas": {"totalReplicas": 4}})
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rollout)

    def mirroring(value: bool) -> None:
        patch = {"status": {"mirroring": value}}
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, ROLLOUT, patch
        )

    stable, candidate = model_server("--version", "v1"), model_server("--version", "v1")
    shadow = comparator(
        stable.url, candidate.url, *RULES, "--follow-rollout", "--follow-interval=0.2",
        f"--namespace={namespace}", env={"KUBECONFIG": str(kubeconfig)},
    )  # fmt: skip
    share = "modelrollout_shadow_share"

    def copies_after(n: int) -> float:
        """Send n requests (answered by the stable); the candidate's count after them."""
        send(shadow, rows(n), stable)
        procs.wait_until(shadow.settled, 10, "the copies", shadow.proc)
        return candidate.requests()

    # No status.mirroring yet: nothing is copied.
    read = f"modelrollout {namespace}/{ROLLOUT} status.mirroring is false"
    procs.wait_until(lambda: read in shadow.proc.tail(), 30, "a first read", shadow.proc)
    assert shadow.value(share) == 0
    assert copies_after(10) == 0

    mirroring(True)
    shadow.wait_value(share, "", lambda v: v == 1, "share 1 once the rollout mirrors")
    assert copies_after(10) == 10
    assert shadow.value("modelrollout_shadow_comparisons_total", "match") == 10

    mirroring(False)
    shadow.wait_value(share, "", lambda v: v == 0, "share 0 once the mirror stage is over")
    assert copies_after(10) == 10  # no more copies

    # Unreadable (its RoleBinding gone): the last known share holds, counted, no crash.
    mirroring(True)
    shadow.wait_value(share, "", lambda v: v == 1, "share 1 again")
    control_plane.kubectl("delete", "rolebinding", "-n", namespace, "-l",
                          "app.kubernetes.io/component=shadow-comparator")  # fmt: skip
    errors = "modelrollout_shadow_follow_errors_total"
    shadow.wait_value(errors, "forbidden", lambda v: v >= 1, "a forbidden read")
    mirroring(False)  # it cannot see this
    before = shadow.value(errors, "forbidden")
    shadow.wait_value(errors, "forbidden", lambda v: v >= before + 3, "more forbidden reads")
    assert shadow.value(share) == 1
    assert copies_after(10) == 20
    assert shadow.proc.alive()

    # Readable again, it sees the change it missed.
    chart_rbac(helm, control_plane, namespace)
    shadow.wait_value(share, "", lambda v: v == 0, "share 0 once it can read again")

    # A rollout that no longer exists mirrors nothing.
    mirroring(True)
    shadow.wait_value(share, "", lambda v: v == 1, "share 1 before the rollout goes")
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, ROLLOUT)
    shadow.wait_value(share, "", lambda v: v == 0, "share 0 once the rollout is gone")
    assert shadow.value(errors, "not_found") >= 1
    assert copies_after(10) == 20
    assert "cannot read modelrollout" in shadow.proc.tail(200)
