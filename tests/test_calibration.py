"""Calibration scores against their formulas, temperature scaling, intervals and the diagram."""

import math

import numpy as np
import pytest

from medusa.evaluation.calibration import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    CalibrationError,
    brier_score,
    calibration_intervals,
    calibration_scores,
    expected_calibration_error,
    fit_temperature,
    log_posteriors,
    negative_log_likelihood,
    reliability_bins,
    reliability_curves,
    softmax,
    temperature_scale,
    write_reliability_diagram,
)

# Five clips, three classes. Confidence (top posterior), prediction, label, correct:
#   0.9 -> 0 (label 0, right), 0.8 -> 0 (label 1, wrong), 0.6 -> 2 (label 2, right),
#   0.5 -> 1 (label 1, right), 0.4 -> 0 (label 2, wrong)
PROBS = np.array(
    [
        [0.9, 0.05, 0.05],
        [0.8, 0.1, 0.1],
        [0.2, 0.2, 0.6],
        [0.3, 0.5, 0.2],
        [0.4, 0.3, 0.3],
    ]
)
LABELS = np.array([0, 1, 2, 1, 2])


def test_ece_uses_equal_mass_bins():
    # 3 bins over 5 clips sorted by confidence: {0.4, 0.5}, {0.6, 0.8}, {0.9}.
    by_hand = (
        2 / 5 * abs(1 / 2 - (0.4 + 0.5) / 2)
        + 2 / 5 * abs(1 / 2 - (0.6 + 0.8) / 2)
        + 1 / 5 * abs(1 - 0.9)
    )
    assert expected_calibration_error(PROBS, LABELS, n_bins=3) == pytest.approx(by_hand)
    # One bin: |accuracy - mean confidence| over all clips.
    one_bin = abs(3 / 5 - (0.9 + 0.8 + 0.6 + 0.5 + 0.4) / 5)
    assert expected_calibration_error(PROBS, LABELS, n_bins=1) == pytest.approx(one_bin)
    # As many bins as clips: mean |correct - confidence|.
    each = (0.1 + 0.8 + 0.4 + 0.5 + 0.4) / 5
    assert expected_calibration_error(PROBS, LABELS, n_bins=5) == pytest.approx(each)


def test_reliability_bins_hold_the_diagram_data():
    bins = reliability_bins(PROBS, LABELS, n_bins=3)
    assert bins["clips"].tolist() == [2, 2, 1]
    np.testing.assert_allclose(bins["confidence"], [0.45, 0.7, 0.9])
    np.testing.assert_allclose(bins["accuracy"], [0.5, 0.5, 1.0])
    np.testing.assert_allclose(bins[["lowest", "highest"]].to_numpy()[1], [0.6, 0.8])


def test_brier_and_nll_match_their_formulas():
    squared_errors = [
        0.1**2 + 0.05**2 + 0.05**2,
        0.8**2 + 0.9**2 + 0.1**2,
        0.2**2 + 0.2**2 + 0.4**2,
        0.3**2 + 0.5**2 + 0.2**2,
        0.4**2 + 0.3**2 + 0.7**2,
    ]
    assert brier_score(PROBS, LABELS) == pytest.approx(sum(squared_errors) / 5)
    nll = -(math.log(0.9) + math.log(0.1) + math.log(0.6) + math.log(0.5) + math.log(0.3)) / 5
    assert negative_log_likelihood(PROBS, LABELS) == pytest.approx(nll)
    assert brier_score(np.eye(3), [0, 1, 2]) == 0
    assert negative_log_likelihood([[1.0, 0.0]], [1]) == pytest.approx(-math.log(1e-12))


