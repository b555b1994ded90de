"""A real Prometheus on loopback whose scrape targets tests change at runtime.

Scrape and rule evaluation run every second and targets come from a file_sd file
re-read every second, so a test sees a new exporter's samples within a few seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import yaml

from testbed import procs
from testbed.binaries import prometheus_tool

Result = list[dict[str, Any]]

_CONFIG = {
    "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
    "scrape_configs": [
        {
            "job_name": "testbed",
            "file_sd_configs": [{"files": ["targets.json"], "refresh_interval": "1s"}],
        }
    ],
}


class Prometheus:
    """Prometheus 3 built from its Go module (or $PROMETHEUS_BIN, see `prometheus_tool`)
    with a tsdb in a temp folder."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.binary = prometheus_tool("prometheus")
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="testbed-prom-"))
        self.port = procs.free_port()
        self.proc: procs.Proc | None = None
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(_CONFIG))
        self.set_targets([])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Self:
        """Start (or start again, same port and tsdb) and wait until ready."""
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> None:
        """Start (or start again, same port and tsdb) without waiting: see `ready()`."""
        self.proc = procs.spawn(
            "prometheus",
            [
                self.binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            cwd=self.workdir,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        procs.wait_until(self.ready, timeout, "prometheus /-/ready", self.proc)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def set_targets(self, groups: Sequence[dict[str, Any]]) -> None:
        """Replace the scrape targets: `[{"targets": ["127.0.0.1:PORT"], "labels": {...}}]`.

        Written atomically, so Prometheus never reads half a file.
        """
        tmp = self.workdir / "targets.json.tmp"
        tmp.write_text(json.dumps(list(groups)))
        os.replace(tmp, self.workdir / "targets.json")

    def query(self, promql: str, at: float | None = None) -> dict[str, Any]:
        """Instant query; returns the response's `data` ({"resultType", "result"})."""
        params = {"query": promql} | ({"time": str(at)} if at is not None else {})
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as err:
            body = json.load(err)
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body.get('error', body)}")
        data: dict[str, Any] = body["data"]
        return data

    def wait_for(
        self, promql: str, predicate: Callable[[Result], bool], timeout: float = 30.0
    ) -> Result:
        """Poll `promql` until `predicate(result)` holds; return that result."""
        deadline = time.monotonic() + timeout
        result: Result = []
        while time.monotonic() < deadline:
            result = self.query(promql)["result"]
            if predicate(result):
                return result
            time.sleep(0.5)
        raise TimeoutError(f"{promql!r} did not satisfy the predicate in {timeout}s: {result}")

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL, as in an outage; `restart()` brings it back on the same port."""
        if self.proc is not None:
            procs.kill(self.proc)
            self.proc = None

    def restart(self, timeout: float = 30.0) -> Self:
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop and delete the tsdb."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def values(result: Result) -> list[float]:
    """The sample values of an instant-vector result."""
    return [float(r["value"][1]) for r in result]
