"""A loopback TCP proxy whose link a test degrades at runtime: added latency, a stall,
or connection resets. It stands between a client (the operator) and a server
(Prometheus), so a test can make the path unreadable without touching either end.

Modes, switched with `set_mode` from any thread:

- `pass`: bytes flow as they come;
- `latency`: every chunk is delivered `delay` seconds after it arrived, in each
  direction (a propagation delay: chunks in flight do not wait for each other);
- `stall`: nothing is forwarded and no new connection reaches the server, as when
  packets are dropped; held bytes flow again once the stall ends, if both ends are
  still there;
- `reset`: every open connection is reset (RST) and each new one is reset at once.

The proxy runs its own asyncio loop in a daemon thread; no process is spawned.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Self

Mode = Literal["pass", "latency", "stall", "reset"]
CHUNK = 65536


@dataclass(frozen=True)
class Link:
    mode: Mode = "pass"
    delay: float = 0.0


class TcpProxy:
    """`TcpProxy(upstream_port).start()` listens on `port` (free, loopback)."""

    def __init__(self, upstream_port: int, port: int = 0, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port
        self.link = Link()
        self.accepted = 0
        self.resets = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._changed: asyncio.Event | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        self._call(self._listen)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def set_mode(self, mode: Mode, delay: float = 0.0) -> None:
        """Switch the link; `reset` also resets every connection open right now."""
        self._call(lambda: self._switch(Link(mode, delay)))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inside the loop -------------------------------------------------------------

    def _call(self, make: Callable[[], object]) -> None:
        async def run() -> None:
            result = make()
            if asyncio.iscoroutine(result):
                await result

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._changed = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):
            writer.transport.abort()

    async def _switch(self, link: Link) -> None:
        self.link = link
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()
        if link.mode == "reset":
            for writer in list(self._open):
                self._reset(writer)

    def _reset(self, writer: asyncio.StreamWriter) -> None:
        """Close with SO_LINGER 0, so the peer gets a RST rather than a FIN."""
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        self.resets += 1

    async def _passable(self) -> bool:
        """Wait while stalled; False if the link resets."""
        while self.link.mode == "stall":
            assert self._changed is not None
            await self._changed.wait()
        return self.link.mode != "reset"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._open.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            if not await self._passable():
                self._reset(writer)
                return
            up_reader, upstream = await asyncio.open_connection(*self.upstream)
            self._open.add(upstream)
            await asyncio.gather(self._pump(reader, upstream), self._pump(up_reader, writer))
        except OSError:
            pass  # the server is down, or an end went away: the client sees it close
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._open.discard(end)
                    end.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one direction; with latency, each chunk leaves `delay` after it came."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not await self._passable():
                    break
                writer.write(data)
                await writer.drain()
            writer.transport.abort()

        delivering = asyncio.ensure_future(deliver())
        try:
            while not delivering.done():
                data = await reader.read(CHUNK)
                delay = self.link.delay if self.link.mode == "latency" else 0.0
                await queue.put((time.monotonic() + delay, data))
                if not data:
                    break
            await delivering
        finally:
            delivering.cancel()
