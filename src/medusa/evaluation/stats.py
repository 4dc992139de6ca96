"""Uncertainty for every reported figure: speaker-clustered bootstrap intervals and fairness summaries.

Clips of one speaker are not independent (voice, microphone, recording, annotators), so the
bootstrap resamples whole speakers with replacement (a *cluster* bootstrap); resampling clips
instead understates the uncertainty whenever speakers differ. Clips whose speaker is unknown
(``medusa.core.manifest.is_unknown``: None, NaN, "", "Unknown", ... in any case) are each their own
group, i.e. resampled as single clips.

- ``bootstrap_interval``: any statistic of one or more per-clip arrays, with a percentile
  interval (``Interval``); ``bootstrap_intervals``: each entry of a vector statistic, from the
  same resamples (e.g. ``class_f1_figures``: per-class F1, undefined for an absent class).
- ``paired_bootstrap``: the difference between two systems scored on the *same* resampled
  clips, and the share of resamples in which system A comes out ahead (``PairedComparison``).
- ``macro_f1_interval``, ``accuracy_interval``, ``paired_macro_f1``, ``ccc_interval``: the
  wrappers the report uses.
- ``concordance_correlation``: Lin's concordance correlation coefficient (dimensional attributes).
- ``per_group_macro_f1``, ``per_speaker_accuracy``, ``summarise``: fairness breakdowns.

numpy only, plus the library's rule for unknown labels (``medusa.core.manifest``) and its
per-class F1 (``medusa.core.metrics``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medusa.core.emotions import NUM_CLASSES
from medusa.core.manifest import is_unknown
from medusa.core.metrics import class_balancing_weights, class_f1

#: More than this share of undefined resamples makes an interval suspect (``Interval.unreliable``).
MAX_SKIPPED_SHARE = 0.10

Statistic = Callable[..., float]


def group_codes(groups: Sequence | np.ndarray | None, n_rows: int | None = None) -> np.ndarray:
    """Integer group code per row, 0..n_groups-1; each row of an unknown group gets its own code.

    ``groups=None`` makes every row its own group (the ordinary, unclustered bootstrap); then
    ``n_rows`` is required.
    """
    if groups is None:
        if n_rows is None:
            raise ValueError("n_rows is required when groups is None")
        return np.arange(n_rows)
    labels = np.asarray(groups, dtype=object).ravel()
    if n_rows is not None and len(labels) != n_rows:
        raise ValueError(f"{len(labels)} group labels for {n_rows} rows")
    codes, seen = np.empty(len(labels), dtype=np.int64), {}
    for row, label in enumerate(labels):
        # A fresh object per unknown row can never collide with a real label.
        codes[row] = seen.setdefault(object() if is_unknown(label) else label, len(seen))
    return codes


def iter_bootstrap_indices(
    groups: Sequence | np.ndarray | None, n_resamples: int, seed: int, n_rows: int | None = None
) -> Iterator[np.ndarray]:
    """Lazily yield ``bootstrap_indices``'s resamples (saves memory on large sets)."""
    codes = group_codes(groups, n_rows)
    if len(codes) == 0:
        raise ValueError("cannot resample an empty set")
    order = np.argsort(codes, kind="stable")  # rows of each group contiguous
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n_groups = len(sizes)
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        drawn = rng.integers(0, n_groups, size=n_groups)
        lengths = sizes[drawn]
        ends = np.cumsum(lengths)
        # Position within each drawn group's block: 0..size-1, block after block.
        within = np.arange(ends[-1]) - np.repeat(ends - lengths, lengths)
        yield order[np.repeat(starts[drawn], lengths) + within]


def bootstrap_indices(
    groups: Sequence | np.ndarray, n_resamples: int, seed: int
) -> list[np.ndarray]:
    """Cluster bootstrap: per resample, the row indices of all rows of the groups drawn.

    As many groups as there are are drawn with replacement (``np.random.default_rng(seed)``);
    a group drawn twice contributes its rows twice, so resamples vary in length. Rows of an
    unknown group (``is_unknown``) are each their own group.
    """
    return list(iter_bootstrap_indices(groups, n_resamples, seed))