def synthetic(n: int, sharpen: float, seed: int, classes: int = 8):
    """Labels drawn from softmax(z); the system reports softmax(sharpen * z): calibrated at
    sharpen 1, over-confident above (the right temperature is then `sharpen`)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, classes))
    truth = softmax(z)
    labels = np.array([rng.choice(classes, p=row) for row in truth])
    return softmax(sharpen * z), labels


def test_temperature_scaling_fixes_over_confidence_on_held_out_data():
    fit_probs, fit_labels = synthetic(3000, sharpen=3.0, seed=0)
    test_probs, test_labels = synthetic(3000, sharpen=3.0, seed=1)
    temperature = fit_temperature(log_posteriors(fit_probs), fit_labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    scaled = temperature_scale(test_probs, temperature)
    before = calibration_scores(test_probs, test_labels)
    after = calibration_scores(scaled, test_labels)
    assert after["nll"] < before["nll"] - 0.1
    assert after["ece"] < before["ece"] / 2 and after["brier"] < before["brier"]
    assert np.array_equal(scaled.argmax(axis=1), test_probs.argmax(axis=1))
    np.testing.assert_allclose(scaled.sum(axis=1), 1)


def test_calibrated_data_keeps_a_temperature_near_one():
    probs, labels = synthetic(5000, sharpen=1.0, seed=2)
    assert fit_temperature(log_posteriors(probs), labels) == pytest.approx(1.0, abs=0.08)
    # Logits and log-posteriors differ by a constant per row: the same temperature.
    logits = log_posteriors(probs) + 5.0
    assert fit_temperature(logits, labels) == fit_temperature(log_posteriors(probs), labels)


def test_temperature_scale_is_the_renormalised_power():
    probs = np.array([[0.7, 0.2, 0.1]])
    powered = probs ** (1 / 2.0)
    np.testing.assert_allclose(temperature_scale(probs, 2.0), powered / powered.sum())
    np.testing.assert_allclose(temperature_scale(probs, 1.0), probs)


def test_uninformative_scores_push_the_temperature_to_its_bound():
    scores = np.zeros((10, 3))
    scores[:, 0] = 1.0  # always class 0; labels spread evenly (3 each): flatter is better
    assert fit_temperature(scores[:9], np.arange(9) % 3) == MAX_TEMPERATURE
    # Always right: sharper is always better.
    assert fit_temperature(scores, np.zeros(10, dtype=int)) == MIN_TEMPERATURE


def test_intervals_resample_speakers():
    probs, labels = synthetic(400, sharpen=2.0, seed=3)
    speakers = np.repeat(np.arange(20), 20)
    intervals = calibration_intervals(probs, labels, speakers, n_resamples=200, seed=0)
    point = calibration_scores(probs, labels)
    for name in ("ece", "brier", "nll"):
        assert intervals[name].value == pytest.approx(point[name])
        assert intervals[name].low < point[name] < intervals[name].high
    again = calibration_intervals(probs, labels, speakers, n_resamples=200, seed=0)
    assert again["nll"].low == intervals["nll"].low


def test_intervals_are_wider_when_speakers_differ():
    """Speakers whose posteriors differ in sharpness: clips of one speaker are not independent,
    so resampling speakers gives wider intervals than resampling clips."""
    parts = [synthetic(20, sharpen=1.0 + 4 * (s % 2), seed=10 + s) for s in range(20)]
    probs = np.concatenate([p for p, _ in parts])
    labels = np.concatenate([y for _, y in parts])
    speakers = np.repeat(np.arange(20), 20)
    by_speaker = calibration_intervals(probs, labels, speakers, n_resamples=300, seed=0)
    by_clip = calibration_intervals(probs, labels, np.arange(400), n_resamples=300, seed=0)
    for name in ("ece", "nll"):
        width = by_speaker[name].high - by_speaker[name].low
        assert width > 1.4 * (by_clip[name].high - by_clip[name].low), name


def test_reliability_diagram_is_written_atomically(tmp_path):
    probs, labels = synthetic(500, sharpen=3.0, seed=4)
    curves = reliability_curves(
        {"soup": probs, "soup, T scaled": temperature_scale(probs, 3.0)}, labels, n_bins=10
    )
    assert [len(bins) for bins in curves.values()] == [10, 10]
    path = tmp_path / "reliability.png"
    write_reliability_diagram(path, curves)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["reliability.png"]


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        ([[0.5, 0.6]], [0], "row 0 is not a distribution"),
        ([[0.5, 0.5]], [2], "labels must lie in 0..1"),
        ([[0.5, 0.5]], [0.0], "labels must be class indices"),
        ([0.5, 0.5], [0], r"\[clips, classes\]"),
        ([[0.5, 0.5], [0.5, 0.5]], [0], "labels for 2 rows"),
    ],
)
def test_bad_input_is_refused(probs, labels, message):
    with pytest.raises(CalibrationError, match=message):
        calibration_scores(probs, labels)


def test_bad_bins_and_temperature_are_refused():
    with pytest.raises(CalibrationError, match="number of bins"):
        expected_calibration_error(PROBS, LABELS, n_bins=0)
    with pytest.raises(CalibrationError, match="temperature"):
        temperature_scale(PROBS, 0.0)
