"""promote, promote-full, abort, retry, pause, resume: the action annotation, set only
when the operator would act on it.

The operator ignores (with a Warning Event) an action that makes no sense in the
rollout's phase; refusing here tells the person at once, and writes nothing.
`docs/argocd/actions/discovery.lua` applies the same table, and a unit test holds
the two to it.
"""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException

from modelrollout.api.resource import ACTION_ANNOTATION
from modelrollout.api.status import TERMINAL_PHASES
from modelrollout.plugin.kube import Cluster, PluginError, Rollout

ACTIONS = ("promote", "promote-full", "abort", "retry", "pause", "resume")
_STOPPED = frozenset({"RolledBack", "Failed"})
_STEERING = frozenset({"promote", "promote-full", "pause", "abort"})
_ATTEMPTS = 3


def refusal(action: str, phase: str, manual_pause: bool, spec_paused: bool) -> str | None:
    """Why `action` would do nothing to a rollout in this state, or None when it acts."""
    if action in _STEERING and phase in TERMINAL_PHASES:
        return f"the rollout has ended ({phase}); {_after_end(phase)}"
    if action in _STEERING and phase == "RollingBack":
        return "the rollout is rolling back; wait for RolledBack, then retry"
    if action in ("promote", "promote-full") and spec_paused:
        return "paused by spec.paused, which holds it whatever the action: set it to false"
    if action == "retry" and phase not in _STOPPED:
        return f"retry starts a stopped rollout again; this one is {phase}"
    if action == "pause" and manual_pause:
        return "the rollout is already paused by the pause action"
    if action == "resume":
        if phase != "Paused":
            return f"resume ends a pause; this rollout is {phase}"
        if spec_paused:
            return "paused by spec.paused, which holds it whatever the action: set it to false"
        if not manual_pause:
            return "the rollout is paused by the operator, not by the pause action; promote ends it"
    return None


def _after_end(phase: str) -> str:
    return (
        "retry starts it again"
        if phase in _STOPPED
        else "a new candidate in the spec starts a new run"
    )


def apply(cluster: Cluster, name: str, action: str) -> tuple[Rollout, str | None]:
    """Check the phase and write the annotation onto the version checked; when the
    rollout changes in between, check again. Returns the rollout written and the
    action it replaced, one the operator had not taken yet."""
    for _ in range(_ATTEMPTS):
        rollout = cluster.rollout(name)
        spec_paused = rollout.spec.paused if rollout.spec else False
        status = rollout.status
        why = refusal(action, status.phase, status.manual_pause, spec_paused)
        if why:
            raise PluginError(f"{action} refused for modelrollout {name}: {why}")
        try:
            written = cluster.annotate(rollout, ACTION_ANNOTATION, action)
            return written, rollout.annotations.get(ACTION_ANNOTATION)
        except ApiException as error:
            if error.status != 409:
                raise
    raise PluginError(f"modelrollout {name} kept changing; try again")
