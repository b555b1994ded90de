"""The chart's alerts and Grafana dashboard: valid for Prometheus and Grafana, tested
alert by alert with promtool, and built only from metrics the operator exports.

promtool is built with Prometheus from its Go module (hack/prometheus/build.sh), or
taken from $PROMTOOL_BIN or PATH. Without Go or any of those these tests skip, and
fail under CI=true.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from modelrollout import telemetry
from testbed.binaries import prometheus_tool
from testbed.paths import ROOT, MissingPrerequisite, in_ci

FILES = ROOT / "charts" / "modelrollout-operator" / "files"
ALERTS = FILES / "alerts.yaml"
DASHBOARD = FILES / "dashboard.json"
ALERT_TESTS = Path(__file__).parent / "promtool" / "alerts.test.yaml"

# What the operator exports (operator/modelrollout/telemetry.py), as Prometheus names
# them; histograms by their series. Alerts and dashboard may use these and nothing else.
EXPORTED = {
    "modelrollout_info": {"version"},
    "modelrollout_leader": set(),
    "modelrollout_tick_lag_seconds_bucket": {"le"},
    "modelrollout_phase": {"namespace", "name", "phase"},
    "modelrollout_stage": {"namespace", "name"},
    "modelrollout_weight": {"namespace", "name"},
    "modelrollout_analysis_unavailable": {"namespace", "name"},
    "modelrollout_analysis_checks_total": {"namespace", "name", "metric", "verdict"},
    "modelrollout_rollbacks_total": {"namespace", "name", "reason"},
    "modelrollout_drift_psi": {"namespace", "name", "feature"},
    "modelrollout_reconcile_duration_seconds_bucket": {"le"},
    "modelrollout_reconcile_errors_total": set(),
    "modelrollout_kube_reads_total": {"kind"},
    "modelrollout_prometheus_query_duration_seconds_bucket": {"le"},
    "modelrollout_prometheus_query_errors_total": {"kind"},
    "modelrollout_prometheus_grouped_answers_total": set(),
    "modelrollout_notifications_total": {"receiver", "result"},
    "modelrollout_notification_queue_length": {"receiver"},
}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance", "pod"}

# Grafana's variables, as a query would see them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "2m",
    "$__interval": "30s",
    "$__range": "6h",
    "$namespace": ".*",
    "$rollout": ".*",
}
PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan",
}  # fmt: skip


def promtool() -> str:
    try:
        return prometheus_tool("promtool")
    except MissingPrerequisite as err:
        if in_ci():
            pytest.fail(f"promtool is needed under CI: {err}", pytrace=False)
        pytest.skip(str(err))


def run_promtool(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def panel_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target, with Grafana's variables filled in."""
    return [
        (f"panel {panel['id']} {panel['title']!r} {target['refId']}", grafana(target["expr"]))
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]


