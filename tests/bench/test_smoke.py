"""The benchmarks' smoke, so `make bench-peers` and `make bench-scale` cannot rot: one
trial of each tool at its fastest setting, and 50 rollouts for half a minute. They
assert that each harness measured what it reports, never how fast anything was."""

from __future__ import annotations

import pytest

from bench import peers, scale
from testbed import MissingPrerequisite, in_ci
from testbed.peers import ARGO_ROLLOUTS, FLAGGER, Peer, PeerBuildError, binary

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _need(peer: Peer) -> None:
    try:
        binary(peer)
    except (MissingPrerequisite, PeerBuildError) as error:
        if in_ci():
            pytest.fail(f"peer missing under CI: {error}", pytrace=False)
        pytest.skip(f"peer missing: {error}")


def test_breach_to_rollback_smoke() -> None:
    _need(FLAGGER)
    _need(ARGO_ROLLOUTS)
    trials = peers.run(
        1,
        [peers.SETTINGS["fastest"]],
        peers.TOOLS,
        print,
        arm_timeout=420,
        rollback_timeout=120,
    )
    assert {t.tool for t in trials} == set(peers.TOOLS)
    for trial in trials:
        assert not trial.note, (trial.tool, trial.note)
        assert trial.seconds is not None
        assert trial.visible_at is not None
        assert trial.zero_at is not None
        assert trial.zero_at >= trial.visible_at
    print(peers.table(trials))


def test_scale_smoke() -> None:
    result = scale.run_ours(50, 30, print, None)
    print(scale.report([result]))
    assert not result.notes, result.notes
    assert result.lag, "no analysis tick was seen on the watch"
    assert result.ready_seconds
    assert len(result.carrying) == 50
    assert result.cpu_seconds > 0
    assert result.rss_mb > 0
    assert result.queries_per_second > 0
    assert any(verb == "PATCH" for verb, _ in result.requests)
    assert result.tick_lag.get(float("inf"), 0) > 0, "no pass in the operator's tick-lag histogram"
    assert result.pass_seconds.get(float("inf"), 0) > 0
    assert result.writes_answered > 0, "no status write counted by kube-apiserver"
    assert result.grouped_answers, "no rollout's query was answered by a shared query"
