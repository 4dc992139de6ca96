"""classification_metrics against scikit-learn, the reference it replaces in the jobs."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from medusa.core.emotions import CLASS_LETTERS, NUM_CLASSES
from medusa.core.metrics import class_balancing_weights, classification_metrics

LABELS = list(range(NUM_CLASSES))


def sklearn_metrics(y_true, y_pred, balanced):
    weights = class_balancing_weights(y_true) if balanced else None
    f1 = {"y_true": y_true, "y_pred": y_pred, "sample_weight": weights, "zero_division": 0}
    return {
        "macro_f1": f1_score(average="macro", **f1),
        "micro_f1": f1_score(average="micro", **f1),
        "accuracy": accuracy_score(y_true, y_pred, sample_weight=weights),
        "per_class_f1": dict(
            zip(CLASS_LETTERS, f1_score(labels=LABELS, average=None, **f1), strict=True)
        ),
        "confusion": confusion_matrix(y_true, y_pred, labels=LABELS).tolist(),
    }


@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize("seed", range(20))
def test_every_figure_equals_scikit_learns(seed, balanced):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    # Skewed classes, some absent from the truth, some never predicted.
    y_true = rng.choice(NUM_CLASSES, n, p=rng.dirichlet(np.full(NUM_CLASSES, 0.3)))
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.choice(NUM_CLASSES, n))
    if seed % 3 == 0:
        y_pred[y_pred == 2] = 3
    ours, theirs = (
        classification_metrics(y_true, y_pred, balanced),
        sklearn_metrics(y_true, y_pred, balanced),
    )
    assert ours["n"] == n
    assert ours["confusion"] == theirs["confusion"]
    for key in ("macro_f1", "micro_f1", "accuracy"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12), key
    for letter in CLASS_LETTERS:
        assert ours["per_class_f1"][letter] == pytest.approx(theirs["per_class_f1"][letter])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="empty"):
        classification_metrics(np.array([], int), np.array([], int))
    with pytest.raises(ValueError, match="0..7"):
        classification_metrics(np.array([0, 8]), np.array([0, 1]))
    with pytest.raises(ValueError, match="2 true labels but 1"):
        classification_metrics(np.array([0, 1]), np.array([0]))
