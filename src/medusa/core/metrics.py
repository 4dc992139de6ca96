"""Classification metrics over a run's classes (MSP-Podcast's 8 by default), and word error rates."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import numpy as np

from medusa.core.emotions import CLASS_LETTERS, NUM_CLASSES


def class_balancing_weights(y_true: np.ndarray) -> np.ndarray:
    """Per-clip weights 1 / (clips of its class): every class present weighs the same."""
    y_true = np.asarray(y_true, dtype=int)
    counts = np.bincount(y_true)
    return 1.0 / counts[y_true]


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    balanced: bool = False,
    classes: Sequence[str] = CLASS_LETTERS,
) -> dict:
    """Macro-F1 (primary), micro-F1, accuracy, per-class F1 and the confusion matrix.

    Classes are integer indices into `classes` (the run's class codes). Macro- and micro-F1 average over the classes
    present in truth or prediction (scikit-learn's default, as in the challenge scorer); a class
    the model never predicts but that occurs in the truth counts as F1 = 0. `per_class_f1` has
    every class, with 0 for a class in neither truth nor prediction (scikit-learn's
    ``f1_score(labels=range(C), average=None, zero_division=0)``, and finite for JSON); the
    report's per-class table leaves those undefined instead (``class_f1``).

    `balanced`: every clip is weighted by 1 / (clips of its true class), so each class present
    counts as much as any other: the large-sample value of the figures on a class-balanced set
    drawn from these clips (the paper's "balanced held-out set"), computed from every clip
    instead of one undersampled draw. The confusion matrix stays in clip counts.

    Computed from the (weighted) confusion matrix with numpy, not scikit-learn: every training
    epoch, meta seed and report scores with it, and importing sklearn.metrics costs each of those
    jobs about a second (benchmarks/job_overhead.py). tests/test_metrics.py checks every figure
    against scikit-learn's f1_score, accuracy_score and confusion_matrix.
    """
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    if len(y_true) == 0:
        raise ValueError("cannot score an empty set")
    if len(y_pred) != len(y_true):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    weights = class_balancing_weights(y_true) if balanced else np.ones(len(y_true))
    n_classes = len(classes)
    confusion = confusion_matrix(y_true, y_pred, n_classes=n_classes)
    weighted = confusion_matrix(y_true, y_pred, weights, n_classes) if balanced else confusion
    per_class = _f1_of(weighted)
    present = ~np.isnan(per_class)
    # Single-label micro-F1 over all classes present is the (weighted) share of hits.
    accuracy = float(np.trace(weighted) / weights.sum())
    return {
        "n": int(len(y_true)),
        "macro_f1": float(per_class[present].mean()),
        "micro_f1": accuracy,
        "accuracy": accuracy,
        "per_class_f1": {
            letter: float(f) for letter, f in zip(classes, np.nan_to_num(per_class), strict=True)
        },
        "confusion": confusion.astype(int).tolist(),
    }


def class_f1(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    weights: np.ndarray | None = None,
    n_classes: int = NUM_CLASSES,
):
    """F1 of each of the `n_classes` classes from (weighted) clip counts; NaN for a class in
    neither the truth nor the predictions (undefined, not 0: it must not pull an average down)."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    return _f1_of(confusion_matrix(y_true, y_pred, weights, n_classes))


def _f1_of(confusion: np.ndarray) -> np.ndarray:
    """Per-class F1 of a [true, predicted] matrix; NaN for a class with neither."""
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (true + predicted).
    denominator = confusion.sum(1) + confusion.sum(0)
    full = np.full(len(confusion), np.nan)
    return np.divide(2 * np.diag(confusion), denominator, out=full, where=denominator > 0)


def confusion_matrix(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    weights: np.ndarray | None = None,
    n_classes: int = NUM_CLASSES,
) -> np.ndarray:
    """``[true class, predicted class]`` totals of `weights` (clip counts without weights)."""
    labels = np.concatenate([y_true, y_pred])
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"class indices must be in 0..{n_classes - 1}")
    cells = y_true * n_classes + y_pred
    totals = np.bincount(cells, weights=weights, minlength=n_classes**2)
    return totals.reshape(n_classes, n_classes)


def normalise_words(text: str) -> list[str]:
    """Lower-cased words with punctuation removed, for word error rates."""
    return re.sub(f"[{re.escape(string.punctuation)}]", " ", text.lower()).split()


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance between two word lists (substitutions, insertions, deletions)."""
    row = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, hyp_word in enumerate(hypothesis, 1):
            previous, row[j] = (
                row[j],
                min(row[j] + 1, row[j - 1] + 1, previous + (ref_word != hyp_word)),
            )
    return row[-1]


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus word error rate: total word errors over total reference words."""
    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses differ in length")
    errors = words = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        ref = normalise_words(reference)
        errors += word_errors(ref, normalise_words(hypothesis))
        words += len(ref)
    if words == 0:
        raise ValueError("no reference words")
    return errors / words
