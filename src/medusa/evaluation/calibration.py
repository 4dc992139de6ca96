"""Are the posteriors calibrated? Calibration error, proper scores, reliability diagrams and
temperature scaling.

Inputs are posteriors ``probs`` [clips, classes] (rows summing to 1) and integer ``labels``
[clips] in 0..classes-1. Posteriors are floored at ``FLOOR`` (1e-12) before logarithms, so a
class given exactly 0 costs -log(1e-12) = 27.6 nats instead of infinity.

- ``expected_calibration_error``: top-label ECE over ``n_bins`` equal-mass bins (clips sorted
  by confidence, i.e. the top posterior, then split into bins of equal count, the first
  ``clips % n_bins`` bins one clip larger): sum over bins of (clips in bin / clips) *
  |accuracy in bin - mean confidence in bin|. Equal-mass bins, unlike equal-width ones, never
  leave a bin empty or nearly so, where most confidences crowd near 1.
- ``brier_score``: mean over clips of sum over classes of (p_k - [k == label])^2 (0 perfect,
  2 worst).
- ``negative_log_likelihood``: mean over clips of -ln p_label (nats).
- ``reliability_bins``: per equal-mass bin: clips, confidence range, mean confidence, accuracy
  (the data of a reliability diagram); ``reliability_figure`` draws one or more systems,
  ``write_reliability_diagram`` saves that figure as PNG atomically (``medusa.core.atomic``).
- ``fit_temperature``: the single temperature T > 0 minimising the NLL of softmax(z / T) on
  (logits or log-posteriors z, labels); ``temperature_scale``: softmax(ln p / T), i.e.
  p^(1/T) renormalised. T > 1 softens over-confident posteriors; argmax never changes.
  The NLL is convex in 1 / T, so the fit is a bisection of its derivative in ln(1 / T) over
  [``MIN_TEMPERATURE``, ``MAX_TEMPERATURE``]: deterministic, no optimiser state; data it
  cannot separate better push T to a bound, which is returned.
- ``calibration_intervals``: ECE, Brier and NLL with cluster-bootstrap intervals resampling
  speakers (``medusa.evaluation.stats.bootstrap_intervals``, one pass for the three).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from medusa.core.atomic import atomic_write
from medusa.evaluation.stats import Interval, bootstrap_intervals

FLOOR = 1e-12
DEFAULT_BINS = 15
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0
BISECTION_STEPS = 100  # halves ln(1e4) to ~1e-29: far below float precision
SUM_TOLERANCE = 1e-3
SCORES = ("ece", "brier", "nll")


class CalibrationError(ValueError):
    """Posteriors or labels that cannot be scored; the message says what is wrong."""


def check_posteriors(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """``probs`` as float64 [clips, classes] with rows summing to 1, ``labels`` as int [clips]."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or len(probs) == 0:
        raise CalibrationError(f"posteriors must be [clips, classes], got shape {probs.shape}")
    if labels.shape != (len(probs),):
        raise CalibrationError(f"{labels.shape} labels for {len(probs)} rows of posteriors")
    if not np.issubdtype(labels.dtype, np.integer):
        raise CalibrationError(f"labels must be class indices, got {labels.dtype}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise CalibrationError(f"labels must lie in 0..{probs.shape[1] - 1}")
    bad = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1)
    bad |= np.abs(probs.sum(axis=1) - 1) > SUM_TOLERANCE
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise CalibrationError(f"row {row} is not a distribution: {probs[row].tolist()}")
    return probs, labels.astype(np.int64)


def _check_scores(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or len(scores) == 0 or not np.isfinite(scores).all():
        raise CalibrationError(f"scores must be finite [clips, classes], got shape {scores.shape}")
    uniform = np.full_like(scores, 1.0 / scores.shape[1])
    return scores, check_posteriors(uniform, labels)[1]


def log_posteriors(probs) -> np.ndarray:
    """ln p, floored at ln ``FLOOR``."""
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), FLOOR))


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# Scores