def _as_arrays(arrays: Sequence | np.ndarray) -> tuple[np.ndarray, ...]:
    """A tuple of equally long arrays; a single ndarray counts as one array."""
    arrays = (arrays,) if isinstance(arrays, np.ndarray) else tuple(arrays)
    arrays = tuple(np.asarray(a) for a in arrays)
    if not arrays or len({len(a) for a in arrays}) != 1:
        raise ValueError("need one or more arrays, all of the same length")
    return arrays


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Interval:
    """A statistic on the full data with its bootstrap percentile interval.

    ``resamples`` holds the statistic on each resample where it was defined; ``skipped`` counts
    the resamples where it was not (ValueError or NaN). ``unreliable`` flags more than 10 %
    skipped, which ``format`` then mentions.
    """

    value: float
    low: float
    high: float
    confidence: float
    resamples: np.ndarray = field(repr=False, compare=False)
    skipped: int = 0

    @property
    def std(self) -> float:
        """Bootstrap standard error (std of the resampled values)."""
        return float(np.std(self.resamples, ddof=1)) if len(self.resamples) > 1 else math.nan

    @property
    def n_resamples(self) -> int:
        return len(self.resamples) + self.skipped

    @property
    def unreliable(self) -> bool:
        return self.skipped > MAX_SKIPPED_SHARE * self.n_resamples

    def _note(self) -> str:
        if not self.unreliable:
            return ""
        return f" ({self.skipped} of {self.n_resamples} resamples undefined)"

    def format(self, digits: int = 2) -> str:
        """E.g. ``"0.41 [0.33, 0.49]"``."""
        v, lo, hi = (f"{x:.{digits}f}" for x in (self.value, self.low, self.high))
        return f"{v} [{lo}, {hi}]{self._note()}"


@dataclass(frozen=True)
class PairedComparison(Interval):
    """statistic(A) - statistic(B) on the same resamples, with its interval (``Interval``).

    ``share_a_better``: the fraction of (defined) resamples where the difference is > 0.
    """

    share_a_better: float = math.nan

    def format(self, digits: int = 2) -> str:
        """E.g. ``"+0.03 [-0.01, +0.07], A better in 91% of resamples"``."""
        v, lo, hi = (f"{x:+.{digits}f}" for x in (self.value, self.low, self.high))
        share = f"A better in {100 * self.share_a_better:.0f}% of resamples"
        return f"{v} [{lo}, {hi}], {share}{self._note()}"


