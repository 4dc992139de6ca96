"""Stage 3's self-validation (docs/method.md, section 6.2): before the seeds train, a
speaker-grouped k-fold cross-validation on the meta-classifier's own clips chooses its
regularisation, the prior strength, from a small grid that includes "stay at the vote".

For every grid point and fold, a head trains on the other folds' clips (no resample) and
predicts the fold's; its score is the fold's macro-F1 over the clips with an 8-class
consensus. "Stay at the vote" is the head's start, the product-of-experts vote, untrained.
The choice follows the one-standard-error rule: of the grid points whose mean score is within
one standard error (over folds) of the best mean, the most regularised, in the order vote,
then decreasing prior strength. The head thus leaves the vote only on evidence that it gains
more than the folds' noise. With fewer speakers than folds no validation is possible: the
choice is the vote, and the record says why.

``select_meta`` (rule meta_select) writes the record (the grid, each point's per-fold scores,
mean, standard deviation and standard error, the choice and its reason) as JSON; every seed of
the ensemble trains with that choice (``medusa.ensemble.meta_training.chosen_config``) and carries
the record into its metrics, the soup's metrics, the report and the model card.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medusa.core.atomic import atomic_write_json
from medusa.core.manifest import read_manifest
from medusa.core.metrics import classification_metrics
from medusa.ensemble.inputs import EnsembleError, posterior_model_name, top_models
from medusa.ensemble.meta import MetaConfig, predict_probs, single_threaded
from medusa.ensemble.meta_training import VOTE, fit_head, head_training_data

log = logging.getLogger(__name__)

RULE = "one standard error"


@dataclass(frozen=True)
class SelectionConfig:
    """`meta.selection` of config/config.yaml; every key required."""

    enabled: bool
    folds: int
    prior_strengths: tuple[float, ...]
    seed: int

    @classmethod
    def from_dict(cls, cfg: Mapping | None) -> SelectionConfig:
        if not isinstance(cfg, Mapping):
            raise EnsembleError(f"meta.selection must be a mapping, got {cfg!r}")
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(cfg) - set(fields))
        missing = sorted(k for k in fields if cfg.get(k) is None)
        if unknown or missing:
            raise EnsembleError(f"meta.selection: unknown key(s) {unknown}, missing {missing}")
        strengths = tuple(float(p) for p in cfg["prior_strengths"])
        selection = cls(bool(cfg["enabled"]), int(cfg["folds"]), strengths, int(cfg["seed"]))
        if selection.folds < 2:
            raise EnsembleError(f"meta.selection.folds must be at least 2: {selection.folds}")
        if not strengths or any(not (0 <= p < math.inf) for p in strengths):
            raise EnsembleError(
                f"meta.selection.prior_strengths: one or more finite values >= 0: {strengths}"
            )
        return selection

    def grid(self) -> list[float]:
        """Prior strengths from the most to the least regularised; inf is the vote."""
        return [math.inf, *sorted(set(self.prior_strengths), reverse=True)]


def speaker_folds(groups: Sequence[str], k: int, seed: int) -> np.ndarray:
    """Fold index [N] of each clip: whole groups (speakers) per fold, folds of similar size
    (groups in a seeded random order, largest first, each to the fold with fewest clips)."""
    names, sizes = np.unique(np.asarray(groups, dtype=str), return_counts=True)
    if len(names) < k:
        raise EnsembleError(f"{len(names)} speaker group(s) cannot fill {k} folds")
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-sizes[order], kind="stable")]
    filled = np.zeros(k, dtype=np.int64)
    fold_of = {}
    for i in order:
        target = int(np.argmin(filled))
        fold_of[names[i]] = target
        filled[target] += sizes[i]
    return np.array([fold_of[g] for g in np.asarray(groups, dtype=str)], dtype=np.int64)


def fold_scores(
    train: Mapping[str, np.ndarray], cfg: MetaConfig, folds: np.ndarray, k: int
) -> list[float | None]:
    """Macro-F1 on each fold's 8-class clips of a head trained on the other folds (None: a
    fold without an 8-class clip)."""
    scores: list[float | None] = []
    for fold in range(k):
        held = folds == fold
        scored = held & (train["y"] >= 0)
        if not scored.any():
            scores.append(None)
            continue
        rest = {key: value[~held] for key, value in train.items()}
        head, _ = fit_head(rest, cfg, seed=0, resample=False)
        pred = predict_probs(head, train["X"][scored]).argmax(axis=1)
        scores.append(classification_metrics(train["y"][scored], pred)["macro_f1"])
    return scores


def grid_point(prior: float, scores: Sequence[float | None]) -> dict:
    """One grid point's record: its setting, per-fold scores and their summary."""
    values = np.array([s for s in scores if s is not None], dtype=np.float64)
    n = len(values)
    sd = float(values.std(ddof=1)) if n > 1 else math.nan
    return {
        "setting": VOTE if math.isinf(prior) else f"prior_strength {prior:g}",
        "prior_strength": VOTE if math.isinf(prior) else prior,
        "fold_macro_f1": list(scores),
        "cv_macro_f1": float(values.mean()) if n else math.nan,
        "sd": sd,
        "se": sd / math.sqrt(n) if n > 1 else math.nan,
    }