def grafana(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """Identifiers in metric position: what is left after removing strings, label
    matchers, ranges, groupings, function calls, keywords and numbers."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", expr)
    names = set(re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr))
    return names - PROMQL_WORDS


def label_names(expr: str) -> set[str]:
    """Label names in matchers and in by/without/on/ignoring clauses."""
    found: set[str] = set()
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        found |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        found |= {label.strip() for label in clause.split(",") if label.strip()}
    return found


def check_parses(tmp_path: Path, queries: list[tuple[str, str]]) -> None:
    """promtool parses only rules files: each query becomes a recording rule."""
    rules = [{"record": f"check:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]
    path = tmp_path / "queries.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        listing = "\n".join(f"  check:query_{i}: {w}: {e}" for i, (w, e) in enumerate(queries))
        pytest.fail(f"promtool rejects a query:\n{result.stderr}\nqueries:\n{listing}")


def check_uses_only_exported(where: str, expr: str) -> None:
    used = metric_names(expr)
    assert used, f"{where}: no metric in {expr!r}"
    unknown = used - EXPORTED.keys()
    assert not unknown, f"{where}: {sorted(unknown)} not exported by the operator: {expr!r}"
    known = set().union(*(EXPORTED[m] for m in used)) | TARGET_LABELS
    stray = label_names(expr) - known
    assert not stray, f"{where}: labels {sorted(stray)} are on none of {sorted(used)}: {expr!r}"


# -- the contract with the operator ------------------------------------------------


def test_the_metric_list_is_what_the_operator_exports() -> None:
    exported: dict[str, set[str]] = {}
    for metric in vars(telemetry).values():
        if isinstance(metric, MetricWrapperBase):
            name, kind = metric._name, metric._type
            name = {"counter": f"{name}_total", "histogram": f"{name}_bucket"}.get(kind, name)
            labels = set(metric._labelnames) | ({"le"} if kind == "histogram" else set())
            exported[name] = labels
    assert exported == EXPORTED


# -- alerts ----------------------------------------------------------------------------


def test_promtool_accepts_the_rules_file() -> None:
    out = run_promtool("check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(alert_rules())} rules found" in out


def test_promtool_unit_tests_pass() -> None:
    out = run_promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert "SUCCESS" in out


def test_the_alerts_are_the_agreed_ones() -> None:
    assert {rule["alert"] for rule in alert_rules()} == {
        "ModelRolloutRolledBack",
        "ModelRolloutPausedTooLong",
        "ModelRolloutStalled",
        "ModelRolloutAnalysisUnavailable",
        "ModelRolloutOperatorDown",
        "ModelRolloutReconcileErrors",
    }


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    suite = yaml.safe_load(ALERT_TESTS.read_text())
    assert suite["rule_files"] == [str(Path("../../..") / ALERTS.relative_to(ROOT))]
    fires: set[str] = set()
    silent: set[str] = set()
    for test in suite["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested staying silent"


def test_every_alert_has_a_severity_and_explains_itself() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


def test_alerts_use_only_exported_metrics() -> None:
    for rule in alert_rules():
        check_uses_only_exported(rule["alert"], rule["expr"])


# -- dashboard -------------------------------------------------------------------------


def test_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"] == "modelrollout-operator"
    assert board["title"]
    assert isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            # The data source variable, so the dashboard works with any Prometheus.
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"], panel["title"]


def test_dashboard_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard()):
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


def test_dashboard_has_the_agreed_panels() -> None:
    queries = " ".join(expr for _, expr in panel_queries(dashboard()))
    for needed in (
        "modelrollout_phase",
        "modelrollout_weight",
        "modelrollout_stage",
        "modelrollout_analysis_checks_total",
        "modelrollout_rollbacks_total",
        "modelrollout_drift_psi",
        "histogram_quantile(0.99, sum by (le) (rate(modelrollout_reconcile_duration_seconds",
        "modelrollout_prometheus_query_duration_seconds_bucket",
        "modelrollout_prometheus_query_errors_total",
    ):
        assert needed in queries


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    board = dashboard()
    queries = panel_queries(board)
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(SELECTOR, LABEL): the selector is PromQL.
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["definition"])
            assert match, variable["definition"]
            queries.append((f"variable {variable['name']}", grafana(match.group(1))))
    check_parses(tmp_path, queries)


def test_the_parse_check_catches_a_broken_query(tmp_path: Path) -> None:
    promtool()
    with pytest.raises(pytest.fail.Exception, match="promtool rejects a query"):
        check_parses(tmp_path, [("broken", "sum by (namespace (modelrollout_weight)")])


def test_dashboard_uses_only_exported_metrics() -> None:
    for where, expr in panel_queries(dashboard()):
        check_uses_only_exported(where, expr)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(a_bucket{x="y{z}"}[5m]))', {"a_bucket"}),
        ("a unless b offset 10m or absent(c)", {"a", "b", "c"}),
        ("histogram_quantile(0.99, x) > 0.5", {"x"}),
        ("max by (namespace, name) (up == 1) and on (namespace) y", {"up", "y"}),
    ],
)
def test_metric_names_finds_what_a_query_reads(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