def bootstrap_intervals(
    statistic: Callable[..., Sequence[float] | np.ndarray],
    arrays: Sequence | np.ndarray,
    groups: Sequence | np.ndarray | None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[Interval]:
    """Each entry of the vector ``statistic(*arrays)`` with its cluster-bootstrap percentile
    interval, all from the same resamples (one pass for several figures).

    ``arrays``: per-row arrays (one ndarray or a sequence of them), resampled together by
    ``bootstrap_indices(groups, n_resamples, seed)``; ``groups=None`` resamples single rows.
    An entry that is NaN on a resample (all entries where the statistic raises ValueError) is
    skipped for that entry and counted. An entry undefined on every resample gets NaN bounds.
    """
    arrays = _as_arrays(arrays)
    values = np.atleast_1d(np.asarray(statistic(*arrays), dtype=float))
    draws = np.empty((n_resamples, len(values)))
    for r, idx in enumerate(iter_bootstrap_indices(groups, n_resamples, seed, len(arrays[0]))):
        try:
            draws[r] = statistic(*(a[idx] for a in arrays))
        except ValueError:
            draws[r] = math.nan
    intervals = []
    for value, column in zip(values, draws.T, strict=True):
        defined = column[~np.isnan(column)]
        bounds = _percentiles(defined, confidence) if len(defined) else (math.nan, math.nan)
        skipped = n_resamples - len(defined)
        intervals.append(Interval(float(value), *bounds, confidence, defined, skipped))
    return intervals


def bootstrap_interval(
    statistic: Statistic,
    arrays: Sequence | np.ndarray,
    groups: Sequence | np.ndarray | None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """``statistic(*arrays)`` with a cluster-bootstrap percentile interval (``bootstrap_intervals``
    for one figure). Resamples where the statistic raises ValueError or returns NaN are
    skipped and counted; ValueError when it is undefined on all of them.
    """

    def as_vector(*resampled: np.ndarray) -> list[float]:
        return [float(statistic(*resampled))]

    (interval,) = bootstrap_intervals(as_vector, arrays, groups, n_resamples, seed, confidence)
    if not len(interval.resamples):
        raise ValueError(f"the statistic is undefined on all {n_resamples} resamples")
    return interval


def paired_bootstrap(
    statistic: Statistic,
    arrays_a: Sequence | np.ndarray,
    arrays_b: Sequence | np.ndarray,
    groups: Sequence | np.ndarray | None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedComparison:
    """``statistic(*arrays_a) - statistic(*arrays_b)``, both on the SAME resampled rows.

    Pairing removes the variation the systems share (which clips and speakers were drawn), so
    the interval is much narrower than comparing two separate intervals.
    """
    arrays_a, arrays_b = _as_arrays(arrays_a), _as_arrays(arrays_b)
    k = len(arrays_a)

    def difference(*arrays: np.ndarray) -> float:
        return float(statistic(*arrays[:k])) - float(statistic(*arrays[k:]))

    interval = bootstrap_interval(
        difference, arrays_a + arrays_b, groups, n_resamples, seed, confidence
    )
    share = float(np.mean(interval.resamples > 0))
    return PairedComparison(**vars(interval), share_a_better=share)


def _class_weights(y_true: np.ndarray) -> np.ndarray:
    """Per-row weights 1 / (rows of its true class): each class present weighs the same."""
    _, inverse, counts = np.unique(y_true, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, balanced: bool = False) -> float:
    """Macro-F1 over the classes in truth or prediction, F1 = 0 where undefined: exactly
    scikit-learn's ``f1_score(average="macro", zero_division=0)``, from weighted counts in
    numpy (about 50x faster, which matters for thousands of resamples).

    ``balanced``: rows weighted by 1 / (rows of their true class) within the rows given.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ValueError("cannot score an empty set")
    weights = _class_weights(y_true) if balanced else np.ones(len(y_true))
    labels = np.union1d(y_true, y_pred)
    true_idx, pred_idx = np.searchsorted(labels, y_true), np.searchsorted(labels, y_pred)
    hit = y_true == y_pred
    tp = np.bincount(true_idx[hit], weights=weights[hit], minlength=len(labels))
    # 2 TP + FP + FN = (TP + FN) + (TP + FP): the class's true and predicted weight.
    denominator = np.bincount(true_idx, weights, len(labels)) + np.bincount(
        pred_idx, weights, len(labels)
    )
    f1 = np.divide(2.0 * tp, denominator, out=np.zeros(len(labels)), where=denominator > 0)
    return float(f1.mean())


def class_f1_figures(
    y_true: np.ndarray,
    *predictions: np.ndarray,
    balanced: bool = False,
    n_classes: int = NUM_CLASSES,
):
    """The F1 of each of the `n_classes` classes, then the macro-F1, of one or more systems
    (e.g. meta seeds) on the same clips: [A, S, H, U, F, D, C, N, macro] for MSP-Podcast's
    classes (class indices as in ``medusa.core.metrics``).

    A class in neither the truth nor a system's predictions has no F1 (NaN), not 0; a class
    cell is the mean over the systems where it is defined, the macro-F1 the mean over systems
    of each one's mean over its classes present (``medusa.core.metrics.classification_metrics``).
    ``balanced`` weights rows as in ``macro_f1``.
    """
    weights = class_balancing_weights(y_true) if balanced else None
    per_system = np.array([class_f1(y_true, p, weights, n_classes) for p in predictions])
    defined = ~np.isnan(per_system)
    cells = np.divide(
        np.nansum(per_system, axis=0), defined.sum(axis=0),
        out=np.full(n_classes, math.nan), where=defined.any(axis=0),
    )  # fmt: skip
    macro = np.mean([row[ok].mean() for row, ok in zip(per_system, defined, strict=True)])
    return np.append(cells, macro)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray, balanced: bool = False) -> float:
    """Share of rows predicted right; ``balanced`` weights as in ``macro_f1``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ValueError("cannot score an empty set")
    weights = _class_weights(y_true) if balanced else None
    return float(np.average(y_true == y_pred, weights=weights))


def macro_f1_interval(y_true, y_pred, groups, balanced: bool = False, **bootstrap) -> Interval:
    """Macro-F1 with its cluster-bootstrap interval (``bootstrap``: n_resamples, seed, ...)."""

    def statistic(t: np.ndarray, p: np.ndarray) -> float:
        return macro_f1(t, p, balanced)

    return bootstrap_interval(statistic, (y_true, y_pred), groups, **bootstrap)


def accuracy_interval(y_true, y_pred, groups, balanced: bool = False, **bootstrap) -> Interval:
    """Accuracy with its cluster-bootstrap interval."""

    def statistic(t: np.ndarray, p: np.ndarray) -> float:
        return accuracy(t, p, balanced)

    return bootstrap_interval(statistic, (y_true, y_pred), groups, **bootstrap)


def paired_macro_f1(
    y_true, pred_a, pred_b, groups, balanced: bool = False, **bootstrap
) -> PairedComparison:
    """Macro-F1 of system A minus system B on the same resampled clips."""

    def statistic(t: np.ndarray, p: np.ndarray) -> float:
        return macro_f1(t, p, balanced)

    return paired_bootstrap(statistic, (y_true, pred_a), (y_true, pred_b), groups, **bootstrap)


def concordance_correlation(x, y) -> float:
    """Lin's concordance correlation coefficient, NaN pairs dropped.

    2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2), population (ddof=0) moments: 1 for
    perfect agreement, 0 for a constant prediction, below the Pearson correlation when the
    scales or means differ. NaN when both are constant (0 / 0); ValueError on < 2 pairs.
    """
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if len(x) != len(y):
        raise ValueError(f"{len(x)} values against {len(y)}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 2:
        raise ValueError("the concordance correlation needs at least 2 pairs")
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.mean(dx**2) + np.mean(dy**2) + (x.mean() - y.mean()) ** 2
    return float(2 * np.mean(dx * dy) / denominator) if denominator > 0 else math.nan


def ccc_interval(truth, prediction, groups, **bootstrap) -> Interval:
    """Concordance correlation with its cluster-bootstrap interval."""
    return bootstrap_interval(concordance_correlation, (truth, prediction), groups, **bootstrap)


def pooled_groups(groups) -> np.ndarray:
    """Group labels with every unknown one (``is_unknown``) replaced by "Unknown"."""
    return np.array(["Unknown" if is_unknown(g) else g for g in groups], dtype=object)


def per_group_macro_f1(y_true, y_pred, groups, balanced: bool = False) -> dict:
    """{group: (clips, macro-F1)} per group label (e.g. gender), groups sorted by name.

    Unknown labels (``is_unknown``) are pooled under "Unknown".
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = pooled_groups(groups)
    result = {}
    for group in sorted(set(labels), key=str):
        rows = labels == group
        result[group] = (int(rows.sum()), macro_f1(y_true[rows], y_pred[rows], balanced))
    return result


def per_speaker_accuracy(y_true, y_pred, speakers, min_clips: int = 5) -> np.ndarray:
    """Accuracy of each known speaker with at least ``min_clips`` clips (sorted by speaker)."""
    correct = np.asarray(y_true) == np.asarray(y_pred)
    speakers = np.asarray(speakers, dtype=object)
    known = np.array([not is_unknown(s) for s in speakers], dtype=bool)
    accuracies = []
    for speaker in sorted(set(speakers[known]), key=str):
        rows = speakers == speaker
        if rows.sum() >= min_clips:
            accuracies.append(correct[rows].mean())
    return np.asarray(accuracies, dtype=float)


def summarise(values) -> dict:
    """n, mean, std (ddof=0), min, p10, median, p90, max of ``values`` (NaN ones when empty)."""
    values = np.asarray(values, dtype=float)
    keys = ("mean", "std", "min", "p10", "median", "p90", "max")
    if len(values) == 0:
        return {"n": 0} | dict.fromkeys(keys, math.nan)
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    stats = (values.mean(), values.std(), values.min(), p10, median, p90, values.max())
    return {"n": len(values)} | {k: float(v) for k, v in zip(keys, stats, strict=True)}


def interval_text(value: float, low: float, high: float, signed: bool = False) -> str:
    """`0.412 [0.330, 0.490]`: a figure with its interval, three decimals (Tables R and C and the
    evidence document); `n/a` for a missing figure, the figure alone without an interval."""
    if pd.isna(value):
        return "n/a"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    if pd.isna(low) or pd.isna(high):
        return fmt.format(value)
    return f"{fmt.format(value)} [{fmt.format(low)}, {fmt.format(high)}]"