def one_standard_error_choice(points: Sequence[Mapping]) -> tuple[int, str]:
    """(index of the chosen point, why): the first point (most regularised first) whose mean is
    within one standard error of the best mean; the vote when no point has a score."""
    means = np.array([p["cv_macro_f1"] for p in points], dtype=np.float64)
    if np.isnan(means).all():
        return 0, "no fold had a clip with an 8-class consensus: the head stays at the vote"
    best = int(np.nanargmax(means))
    se = points[best]["se"]
    bar = means[best] - (0.0 if math.isnan(se) else se)
    chosen = next(i for i, m in enumerate(means) if not math.isnan(m) and m >= bar)
    return chosen, (
        f"best cross-validated macro-F1 {means[best]:.4f} ({points[best]['setting']}); "
        f"the most regularised point within one standard error ({bar:.4f}) is "
        f"{points[chosen]['setting']}"
    )


def cross_validate(
    train: Mapping[str, np.ndarray], cfg: MetaConfig, selection: SelectionConfig
) -> dict:
    """The selection record for the training arrays (``head_training_data``): grid, scores,
    choice (a prior strength or "vote") and its reason."""
    groups = train["groups"]
    speakers = sorted({g for g in groups if g.startswith("speaker:")})
    record = {
        "enabled": selection.enabled,
        "rule": RULE,
        "folds": selection.folds,
        "n_clips": int(len(groups)),
        "n_scored_clips": int((train["y"] >= 0).sum()),
        "n_speakers": len(speakers),
        "n_groups": len(set(groups)),
        "grid": [],
    }
    if not selection.enabled:
        reason = "meta.selection.enabled is false: meta.prior_strength as configured"
        return {**record, "choice": cfg.prior_strength, "reason": reason}
    if record["n_groups"] < selection.folds:
        reason = (
            f"only {record['n_groups']} speaker group(s) in the {cfg.train_on!r} clips "
            f"({len(speakers)} known speaker(s)), fewer than meta.selection.folds "
            f"({selection.folds}): no cross-validation possible, the head stays at the vote"
        )
        log.warning(reason)
        return {**record, "choice": VOTE, "reason": reason}
    folds = speaker_folds(groups, selection.folds, selection.seed)
    for prior in selection.grid():
        scores = fold_scores(train, dataclasses.replace(cfg, prior_strength=prior), folds,
                             selection.folds)  # fmt: skip
        record["grid"].append(grid_point(prior, scores))
        log.info("meta selection: %s", record["grid"][-1])
    chosen, reason = one_standard_error_choice(record["grid"])
    return {**record, "choice": record["grid"][chosen]["prior_strength"], "reason": reason}


@single_threaded
def select_meta(
    posterior_paths: Sequence[str | os.PathLike],
    manifest_path: str | os.PathLike,
    meta_cfg: Mapping,
    out_json: str | os.PathLike,
    top_k: int | None = None,
) -> dict:
    """Rule meta_select: cross-validate the grid on the ensemble's `train_on` clips and write
    the record (module docstring) to `out_json`. `top_k`: for the top-k ensemble's models."""
    cfg = MetaConfig.from_dict(meta_cfg)
    selection = SelectionConfig.from_dict(meta_cfg.get("selection"))
    if selection.enabled and (cfg.head != "linear" or cfg.init != "votes"):
        raise EnsembleError(
            "meta.selection.enabled needs meta.head: linear and meta.init: votes (the grid's "
            "'stay at the vote' is the linear head's start)"
        )
    manifest = read_manifest(manifest_path)
    paths = [Path(p) for p in posterior_paths]
    if top_k is not None:
        paths = top_models(paths, manifest, top_k)
    train = head_training_data(paths, manifest, cfg.train_on)
    record = {
        "models": [posterior_model_name(p) for p in paths],
        **cross_validate(train, cfg, selection),
    }
    record = _finite(record)
    atomic_write_json(out_json, record)
    log.info("meta selection: %s (%s)", record["choice"], record["reason"])
    return record


def _finite(value):
    """NaN and infinities as None: the record is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
