"""The TCP proxy in front of a real HTTP server on loopback: each mode does to a
client what the soak counts on (testbed/tcpproxy.py)."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from testbed.tcpproxy import TcpProxy


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the operator's client uses

    def do_GET(self) -> None:
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the resets and timeouts below are the point, not news


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    server = Server(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with TcpProxy(server.server_address[1]) as proxy:
        yield proxy
    server.shutdown()
    server.server_close()


def get(connection: http.client.HTTPConnection) -> bytes:
    connection.request("GET", "/")
    return connection.getresponse().read()


def connect(proxy: TcpProxy, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)


def test_pass_forwards_both_ways_on_one_connection(proxy: TcpProxy) -> None:
    connection = connect(proxy)
    assert get(connection) == b"hello"
    assert get(connection) == b"hello"
    assert proxy.accepted == 1


def test_latency_delays_each_way_and_still_answers(proxy: TcpProxy) -> None:
    proxy.set_mode("latency", 0.3)
    started = time.monotonic()
    assert get(connect(proxy)) == b"hello"
    assert time.monotonic() - started >= 0.6  # a request one way, its answer the other


def test_a_stall_holds_requests_until_it_ends(proxy: TcpProxy) -> None:
    proxy.set_mode("stall")
    with pytest.raises(TimeoutError):
        get(connect(proxy, timeout=0.5))
    patient = connect(proxy, timeout=10)
    answers: list[bytes] = []
    waiting = threading.Thread(target=lambda: answers.append(get(patient)))
    waiting.start()
    time.sleep(0.5)
    assert answers == []
    proxy.set_mode("pass")
    waiting.join(10)
    assert answers == [b"hello"]


def test_reset_cuts_open_connections_and_refuses_new_ones(proxy: TcpProxy) -> None:
    open_one = connect(proxy)
    assert get(open_one) == b"hello"
    proxy.set_mode("reset")
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        get(open_one)
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        get(connect(proxy))
    assert proxy.resets >= 2
    proxy.set_mode("pass")
    assert get(connect(proxy)) == b"hello"
