"""The comparator's flags and MODELROLLOUT_SHADOW_* variables: defaults, precedence,
and a clear refusal of every bad value (exit 2 with the flag or variable named)."""

from __future__ import annotations

import pytest

from modelrollout.shadow.settings import Address, parse_address, parse_settings

REQUIRED = ["--stable", "http://s:8080", "--candidate", "http://c:8080", "--rollout", "ranker"]


def test_defaults() -> None:
    s = parse_settings(REQUIRED, {})
    assert (s.listen, s.metrics_listen) == (Address("0.0.0.0", 8080), Address("0.0.0.0", 8081))
    assert (str(s.stable), str(s.candidate), s.rollout) == (
        "http://s:8080",
        "http://c:8080",
        "ranker",
    )
    assert s.namespace == "default"  # outside a pod
    assert (s.share, s.candidate_timeout, s.stable_timeout) == (1.0, 2.0, 60.0)
    assert (s.max_in_flight, s.max_body) == (64, 1 << 20)
    assert not s.follow_rollout
    assert s.follow_interval == 5.0
    assert [r.text for r in s.rules] == ["$"]


def test_every_flag_is_also_a_variable_and_a_flag_wins() -> None:
    env = {
        "MODELROLLOUT_SHADOW_LISTEN": "127.0.0.1:9000",
        "MODELROLLOUT_SHADOW_METRICS_LISTEN": "[::1]:9001",
        "MODELROLLOUT_SHADOW_STABLE": "http://stable.ml:8080",
        "MODELROLLOUT_SHADOW_CANDIDATE": "http://candidate.ml:8080/v2",
        "MODELROLLOUT_SHADOW_ROLLOUT": "fraud",
        "MODELROLLOUT_SHADOW_NAMESPACE": "ml",
        "MODELROLLOUT_SHADOW_SHARE": "0.25",
        "MODELROLLOUT_SHADOW_COMPARE": "$.score~0.01\n$.label\n",
        "MODELROLLOUT_SHADOW_CANDIDATE_TIMEOUT": "0.5",
        "MODELROLLOUT_SHADOW_STABLE_TIMEOUT": "9",
        "MODELROLLOUT_SHADOW_MAX_IN_FLIGHT": "8",
        "MODELROLLOUT_SHADOW_MAX_BODY": "4096",
        "MODELROLLOUT_SHADOW_FOLLOW_ROLLOUT": "true",
        "MODELROLLOUT_SHADOW_FOLLOW_INTERVAL": "1.5",
        "MODELROLLOUT_SHADOW_LOG_LEVEL": "debug",
    }
    s = parse_settings([], env)
    assert (s.listen, s.metrics_listen) == (Address("127.0.0.1", 9000), Address("::1", 9001))
    assert str(s.metrics_listen) == "[::1]:9001"
    assert (str(s.candidate), s.rollout, s.namespace, s.share) == (
        "http://candidate.ml:8080/v2", "fraud", "ml", 0.25,
    )  # fmt: skip
    assert [(r.text, r.tolerance) for r in s.rules] == [("$.score~0.01", 0.01), ("$.label", None)]
    assert (s.candidate_timeout, s.stable_timeout, s.max_in_flight, s.max_body) == (0.5, 9, 8, 4096)
    assert s.follow_rollout
    assert (s.follow_interval, s.log_level) == (1.5, "DEBUG")

    flags = parse_settings(["--share", "0.5", "--rollout", "other", "--compare", "$.x"], env)
    assert (flags.share, flags.rollout, [r.text for r in flags.rules]) == (0.5, "other", ["$.x"])
    json_list = parse_settings(REQUIRED, {"MODELROLLOUT_SHADOW_COMPARE": '["$.a", "$.b~1"]'})
    assert [r.text for r in json_list.rules] == ["$.a", "$.b~1"]
    off = parse_settings(REQUIRED, {"MODELROLLOUT_SHADOW_FOLLOW_ROLLOUT": "no"})
    assert not off.follow_rollout
    assert parse_settings([*REQUIRED, "--follow-rollout"], {}).follow_rollout


E = "MODELROLLOUT_SHADOW_"
R = REQUIRED
BAD = [
    (R[2:], {}, f"--stable (or {E}STABLE) is required"),
    (R[:4], {}, f"--rollout (or {E}ROLLOUT) is required"),
    ([*R, "--rollout", " "], {}, f"--rollout (or {E}ROLLOUT) is required"),
    ([*R, "--stable", "ftp://s"], {}, "--stable: expected http(s)://HOST"),
    ([*R, "--stable", "http://s:8080/?a=1"], {}, "--stable: no query"),
    ([*R, "--candidate", "s:8080"], {}, "--candidate: expected http(s)://"),
    ([*R, "--share", "1.5"], {}, "--share: expected a number from 0 to 1"),
    ([*R, "--share", "nan"], {}, "--share: expected a number from 0 to 1"),
    ([*R, "--share", "half"], {}, "--share: could not convert"),
    (R, {f"{E}SHARE": "-0.1"}, f"{E}SHARE: expected a number from 0 to 1"),
    ([*R, "--candidate-timeout", "0"], {}, "--candidate-timeout: expected seconds > 0"),
    ([*R, "--candidate-timeout", "inf"], {}, "--candidate-timeout: expected seconds > 0"),
    ([*R, "--max-in-flight", "0"], {}, "--max-in-flight: expected an integer >= 1"),
    ([*R, "--max-in-flight", "2.5"], {}, "--max-in-flight: expected an integer >= 1"),
    ([*R, "--listen", "8080"], {}, "--listen: expected HOST:PORT"),
    ([*R, "--metrics-listen", "h:99999"], {}, "--metrics-listen: expected HOST:PORT"),
    ([*R, "--compare", "$.score~-1"], {}, "--compare: '$.score~-1': the tolerance"),
    ([*R, "--compare", "score"], {}, "--compare: 'score': not a JSONPath"),
    (R, {f"{E}COMPARE": "[1]"}, f"{E}COMPARE: expected a JSON list of strings"),
    (R, {f"{E}COMPARE": "$.a\n$.["}, f"{E}COMPARE: '$.[': not a JSONPath"),
    (R, {f"{E}COMPARE": "[]"}, f"{E}COMPARE: give at least one"),
    (R, {f"{E}FOLLOW_ROLLOUT": "maybe"}, f"{E}FOLLOW_ROLLOUT: expected true or false"),
    ([*R, "--log-level", "loud"], {}, "--log-level: expected debug, info"),
]


@pytest.mark.parametrize(("argv", "env", "message"), BAD)
def test_bad_values_stop_with_the_flag_and_the_problem(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(argv, env)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_addresses() -> None:
    assert parse_address(":8080") == Address("0.0.0.0", 8080)
    assert parse_address("[::]:80") == Address("::", 80)
    assert parse_address("localhost:0") == Address("localhost", 0)
    for bad in ("", "host", "host:", "host:http", "host:-1", "host:65536"):
        with pytest.raises(ValueError, match="expected HOST:PORT"):
            parse_address(bad)
