"""Certificates and keys for a throwaway control plane, made with the openssl CLI.

The API server gets a real CA-signed serving certificate so every client verifies TLS
exactly as it would against a production cluster.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from testbed.paths import require_tool

_LEAF_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
{san}
"""


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def controller_manager_cert(self) -> Path:
        return self.dir / "controller-manager.crt"

    @property
    def controller_manager_key(self) -> Path:
        return self.dir / "controller-manager.key"

    @property
    def scheduler_cert(self) -> Path:
        return self.dir / "scheduler.crt"

    @property
    def scheduler_key(self) -> Path:
        return self.dir / "scheduler.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"


def _openssl(template: str, **paths: str | Path) -> None:
    """Run `openssl` with `template`'s words, each formatted with `paths` (spaces are safe)."""
    args = [word.format(**paths) for word in template.split()]
    openssl = require_tool("openssl", hint="Install it (apt-get install openssl).")
    result = subprocess.run([openssl, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def _leaf(pki: Pki, name: str, subject: str, usage: str, san: str = "") -> None:
    key, csr, crt, ext = (pki.dir / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    ext.write_text(_LEAF_EXT.format(usage=usage, san=f"subjectAltName = {san}" if san else ""))
    _openssl(
        "req -new -newkey rsa:2048 -nodes -keyout {key} -out {csr} -subj {subj}",
        key=key,
        csr=csr,
        subj=subject,
    )
    _openssl(
        "x509 -req -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial -days 365 -sha256"
        " -extfile {ext} -out {crt}",
        csr=csr,
        ca=pki.ca_cert,
        ca_key=pki.ca_key,
        ext=ext,
        crt=crt,
    )


def make_pki(directory: Path) -> Pki:
    """CA, API server serving cert, client certs and service-account key pair.

    kube-controller-manager and kube-scheduler get the identities the bootstrap RBAC
    policy grants their permissions to, so they run with exactly a cluster's rights.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    _openssl(
        "req -x509 -newkey rsa:2048 -nodes -days 365 -sha256 -keyout {key} -out {crt}"
        " -subj /CN=testbed-ca -addext basicConstraints=critical,CA:TRUE"
        " -addext keyUsage=critical,keyCertSign,cRLSign",
        key=pki.ca_key,
        crt=pki.ca_cert,
    )
    _leaf(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        "serverAuth",
        "IP:127.0.0.1, DNS:localhost, IP:10.0.0.1, DNS:kubernetes.default.svc",
    )
    _leaf(pki, "admin", "/O=system:masters/CN=admin", "clientAuth")
    _leaf(pki, "controller-manager", "/CN=system:kube-controller-manager", "clientAuth")
    _leaf(pki, "scheduler", "/CN=system:kube-scheduler", "clientAuth")
    _openssl("genrsa -out {key} 2048", key=pki.sa_key)
    _openssl("rsa -in {key} -pubout -out {pub}", key=pki.sa_key, pub=pki.sa_pub)
    return pki
