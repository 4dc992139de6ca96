"""Balanced sampling (docs/method.md, sections 5.2-5.3 and 6.2): stage-2 epochs, the meta-classifier and balanced holdout."""

from __future__ import annotations

import numpy as np


def _undersample_classes(
    hard_labels: np.ndarray, eligible: np.ndarray, rng: np.random.Generator
) -> tuple[list[np.ndarray], int]:
    """Every class present among the `eligible` files, undersampled without replacement to the
    rarest present class's count: (one index array per present class, in class order; count)."""
    # Classes are indices 0..C-1 (-1: none); every class present, whatever the class set.
    n_classes = int(hard_labels.max(initial=-1)) + 1
    per_class = [np.flatnonzero((hard_labels == c) & eligible) for c in range(n_classes)]
    present = [idx for idx in per_class if len(idx) > 0]
    if not present:
        raise ValueError("no file with a consensus class to balance")
    count = min(len(idx) for idx in present)
    return [rng.choice(idx, size=count, replace=False) for idx in present], count


def stage2_balanced_subset(
    hard_labels: np.ndarray, ambiguous: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Indices of one balanced epoch.

    `hard_labels[i]` is the argmax class of file i's soft target; `ambiguous[i]` is True for
    files whose consensus is X or O (the ambiguous pool). Each of the classes present among the
    non-ambiguous files is undersampled to the rarest class's count, and that same count is
    drawn from the ambiguous pool. Returned indices are shuffled.
    """
    hard_labels = np.asarray(hard_labels)
    ambiguous = np.asarray(ambiguous, dtype=bool)
    if hard_labels.shape != ambiguous.shape:
        raise ValueError("hard_labels and ambiguous must have the same shape")
    chosen, count = _undersample_classes(hard_labels, ~ambiguous, rng)
    pool = np.flatnonzero(ambiguous)
    if len(pool) > 0:
        chosen.append(rng.choice(pool, size=min(count, len(pool)), replace=False))
    subset = np.concatenate(chosen)
    rng.shuffle(subset)
    return subset


def balanced_evaluation_subset(hard_labels: np.ndarray, seed: int) -> np.ndarray:
    """A fixed class-balanced subset for model selection ("balanced held-out" of the paper).

    Every class present is undersampled to the rarest present class's count with a fixed seed,
    so every model and epoch is scored on the same files. Indices are sorted.
    """
    hard_labels = np.asarray(hard_labels)
    eligible = np.ones(hard_labels.shape, dtype=bool)
    chosen, _ = _undersample_classes(hard_labels, eligible, np.random.default_rng(seed))
    return np.sort(np.concatenate(chosen))
