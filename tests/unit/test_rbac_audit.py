"""The least-privilege check's logic (tests/testbed/rbac_audit.py) on small made-up
audit events and rules: it must fail on a surplus grant and on a missing one. The
real check runs on the suites' audit logs (`make rbac-audit`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from testbed.audit import SESSION
from testbed.helm import rbac_templates
from testbed.rbac_audit import SUITES, Grant, Request, compare, grants, incomplete, requests

OPERATOR = "system:serviceaccount:ns:r1-modelrollout-operator"
OTHER = "system:serviceaccount:ns:r2-modelrollout-operator"

RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: r1, namespace: ns}
rules:
  - apiGroups: [apps]
    resources: [deployments]
    verbs: [get, patch]
  - apiGroups: [""]
    resources: [secrets]
    resourceNames: [token]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: r1-reads}
rules:
  - apiGroups: [""]
    resources: [namespaces]
    verbs: [list]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: r1}
"""


def event(verb: str, group: str, resource: str, **ref: str) -> dict[str, Any]:
    user = ref.pop("user", OPERATOR)
    subresource = ref.pop("subresource", "")
    object_ref = {"apiGroup": group, "resource": resource, **ref}
    if subresource:
        object_ref["subresource"] = subresource
    return {
        "stage": "ResponseComplete",
        "verb": verb,
        "user": {"username": user},
        "objectRef": object_ref,
        "annotations": {"authorization.k8s.io/decision": "allow"},
    }


def parsed(*events: dict[str, Any]) -> list[Request]:
    return list(requests(json.dumps(e) for e in events))


EVERY_GRANT_USED = [
    event("get", "apps", "deployments", namespace="ns", name="a"),
    event("patch", "apps", "deployments", namespace="ns", name="a"),
    event("get", "", "secrets", namespace="ns", name="token"),
    event("list", "", "namespaces"),
]


def test_rules_become_one_grant_per_verb_and_resource() -> None:
    assert grants(RBAC) == {
        Grant("Role", "get", "apps", "deployments", ()),
        Grant("Role", "patch", "apps", "deployments", ()),
        Grant("Role", "get", "", "secrets", ("token",)),
        Grant("ClusterRole", "list", "", "namespaces", ()),
    }


def test_every_request_granted_and_every_grant_used_passes() -> None:
    verdict = compare({OPERATOR: grants(RBAC)}, parsed(*EVERY_GRANT_USED))
    assert verdict.ok
    assert verdict.used["get apps/deployments in a namespace"] == 1


def test_a_grant_nothing_used_fails() -> None:
    seen = parsed(*EVERY_GRANT_USED[1:])  # no get on deployments
    verdict = compare({OPERATOR: grants(RBAC)}, seen)
    assert not verdict.ok
    assert [str(g) for g in verdict.unused] == ["Role: get apps/deployments"]
    assert verdict.ungranted == {}


def test_a_use_nothing_granted_fails() -> None:
    extra = event("watch", "apps", "deployments", namespace="ns")
    verdict = compare({OPERATOR: grants(RBAC)}, parsed(*EVERY_GRANT_USED, extra))
    assert not verdict.ok
    assert [str(r) for r in verdict.ungranted] == ["watch apps/deployments in a namespace"]


@pytest.mark.parametrize(
    "stray",
    [
        event("get", "", "secrets", namespace="ns", name="other"),  # not a named Secret
        event("get", "apps", "deployments", name="a"),  # cluster-wide, with a Role only
        event("get", "apps", "deployments", subresource="scale", namespace="ns", name="a"),
    ],
)
def test_names_scope_and_subresources_must_match_too(stray: dict[str, Any]) -> None:
    verdict = compare({OPERATOR: grants(RBAC)}, parsed(*EVERY_GRANT_USED, stray))
    assert len(verdict.ungranted) == 1


