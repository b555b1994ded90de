"""A rollout's transitions reach real receiver processes once each, in order: its
own receiver (URL from a Secret) and the operator's (from --receivers)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed import procs

from .conftest import Api, Listener, Obj, OperatorFactory, phase, story
from .scenario import setup

STAGES = [{"weight": 10, "duration": "2s"}, {"weight": 50, "duration": "2s"}]
STAGES.append({"weight": 100, "duration": "1s"})


def events(listener: Listener) -> list[tuple[str, str]]:
    """(event, id) of each notification received, in arrival order."""
    out = []
    for request in listener.requests():
        body = json.loads(request["body"])
        out.append((body["type"].rsplit(".", 1)[-1], body["id"]))
    return out


@pytest.fixture
def listeners(
    api: Api,
    operator_factory: OperatorFactory,
    receiver: Callable[..., Listener],
    tmp_path: Path,
) -> tuple[Listener, Listener]:
    """The rollout's own receiver (its URL in a Secret) and the operator's (from
    --receivers), with the operator started to tell both."""
    own, shared = receiver(), receiver()
    api.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "receiver-url"},
            "stringData": {"url": own.url},
        }
    )
    file = tmp_path / "receivers.yaml"
    file.write_text(yaml.safe_dump([{"name": "ops", "type": "cloudevents", "url": shared.url}]))
    values: dict[str, Any] = {"prometheusSecrets": ["receiver-url"]}
    operator_factory([api.namespace], values=values, args=["--receivers", str(file)])
    return own, shared


RECEIVERS = [
    {"name": "team", "type": "cloudevents", "urlSecretRef": {"name": "receiver-url", "key": "url"}}
]


def test_a_full_rollout_is_told_once_each_in_order(
    api: Api, listeners: tuple[Listener, Listener]
) -> None:
    own, shared = listeners
    setup(api, "gatewayAPI", {"stages": STAGES}, notifications=RECEIVERS)
    done = api.wait_phase("model", "Succeeded", "RolledBack", "Failed", timeout=90)
    assert phase(done) == "Succeeded", story(done)
    expected = ["started", "stageadvanced", "stageadvanced", "succeeded"]
    for listener in (own, shared):
        procs.wait_until(lambda lis=listener: len(events(lis)) >= 4, 30, "four notifications")
        received = events(listener)
        assert [e for e, _ in received] == expected
        sequence = [int(i.rsplit("/", 1)[1]) for _, i in received]
        assert sequence == sorted(sequence)
        assert len(set(sequence)) == len(sequence)  # once each
    # the ended rollout's last pass records its last delivery too, once it is made
    expected_health = [(f"{api.namespace}/model/team", 4)]

    def delivered(o: Obj) -> list[tuple[str, int]]:
        return [(s["receiver"], s["delivered"]) for s in o["status"].get("notifications", [])]

    api.wait_rollout(  # fails with the last status seen
        "model", lambda o: delivered(o) == expected_health, "four deliveries in status", 30
    )


def test_a_rollback_is_told_with_its_cause(api: Api, listeners: tuple[Listener, Listener]) -> None:
    own, shared = listeners
    stages = [{"weight": 10, "duration": "2s"}, {"weight": 50, "duration": "10m"}]
    stages.append({"weight": 100, "duration": "1s"})
    setup(api, "gatewayAPI", {"stages": stages}, notifications=RECEIVERS)
    api.wait_rollout("model", lambda o: (o.get("status") or {}).get("stage") == 2, "stage 2", 60)
    api.annotate("model", "abort")
    api.wait_phase("model", "RolledBack", timeout=30)
    for listener in (own, shared):
        procs.wait_until(lambda lis=listener: len(events(lis)) >= 3, 30, "three notifications")
        assert [e for e, _ in events(listener)] == ["started", "stageadvanced", "rolledback"]
        last = json.loads(listener.requests()[-1]["body"])
        assert last["data"]["details"]["cause"].startswith("Aborted: rolling back at stage 2")
