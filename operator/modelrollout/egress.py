"""Where the operator may connect: an operator-level allowlist for every outbound URL.

Anyone who may create a ModelRollout chooses the addresses the operator calls, from
the operator's network position and with the credentials it holds. So every outbound
connection (Prometheus, webhooks, receivers) is checked against rules the operator's
admin sets: host patterns (`*.svc`, `prometheus.monitoring.svc.cluster.local`) and
CIDRs (`10.0.0.0/8`, `127.0.0.0/8`).

- An IP address is allowed when a CIDR rule holds it.
- A name is allowed when a pattern matches it, or else when every address it resolves
  to is allowed by a CIDR rule.
- Whatever a name matched, the addresses it resolves to must not be link-local
  (169.254.0.0/16, fe80::/10: cloud metadata services) unless a CIDR rule says so, as
  an ExternalName Service could point an allowed name there.

The check runs before any connection is made, and again on the address actually
connected to, so a name that resolves differently the second time (DNS rebinding)
cannot slip through.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

ENVIRONMENT = "MODELROLLOUT_ALLOWED_ADDRESSES"
DEFAULT = "*.svc,*.svc.cluster.local"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


class AddressNotAllowed(ConnectionError):
    """An outbound address the allowlist does not admit; nothing was sent to it. A
    ConnectionError, so an HTTP client reports it as a connection that failed."""


@dataclass(frozen=True)
class AddressPolicy:
    patterns: tuple[str, ...]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, text: str) -> AddressPolicy:
        """Comma-separated host patterns and CIDRs; ValueError names a bad item."""
        patterns: list[str] = []
        networks: list[IPNetwork] = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if "/" in item or _is_ip(item):
                try:
                    networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError as error:
                    raise ValueError(f"allowed address {item!r}: {error}") from None
            elif all(c.isalnum() or c in "-.*" for c in item):
                patterns.append(item.lower())
            else:
                raise ValueError(f"allowed address {item!r} is neither a host pattern nor a CIDR")
        return cls(tuple(patterns), tuple(networks))

    @classmethod
    def from_environment(cls, value: str | None = None) -> AddressPolicy:
        return cls.parse(value if value is not None else os.environ.get(ENVIRONMENT, DEFAULT))

    def __str__(self) -> str:
        return ",".join([*self.patterns, *(str(n) for n in self.networks)]) or "(nothing)"

    def _network_for(self, address: IPAddress) -> IPNetwork | None:
        return next((n for n in self.networks if address in n), None)

    def check_addresses(self, host: str, addresses: Sequence[str]) -> None:
        """Raise AddressNotAllowed unless `host`, resolved to `addresses`, may be called."""
        host = host.lower().rstrip(".")
        named = any(fnmatchcase(host, p) for p in self.patterns) and not _is_ip(host)
        for raw in addresses:
            address = ipaddress.ip_address(raw.split("%")[0])
            by_network = self._network_for(address) is not None
            if by_network:
                continue
            if named and not any(address in net for net in LINK_LOCAL):
                continue
            why = f"{host} resolves to {address}, " if host != str(address) else ""
            raise AddressNotAllowed(
                f"{why}which the operator's allowed addresses ({self}) do not include"
            )

    def check_url(self, url: str) -> None:
        """Before anything is sent: an address must be in a CIDR, a name must match a
        pattern or resolve into CIDRs (OSError when it does not resolve). Where a
        pattern admits a name, what it resolves to is checked on connecting."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        if not _is_ip(host) and any(fnmatchcase(host, p) for p in self.patterns):
            return
        default_port = 443 if parts.scheme == "https" else 80
        self.check_addresses(host, resolve(host, parts.port or default_port))

    def session(self) -> requests.Session:
        """A requests session that connects only where this policy allows, sends no
        proxy settings or .netrc credentials from the environment, and no redirects."""
        session = _NoRedirects()
        session.trust_env = False
        adapter = _GuardedAdapter(self)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session


class _NoRedirects(requests.Session):
    """A redirect is answered, never followed: it could lead anywhere."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["allow_redirects"] = False
        return super().request(*args, **kwargs)


def resolve(host: str, port: int) -> list[str]:
    """Every address a host name resolves to (a literal resolves to itself)."""
    if _is_ip(host):
        return [host]
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port)})


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return False
    return True


class _Guarded:
    """Mixed into urllib3's connections: check before connecting, then check the peer."""

    policy: AddressPolicy
    host: str
    port: int

    def _new_conn(self) -> socket.socket:
        self.policy.check_addresses(self.host, resolve(self.host, self.port))
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        try:
            self.policy.check_addresses(self.host, [sock.getpeername()[0]])
        except AddressNotAllowed:
            sock.close()
            raise
        return sock


class _GuardedHTTP(_Guarded, HTTPConnection):
    pass


class _GuardedHTTPS(_Guarded, HTTPSConnection):
    pass


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        http = type("Pool", (HTTPConnectionPool,), {"ConnectionCls": self._bound(_GuardedHTTP)})
        https = type("Pool", (HTTPSConnectionPool,), {"ConnectionCls": self._bound(_GuardedHTTPS)})
        self.poolmanager.pool_classes_by_scheme = {"http": http, "https": https}

    def _bound(self, connection: type[_Guarded]) -> type[_Guarded]:
        return type(connection.__name__, (connection,), {"policy": self.policy})
