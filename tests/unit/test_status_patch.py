from __future__ import annotations

from modelrollout.kube.status import merge_patch


def test_merge_patch_sends_only_changes_and_nulls_removed_keys() -> None:
    old = {"phase": "Pending", "drift": {"aggregate": 0.1, "verdict": "stable"}, "stage": 0}
    new = {"phase": "Progressing", "drift": {"verdict": "stable"}, "weight": 5, "stage": 0}
    assert merge_patch(old, new) == {
        "phase": "Progressing",
        "drift": {"aggregate": None},
        "weight": 5,
    }


def test_lists_are_replaced_whole() -> None:
    assert merge_patch({"history": [1, 2]}, {"history": [1, 2, 3]}) == {"history": [1, 2, 3]}
