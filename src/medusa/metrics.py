"""Classification metrics over the 8 consensus classes (scikit-learn underneath)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from medusa.emotions import CLASS_LETTERS, NUM_CLASSES

LABELS = list(range(NUM_CLASSES))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Macro-F1 (primary), micro-F1, accuracy, per-class F1 and the confusion matrix.

    Classes are integer indices into CLASS_LETTERS. Macro- and micro-F1 average over the classes
    present in truth or prediction (scikit-learn's default, as in the challenge scorer); a class
    the model never predicts but that occurs in the truth counts as F1 = 0.
    """
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    if len(y_true) == 0:
        raise ValueError("cannot score an empty set")
    per_class = f1_score(y_true, y_pred, labels=LABELS, average=None, zero_division=0)
    return {
        "n": int(len(y_true)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "per_class_f1": {
            letter: float(f) for letter, f in zip(CLASS_LETTERS, per_class, strict=True)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=LABELS).tolist(),
    }
