"""Synthetic ensembles for checking the meta-classifier (stage 3) where the answer is known.

A world has clips of 8 classes with MSP-Podcast's class imbalance and K "models" whose
posteriors are built the way MEDUSA's ensemble is meant to be helped by a meta-classifier:
each model is biased toward the majority classes (log-prior bias), informative to a degree
that differs per model and per class, noisy, and `useless` of them carry no signal at all.
Used by the tests of ``medusa.ensemble`` and by ``benchmarks/meta_synthetic.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medusa.core.emotions import ATTRIBUTES, NUM_CLASSES

# Train-set class shares of MSP-Podcast (A S H U F D C N), consensus 8-class rows.
MSP_PRIOR = np.array([0.100, 0.094, 0.250, 0.044, 0.017, 0.021, 0.037, 0.437])


@dataclass(frozen=True)
class SyntheticModel:
    reliability: np.ndarray  # [8] how strongly the true class shows in the logits
    bias: float  # weight of the log-prior (majority-class) bias
    noise: float  # logit noise std


def make_models(n_models: int = 14, useless: int = 2, seed: int = 0) -> list[SyntheticModel]:
    """K models: per-model and per-class reliability; the last `useless` ones pure bias + noise."""
    rng = np.random.default_rng(seed)
    models = []
    for k in range(n_models):
        if k >= n_models - useless:
            reliability = np.zeros(NUM_CLASSES)
        else:
            reliability = rng.uniform(0.0, 1.6, NUM_CLASSES) * rng.uniform(0.5, 1.5)
        models.append(SyntheticModel(reliability, rng.uniform(0.5, 1.5), rng.uniform(1.2, 2.0)))
    return models


def sample_clips(models: list[SyntheticModel], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(ensemble inputs X [n, K*11]: per model 8 posteriors + 3 attributes, true classes [n])."""
    rng = np.random.default_rng(seed)
    y = rng.choice(NUM_CLASSES, size=n, p=MSP_PRIOR)
    blocks = []
    for model in models:
        logits = (
            np.eye(NUM_CLASSES)[y] * model.reliability[y][:, None]
            + model.bias * np.log(MSP_PRIOR)
            + rng.normal(0.0, model.noise, (n, NUM_CLASSES))
        )
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        attributes = np.clip(rng.normal(4.0, 1.0, (n, len(ATTRIBUTES))), 1.0, 7.0)
        blocks.append(np.concatenate([probs, attributes], axis=1))
    return np.concatenate(blocks, axis=1).astype(np.float32), y


def training_arrays(X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """What ``medusa.ensemble.meta_training.fit_head`` takes: one-hot soft targets, attributes
    unrated."""
    return {
        "X": X,
        "soft": np.eye(NUM_CLASSES, dtype=np.float32)[y],
        "attributes": np.full((len(y), len(ATTRIBUTES)), np.nan, dtype=np.float32),
    }
