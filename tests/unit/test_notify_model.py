"""Notification and Receiver refuse bad values, saying which, never the URL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from modelrollout.notify import Notification, Receiver

SECRET_URL = "https://hooks.slack.com/services/T000/B000/s3cr3t-token"


def make(**changes: object) -> Notification:
    fields: dict[str, object] = {
        "id": "uid/1",
        "event": "Started",
        "namespace": "ml",
        "name": "ranker",
        "stage": 1,
        "stage_count": 4,
        "weight": 1,
        "phase": "Progressing",
        "reason": "Started",
        "message": "",
        "time": datetime(2026, 1, 1, tzinfo=UTC),
    }
    fields.update(changes)
    return Notification(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"id": ""}, "id must not be empty"),
        ({"event": "Exploded"}, "event 'Exploded' is not one of"),
        ({"name": ""}, "namespace and name must not be empty"),
        ({"time": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"details": {"value": 0.5}}, r"details must be strings: \['value'\]"),
    ],
)
def test_bad_notification(changes: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        make(**changes)


def test_details_are_a_read_only_copy() -> None:
    details = {"metric": "error-rate"}
    n = make(details=details)
    details["metric"] = "changed"
    assert n.details["metric"] == "error-rate"
    with pytest.raises(TypeError):
        n.details["metric"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("ftp://hooks.example.com/x", "webhook"),
        ("hooks.slack.com/services/T000/B000/s3cr3t-token", "slack"),
        ("https:///services/s3cr3t-token", "slack"),
        ("http://host:99999/s3cr3t-token", "cloudevents"),
    ],
)
def test_bad_receiver_url_is_refused_without_repeating_it(url: str, kind: str) -> None:
    with pytest.raises(ValueError, match="url must be http:// or https:// with a host") as error:
        Receiver("ops", kind, url)  # type: ignore[arg-type]
    assert "s3cr3t" not in str(error.value)


def test_receiver_checks_its_type_and_events() -> None:
    with pytest.raises(ValueError, match="type 'teams' is not one of"):
        Receiver("ops", "teams", SECRET_URL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown events \['Exploded'\]"):
        Receiver("ops", "slack", SECRET_URL, frozenset({"Started", "Exploded"}))


def test_receiver_events_filter_and_repr_without_url() -> None:
    everything = Receiver("ops", "slack", SECRET_URL)
    some = Receiver("ops", "slack", SECRET_URL, frozenset({"RolledBack", "Failed"}))
    assert everything.wants("Started")
    assert some.wants("RolledBack")
    assert not some.wants("Started")
    assert "s3cr3t" not in repr(some)