def equal_mass_bins(confidence: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Row indices of each bin: rows sorted by confidence (stable), split into equal counts."""
    if not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise CalibrationError(
            f"the number of bins must be a positive whole number, not {n_bins!r}"
        )
    order = np.argsort(confidence, kind="stable")
    return [rows for rows in np.array_split(order, min(n_bins, len(order))) if len(rows)]


def reliability_bins(probs, labels, n_bins: int = DEFAULT_BINS) -> pd.DataFrame:
    """Per equal-mass bin: clips, lowest and highest confidence, mean confidence, accuracy."""
    probs, labels = check_posteriors(probs, labels)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    rows = [
        {
            "bin": b,
            "clips": len(idx),
            "lowest": confidence[idx].min(),
            "highest": confidence[idx].max(),
            "confidence": confidence[idx].mean(),
            "accuracy": correct[idx].mean(),
        }
        for b, idx in enumerate(equal_mass_bins(confidence, n_bins))
    ]
    return pd.DataFrame(rows)


def expected_calibration_error(probs, labels, n_bins: int = DEFAULT_BINS) -> float:
    """Top-label ECE over equal-mass bins (see the module doc)."""
    return ece_of_bins(reliability_bins(probs, labels, n_bins))


def ece_of_bins(bins: pd.DataFrame) -> float:
    """ECE from ``reliability_bins``: |accuracy - confidence| averaged with clip weights."""
    gap = np.abs(bins["accuracy"] - bins["confidence"])
    return float((bins["clips"] * gap).sum() / bins["clips"].sum())


def brier_score(probs, labels) -> float:
    """Multi-class Brier score: mean over clips of the squared error summed over classes."""
    probs, labels = check_posteriors(probs, labels)
    onehot = np.eye(probs.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def negative_log_likelihood(probs, labels) -> float:
    """Mean -ln p(label) in nats, p floored at ``FLOOR``."""
    probs, labels = check_posteriors(probs, labels)
    return float(-log_posteriors(probs[np.arange(len(labels)), labels]).mean())


def calibration_scores(probs, labels, n_bins: int = DEFAULT_BINS) -> dict[str, float]:
    """``{"ece": ..., "brier": ..., "nll": ...}`` of one system."""
    values = _score_vector(probs, labels, n_bins)
    return dict(zip(SCORES, values, strict=True))


def _score_vector(probs, labels, n_bins: int) -> list[float]:
    return [
        expected_calibration_error(probs, labels, n_bins),
        brier_score(probs, labels),
        negative_log_likelihood(probs, labels),
    ]


def calibration_intervals(
    probs, labels, groups, n_bins: int = DEFAULT_BINS, **bootstrap
) -> dict[str, Interval]:
    """ECE, Brier and NLL, each with its cluster-bootstrap interval over ``groups`` (speakers;
    ``bootstrap``: n_resamples, seed, confidence as in ``medusa.evaluation.stats``)."""
    probs, labels = check_posteriors(probs, labels)

    def statistic(p: np.ndarray, y: np.ndarray) -> list[float]:
        return _score_vector(p, y, n_bins)

    intervals = bootstrap_intervals(statistic, (probs, labels), groups, **bootstrap)
    return dict(zip(SCORES, intervals, strict=True))


# --------------------------------------------------------------------------------------------
# Temperature scaling


def _nll_slope(scores: np.ndarray, labels: np.ndarray, inverse_t: float) -> float:
    """d NLL / d(1/T) at 1/T: mean of E_p[z] - z_label, increasing in 1/T (NLL convex)."""
    p = softmax(scores * inverse_t)
    return float(((p * scores).sum(axis=1) - scores[np.arange(len(labels)), labels]).mean())


def fit_temperature(scores, labels) -> float:
    """The T in [MIN_TEMPERATURE, MAX_TEMPERATURE] minimising the mean NLL of softmax(z / T).

    ``scores``: logits or log-posteriors (``log_posteriors(probs)``) [clips, classes].
    """
    scores, labels = _check_scores(scores, labels)
    low, high = np.log(1 / MAX_TEMPERATURE), np.log(1 / MIN_TEMPERATURE)  # ln(1/T) bounds
    if _nll_slope(scores, labels, np.exp(low)) >= 0:
        return MAX_TEMPERATURE
    if _nll_slope(scores, labels, np.exp(high)) <= 0:
        return MIN_TEMPERATURE
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        if _nll_slope(scores, labels, np.exp(middle)) < 0:
            low = middle
        else:
            high = middle
    return float(np.exp(-(low + high) / 2))


def temperature_scale(probs, temperature: float) -> np.ndarray:
    """softmax(ln p / T): posteriors p^(1/T) renormalised (same argmax)."""
    if not np.isfinite(temperature) or temperature <= 0:
        raise CalibrationError(f"the temperature must be a positive number, not {temperature!r}")
    return softmax(log_posteriors(probs) / temperature)


# --------------------------------------------------------------------------------------------
# Reliability diagram


def reliability_figure(
    curves: Mapping[str, pd.DataFrame], title: str = "Reliability (equal-mass bins)"
) -> Figure:
    """Accuracy against mean confidence per bin for each system (``reliability_bins``), the
    diagonal of perfect calibration, and each system's ECE in the legend."""
    fig = Figure(figsize=(5.0, 5.0), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    for name, bins in curves.items():
        label = f"{name} (ECE {ece_of_bins(bins):.3f})"
        ax.plot(bins["confidence"], bins["accuracy"], marker="o", label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean confidence (top posterior)", ylabel="accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    return fig


def write_reliability_diagram(
    path: str | os.PathLike, curves: Mapping[str, pd.DataFrame], title: str | None = None
) -> None:
    """``reliability_figure(curves)`` saved as PNG at ``path`` atomically."""
    fig = reliability_figure(curves, *([title] if title else []))
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def reliability_curves(
    systems: Mapping[str, np.ndarray], labels: Sequence[int], n_bins: int = DEFAULT_BINS
) -> dict[str, pd.DataFrame]:
    """``reliability_bins`` of several systems' posteriors on the same labels."""
    return {name: reliability_bins(probs, labels, n_bins) for name, probs in systems.items()}