def test_a_refused_request_is_reported_as_refused() -> None:
    refused = event("delete", "apps", "deployments", namespace="ns", name="a")
    refused["annotations"]["authorization.k8s.io/decision"] = "forbid"
    verdict = compare({OPERATOR: grants(RBAC)}, parsed(*EVERY_GRANT_USED, refused))
    (request,) = verdict.ungranted
    assert not request.allowed


def test_a_refusal_by_the_charts_resource_names_is_least_privilege_at_work() -> None:
    """A test that asks for a Secret the chart does not name proves the restriction;
    the same read answered (not refused) would mean the names are not enforced."""
    refused = event("get", "", "secrets", namespace="ns", name="other")
    refused["annotations"]["authorization.k8s.io/decision"] = "forbid"
    verdict = compare({OPERATOR: grants(RBAC)}, parsed(*EVERY_GRANT_USED, refused))
    assert verdict.ok
    assert [(str(r), r.name) for r in verdict.withheld or {}] == [
        ("get core/secrets in a namespace", "other")
    ]


def test_an_apply_that_creates_its_object_uses_create_too() -> None:
    created = event("patch", "apps", "deployments", namespace="ns", name="a")
    created["responseStatus"] = {"code": 201}
    updated = event("patch", "apps", "deployments", namespace="ns", name="a")
    updated["responseStatus"] = {"code": 200}
    assert [r.verb for r in parsed(created)] == ["patch", "create"]
    assert [r.verb for r in parsed(updated)] == ["patch"]
    verdict = compare({OPERATOR: grants(RBAC)}, parsed(*EVERY_GRANT_USED, created))
    assert [str(r) for r in verdict.ungranted] == ["create apps/deployments in a namespace"]


def test_other_users_and_idle_installs_take_no_part() -> None:
    stranger = event("delete", "", "pods", namespace="ns", user="system:serviceaccount:x:y")
    # OTHER holds the same RBAC but never ran: its grants are not "unused".
    accounts = {OPERATOR: grants(RBAC), OTHER: grants(RBAC)}
    assert compare(accounts, parsed(*EVERY_GRANT_USED, stranger)).ok


def test_only_answered_resource_requests_by_the_account_itself_count() -> None:
    discovery = event("get", "", "")
    del discovery["objectRef"]
    started = event("watch", "apps", "deployments", namespace="ns") | {"stage": "ResponseStarted"}
    impersonated = event("get", "", "pods", namespace="ns") | {
        "impersonatedUser": {"username": OPERATOR}
    }
    assert parsed(discovery, started, impersonated) == []


def session(root: Path, suite: str, **changes: Any) -> None:
    run = {
        "args": [SUITES[suite]], "exitstatus": 0, "collected": 9, "deselected": 0,
        "keyword": "", "markexpr": "", "passed": 9, "skipped": 0, "failed": 0,
    } | changes  # fmt: skip
    (root / suite).mkdir(parents=True, exist_ok=True)
    (root / suite / SESSION).write_text(json.dumps(run))


def test_only_whole_passing_runs_of_both_suites_are_trusted(tmp_path: Path) -> None:
    assert len(incomplete(tmp_path)) == 2
    session(tmp_path, "integration")
    session(tmp_path, "e2e")
    assert incomplete(tmp_path) == []
    for partial in (
        {"args": ["tests/integration/test_chart.py"]},
        {"keyword": "peering"},
        {"deselected": 3},
        {"skipped": 1},
        {"exitstatus": 1},
    ):
        session(tmp_path, "integration", **partial)
        (problem,) = incomplete(tmp_path)
        assert problem.startswith("integration: ")


def test_the_leases_role_is_judged_with_the_rest_in_leader_election_mode() -> None:
    """`--chart-now` re-renders what an install recorded: the Lease's Role too."""
    plain = rbac_templates({})
    assert plain == ["--show-only", "templates/rbac.yaml"]
    leading = rbac_templates({"highAvailability": {"mode": "leaderElection"}})
    assert leading == [*plain, "--show-only", "templates/leader-election.yaml"]
    assert rbac_templates({"highAvailability": {"mode": "peering"}}) == plain
