"""Every write etcd stores under a key prefix, in order, read from etcd itself.

The recorder watches etcd rather than the API server: etcd's revisions order writes
to different objects, its history survives an API-server restart (a watch through the
API server may answer 410 Gone and skip versions), and a watch resumed after an etcd
restart from the next revision misses nothing. It uses etcd's JSON gateway
(POST /v3/watch), so no gRPC client is needed.

Custom resources are stored as JSON; built-in kinds as Kubernetes protobuf, of which
`deployment_replicas` reads the two fields the soak needs.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

RETRY_SECONDS = 0.5


@dataclass(frozen=True)
class Write:
    """One stored version (or a deletion, `value` None) and when the recorder saw it."""

    key: str
    revision: int
    value: bytes | None
    seen: float  # time.time() on arrival


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _range_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class EtcdWatch:
    """Watch `prefix` from `start_revision` on in a thread, calling `on_write` for each
    write in revision order; reconnects from the next revision after any break."""

    def __init__(
        self, url: str, prefix: str, on_write: Callable[[Write], None], start_revision: int = 1
    ) -> None:
        self.url, self.prefix, self.on_write = url, prefix.encode(), on_write
        self.next_revision = start_revision
        self.reconnects = 0
        self.lost: list[str] = []  # history etcd no longer had (compaction): a gap
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._connection: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"etcd {prefix}")

    def start(self) -> EtcdWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the stream's socket down (closing it from here would wait on the reader)."""
        self._stop.set()
        connection = self._connection
        if connection is not None and connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._stream()
            except Exception as error:  # etcd down or restarting: resume from the next one
                if self._stop.is_set():
                    return
                self.errors.append(f"{time.time():.1f} {type(error).__name__}: {error}"[:300])
            self.reconnects += 1
            self._stop.wait(RETRY_SECONDS)

    def _stream(self) -> None:
        request = {
            "create_request": {
                "key": _b64(self.prefix),
                "range_end": _b64(_range_end(self.prefix)),
                "start_revision": str(self.next_revision),
            }
        }
        address = urllib.parse.urlsplit(self.url)
        connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=5)
        self._connection = connection
        try:
            connection.request("POST", "/v3/watch", json.dumps(request))
            response = connection.getresponse()
            if response.status != 200:
                raise RuntimeError(f"watch answered {response.status}: {response.read()[:200]!r}")
            assert connection.sock is not None
            connection.sock.settimeout(None)  # a quiet key range sends nothing for minutes
            while not self._stop.is_set():
                line = response.readline()
                if not line:
                    raise ConnectionError("the watch stream ended")
                if line.strip():
                    self._handle(json.loads(line))
        finally:
            connection.close()

    def _handle(self, message: dict[str, Any]) -> None:
        if "error" in message:
            raise RuntimeError(f"watch error: {message['error']}")
        result = message.get("result") or {}
        compacted = int(result.get("compact_revision") or 0)
        if compacted:
            self.lost.append(f"revisions {self.next_revision}..{compacted - 1} compacted away")
            self.next_revision = compacted
            raise RuntimeError("watch canceled by compaction")
        if result.get("canceled"):
            raise RuntimeError(f"watch canceled: {result.get('cancel_reason', '')}")
        now = time.time()
        for event in result.get("events") or ():
            kv = event["kv"]
            revision = int(kv["mod_revision"])
            if revision < self.next_revision:
                continue  # already delivered before a reconnect
            deleted = event.get("type") == "DELETE"
            value = None if deleted else base64.b64decode(kv.get("value", ""))
            self.on_write(Write(base64.b64decode(kv["key"]).decode(), revision, value, now))
            self.next_revision = revision + 1


def latest_revisions(url: str, prefix: str) -> dict[str, int]:
    """Each key's current mod revision under `prefix`: what a caught-up watch has seen."""
    raw = prefix.encode()
    request = {"key": _b64(raw), "range_end": _b64(_range_end(raw)), "keys_only": True}
    response = requests.post(f"{url}/v3/kv/range", json=request, timeout=10)
    response.raise_for_status()
    return {
        base64.b64decode(kv["key"]).decode(): int(kv["mod_revision"])
        for kv in response.json().get("kvs") or ()
    }


# -- Kubernetes protobuf (k8s.io/apimachinery runtime.Unknown around apps/v1) ------------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes) -> dict[int, list[Any]]:
    """A protobuf message's fields by number: ints for varints, bytes otherwise."""
    out: dict[int, list[Any]] = {}
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i : i + length], i + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i : i + size], i + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


PROTOBUF_MAGIC = b"k8s\x00"


def deployment_replicas(value: bytes) -> tuple[str, int | None]:
    """(name, spec.replicas) of a Deployment as kube-apiserver stores it."""
    if not value.startswith(PROTOBUF_MAGIC):
        obj = json.loads(value)
        return obj["metadata"]["name"], obj.get("spec", {}).get("replicas")
    unknown = _fields(value[len(PROTOBUF_MAGIC) :])
    deployment = _fields(unknown[2][0])  # Unknown.raw
    metadata = _fields(deployment[1][0])  # Deployment.metadata
    spec = _fields(deployment[2][0]) if 2 in deployment else {}
    replicas = spec.get(1, [None])[0]  # DeploymentSpec.replicas (optional int32)
    return metadata[1][0].decode(), replicas
