"""The CI-sized soak: 10 rollouts (6 healthy, 4 bad) under every kind of fault, from
a fixed seed, on its own control plane. On this 2-core machine it takes about three
minutes once the binaries are built; `make chaos SEED=1414 N=10 PROFILE=ci` replays it."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from chaos import invariants
from chaos.bed import open_bed
from chaos.plan import PROFILES, FaultKind, make_plan
from chaos.soak import Soak, report
from testbed import MissingPrerequisite, in_ci
from testbed.procs import Spawn

SEED, ROLLOUTS = 1414, 10


def test_a_seeded_soak_under_every_fault_keeps_every_invariant(
    spawn: Spawn, tmp_path: Path
) -> None:
    plan = make_plan(SEED, ROLLOUTS, PROFILES["ci"])
    try:
        with open_bed(tmp_path, spawn) as bed:
            evidence = Soak(plan, bed, log=print).run()
    except MissingPrerequisite as error:
        if in_ci():
            pytest.fail(f"prerequisite missing under CI: {error}", pytrace=False)
        pytest.skip(f"prerequisite missing: {error}")
    violations = invariants.check(evidence)
    text = report(evidence, violations)
    print(text)
    assert violations == [], text
    applied = {a.fault.kind for a in evidence.applied}
    assert applied == set(get_args(FaultKind)), f"faults never applied:\n{text}"
    edits = [a for a in evidence.applied if a.fault.kind == "route-edit"]
    assert edits, text
    assert edits == invariants.edits_in_flight(evidence), f"route edits not in flight:\n{text}"
    assert len(evidence.triggered) == sum(r.bad for r in plan.rollouts), text
