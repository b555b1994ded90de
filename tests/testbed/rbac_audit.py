"""Least privilege, proven from the audit log: `python -m testbed.rbac_audit` (`make
rbac-audit`, the last step of `make test`).

The integration and end-to-end suites run the operator under the chart's own
ServiceAccount and RBAC, with kube-apiserver's audit log on (`testbed.audit`). This
compares, over all the accounts the operator ran as, every request in those logs with
every rule the chart granted them, both ways:
- a request that no rule grants fails (the API server refused it, or a grant is
  missing that only a test which has not run would have shown), except a refusal of a
  name outside a rule's resourceNames: a test asking for a Secret the chart does not
  name proves the restriction, and the report lists it;
- a server-side apply that created its object (a patch answered 201) uses `create`
  as well, as the API server authorizes it;
- a rule, resource and verb that no request used fails: a surplus grant to remove.
It also checks that the cluster-wide render (no watchNamespaces: a ClusterRole, as in
manifests/base) grants what the namespaced render grants and no more, so the proof
covers it too, though the tests run the operator in watched namespaces only.

After changing the chart, `python -m testbed.rbac_audit --chart-now` (PYTHONPATH=tests)
judges the chart as it is now against the last audit, without running the suites.

It trusts only complete runs: each suite's `session.json` must say that the whole
suite ran and passed with nothing skipped or deselected. Otherwise it says what is
missing and fails, without a verdict on the grants.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from testbed.audit import SESSION
from testbed.paths import CACHE

AUDIT_ROOT = CACHE / "audit"
SUITES = {"integration": "tests/integration", "e2e": "tests/e2e"}
NAMESPACED, CLUSTER = "namespaced", "cluster"


@dataclass(frozen=True)
class Request:
    """One audited request, reduced to what RBAC decides on."""

    user: str
    verb: str
    group: str
    resource: str  # with its subresource: "modelrollouts/status"
    name: str
    namespaced: bool
    allowed: bool

    def __str__(self) -> str:
        where = "in a namespace" if self.namespaced else "cluster-wide"
        return f"{self.verb} {self.group or 'core'}/{self.resource} {where}"


@dataclass(frozen=True)
class Grant:
    """One verb on one resource of one rule, from a Role or a ClusterRole."""

    kind: str  # Role or ClusterRole
    verb: str
    group: str
    resource: str
    names: tuple[str, ...]

    def allows(self, request: Request) -> bool:
        return (
            request.verb == self.verb
            and request.group == self.group
            and request.resource == self.resource
            and (self.kind == "ClusterRole" or request.namespaced)
            and (not self.names or request.name in self.names)
        )

    def __str__(self) -> str:
        names = f" (only {', '.join(self.names)})" if self.names else ""
        return f"{self.kind}: {self.verb} {self.group or 'core'}/{self.resource}{names}"


def grants(manifests: str) -> set[Grant]:
    """Every (verb, resource) of every Role and ClusterRole rule in `manifests`."""
    found: set[Grant] = set()
    for doc in yaml.safe_load_all(manifests):
        if not doc or doc.get("kind") not in ("Role", "ClusterRole"):
            continue
        for rule in doc.get("rules") or []:
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        names = tuple(sorted(rule.get("resourceNames") or ()))
                        found.add(Grant(doc["kind"], verb, group, resource, names))
    return found


def requests(lines: Iterable[str]) -> Iterator[Request]:
    """Resource requests in audit-log lines (JSON events); non-resource URLs (discovery,
    /version) are left out: RBAC's built-in roles grant those to everyone."""
    for line in lines:
        if not line.strip():
            continue
        event = json.loads(line)
        ref = event.get("objectRef")
        if event.get("stage") != "ResponseComplete" or not ref or event.get("impersonatedUser"):
            continue
        resource = ref.get("resource", "")
        if ref.get("subresource"):
            resource += f"/{ref['subresource']}"
        decision = (event.get("annotations") or {}).get("authorization.k8s.io/decision")
        request = Request(
            user=event["user"]["username"],
            verb=event["verb"],
            group=ref.get("apiGroup", ""),
            resource=resource,
            name=ref.get("name", ""),
            namespaced=bool(ref.get("namespace")),
            allowed=decision != "forbid",
        )
        yield request
        # A server-side apply that creates its object is authorized as a create too
        # (the patch handler asks RBAC for both); the log shows one patch, answered 201.
        if request.verb == "patch" and (event.get("responseStatus") or {}).get("code") == 201:
            yield replace(request, verb="create")


