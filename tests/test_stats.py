"""The bootstrap on cases whose answer is known, by construction or by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mergeval.report import stats
from mergeval.report.stats import Bootstrap


def matrix(rows: dict[str, list], weights=None) -> stats.Scores:
    data = [(m, f"i{k}", s, 1.0 if weights is None else weights[k])
            for m, scores in rows.items() for k, s in enumerate(scores)]
    return stats.score_matrix(pd.DataFrame(data, columns=["model", "item_id", "score", "weight"]))


def test_identical_models_differ_by_exactly_nothing():
    rng = np.random.default_rng(3)
    scores = list(rng.random(40))
    d = stats.paired(matrix({"a": scores, "b": scores}), "a", "b", Bootstrap())
    assert (d["diff"], d["ci_low"], d["ci_high"]) == (0.0, 0.0, 0.0)
    assert (d["won"], d["lost"], d["tied"]) == (0, 0, 40)
    assert stats.verdict(d["ci_low"], d["ci_high"]) == "no clear difference"


def test_two_models_alike_in_distribution_have_an_interval_around_zero():
    rng = np.random.default_rng(4)
    m = matrix({"a": list(rng.integers(0, 2, 200)), "b": list(rng.integers(0, 2, 200))})
    d = stats.paired(m, "a", "b", Bootstrap())
    assert d["ci_low"] < 0 < d["ci_high"] and abs(d["diff"]) < 0.1
    assert stats.verdict(d["ci_low"], d["ci_high"]) == "no clear difference"


def test_one_model_always_better_has_an_interval_above_zero():
    rng = np.random.default_rng(5)
    base = rng.random(30) * 0.5
    better = base + 0.05 + rng.random(30) * 0.3  # better on every single item
    d = stats.paired(matrix({"m": list(better), "p": list(base)}), "m", "p", Bootstrap())
    assert d["ci_low"] > 0 and (d["won"], d["lost"], d["tied"]) == (30, 0, 0)
    assert stats.verdict(d["ci_low"], d["ci_high"]) == "better"
    assert stats.verdict(-d["ci_high"], -d["ci_low"]) == "worse"
    constant = stats.paired(matrix({"m": list(base + 0.25), "p": list(base)}), "m", "p", Bootstrap())
    assert constant["ci_low"] == pytest.approx(0.25) and constant["ci_high"] == pytest.approx(0.25)


def test_two_items_by_hand():
    # d = (1, 0): a replicate draws both items twice → mean 0 (1/4), 1/2 (1/2) or 1 (1/4).
    m = matrix({"a": [1.0, 0.0], "b": [0.0, 0.0]})
    samples = stats.weighted_means(m.row("a")[None, :], m.weights, Bootstrap().counts(2))[:, 0]
    assert np.mean(samples == 0.5) == pytest.approx(0.5, abs=0.03)
    assert np.mean(samples == 0.0) == pytest.approx(0.25, abs=0.03)
    wide = stats.paired(m, "a", "b", Bootstrap(level=0.95))
    assert (wide["ci_low"], wide["ci_high"]) == (0.0, 1.0)
    narrow = stats.paired(m, "a", "b", Bootstrap(level=0.40))  # 30 % and 70 % quantiles: both 1/2
    assert (narrow["diff"], narrow["ci_low"], narrow["ci_high"]) == (0.5, 0.5, 0.5)


def test_interval_of_a_proportion_matches_the_normal_approximation():
    scores = [1.0] * 50 + [0.0] * 50  # p = 0.5, n = 100: 0.5 ± 1.96 * 0.05
    ci = stats.intervals(matrix({"a": scores}), Bootstrap()).iloc[0]
    assert ci["score"] == 0.5
    assert ci["ci_low"] == pytest.approx(0.402, abs=0.015) and ci["ci_high"] == pytest.approx(0.598, abs=0.015)


def test_seeded_reproducible():
    m = matrix({"a": list(np.linspace(0, 1, 25)), "b": list(np.linspace(1, 0, 25) ** 2)})
    one, two = stats.intervals(m, Bootstrap()), stats.intervals(m, Bootstrap())
    pd.testing.assert_frame_equal(one, two)
    other = stats.intervals(m, Bootstrap(seed=1))
    assert not np.allclose(one["ci_low"], other["ci_low"])


def test_unscored_items_are_left_out_never_zero():
    m = matrix({"a": [1.0, None, 1.0, 1.0], "b": [0.0, 1.0, 0.0, 0.5]})
    ci = stats.intervals(m, Bootstrap()).set_index("model")
    assert (ci.loc["a", "score"], ci.loc["a", "ci_low"], ci.loc["a", "ci_high"]) == (1.0, 1.0, 1.0)
    d = stats.paired(m, "a", "b", Bootstrap())
    assert d["n_both"] == 3 and d["diff"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_weights_by_hand():
    m = matrix({"a": [1.0, 0.0]}, weights=[3.0, 1.0])
    assert stats.point(m.values, m.weights)[0] == 0.75


def test_rank_ranges():
    m = matrix({"top": [0.9, 0.8, 0.9, 1.0], "mid": [0.5, 0.6, 0.5, 0.7], "low": [0.1, 0.2, 0.0, 0.3],
                "twin": [0.1, 0.2, 0.0, 0.3]})
    ci = stats.intervals(m, Bootstrap()).set_index("model")
    assert (ci.loc["top", "rank_low"], ci.loc["top", "rank_high"]) == (1, 1)
    assert (ci.loc["mid", "rank_low"], ci.loc["mid", "rank_high"]) == (2, 2)
    assert (ci.loc["low", "rank_low"], ci.loc["low", "rank_high"]) == (3, 3)  # ties share the better rank
    assert (ci.loc["twin", "rank_low"], ci.loc["twin", "rank_high"]) == (3, 3)
