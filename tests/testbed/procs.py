"""Process management for the test bed: spawn, track, stop, and read logs.

Every child gets its own session (so stopping it also stops anything it forked) and a
log file under `.cache/logs/`. Children of a test run also get PR_SET_PDEATHSIG so they
die with the process that spawned them, even when pytest is SIGKILLed and atexit never
runs; `detached=True` skips that for `python -m testbed up`. The kernel sends that
signal when the spawning *thread* exits, so spawn from a thread that outlives the child.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed.paths import LOG_DIR

_PR_SET_PDEATHSIG = 1


@dataclass
class Proc:
    """A spawned component: its name, Popen handle (None when attached by pid) and log."""

    name: str
    pid: int
    log: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid)

    def tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)

    def stop(self, timeout: float = 10.0) -> None:
        stop(self, timeout)


Spawn = Callable[..., Proc]  # the `spawn` fixture's type

_started: list[Proc] = []  # every process spawned here, in order (for log tails)
_running: dict[int, Proc] = {}  # non-detached processes not yet stopped


def started() -> list[Proc]:
    """All processes spawned by this Python process so far, oldest first."""
    return list(_started)


def leaked() -> list[Proc]:
    """Non-detached processes that were never stopped and are still alive."""
    return [p for p in _running.values() if p.alive()]


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def spawn(
    name: str,
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    detached: bool = False,
    log_id: str | None = None,
) -> Proc:
    """Start `argv` in a new session with stdout+stderr to `.cache/logs/<name>-<id>.log`."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{name}-{log_id or uuid.uuid4().hex[:8]}.log"
    with log.open("ab") as out:
        out.write(f"$ {' '.join(map(str, argv))}\n".encode())
        out.flush()
        popen = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=None if env is None else {**os.environ, **env},
            cwd=cwd,
            start_new_session=True,
            preexec_fn=None if detached else _die_with_parent(os.getpid()),
        )
    proc = Proc(name=name, pid=popen.pid, log=log, popen=popen)
    _started.append(proc)
    if not detached:
        _running[proc.pid] = proc
    return proc


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (works for processes we did not spawn)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by `pid`, wait, then SIGKILL it."""
    _killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    _killpg(pid, signal.SIGKILL)
    while pid_alive(pid) and time.monotonic() < deadline + 5:
        time.sleep(0.05)


def stop(proc: Proc, timeout: float = 10.0) -> None:
    """Stop `proc` and everything in its process group; idempotent."""
    if proc.popen is None:
        stop_pid(proc.pid, timeout)
    else:
        _killpg(proc.pid, signal.SIGTERM)
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait()
        _killpg(proc.pid, signal.SIGKILL)  # stragglers the leader left behind
    _running.pop(proc.pid, None)


def kill(proc: Proc) -> None:
    """SIGKILL the process group at once (to simulate a crash)."""
    _killpg(proc.pid, signal.SIGKILL)
    if proc.popen is not None:
        proc.popen.wait()
    _running.pop(proc.pid, None)


@atexit.register
def stop_all() -> None:
    """Stop every non-detached process still running, newest first."""
    for proc in reversed(list(_running.values())):
        stop(proc, timeout=5)


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file ('' if it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * lines))
            data = f.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


# Ports handed out on this machine, shared by every process of the test bed (pytest's
# workers, the backend supervisor, the chaos bed): between a pick and the child's bind
# the port is free, and two processes picking it in that gap would both publish it,
# one of them scraping or routing to the other's server without an error anywhere.
PORT_RESERVATIONS = Path(tempfile.gettempdir()) / f"testbed-ports-{os.getuid()}"
# Long enough to cover a slow child's start and a scraper still holding the address
# after its server left; a port still bound is never offered by the kernel anyway.
PORT_RESERVATION_SECONDS = 600.0


def free_port() -> int:
    """A currently free loopback TCP port that no process of the test bed on this
    machine was handed in the last PORT_RESERVATION_SECONDS."""
    PORT_RESERVATIONS.mkdir(parents=True, exist_ok=True)
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if _reserve(PORT_RESERVATIONS / str(port)):
            return port


def _reserve(path: Path) -> bool:
    """Create `path` exclusively; an expired reservation is taken over by exactly one
    claimant (the one whose rename of it succeeds)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except FileExistsError:
        pass
    try:
        if time.time() - path.stat().st_mtime < PORT_RESERVATION_SECONDS:
            return False
        expired = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        os.rename(path, expired)
    except FileNotFoundError:  # another claimant took it over first
        return False
    expired.unlink(missing_ok=True)
    return _reserve(path)


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None
) -> None:
    """Poll `check` until it is true; on timeout (or if `proc` dies) raise with its log tail."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            log = f":\n{proc.tail()}" if proc else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{log}")
        time.sleep(0.1)