@dataclass
class Verdict:
    ungranted: dict[Request, int]  # requests no rule allows, with their counts
    unused: list[Grant]  # grants no request used
    used: Counter[str]  # what was used, for the report
    withheld: dict[Request, int] | None = None  # refused by a rule's resourceNames

    @property
    def ok(self) -> bool:
        return not self.ungranted and not self.unused


def compare(accounts: dict[str, set[Grant]], seen: Iterable[Request]) -> Verdict:
    """Requests of `accounts` (user -> its grants) against those grants, both ways.

    A grant counts as used when any account holding it made a request it allows; an
    account that made no request at all (an install whose operator never ran, such as
    the chart tests' RBAC probes) takes no part."""
    mine = [r for r in seen if r.user in accounts]
    active = {r.user for r in mine}
    ungranted: Counter[Request] = Counter()
    withheld: Counter[Request] = Counter()
    used_grants: set[Grant] = set()
    used: Counter[str] = Counter()
    for request in mine:
        allowing = {g for g in accounts[request.user] if g.allows(request)}
        used_grants |= allowing
        used[str(request)] += 1
        if allowing:
            continue
        if not request.allowed and _outside_names(accounts[request.user], request):
            withheld[_anonymous(request)] += 1  # least privilege at work: a test asked
        else:
            ungranted[_anonymous(request)] += 1
    held = set().union(*(accounts[user] for user in active)) if active else set()
    unused = sorted(held - used_grants, key=str)
    return Verdict(dict(ungranted), unused, used, dict(withheld))


def _outside_names(held: set[Grant], request: Request) -> bool:
    """Whether a grant covers this verb and resource for other names only: the API
    server's refusal is then the chart's resourceNames doing their job."""
    return any(
        g.names and request.name not in g.names
        for g in held
        if (g.verb, g.group, g.resource) == (request.verb, request.group, request.resource)
    )


def _anonymous(request: Request) -> Request:
    """The request without the per-test account, so repeats fold together."""
    return Request("", request.verb, request.group, request.resource, request.name,
                   request.namespaced, request.allowed)  # fmt: skip


def incomplete(root: Path) -> list[str]:
    """Why the audit under `root` cannot be trusted; empty if it can."""
    problems: list[str] = []
    for suite, path in SUITES.items():
        record = root / suite / SESSION
        if not record.exists():
            problems.append(f"{suite}: no audited run (`make {suite}` records one)")
            continue
        run = json.loads(record.read_text())
        if run["args"] != [path]:
            problems.append(f"{suite}: ran {run['args']}, not the whole of {path}")
        for field, why in (
            ("exitstatus", "failed"),
            ("deselected", "deselected tests"),
            ("skipped", "skipped tests"),
            ("keyword", "-k"),
            ("markexpr", "-m"),
        ):
            if run[field]:
                problems.append(f"{suite}: {why} ({run[field]})")
    return problems


def load(root: Path, helm: str | None = None) -> tuple[dict[str, set[Grant]], list[Request]]:
    """Each account's grants and every request. With `helm`, the grants come from the
    chart as it is now, rendered with each install's recorded values, instead of from
    what the suites installed: a changed chart is checked against the last audit."""
    from testbed.helm import rbac_templates, render

    accounts: dict[str, set[Grant]] = {}
    seen: list[Request] = []
    for suite in SUITES:
        for record in sorted((root / suite / "rbac").glob("*.json")):
            installed = json.loads(record.read_text())
            manifests = installed["manifests"]
            if helm is not None:
                namespace = installed["user"].split(":")[2]
                shown = rbac_templates(installed["values"])
                manifests = render(
                    helm, installed["values"], *shown,
                    release=installed["release"], namespace=namespace,
                )  # fmt: skip
            accounts.setdefault(installed["user"], set()).update(grants(manifests))
        for log in sorted((root / suite).glob("apiserver-*.log")):
            with log.open() as lines:
                seen.extend(requests(lines))
    return accounts, seen


