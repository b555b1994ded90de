"""The three receiver formats: exact shapes, CloudEvents' required attributes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from modelrollout.notify import EVENTS, Notification, promote_command
from modelrollout.notify.formats import (
    CLOUDEVENTS_JSON,
    MESSAGE_CHARS,
    cloudevent,
    payload,
    render,
    slack_payload,
    summary,
)

WHEN = datetime(2026, 3, 1, 12, 30, 5, 250000, tzinfo=UTC)


def notification(event: str = "StageAdvanced", **changes: object) -> Notification:
    fields: dict[str, object] = {
        "id": "6d1f-uid/7",
        "event": event,
        "namespace": "ml",
        "name": "ranker",
        "stage": 2,
        "stage_count": 5,
        "weight": 10,
        "phase": "Progressing",
        "reason": "StageAdvanced",
        "message": "stage 2 of 5: 10%",
        "time": WHEN,
        "details": {},
    }
    fields.update(changes)
    return Notification(**fields)  # type: ignore[arg-type]


def test_webhook_payload_is_the_notification_field_by_field() -> None:
    n = notification(details={"command": "x"})
    assert payload(n) == {
        "id": "6d1f-uid/7",
        "event": "StageAdvanced",
        "namespace": "ml",
        "name": "ranker",
        "stage": 2,
        "stageCount": 5,
        "weight": 10,
        "phase": "Progressing",
        "reason": "StageAdvanced",
        "message": "stage 2 of 5: 10%",
        "time": "2026-03-01T12:30:05.250Z",
        "details": {"command": "x"},
    }
    body = render("webhook", n)
    assert body.content_type == "application/json"
    assert json.loads(body.data) == payload(n)


def test_time_is_rfc3339_in_utc_whatever_the_zone_given() -> None:
    elsewhere = WHEN.astimezone(timezone(timedelta(hours=-5)))
    assert payload(notification(time=elsewhere))["time"] == "2026-03-01T12:30:05.250Z"


def test_cloudevent_structured_mode_has_the_required_attributes() -> None:
    n = notification("RolledBack", details={"metric": "error-rate", "value": "0.08"})
    event = cloudevent(n)
    assert event == {
        "specversion": "1.0",
        "id": "6d1f-uid/7",
        "source": "/apis/rollouts.mlops.io/v1alpha1/namespaces/ml/modelrollouts/ranker",
        "type": "io.mlops.rollouts.modelrollout.rolledback",
        "subject": "ranker",
        "time": "2026-03-01T12:30:05.250Z",
        "datacontenttype": "application/json",
        "data": payload(n),
    }
    # CloudEvents 1.0: id, source, specversion and type are REQUIRED non-empty strings.
    for attribute in ("id", "source", "specversion", "type"):
        assert isinstance(event[attribute], str)
        assert event[attribute]
    # Attribute names: lower-case ASCII letters and digits only.
    assert all(a.isascii() and a.isalnum() and a.islower() for a in event if a != "data")
    body = render("cloudevents", n)
    assert body.content_type == CLOUDEVENTS_JSON
    assert body.content_type.startswith("application/cloudevents+json")
    assert json.loads(body.data) == event


@pytest.mark.parametrize("event", EVENTS)
def test_cloudevent_type_per_event(event: str) -> None:
    expected = "io.mlops.rollouts.modelrollout." + event.lower()
    assert cloudevent(notification(event))["type"] == expected


def test_slack_message_shape() -> None:
    n = notification()
    line = "*ml/ranker* advanced to stage 2/5: candidate at 10%"
    assert slack_payload(n) == {
        "text": line,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": line}},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": "phase Progressing · stage 2/5 · weight 10%"}
                ],
            },
        ],
    }
    body = render("slack", n)
    assert body.content_type == "application/json"
    assert json.loads(body.data) == slack_payload(n)


def test_awaiting_approval_shows_the_exact_promote_command_in_a_code_span() -> None:
    command = promote_command("ml", "ranker")
    assert command == "kubectl modelrollout promote ranker -n ml"
    n = notification("AwaitingApproval", stage=4, weight=50, details={"command": command})
    assert summary(n) == (
        "*ml/ranker* is waiting for approval at stage 4/5 (50%). "
        "Approve with `kubectl modelrollout promote ranker -n ml`"
    )


def test_rolled_back_names_the_breached_metric_value_and_bound() -> None:
    details = {"metric": "error-rate", "value": "0.083", "bound": "max 0.05"}
    n = notification("RolledBack", phase="RolledBack", details=details)
    assert summary(n) == (
        "*ml/ranker* rolled back at stage 2/5: `error-rate` was 0.083, beyond its bound max 0.05"
    )
    plain = notification("RolledBack", reason="Aborted", message="abort action")
    assert summary(plain) == "*ml/ranker* rolled back at stage 2/5: Aborted: abort action"


@pytest.mark.parametrize(
    ("event", "line"),
    [
        ("Started", "*ml/ranker* started: stage 2/5, candidate at 10%"),
        ("Paused", "*ml/ranker* paused at stage 2/5 (10%): StageAdvanced: stage 2 of 5: 10%"),
        ("Succeeded", "*ml/ranker* succeeded: the candidate takes 10% of traffic"),
        ("Failed", "*ml/ranker* failed at stage 2/5: StageAdvanced: stage 2 of 5: 10%"),
    ],
)
def test_a_readable_line_per_event(event: str, line: str) -> None:
    assert summary(notification(event)) == line


def test_slack_escapes_its_control_characters_in_user_text() -> None:
    n = notification("Failed", reason="Bad", message="<!channel> & <https://evil|click>")
    assert summary(n).endswith("Bad: &lt;!channel&gt; &amp; &lt;https://evil|click&gt;")


def test_long_text_is_clipped() -> None:
    n = notification(message="x" * 10_000, details={"value": "y" * 10_000})
    body = payload(n)
    assert len(body["message"]) == MESSAGE_CHARS
    assert body["message"].endswith("...")
    assert len(render("cloudevents", n).data) < 64 * 1024
    assert len(slack_payload(notification("Failed", message="z" * 10_000))["text"]) <= 3000


def test_unknown_receiver_type_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown receiver type"):
        render("teams", notification())
