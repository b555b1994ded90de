"""The comparator's flags, each also settable as MODELROLLOUT_SHADOW_<FLAG> (a flag wins).

Every value is checked before anything starts: a bad one stops the comparator with
the flag or variable that holds it and what is wrong (exit 2), never a half-working proxy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from yarl import URL

from modelrollout.shadow.compare import BadRule, Rule, parse_rule

ENV_PREFIX = "MODELROLLOUT_SHADOW_"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
T = TypeVar("T")


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    listen: Address
    metrics_listen: Address
    stable: URL
    candidate: URL
    rollout: str
    namespace: str
    share: float
    rules: tuple[Rule, ...]
    candidate_timeout: float
    stable_timeout: float
    max_in_flight: int
    max_body: int
    follow_rollout: bool
    follow_interval: float
    log_level: str


def parse_address(text: str) -> Address:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` (every interface)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return Address(host or "0.0.0.0", int(port_text))


def parse_url(text: str) -> URL:
    """An http(s) URL of a model server, optionally with a path prefix; no query."""
    try:
        url = URL(text.strip())
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a URL: {text!r}") from error
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"expected http(s)://HOST[:PORT][/PREFIX], got {text!r}")
    if url.query_string or url.fragment or url.user:
        raise ValueError(f"no query, fragment or credentials in the URL, got {text!r}")
    return url


def parse_fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ValueError(f"expected a number from 0 to 1, got {text!r}")
    return value


def parse_seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"expected seconds > 0, got {text!r}")
    return value


def parse_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise ValueError(f"expected an integer >= 1, got {text!r}")
    return value


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_rules_variable(text: str) -> list[str]:
    """MODELROLLOUT_SHADOW_COMPARE: a JSON list of rules, or one rule per line."""
    if text.lstrip().startswith("["):
        value = json.loads(text)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("expected a JSON list of strings")
        return value
    return [line for line in text.splitlines() if line.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelrollout-shadow",
        description="Answer every request from the stable model and compare a share of "
        "them with the candidate's answers, in the background. Every flag can also be "
        f"set as {ENV_PREFIX}<FLAG> (e.g. {ENV_PREFIX}CANDIDATE_TIMEOUT); a flag wins.",
    )
    add = parser.add_argument
    add(
        "--listen",
        metavar="HOST:PORT",
        help="where clients connect: HOST:PORT (default 0.0.0.0:8080)",
    )
    add(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="/metrics and /healthz: HOST:PORT (default 0.0.0.0:8081)",
    )
    add(
        "--stable",
        metavar="URL",
        help="the stable model's URL, e.g. http://ranker-stable:8080 (required)",
    )
    add("--candidate", metavar="URL", help="the candidate model's URL (required)")
    add("--rollout", metavar="NAME", help="the ModelRollout's name: the `rollout` label (required)")
    add(
        "--namespace",
        metavar="NS",
        help="the ModelRollout's namespace (default: this pod's, else default)",
    )
    add(
        "--share",
        metavar="FLOAT",
        help="fraction of requests copied to the candidate, 0..1 (default 1)",
    )
    add(
        "--compare",
        action="append",
        metavar="JSONPATH[~TOLERANCE]",
        help="repeatable: $.score~0.001 compares numbers within 0.001, $.label exactly "
        "(default: $, the whole answer, exactly)",
    )
    add(
        "--candidate-timeout",
        metavar="SECONDS",
        help="seconds for the candidate's whole answer (default 2)",
    )
    add(
        "--stable-timeout",
        metavar="SECONDS",
        help="seconds for the stable's answer before a 504 (default 60)",
    )
    add("--max-in-flight", metavar="N", help="shadow calls at once; more are dropped (default 64)")
    add(
        "--max-body",
        metavar="BYTES",
        help="bytes: larger requests or answers are not compared (default 1MiB)",
    )
    add(
        "--follow-rollout",
        action="store_const",
        const="true",
        help="shadow only while the ModelRollout's status.mirroring is true",
    )
    add(
        "--follow-interval",
        metavar="SECONDS",
        help="seconds between reads of the ModelRollout (default 5)",
    )
    add("--log-level", metavar="LEVEL", help="debug, info, warning or error (default info)")
    return parser


def parse_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    parser = _parser()
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ

    def get(name: str, convert: Callable[[str], T], default: str | None = None) -> T:
        flag = "--" + name.replace("_", "-")
        variable = ENV_PREFIX + name.upper()
        given: Any = getattr(args, name)
        source, text = (flag, given) if given is not None else (variable, env.get(variable))
        if text is None or (source == variable and not text.strip()):
            if default is None:
                parser.error(f"{flag} (or {variable}) is required")
            source, text = f"{flag} default", default
        try:
            return convert(text)
        except ValueError as error:
            parser.error(f"{source}: {error}")

    if args.compare is not None:
        rule_texts, where = args.compare, "--compare"
    else:
        where = ENV_PREFIX + "COMPARE"
        rule_texts = get("compare", parse_rules_variable, default="$")
    try:
        rules = tuple(parse_rule(text) for text in rule_texts)
    except BadRule as error:
        parser.error(f"{where}: {error}")
    if not rules:
        parser.error(f"{where}: give at least one JSONPATH[~TOLERANCE]")
    rollout = get("rollout", str).strip()
    if not rollout:
        parser.error(f"--rollout (or {ENV_PREFIX}ROLLOUT) is required")
    level = get("log_level", str, "info").strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        parser.error(f"--log-level: expected debug, info, warning or error, got {level.lower()!r}")
    return Settings(
        listen=get("listen", parse_address, "0.0.0.0:8080"),
        metrics_listen=get("metrics_listen", parse_address, "0.0.0.0:8081"),
        stable=get("stable", parse_url),
        candidate=get("candidate", parse_url),
        rollout=rollout,
        namespace=get("namespace", str, _own_namespace()).strip(),
        share=get("share", parse_fraction, "1"),
        rules=rules,
        candidate_timeout=get("candidate_timeout", parse_seconds, "2"),
        stable_timeout=get("stable_timeout", parse_seconds, "60"),
        max_in_flight=get("max_in_flight", parse_count, "64"),
        max_body=get("max_body", parse_count, str(1 << 20)),
        follow_rollout=get("follow_rollout", parse_bool, "false"),
        follow_interval=get("follow_interval", parse_seconds, "5"),
        log_level=level,
    )


def _own_namespace() -> str:
    """The pod's namespace (from its ServiceAccount mount), else `default`."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"
