"""Stage 3's training (docs/method.md, section 6.2): one meta-classifier head per seed, each on
that seed's bootstrap resample of the meta-classifier's clips, starting at the product-of-experts
vote, with a class-balanced loss and the prior strength (or "stay at the vote") that
``medusa.ensemble.meta_cv`` chose; its outputs on every scored view.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medusa.core.emotions import (
    ATTRIBUTES,
)
from medusa.core.manifest import consensus_labels, is_unknown, read_manifest
from medusa.corpus.partitions import DEV, META
from medusa.ensemble.inputs import (
    BALANCED_HOLDOUT,
    EnsembleError,
    ensemble_classes,
    evaluation_data,
    load_ensemble_inputs,
    manifest_rows,
    posterior_model_name,
    top_models,
)
from medusa.ensemble.meta import (
    ABSENT_LOGIT,
    MetaClassifier,
    MetaConfig,
    _evaluate,
    _recentre_classes,
    _write_outputs,
    at_the_vote,
    balancing_class_weights,
    build_head,
    in_sample_views,
    single_threaded,
)
from medusa.training.model import total_loss

log = logging.getLogger(__name__)


def head_training_data(
    posterior_paths: Sequence[Path], manifest: pd.DataFrame, subset: str
) -> dict[str, np.ndarray]:
    """Inputs and targets of the clips of `subset` that have a soft target."""
    ids, X = load_ensemble_inputs(posterior_paths, subset)
    rows = manifest_rows(manifest, subset, ids)
    classes = ensemble_classes(posterior_paths)
    soft = rows[list(classes)].to_numpy(dtype=np.float64)
    has_target = np.isfinite(soft).all(axis=1) & (np.nan_to_num(soft).sum(axis=1) > 0)
    if not has_target.any():
        hint = " (data.meta_fraction: 0 leaves no meta subset)" if subset == META else ""
        raise EnsembleError(
            f"no {subset!r} clip has a soft target to train the meta-classifier{hint}"
        )
    soft = soft[has_target] / soft[has_target].sum(axis=1, keepdims=True)
    rows = rows[has_target]
    scored, y = consensus_labels(rows["emo_class"], classes)
    consensus = np.full(len(rows), -1, dtype=np.int64)
    consensus[scored] = y
    return {
        "X": X[has_target],
        "soft": soft.astype(np.float32),
        "attributes": rows[list(ATTRIBUTES)].to_numpy(dtype=np.float32),
        # For medusa.ensemble.meta_cv: the class consensus (-1: X/O, not scored) and the speaker
        # groups its folds keep together (a clip of an unknown speaker is a group of its own).
        "y": consensus,
        "groups": np.array(
            [f"clip:{i}" if is_unknown(s) else f"speaker:{s}" for i, s in rows["speaker"].items()],
            dtype=object,
        ),
    }


@single_threaded
def train_meta(
    posterior_paths: Sequence[str | os.PathLike],
    manifest_path: str | os.PathLike,
    meta_cfg: Mapping,
    seed: int,
    out_dir: str | os.PathLike,
    top_k: int | None = None,
    selection: Mapping | None = None,
) -> dict:
    """Stage 3: train one meta-classifier seed; write out_dir/head.pt and out_dir/metrics.json.

    The head learns from the `train_on` clips (by default the `meta` part of the holdout, which
    selected no DeepSER checkpoint), on the bootstrap resample of them that `seed` draws: the
    seeds differ in their data, and the soup averages them (bagging). See ``fit_head``.
    `top_k`: combine only the k models with the best selection score (``top_models``).
    `selection`: the cross-validated choice of regularisation for these models
    (``medusa.ensemble.meta_cv.select_meta``, rule meta_select); None: `meta_cfg` as given.
    """
    cfg = MetaConfig.from_dict(meta_cfg)
    manifest = read_manifest(manifest_path)
    paths = [Path(p) for p in posterior_paths]
    if top_k is not None:
        paths = top_models(paths, manifest, top_k)
    models = [posterior_model_name(p) for p in paths]
    if selection is not None:
        cfg = chosen_config(cfg, selection, models)
    # The clips the head learns from, and the scored sets (the same files for every seed).
    train = head_training_data(paths, manifest, cfg.train_on)
    data = evaluation_data(paths, manifest)
    n_inputs, classes = train["X"].shape[1], ensemble_classes(paths)
    if selection is not None:
        log.info(f"meta seed {seed}: prior strength {selection['choice']} ({selection['reason']})")
    log.info(
        f"meta seed {seed}: {cfg.head} head ({cfg.init} start) over {len(models)} models "
        f"({n_inputs} inputs), {len(train['X'])} {cfg.train_on} clips with soft targets"
    )
    model, history = fit_head(train, cfg, seed)
    metrics = {
        "seed": int(seed),
        "train_on": cfg.train_on,
        "in_sample": in_sample_views(cfg.train_on),
        "n_train_clips": int(len(train["X"])),
        "selection": selection,
        "loss_history": history,
        **_evaluate(model, data, classes),
    }
    info = {
        "models": models,
        "architecture": {
            "n_inputs": n_inputs,
            "head": cfg.head,
            "mlp_hidden": cfg.mlp_hidden,
            "n_classes": len(classes),
        },
        "classes": list(classes),
        "init_seed": cfg.init_seed,
        "train_on": cfg.train_on,
        "seeds": [int(seed)],
        "selection": selection,
    }
    _write_outputs(Path(out_dir), model, info, metrics)
    log.info(
        f"meta seed {seed}: dev macro-F1 {metrics[DEV]['macro_f1']:.4f}, class-balanced "
        f"holdout macro-F1 {metrics[BALANCED_HOLDOUT]['macro_f1']:.4f}"
    )
    return metrics


VOTE = "vote"  # the grid point "stay at the vote" of the cross-validated choice


def chosen_config(cfg: MetaConfig, selection: Mapping, models: Sequence[str]) -> MetaConfig:
    """`cfg` with the prior strength `selection` chose (``medusa.ensemble.meta_cv``): its value, or
    an infinite one for "stay at the vote". The choice must have been made for these models."""
    if list(selection.get("models", [])) != list(models):
        raise EnsembleError(
            f"the meta selection was made for models {selection.get('models')}, not {models}: "
            "rerun rule meta_select"
        )
    choice = selection["choice"]
    return dataclasses.replace(cfg, prior_strength=math.inf if choice == VOTE else float(choice))


def fit_head(
    train: Mapping[str, np.ndarray], cfg: MetaConfig, seed: int, resample: bool = True
) -> tuple[MetaClassifier, list[float]]:
    """Stage 3 on arrays: (the trained head, its loss every 10 steps).

    `train`: X [N, K*11] ensemble inputs, soft [N, 8] targets, attributes [N, 3] (NaN where
    not rated). Full-batch AdamW for a fixed number of steps, so the training length does not
    depend on how small the rarest class is:

        loss = class-balanced soft-target CE x class_weight + attribute MSE x attribute_weight
               + prior_strength / N x ||W - W_start||^2      (W: both layers' weights)

    The prior pulls the weights toward the start (the votes): with few clips the head stays
    near the vote and mostly learns per-class offsets (the biases are free); with many it
    learns to trust each model per class. An infinite `prior_strength` is "stay at the vote":
    the head keeps its start (``at_the_vote``; class logits: the product-of-experts vote,
    attributes: about the models' mean) and is not trained.

    A class with no target mass in the sample (absent from this seed's resample, or from the
    data) keeps the vote's behaviour: it is left out of the softmax the loss sees, so nothing
    drives its logit down, and its row keeps the start (``_recentre_classes``).
    `resample`: train on the seed's bootstrap resample (the seeds of a soup); False: on the
    clips as given (cross-validation folds, ``medusa.ensemble.meta_cv``).
    """
    model = build_head(train["X"].shape[1], cfg, train["soft"].shape[1])
    if at_the_vote(cfg):
        return model.eval(), []
    n = len(train["X"])
    rng = np.random.default_rng(seed)  # the seed's only randomness: its bootstrap resample
    rows = torch.from_numpy(rng.integers(0, n, size=n)) if resample else torch.arange(n)
    X, soft, attributes = (torch.from_numpy(train[k])[rows] for k in ("X", "soft", "attributes"))
    present = soft.sum(dim=0) > 0
    # The prior holds both output layers' weights near their start (the votes, the models'
    # mean attributes): without it the attribute layer drifts onto the log-posterior inputs
    # and saturates its sigmoid at 1 or 7.
    pulled = (model.classes.weight, model.attributes.weight)
    start = [w.detach().clone() for w in pulled]
    classes_start = [p.detach().clone() for p in (model.classes.weight, model.classes.bias)]
    weights = balancing_class_weights(soft)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    model.train()
    history = []
    for step in range(cfg.steps):
        logits, predicted = model(X)
        # An absent class is out of the softmax: no gradient reaches its row.
        logits = logits.masked_fill(~present, ABSENT_LOGIT)
        loss, _, _ = total_loss(
            logits, predicted, soft, attributes, weights, cfg.class_weight, cfg.attribute_weight
        )
        prior = sum(((w - w0) ** 2).sum() for w, w0 in zip(pulled, start, strict=True))
        loss = loss + cfg.prior_strength / len(X) * prior
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == cfg.steps - 1:
            history.append(float(loss.detach()))
    if not bool(present.all()):
        _recentre_classes(model, classes_start, present)
    return model.eval(), history
