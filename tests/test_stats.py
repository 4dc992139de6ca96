"""Speaker-clustered bootstrap intervals, paired comparisons, CCC and fairness summaries."""

import math

import numpy as np
import pytest

from medusa.evaluation.stats import (
    Interval,
    PairedComparison,
    accuracy_interval,
    bootstrap_indices,
    bootstrap_interval,
    ccc_interval,
    concordance_correlation,
    group_codes,
    macro_f1,
    macro_f1_interval,
    paired_bootstrap,
    paired_macro_f1,
    per_group_macro_f1,
    per_speaker_accuracy,
    summarise,
)


def simulated_coverage(n_datasets=200, n_resamples=200, seed=1):
    """Coverage of the true accuracy by 95 % intervals, clustered by speaker and by clip.

    Each dataset: 40 speakers with 5-30 clips each; a speaker's clips are right with a
    speaker-specific probability drawn from Beta(3, 2) (population accuracy 0.6, a strong
    speaker effect: intra-speaker correlation 1/6).
    """
    rng = np.random.default_rng(seed)
    true_accuracy = 3 / (3 + 2)
    covered = {"speakers": 0, "clips": 0}
    for dataset in range(n_datasets):
        sizes = rng.integers(5, 31, size=40)
        speaker_accuracy = rng.beta(3, 2, size=40)
        speakers = np.repeat(np.arange(40), sizes)
        correct = (rng.random(len(speakers)) < speaker_accuracy[speakers]).astype(float)
        for name, groups in (("speakers", speakers), ("clips", None)):
            interval = bootstrap_interval(
                np.mean, correct, groups, n_resamples=n_resamples, seed=dataset
            )
            covered[name] += interval.low <= true_accuracy <= interval.high
    return {name: count / n_datasets for name, count in covered.items()}


def test_cluster_bootstrap_covers_at_the_stated_rate_and_clip_bootstrap_does_not():
    coverage = simulated_coverage()
    assert 0.88 <= coverage["speakers"] <= 0.99, coverage
    # Ignoring the speakers makes the intervals far too narrow.
    assert coverage["clips"] < 0.80, coverage
    assert coverage["clips"] < coverage["speakers"] - 0.15, coverage


