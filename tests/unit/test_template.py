"""Query templating: no value, however hostile, changes the query's structure."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from modelrollout.api import ModelRolloutSpec
from modelrollout.core.context import variables_for, window_for
from modelrollout.metrics.template import FREE_TEXT, UnknownVariable, UnsafeTemplate, render

HOSTILE = 'v2"} or vector(1) or up{job=~".*\\'
QUERY = 'sum(rate(requests{model="{{candidate.modelVersion}}", ns="{{ namespace }}"}[{{window}}]))'
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
SELECTOR = re.compile(r'\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\}')


def matchers(query: str) -> list[tuple[str, str, str]]:
    """Every label matcher of every selector, with its value unescaped."""
    found = []
    for selector in SELECTOR.findall(query):
        for name, op, raw in MATCHER.findall(selector):
            found.append((name, op, json.loads(f'"{raw}"')))
    return found


def spec(**candidate: str) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "stable": {"deployment": "fraud-v1", "service": "fraud-v1", "modelVersion": "1.0"},
            "candidate": {"deployment": "fraud-v2", **candidate},
            "trafficRouting": {"replicas": {}},
            "strategy": {"preset": "1-5-25-100"},
        }
    )


def test_variables_are_substituted_with_or_without_spaces_in_the_braces() -> None:
    rendered = render(QUERY, {"candidate.modelVersion": "2.1", "namespace": "ml", "window": "5m"})
    assert rendered == 'sum(rate(requests{model="2.1", ns="ml"}[5m]))'


@pytest.mark.parametrize(
    "value",
    [HOSTILE, 'a"}', "=~.*", "back\\slash\\", 'x\\"}', "line\nbreak\r", "'single'", "`tick`"],
)
def test_a_hostile_value_stays_one_label_value(value: str) -> None:
    rendered = render(QUERY, {"candidate.modelVersion": value, "namespace": "ml", "window": "5m"})
    assert matchers(rendered) == [("model", "=", value), ("ns", "=", "ml")]
    assert rendered.endswith('"}[5m]))')
    assert "\n" not in rendered


def test_the_hostile_value_is_escaped_exactly() -> None:
    rendered = render('up{v="{{candidate.modelVersion}}"}', {"candidate.modelVersion": HOSTILE})
    assert rendered == 'up{v="v2\\"} or vector(1) or up{job=~\\".*\\\\"}'


def test_single_quoted_strings_escape_their_own_quote() -> None:
    rendered = render("up{v='{{candidate.modelVersion}}'}", {"candidate.modelVersion": "a'}b\\"})
    assert rendered == "up{v='a\\'}b\\\\'}"


def test_an_unknown_variable_is_named_with_the_known_ones() -> None:
    with pytest.raises(UnknownVariable, match=r"\{\{candidate\.version\}\}") as caught:
        render('up{v="{{ candidate.version }}"}', {"candidate.modelVersion": "2", "window": "5m"})
    assert "known: candidate.modelVersion, window" in str(caught.value)
    assert caught.value.name == "candidate.version"
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "template",
    [
        "up * {{candidate.modelVersion}}",
        'up{v="x"} or {{candidate.modelVersion}}',  # after a closed string
        "up{v=`{{candidate.modelVersion}}`}",  # raw strings cannot escape
        "up # {{candidate.modelVersion}}",  # a newline would end the comment
    ],
)
def test_free_text_outside_a_quoted_string_is_refused(template: str) -> None:
    with pytest.raises(UnsafeTemplate, match=r"\{\{candidate\.modelVersion\}\} is free text"):
        render(template, {"candidate.modelVersion": "2.0"})


def test_free_text_is_decided_by_the_caller() -> None:
    assert render("up * {{factor}}", {"factor": "2"}, free_text=set()) == "up * 2"
    with pytest.raises(UnsafeTemplate, match="factor"):
        render("up * {{factor}}", {"factor": "2"}, free_text={"factor"})


def test_a_quote_escaped_in_the_template_does_not_end_the_string() -> None:
    rendered = render('up{v="a\\"{{candidate.modelVersion}}"}', {"candidate.modelVersion": '"}'})
    assert matchers(rendered) == [("v", "=", 'a""}')]


def test_a_value_that_is_not_a_plain_name_is_refused_outside_a_string() -> None:
    with pytest.raises(UnsafeTemplate, match="window"):
        render("rate(up[{{window}}])", {"window": "5m]) or vector(1"})


def test_variables_for_a_spec() -> None:
    variables = variables_for(spec(modelVersion="2.0"), "ml", 25, "30s", "2m")
    assert variables == {
        "namespace": "ml",
        "stable.deployment": "fraud-v1",
        "candidate.deployment": "fraud-v2",
        "stable.service": "fraud-v1",
        "candidate.service": "",
        "stable.modelVersion": "1.0",
        "candidate.modelVersion": "2.0",
        "stage.weight": "25",
        "interval": "30s",
        "window": "2m",
    }
    assert sorted(FREE_TEXT) == ["candidate.modelVersion", "stable.modelVersion"]
    query = 'rate(x{d="{{candidate.deployment}}", v="{{candidate.modelVersion}}"}[{{window}}])'
    assert render(query, variables) == 'rate(x{d="fraud-v2", v="2.0"}[2m])'


def test_the_window_is_the_time_since_the_stage_began_and_at_least_the_interval() -> None:
    start = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    assert window_for(start, start + timedelta(seconds=10), 30) == "30s"
    assert window_for(start, start + timedelta(seconds=90), 30) == "1m30s"
    assert window_for(start, start + timedelta(hours=1, seconds=1.2), 30) == "1h2s"
    assert window_for(start, start, 7.5) == "8s"
