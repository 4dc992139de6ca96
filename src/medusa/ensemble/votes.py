"""The voting baselines over the ensemble's posteriors (docs/method.md, section 7, Table 3):
majority vote, soft vote and product of experts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medusa.ensemble.inputs import POSTERIOR_FLOOR

# --------------------------------------------------------------------------------------------
# Baselines


def majority_vote(probs_list: Sequence[np.ndarray]) -> np.ndarray:
    """Plurality of the models' argmax classes, [N] class indices.

    Ties between the most-voted classes go to the tied class with the largest summed
    probability over all models (then to the lowest class index, an exact tie being
    practically impossible).
    """
    probs = np.stack([np.asarray(p, dtype=np.float64) for p in probs_list])  # [K, N, C]
    votes = np.eye(probs.shape[2], dtype=np.int64)[probs.argmax(axis=2)].sum(axis=0)  # [N, C]
    summed = probs.sum(axis=0)
    tied = votes == votes.max(axis=1, keepdims=True)
    return np.where(tied, summed, -np.inf).argmax(axis=1)


def soft_vote(probs_list: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of the models' posteriors, [N, C]; its argmax is the soft-vote prediction."""
    return np.stack([np.asarray(p, dtype=np.float64) for p in probs_list]).mean(axis=0)


def product_of_experts(probs_list: Sequence[np.ndarray]) -> np.ndarray:
    """Normalised geometric mean of the models' posteriors (floored at POSTERIOR_FLOOR), [N, C]:
    the meta-classifier's start (``MetaClassifier.start_at_votes``), its "stay at the vote"."""
    logs = np.log(np.clip(np.stack(probs_list).astype(np.float64), POSTERIOR_FLOOR, None))
    mean = logs.mean(axis=0)
    probs = np.exp(mean - mean.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)
