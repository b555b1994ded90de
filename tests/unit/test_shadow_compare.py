"""The comparator's pure comparison: rules, paths, tolerances, bad JSON, and the
decoding of a stable answer's Content-Encoding."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest

from modelrollout.shadow.compare import BadRule, agree, expected_values, judge, parse_rule
from modelrollout.shadow.settings import parse_url
from modelrollout.shadow.shadowing import decode, upstream_url


def rules(*texts: str) -> tuple[Any, ...]:
    return tuple(parse_rule(t) for t in texts)


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


# -- rules -----------------------------------------------------------------------------


def test_a_rule_is_a_path_and_an_optional_tolerance() -> None:
    assert parse_rule("$.score~0.001").tolerance == 0.001
    assert parse_rule(" $.score ~ 1e-3 ").tolerance == 0.001
    assert parse_rule("$.score~0").tolerance == 0.0
    assert parse_rule("$.label").tolerance is None
    # a '~' inside the path is the path's, not a tolerance
    rule = parse_rule("$['a~b']")
    assert rule.tolerance is None
    assert rule.select({"a~b": 1}) == [1]
    assert parse_rule("$['a~b']~0.5").tolerance == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected JSONPATH"),
        ("~0.1", "expected JSONPATH"),
        ("$.score~-1", "finite number >= 0"),
        ("$.score~nan", "finite number >= 0"),
        ("$.score~inf", "finite number >= 0"),
        ("$.score~x", "a tolerance is a number after '~'"),
        ("score", "not a JSONPath"),
        ("$.[", "not a JSONPath"),
        ("$.a | $.b", "not a JSONPath"),  # unions are not RFC 9535
    ],
)
def test_bad_rules_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(BadRule, match=message.replace("(", r"\(").replace("[", r"\[")) as err:
        parse_rule(text)
    assert repr(text.strip()) in str(err.value)


def test_paths_follow_rfc_9535() -> None:
    doc = {"a": {"score": 1}, "score": 2, "items": [{"p": 0.1}, {"p": 0.9}], "a b": 3}
    assert parse_rule("$.score").select(doc) == [2]
    assert parse_rule("$..score").select(doc) == [2, 1]
    assert parse_rule("$.items[*].p").select(doc) == [0.1, 0.9]
    assert parse_rule("$.items[-1].p").select(doc) == [0.9]
    assert parse_rule("$['a b']").select(doc) == [3]
    assert parse_rule("$.items[?@.p > 0.5].p").select(doc) == [0.9]
    assert parse_rule("$.missing").select(doc) == []
    assert parse_rule("$").select(doc) == [doc]


def test_a_string_document_is_not_parsed_twice() -> None:
    assert parse_rule("$").select('{"a": 1}') == ['{"a": 1}']
    assert parse_rule("$.a").select('{"a": 1}') == []


# -- agreement -------------------------------------------------------------------------


def test_numbers_agree_within_the_tolerance_only() -> None:
    assert agree(0.5, 0.5, None)
    assert not agree(0.5, 0.5000001, None)
    assert agree(0.5, 0.5009, 0.001)
    assert not agree(0.5, 0.502, 0.001)
    assert agree(1, 1.0, None)  # one JSON number
    assert agree([0.1, 0.2], [0.1001, 0.1999], 0.001)  # at any depth
    assert agree({"s": [1, {"t": 2.0}]}, {"s": [1.0005, {"t": 2}]}, 0.001)
    assert not agree(float("nan"), float("nan"), 1.0)
    assert agree(10**400, 10**400 + 1, 1.0)  # integers: exact arithmetic
    assert not agree(10**400, 1.5, 1.0)  # beyond float range: no OverflowError
    assert agree(10**400, 10**400, None)


def test_other_values_agree_only_when_equal_and_of_the_same_type() -> None:
    assert agree("fraud", "fraud", 0.5)
    assert not agree("fraud", "legit", 0.5)
    assert not agree(True, 1, 0.5)  # a bool is not a number
    assert not agree(1, True, None)
    assert not agree(False, 0, None)
    assert not agree("1", 1, None)
    assert not agree(None, 0, None)
    assert agree(None, None, None)
    assert not agree([1, 2], [1, 2, 3], 10)
    assert not agree({"a": 1}, {"a": 1, "b": 2}, None)
    assert not agree([1], {"0": 1}, None)


# -- judging two answers ---------------------------------------------------------------

SCORE = rules("$.score~0.001", "$.version")


def test_equal_answers_match_and_different_ones_do_not() -> None:
    stable = body({"score": 0.66, "version": "v1"})
    assert judge(SCORE, stable, body({"score": 0.6605, "version": "v1"})).result == "match"
    verdict = judge(SCORE, stable, body({"score": 0.7, "version": "v1"}))
    assert verdict.result == "mismatch"
    assert verdict.detail == "$.score~0.001: stable 0.66, candidate 0.7"
    verdict = judge(SCORE, stable, body({"score": 0.66, "version": "v2"}))
    assert (verdict.result, verdict.detail) == (
        "mismatch",
        '$.version: stable "v1", candidate "v2"',
    )
    # members the rules do not name are not compared
    extra = body({"score": 0.66, "version": "v1", "latency_ms": 3})
    assert judge(SCORE, stable, extra).result == "match"


def test_batches_compare_element_by_element() -> None:
    batch = rules("$.scores~0.01")
    stable = body({"scores": [0.1, 0.5, 0.9]})
    assert judge(batch, stable, body({"scores": [0.105, 0.5, 0.899]})).result == "match"
    assert judge(batch, stable, body({"scores": [0.1, 0.5]})).result == "mismatch"
    assert judge(batch, stable, body({"scores": [0.1, 0.5, 0.4]})).result == "mismatch"
    each = rules("$.scores[*]~0.01")
    assert judge(each, stable, body({"scores": [0.1, 0.5, 0.9]})).result == "match"
    assert judge(each, stable, body({"scores": []})).result == "mismatch"


def test_a_path_missing_on_one_side_is_a_mismatch() -> None:
    stable = body({"score": 0.5, "label": "fraud"})
    assert judge(rules("$.label"), stable, body({"score": 0.5})).result == "mismatch"
    # present in the stable's answer only in part: the missing one still disagrees
    two = rules("$.score", "$.label")
    assert judge(two, body({"score": 0.5}), body({"score": 0.5, "label": "x"})).result == (
        "mismatch"
    )
    assert judge(two, body({"score": 0.5}), body({"score": 0.5})).result == "match"


def test_the_default_rule_compares_the_whole_answer() -> None:
    whole = rules("$")
    assert judge(whole, b'{"a": 1, "b": [2]}', b'{"b": [2], "a": 1.0}').result == "match"
    assert judge(whole, b'{"a": 1}', b'{"a": 1, "b": 2}').result == "mismatch"
    assert judge(whole, b'"yes"', b'"yes"').result == "match"  # a string document


@pytest.mark.parametrize(
    "candidate",
    [
        b"",
        b"not json",
        b'{"score": 0.5',
        b"\xff\xfe\x00garbage",
        b"[" * 100_000 + b"]" * 100_000,  # nested beyond the parser's recursion limit
        b'{"score": ' + b"9" * 5000 + b"}",  # an int past Python's digit limit
    ],
    ids=["empty", "text", "truncated", "bad-utf8", "deep", "huge-int"],
)
def test_a_candidate_answer_that_is_not_json_is_a_mismatch(candidate: bytes) -> None:
    verdict = judge(SCORE, body({"score": 0.5, "version": "v1"}), candidate)
    assert verdict.result == "mismatch"
    assert "not JSON" in verdict.detail


def test_a_stable_answer_that_cannot_be_compared_is_not_counted_as_either() -> None:
    assert judge(SCORE, b"<html>oops</html>", body({"score": 0.5})).detail == "stable_not_json"
    assert expected_values(SCORE, b"[" * 100_000) == "stable_not_json"
    # no rule selects anything: a vacuous "match" would inflate the match rate
    verdict = judge(SCORE, body({"scores": [0.5]}), body({"scores": [0.5]}))
    assert (verdict.result, verdict.detail) == ("uncompared", "stable_no_paths")


def test_json_in_utf16_is_still_json() -> None:
    stable = json.dumps({"label": "ü"}).encode("utf-16")
    assert judge(rules("$.label"), stable, body({"label": "ü"})).result == "match"


# -- the stable's Content-Encoding, and URLs ------------------------------------------


def test_a_compressed_stable_answer_is_decoded_for_the_comparison_only() -> None:
    plain = body({"score": 0.5})
    assert decode(plain, "", 100) == plain
    assert decode(plain, "identity", 100) == plain
    assert decode(gzip.compress(plain), "gzip", 100) == plain
    assert decode(zlib.compress(plain), "deflate", 100) == plain
    raw = zlib.compressobj(wbits=-15)
    assert decode(raw.compress(plain) + raw.flush(), "deflate", 100) == plain
    assert decode(plain, "br", 100) == "stable_encoding"
    assert decode(b"not gzip at all", "gzip", 100) == "stable_encoding"
    bomb = gzip.compress(b" " * 10_000_000)  # 10 MB from about 10 kB
    assert len(bomb) < 20_000
    assert decode(bomb, "gzip", 1000) == "stable_too_large"


def test_request_paths_go_under_the_model_servers_url() -> None:
    base = parse_url("http://ranker:8080")
    assert str(upstream_url(base, "/predict?x=1&y=%20")) == "http://ranker:8080/predict?x=1&y=%20"
    prefixed = parse_url("https://models.example/ranker/")
    assert str(upstream_url(prefixed, "/predict")) == "https://models.example/ranker/predict"
    assert str(upstream_url(base, "/a%2Fb")) == "http://ranker:8080/a%2Fb"  # kept encoded
