"""The drift gate's PromQL and the parsing of its answers."""

from __future__ import annotations

import math

import pytest

from modelrollout.api.spec import DriftGate
from modelrollout.core.drift import BinsMismatch
from modelrollout.metrics import histograms

GATE = DriftGate.model_validate(
    {
        "histogram": "model_feature_value",
        "features": ["amount", 'a.b"|c'],
        "categorical": {"counter": "model_feature_category_total", "features": ["country"]},
        "reference": {"stable": {}},
    }
)
SELECTOR = 'namespace="ns",deployment="v2"'


def test_one_query_reads_every_feature_with_names_matched_literally() -> None:
    query = histograms.feature_buckets_query(GATE, SELECTOR, "5m")
    assert query == (
        "sum by (feature, le) (increase(model_feature_value_bucket"
        '{feature=~"a\\\\.b\\"\\\\|c|amount",namespace="ns",deployment="v2"}[5m]))'
    )
    categories = histograms.categories_query(GATE, SELECTOR, "5m")
    assert categories.startswith("sum by (feature, category) (increase(model_feature_category")
    score = histograms.score_buckets_query("model_prediction_score", SELECTOR, "90s")
    assert score == (
        'sum by (le) (increase(model_prediction_score_bucket{namespace="ns",deployment="v2"}[90s]))'
    )


def test_buckets_become_bins_per_feature_and_a_silent_feature_is_none() -> None:
    series = [
        ({"feature": "amount", "le": "1.0"}, 3.0),
        ({"feature": "amount", "le": "+Inf"}, 10.0),
        ({"feature": "amount", "le": "0.5"}, 1.0),
        ({"feature": "amount", "le": "2.0"}, math.nan),  # one sample in the window
    ]
    bins = histograms.feature_bins(series, ["amount", "age"])
    amount = bins["amount"]
    assert amount is not None
    assert amount.keys == (0.5, 1.0, 2.0)
    assert amount.counts == (1.0, 2.0, 0.0, 7.0)
    assert bins["age"] is None


def test_categories_and_scores_are_read() -> None:
    series = [
        ({"feature": "country", "category": "DE"}, 4.0),
        ({"feature": "country", "category": "FR"}, 6.0),
    ]
    country = histograms.category_bins(series, ["country"], "category")["country"]
    assert country is not None
    assert (country.keys, country.counts, country.numeric) == (("DE", "FR"), (4.0, 6.0), False)
    score = histograms.score_bins([({"le": "0.5"}, 2.0), ({"le": "+Inf"}, 5.0)], "s")
    assert score is not None
    assert score.counts == (2.0, 3.0)
    assert histograms.score_bins([], "s") is None


def test_a_malformed_bucket_names_the_feature() -> None:
    with pytest.raises(BinsMismatch, match=r"amount: bucket le='wide'"):
        histograms.feature_bins([({"feature": "amount", "le": "wide"}, 1.0)], ["amount"])
    with pytest.raises(BinsMismatch, match=r"amount: the histogram has no \+Inf bucket"):
        histograms.feature_bins([({"feature": "amount", "le": "1"}, 1.0)], ["amount"])


def test_the_observed_count_is_deflated_by_the_scrapes_in_the_window() -> None:
    query = histograms.scrapes_query(GATE, SELECTOR, "30s")
    assert query.startswith("max(count_over_time(model_feature_value_bucket{feature=~")
    assert 'le="+Inf",namespace="ns"' in query
    assert histograms.observed_fraction([({}, 5.0)]) == pytest.approx(0.8)
    assert histograms.observed_fraction([({}, 2.0), ({}, 3.0)]) == pytest.approx(2 / 3)
    assert histograms.observed_fraction([({}, 1.0)]) == 0.0
    assert histograms.observed_fraction([]) == 0.0
