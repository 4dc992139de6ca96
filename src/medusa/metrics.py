"""Classification metrics over the 8 consensus classes (scikit-learn underneath)."""

from __future__ import annotations

import re
import string

import numpy as np

from medusa.emotions import CLASS_LETTERS, NUM_CLASSES

LABELS = list(range(NUM_CLASSES))


def class_balancing_weights(y_true: np.ndarray) -> np.ndarray:
    """Per-clip weights 1 / (clips of its class): every class present weighs the same."""
    y_true = np.asarray(y_true, dtype=int)
    counts = np.bincount(y_true, minlength=NUM_CLASSES)
    return 1.0 / counts[y_true]


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, balanced: bool = False) -> dict:
    """Macro-F1 (primary), micro-F1, accuracy, per-class F1 and the confusion matrix.

    Classes are integer indices into CLASS_LETTERS. Macro- and micro-F1 average over the classes
    present in truth or prediction (scikit-learn's default, as in the challenge scorer); a class
    the model never predicts but that occurs in the truth counts as F1 = 0.

    `balanced`: every clip is weighted by 1 / (clips of its true class), so each class present
    counts as much as any other: the figures expected on a class-balanced set drawn from these
    clips (the paper's "balanced held-out set"), computed from every clip instead of one
    undersampled draw. The confusion matrix stays in clip counts.
    """
    # Imported here: scikit-learn takes ~2 s to import, and jobs that only write posteriors or
    # transcripts (which import this module) never score anything.
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    if len(y_true) == 0:
        raise ValueError("cannot score an empty set")
    weights = class_balancing_weights(y_true) if balanced else None
    f1 = {"y_true": y_true, "y_pred": y_pred, "sample_weight": weights, "zero_division": 0}
    per_class = f1_score(labels=LABELS, average=None, **f1)
    return {
        "n": int(len(y_true)),
        "macro_f1": float(f1_score(average="macro", **f1)),
        "micro_f1": float(f1_score(average="micro", **f1)),
        "accuracy": float(accuracy_score(y_true, y_pred, sample_weight=weights)),
        "per_class_f1": {
            letter: float(f) for letter, f in zip(CLASS_LETTERS, per_class, strict=True)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=LABELS).tolist(),
    }


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