def _rules_by_kind(manifests: str) -> dict[str, list[Any]]:
    by_kind: dict[str, list[Any]] = {}
    for doc in yaml.safe_load_all(manifests):
        if doc and doc.get("kind") in ("Role", "ClusterRole"):
            by_kind.setdefault(doc["kind"], []).append(doc["rules"])
    return by_kind


def modes_agree(helm: str) -> list[str]:
    """The cluster-wide ClusterRole grants what one watched namespace's Role and the
    cluster-reads ClusterRole grant, less the Namespace reads kopf makes only when it
    watches chosen namespaces; likewise for the peering objects of each mode."""
    from testbed.helm import render

    problems: list[str] = []
    shown = ["--show-only", "templates/rbac.yaml"]
    for peering in (False, True):
        values: dict[str, Any] = {"prometheusSecrets": ["s"]}
        if peering:
            values["highAvailability"] = {"mode": "peering"}
        wide = _rules_by_kind(render(helm, values, *shown))
        narrow = _rules_by_kind(render(helm, {**values, "watchNamespaces": ["a"]}, *shown))
        (cluster_rules,) = wide["ClusterRole"]
        (role_rules,) = narrow["Role"]
        (reads,) = narrow["ClusterRole"]
        expected = [
            {**r, "resources": ["clusterkopfpeerings"]} if r["resources"] == ["kopfpeerings"]
            else r
            for r in role_rules
        ] + [r for r in reads if r["resources"] != ["namespaces"]]  # fmt: skip
        if sorted(map(json.dumps, cluster_rules)) != sorted(map(json.dumps, expected)):
            problems.append(
                f"cluster-wide ClusterRole (peering={peering}) differs from the namespaced"
                f" render:\n  cluster-wide: {cluster_rules}\n  namespaced:   {expected}"
            )
    return problems


def report(verdict: Verdict, accounts: int) -> str:
    lines = [f"requests of the operator's ServiceAccounts ({accounts} installs):"]
    lines += [f"  {count:7d}  {what}" for what, count in sorted(verdict.used.items())]
    for request, count in sorted(verdict.ungranted.items(), key=lambda rc: str(rc[0])):
        refused = "" if request.allowed else ", refused by the API server"
        name = f" {request.name}" if request.name else ""
        lines.append(f"NOT GRANTED: {request}{name} ({count}x{refused})")
    for request, count in sorted((verdict.withheld or {}).items(), key=lambda rc: str(rc[0])):
        lines.append(f"refused as the chart meant (resourceNames): {request} {request.name}"
                     f" ({count}x)")  # fmt: skip
    lines += [f"NEVER USED: {grant}" for grant in verdict.unused]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=AUDIT_ROOT, help="audit folder")
    parser.add_argument(
        "--chart-now",
        action="store_true",
        help="judge the chart as it is now (each install re-rendered with its values)"
        " instead of what the suites installed",
    )
    args = parser.parse_args(argv)
    problems = incomplete(args.root)
    if problems:
        print("rbac-audit: no verdict, the audit is incomplete:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        print("Run `make integration e2e rbac-audit` (or `make test`).", file=sys.stderr)
        return 2
    from testbed.helm import helm_binary

    helm = helm_binary()
    accounts, seen = load(args.root, helm if args.chart_now else None)
    verdict = compare(accounts, seen)
    print(report(verdict, len(accounts)))
    problems = modes_agree(helm)
    for problem in problems:
        print(problem)
    if verdict.ok and not problems:
        print("rbac-audit: every request was granted and every grant was used")
        return 0
    print("rbac-audit: FAILED (charts/modelrollout-operator/templates/rbac.yaml)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
