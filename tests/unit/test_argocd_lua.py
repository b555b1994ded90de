"""The Argo CD health check and actions in docs/argocd/, run as Argo CD runs them: Lua
5.1 with only the base, table and package libraries open (no string, no math), `obj`
a global holding the resource; then the argocd-cm snippet in docs/gitops.md is held
to the files."""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51  # type: ignore[import-untyped]

from modelrollout.plugin.actions import ACTIONS, refusal

DOCS = Path(__file__).resolve().parents[2] / "docs"
ARGOCD = DOCS / "argocd"
ANNOTATION = "rollouts.mlops.io/action"
PHASES = ("Pending", "Progressing", "Paused", "Succeeded", "RollingBack", "RolledBack", "Failed")
Obj = dict[str, Any]


def run_lua(script: Path, obj: Obj) -> Any:
    """Execute `script` with `obj` as Argo CD passes it, and return its result as Python."""
    lua = lua51.LuaRuntime()
    lua.execute("string, math, io, debug, coroutine, os, load, loadstring, dofile = nil")
    lua.globals().obj = lua.table_from(obj, recursive=True)
    return to_python(lua.execute(script.read_text()))


def to_python(value: Any) -> Any:
    if lua51.lua_type(value) != "table":
        return value
    items = {k: to_python(v) for k, v in value.items()}
    if items and all(isinstance(k, int) for k in items):
        return [items[i] for i in sorted(items)]
    return items


def rollout(phase: str | None = "Progressing", generation: int = 3, **status: Any) -> Obj:
    obj: Obj = {
        "apiVersion": "rollouts.mlops.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": "ranker", "namespace": "ml", "generation": generation},
        "spec": {"stable": {"deployment": "v1"}, "candidate": {"deployment": "v2"}},
    }
    if phase is not None:
        obj["status"] = {
            "phase": phase,
            "observedGeneration": generation,
            "stage": 2,
            "stageCount": 4,
            "weight": 5,
            "message": "stage 2 of 4 at 5%: 3m left of 5m",
            **status,
        }
    return obj


# -- health.lua ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "health"),
    [
        ("Pending", "Progressing"),
        ("Progressing", "Progressing"),
        ("RollingBack", "Progressing"),
        ("Paused", "Suspended"),
        ("Succeeded", "Healthy"),
        ("RolledBack", "Degraded"),
        ("Failed", "Degraded"),
    ],
)
def test_health_follows_the_phase(phase: str, health: str) -> None:
    result = run_lua(ARGOCD / "health.lua", rollout(phase))
    assert result == {
        "status": health,
        "message": f"{phase}, stage 2/4 at 5%: stage 2 of 4 at 5%: 3m left of 5m",
    }


def test_a_status_older_than_the_spec_is_progressing_even_when_it_says_succeeded() -> None:
    obj = rollout("Succeeded", observedGeneration=2)
    result = run_lua(ARGOCD / "health.lua", obj)
    assert result == {
        "status": "Progressing",
        "message": "the operator has not yet acted on generation 3",
    }


def test_a_rollout_without_status_is_progressing() -> None:
    result = run_lua(ARGOCD / "health.lua", rollout(None))
    assert result["status"] == "Progressing"
    assert "waiting for the operator" in result["message"]


def test_an_unknown_phase_is_unknown_and_an_empty_message_is_left_out() -> None:
    result = run_lua(ARGOCD / "health.lua", rollout("Exploded", message=""))
    assert result == {"status": "Unknown", "message": "Exploded, stage 2/4 at 5%"}


# -- actions ------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_each_action_writes_only_its_annotation(action: str) -> None:
    obj = rollout("Paused", manualPause=True)
    obj["metadata"]["annotations"] = {"team": "ranking", ANNOTATION: "pause"}
    result = run_lua(ARGOCD / "actions" / action / "action.lua", copy.deepcopy(obj))
    expected = copy.deepcopy(obj)
    expected["metadata"]["annotations"][ANNOTATION] = action
    assert result == expected


@pytest.mark.parametrize("action", ACTIONS)
def test_each_action_adds_the_annotations_map_when_there_is_none(action: str) -> None:
    result = run_lua(ARGOCD / "actions" / action / "action.lua", rollout("Progressing"))
    assert result["metadata"]["annotations"] == {ANNOTATION: action}
    assert result["spec"] == rollout()["spec"]


def test_the_actions_directories_are_exactly_the_operators_actions() -> None:
    found = {p.parent.name for p in (ARGOCD / "actions").glob("*/action.lua")}
    assert found == set(ACTIONS)


# -- discovery.lua ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "manual_pause", "spec_paused"),
    list(itertools.product(PHASES, (False, True), (False, True))),
)
def test_discovery_enables_what_the_plugin_allows(
    phase: str, manual_pause: bool, spec_paused: bool
) -> None:
    obj = rollout(phase, manualPause=manual_pause)
    obj["spec"]["paused"] = spec_paused
    offered = run_lua(ARGOCD / "actions" / "discovery.lua", obj)
    assert set(offered) == set(ACTIONS)
    enabled = {name for name, a in offered.items() if not a["disabled"]}
    allowed = {a for a in ACTIONS if refusal(a, phase, manual_pause, spec_paused) is None}
    assert enabled == allowed
    assert all(a["displayName"] and a["iconClass"].startswith("fa ") for a in offered.values())


@pytest.mark.parametrize(
    ("phase", "manual_pause", "enabled"),
    [
        ("Progressing", False, {"promote", "promote-full", "abort", "pause"}),
        ("Paused", True, {"promote", "promote-full", "abort", "resume"}),
        ("Paused", False, {"promote", "promote-full", "abort", "pause"}),
        ("RollingBack", False, set()),
        ("Succeeded", False, set()),
        ("RolledBack", False, {"retry"}),
        ("Failed", False, {"retry"}),
    ],
)
def test_discovery_in_words(phase: str, manual_pause: bool, enabled: set[str]) -> None:
    offered = run_lua(
        ARGOCD / "actions" / "discovery.lua", rollout(phase, manualPause=manual_pause)
    )
    assert {name for name, a in offered.items() if not a["disabled"]} == enabled


def test_discovery_of_a_rollout_without_status_offers_what_a_pending_one_does() -> None:
    offered = run_lua(ARGOCD / "actions" / "discovery.lua", rollout(None))
    enabled = {name for name, a in offered.items() if not a["disabled"]}
    assert enabled == {"promote", "promote-full", "abort", "pause"}


# -- docs/gitops.md -----------------------------------------------------------------------


def _argocd_cm() -> Obj:
    text = (DOCS / "gitops.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    config_maps = [
        doc
        for block in blocks
        for doc in yaml.safe_load_all(block)
        if isinstance(doc, dict) and doc.get("metadata", {}).get("name") == "argocd-cm"
    ]
    assert len(config_maps) == 1, "docs/gitops.md shows one argocd-cm"
    data: Obj = config_maps[0]["data"]
    return data


def test_the_argocd_cm_in_the_docs_carries_the_scripts_verbatim() -> None:
    data = _argocd_cm()
    health = data["resource.customizations.health.rollouts.mlops.io_ModelRollout"]
    assert health == (ARGOCD / "health.lua").read_text()
    actions = yaml.safe_load(data["resource.customizations.actions.rollouts.mlops.io_ModelRollout"])
    assert actions["discovery.lua"] == (ARGOCD / "actions" / "discovery.lua").read_text()
    definitions = {d["name"]: d["action.lua"] for d in actions["definitions"]}
    assert definitions == {a: (ARGOCD / "actions" / a / "action.lua").read_text() for a in ACTIONS}