def test_bootstrap_indices_are_deterministic_for_a_seed():
    groups = np.repeat(["a", "b", "c", "d"], [3, 1, 2, 4])
    first, again = bootstrap_indices(groups, 20, seed=7), bootstrap_indices(groups, 20, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    other = bootstrap_indices(groups, 20, seed=8)
    assert not all(
        len(x) == len(y) and np.array_equal(np.sort(x), np.sort(y))
        for x, y in zip(first, other, strict=True)
    )


def test_whole_groups_are_drawn_and_a_group_drawn_twice_contributes_its_rows_twice():
    groups = np.array(["a", "a", "a", "b", "c", "c"])
    drawn_twice = 0
    for idx in bootstrap_indices(groups, 50, seed=0):
        counts = np.bincount(idx, minlength=6)
        # Each group's rows appear equally often: the number of times the group was drawn.
        draws = {"a": counts[0], "b": counts[3], "c": counts[4]}
        assert counts[1] == counts[2] == draws["a"] and counts[5] == draws["c"]
        assert sum(draws.values()) == 3  # as many draws as groups
        assert len(idx) == 3 * draws["a"] + draws["b"] + 2 * draws["c"]
        drawn_twice += draws["a"] == 2
    assert drawn_twice > 0
    # A resample in which "a" came twice holds each of its rows exactly twice.
    idx = next(i for i in bootstrap_indices(groups, 50, seed=0) if np.sum(i == 0) == 2)
    assert np.sum(idx == 1) == np.sum(idx == 2) == 2


def test_unknown_speakers_are_each_their_own_group():
    groups = np.array(["s1", "s1", None, "", math.nan, "Unknown", "s2"], dtype=object)
    codes = group_codes(groups)
    assert codes[0] == codes[1]
    assert len(set(codes)) == 6  # s1, s2 and four single unknown clips
    counts = np.array([np.bincount(i, minlength=7) for i in bootstrap_indices(groups, 200, 3)])
    assert (counts.sum(axis=1) - counts[:, 1] == 6).all()  # 6 draws per resample
    # The unknown clips are drawn independently of one another.
    assert (counts[:, 2] != counts[:, 3]).any()
    # Plain numeric labels: NaN is unknown too.
    assert len(set(group_codes([1.0, 1.0, math.nan, math.nan]))) == 3
    assert np.array_equal(group_codes(None, n_rows=3), [0, 1, 2])


def test_bootstrap_interval_value_interval_and_format():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    groups = np.repeat(np.arange(30), 10)
    interval = bootstrap_interval(np.mean, x, groups, n_resamples=300, seed=1)
    assert interval.value == pytest.approx(x.mean())
    assert interval.low < interval.value < interval.high
    assert len(interval.resamples) == 300 and interval.skipped == 0
    assert interval.std == pytest.approx(np.std(interval.resamples, ddof=1))
    assert interval.low == pytest.approx(np.percentile(interval.resamples, 2.5))
    again = bootstrap_interval(np.mean, [x], groups, n_resamples=300, seed=1)
    assert (again.low, again.high) == (interval.low, interval.high)
    shown = Interval(0.4123, 0.3349, 0.4851, 0.95, np.zeros(10))
    assert shown.format() == "0.41 [0.33, 0.49]"
    assert shown.format(3) == "0.412 [0.335, 0.485]"


def test_undefined_resamples_are_skipped_counted_and_reported():
    x = np.arange(10.0)

    def undefined_with_clip_0(values):  # on resamples only: the full data is scored
        if (values == 0).any() and not np.array_equal(values, x):
            raise ValueError("undefined")
        return float(values.mean())

    interval = bootstrap_interval(undefined_with_clip_0, x, None, n_resamples=200, seed=0)
    # P(clip 0 drawn) = 1 - 0.9**10 = 0.65.
    assert 100 < interval.skipped < 160
    assert len(interval.resamples) + interval.skipped == 200 == interval.n_resamples
    assert interval.unreliable
    assert interval.format().endswith(f"({interval.skipped} of 200 resamples undefined)")

    def nan_on_resamples(values):
        return float(values.sum()) if np.array_equal(values, x) else math.nan

    with pytest.raises(ValueError, match="undefined on all 5 resamples"):
        bootstrap_interval(nan_on_resamples, x, None, n_resamples=5)


def test_paired_bootstrap_of_identical_systems_is_exactly_zero():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 200)
    pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 4, 200))
    speakers = np.repeat(np.arange(20), 10)
    same = paired_macro_f1(y_true, pred, pred.copy(), speakers, n_resamples=50)
    assert isinstance(same, PairedComparison)
    assert (same.value, same.low, same.high, same.share_a_better) == (0.0, 0.0, 0.0, 0.0)
    assert same.format() == "+0.00 [+0.00, +0.00], A better in 0% of resamples"


def test_paired_bootstrap_finds_a_clearly_better_system():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 4, 300)
    noise = rng.integers(0, 4, 300)
    good = np.where(rng.random(300) < 0.8, y_true, noise)
    poor = np.where(rng.random(300) < 0.4, y_true, noise)
    speakers = np.repeat(np.arange(30), 10)
    better = paired_macro_f1(y_true, good, poor, speakers, n_resamples=100, seed=2)
    assert better.value == pytest.approx(macro_f1(y_true, good) - macro_f1(y_true, poor))
    assert better.share_a_better > 0.99 and better.low > 0
    worse = paired_bootstrap(np.mean, [poor == y_true], [good == y_true], speakers, 100, 2)
    assert worse.share_a_better < 0.01 and worse.high < 0


def test_macro_f1_and_accuracy_intervals_match_scikit_learn_and_balance_each_resample():
    from sklearn.metrics import balanced_accuracy_score, f1_score

    rng = np.random.default_rng(3)
    y_true = rng.choice(4, size=120, p=[0.6, 0.2, 0.15, 0.05])
    y_pred = np.where(rng.random(120) < 0.7, y_true, rng.integers(0, 4, 120))
    speakers = np.repeat(np.arange(12), 10)
    plain = macro_f1_interval(y_true, y_pred, speakers, n_resamples=30)
    assert plain.value == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    balanced = macro_f1_interval(y_true, y_pred, speakers, balanced=True, n_resamples=30)
    weights = 1 / np.bincount(y_true)[y_true]
    assert balanced.value == pytest.approx(
        f1_score(y_true, y_pred, average="macro", sample_weight=weights)
    )
    # Each resample is re-weighted by its own class counts.
    expected = [
        macro_f1(y_true[i], y_pred[i], balanced=True) for i in bootstrap_indices(speakers, 30, 0)
    ]
    assert np.allclose(balanced.resamples, expected)
    acc = accuracy_interval(y_true, y_pred, speakers, balanced=True, n_resamples=30)
    assert acc.value == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert accuracy_interval(y_true, y_pred, speakers, n_resamples=30).value == pytest.approx(
        np.mean(y_true == y_pred)
    )


