"""Kubeconfig files with embedded credentials that always verify the server's CA."""

from __future__ import annotations

import argparse
import base64
import os
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from testbed.paths import CACHE


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path, server: str, ca_cert: Path, user: dict[str, Any], name: str = "testbed"
) -> Path:
    """Write a single-context kubeconfig (mode 0600) for `user` and return its path."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    os.replace(tmp, path)
    return path


def cert_user(cert: Path, key: Path) -> dict[str, Any]:
    return {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}


def token_user(token: str) -> dict[str, Any]:
    return {"token": token}


def client_from_kubeconfig(path: Path) -> kubernetes.client.ApiClient:
    """A new ApiClient for the kubeconfig at `path` (close it, or use it as a context)."""
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(path)
    )
    return client


def add_kubeconfig_argument(parser: argparse.ArgumentParser) -> None:
    """`--kubeconfig` for a helper process run against a cluster (as `args.kubeconfig`)."""
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=Path(os.environ.get("KUBECONFIG") or CACHE / "kubeconfig"),
        help="default: $KUBECONFIG, else .cache/kubeconfig (make cluster-up)",
    )
