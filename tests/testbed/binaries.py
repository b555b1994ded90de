"""Control-plane binaries (built by hack/testbin/build.sh) and third-party CRDs."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from testbed.paths import CRD_CACHE, ROOT, TESTBIN, MissingPrerequisite, require_tool

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)

# Module, version and the CRD files inside it; versions must be served by the Go proxy.
CRD_SOURCES = {
    "gateway-api": ("sigs.k8s.io/gateway-api", "v1.4.1", "config/crd/standard/*.yaml"),
    "istio": ("istio.io/api", "v1.24.2", "kubernetes/customresourcedefinitions.gen.yaml"),
}


def ensure_binaries() -> Path:
    """Folder holding BINARIES; builds them on first use (hack/testbin/build.sh).

    The first build compiles Kubernetes (minutes); later calls reuse the cached folder.
    """
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not (assets and all((Path(assets) / b).exists() for b in BINARIES)):
        require_tool("go", hint="Install Go or set KUBEBUILDER_ASSETS to prebuilt binaries.")
    result = subprocess.run([str(TESTBIN / "build.sh")], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"hack/testbin/build.sh failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


PROMETHEUS_BUILD = ROOT / "hack" / "prometheus" / "build.sh"
PROMETHEUS_TOOLS = {"prometheus": "PROMETHEUS_BIN", "promtool": "PROMTOOL_BIN"}


@functools.cache
def prometheus_tool(name: str) -> str:
    """`prometheus` or `promtool`: $PROMETHEUS_BIN / $PROMTOOL_BIN if set, else the build
    of hack/prometheus/go.mod (made on first use, minutes; cached after), else PATH."""
    env_var = PROMETHEUS_TOOLS[name]
    if os.environ.get(env_var):
        return require_tool(name, env_var)
    if shutil.which("go"):
        env = {k: v for k, v in os.environ.items() if k not in PROMETHEUS_TOOLS.values()}
        result = subprocess.run([str(PROMETHEUS_BUILD)], capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"hack/prometheus/build.sh failed:\n{result.stderr[-4000:]}")
        return str(Path(result.stdout.strip().splitlines()[-1]) / name)
    return require_tool(
        name,
        hint=f"Install Go (hack/prometheus/build.sh builds it), set ${env_var}, or put it on PATH.",
    )


def _module_dir(module: str, version: str) -> Path:
    # Run outside any module so `go mod download` never touches a go.mod.
    with tempfile.TemporaryDirectory() as empty:
        out = subprocess.run(
            ["go", "mod", "download", "-json", f"{module}@{version}"],
            cwd=empty,
            capture_output=True,
            text=True,
        )
    info = json.loads(out.stdout or "{}")
    if out.returncode != 0 or "Dir" not in info:
        raise RuntimeError(f"go mod download {module}@{version}: {info.get('Error') or out.stderr}")
    return Path(info["Dir"])


def ensure_crds() -> dict[str, Path]:
    """Gateway API (standard channel) and Istio CRDs in `.cache/crds/<name>/`."""
    folders: dict[str, Path] = {}
    for name, (module, version, pattern) in CRD_SOURCES.items():
        folder = CRD_CACHE / name
        stamp = folder / ".version"
        if not (stamp.exists() and stamp.read_text() == f"{module}@{version}"):
            require_tool("go", hint=f"Go is needed to download {module}@{version}.")
            files = sorted(_module_dir(module, version).glob(pattern))
            if not files:
                raise MissingPrerequisite(f"{module}@{version} has no {pattern}")
            # Built aside and renamed into place: parallel test workers may race here.
            CRD_CACHE.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=CRD_CACHE))
            for f in files:
                (staging / f.name).write_bytes(f.read_bytes())  # module cache files are 0444
            (staging / ".version").write_text(f"{module}@{version}")
            shutil.rmtree(folder, ignore_errors=True)
            try:
                staging.rename(folder)
            except OSError:  # another worker put it there first
                shutil.rmtree(staging, ignore_errors=True)
        folders[name] = folder
    return folders