def test_concordance_correlation_matches_its_formula():
    x = np.array([1.0, 2, 3, 4])
    assert concordance_correlation(x, x) == pytest.approx(1.0)
    # Shifted by 1: Pearson r = 1, but var = 1.25 each and the means differ by 1.
    assert concordance_correlation(x, x + 1) == pytest.approx(2 * 1.25 / (1.25 + 1.25 + 1))
    assert concordance_correlation(x, x + 1) == pytest.approx(0.7142857142857143)
    # Negated: cov = -1.25 and the means (2.5, -2.5) differ by 5.
    negated = concordance_correlation(x, -x)
    assert negated < 0 and negated == pytest.approx(-2 * 1.25 / (1.25 + 1.25 + 25))
    centred = x - x.mean()
    assert concordance_correlation(centred, -centred) == pytest.approx(-1.0)
    assert concordance_correlation(x, np.full(4, 2.5)) == 0.0
    # Scaled: y = 2x, var(y) = 5, cov = 2.5, mean gap 2.5.
    assert concordance_correlation(x, 2 * x) == pytest.approx(2 * 2.5 / (1.25 + 5 + 2.5**2))
    # NaN pairs are dropped.
    with_nan = concordance_correlation([1, 2, np.nan, 3, 4], [2, 3, 5, 4, np.nan])
    assert with_nan == pytest.approx(concordance_correlation([1, 2, 3], [2, 3, 4]))
    with pytest.raises(ValueError, match="at least 2"):
        concordance_correlation([1.0, np.nan], [np.nan, 2.0])


def test_ccc_interval_runs_on_clustered_data():
    rng = np.random.default_rng(4)
    truth = rng.normal(size=200)
    prediction = 0.8 * truth + rng.normal(scale=0.5, size=200)
    interval = ccc_interval(truth, prediction, np.repeat(np.arange(20), 10), n_resamples=100)
    assert interval.value == pytest.approx(concordance_correlation(truth, prediction))
    assert interval.low < interval.value < interval.high < 1


def test_per_group_macro_f1_by_hand():
    y_true = [0, 0, 1, 1, 0, 1, 2, 2, 0]
    y_pred = [0, 1, 1, 1, 0, 1, 2, 0, 0]
    gender = ["F", "F", "F", "M", "M", "M", None, "", math.nan]
    result = per_group_macro_f1(y_true, y_pred, gender)
    # F: class 0 P=1 R=1/2, class 1 P=1/2 R=1 -> F1 2/3 each. M: all right.
    # Unknown (pooled): class 0 P=1/2 R=1, class 2 P=1 R=1/2 -> 2/3 each.
    assert list(result) == ["F", "M", "Unknown"]
    assert result["F"] == (3, pytest.approx(2 / 3))
    assert result["M"] == (3, 1.0)
    assert result["Unknown"] == (3, pytest.approx(2 / 3))


def test_per_speaker_accuracy_and_summary_by_hand():
    speakers = ["s1"] * 5 + ["s2"] * 6 + ["s3"] * 2 + ["Unknown"] * 6
    correct = [1, 1, 1, 1, 0] + [1, 1, 1, 0, 0, 0] + [1, 1] + [1] * 6
    y_true = np.zeros(len(speakers), dtype=int)
    y_pred = 1 - np.asarray(correct)
    values = per_speaker_accuracy(y_true, y_pred, speakers, min_clips=5)
    assert np.allclose(values, [0.8, 0.5])  # s3 too few clips, unknown speakers excluded
    assert np.allclose(per_speaker_accuracy(y_true, y_pred, speakers, min_clips=2), [0.8, 0.5, 1])
    summary = summarise(values)
    assert summary["n"] == 2
    expected = {"mean": 0.65, "std": 0.15, "min": 0.5, "p10": 0.53, "median": 0.65}
    assert {k: summary[k] for k in expected} == pytest.approx(expected)
    assert summary["p90"] == pytest.approx(0.77) and summary["max"] == pytest.approx(0.8)
    assert summarise([])["n"] == 0 and math.isnan(summarise([])["mean"])
