"""Stages 3 and 4 (docs/method.md, section 6): a meta-classifier over the DeepSER ensemble, and its soup.

Every DeepSER model leaves, per subset, 8 class posteriors and 3 attributes per clip
(``results/posteriors/{model}.h5``, one group per subset with ``ids``, ``probs`` [N, 8],
``attributes`` [N, 3]). Here:

- the vote baselines combine the posteriors directly (majority vote, soft vote);
- stage 3 trains a small head on the concatenated outputs (K models x 11 numbers) with the
  stage-2 balanced sampling, once per seed (``train_meta``);
- stage 4 averages the seeds' weights into one head, the soup (``make_soup``), which writes
  the challenge predictions for the unlabelled ``test`` clips (``predict_test``).

Scoring follows the challenge: the truth is the consensus letter, only the 8 emotion classes
count (X/O and unlabelled clips are left out), macro-F1 first. The "balanced holdout" is the
holdout's 8-class clips, in id order, undersampled by ``balanced_evaluation_subset`` with the
configured seed: the same files for every model, seed and soup.

The head is tiny, so it always runs on the CPU; one seed trains in seconds.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from torch import nn

from medusa.atomic import atomic_torch_save, atomic_write_json, atomic_write_text
from medusa.emotions import (
    AMBIGUOUS_LETTERS,
    ATTRIBUTE_RANGE,
    ATTRIBUTES,
    CLASS_LETTERS,
    NUM_CLASSES,
)
from medusa.manifest import consensus_labels, read_manifest
from medusa.metrics import classification_metrics
from medusa.model import total_loss
from medusa.partitions import DEV, HOLDOUT, TEST, TRAIN
from medusa.sampling import balanced_evaluation_subset, stage2_balanced_subset

log = logging.getLogger(__name__)

# Numbers each DeepSER model contributes per clip: 8 posteriors, then act, val, dom.
MODEL_OUTPUTS = NUM_CLASSES + len(ATTRIBUTES)
HEAD_FORMAT = 1
# The scored views of the labelled data, written to every metrics.json: the dev and holdout
# subsets, and the fixed class-balanced draw of the holdout that selects models.
BALANCED_HOLDOUT = "balanced_holdout"
EVALUATION_SETS = (DEV, HOLDOUT, BALANCED_HOLDOUT)


class EnsembleError(ValueError):
    """Inputs of the ensemble stages do not fit together; the message names the file."""


# --------------------------------------------------------------------------------------------
# Inputs: posteriors and manifest


@dataclass(frozen=True)
class Posteriors:
    """One model's outputs on one subset, rows sorted by id."""

    model: str
    path: Path
    ids: np.ndarray  # [N] str
    probs: np.ndarray  # [N, 8] float32
    attributes: np.ndarray  # [N, 3] float32


def posterior_model_name(path: str | os.PathLike) -> str:
    """The model a posteriors file belongs to: its root attribute `model`, else its stem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"posteriors file not found: {path}")
    with h5py.File(path, "r") as f:
        name = f.attrs.get("model", path.stem)
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)


def read_posteriors(path: str | os.PathLike, subset: str) -> Posteriors:
    """Read and check one model's posteriors for `subset` (rows re-sorted by id)."""
    path = Path(path)
    model = posterior_model_name(path)
    where = f"{path} [{subset}]"
    with h5py.File(path, "r") as f:
        if subset not in f:
            raise EnsembleError(f"{path}: no group {subset!r} (groups: {sorted(f.keys())})")
        group = f[subset]
        missing = {"ids", "probs", "attributes"} - set(group.keys())
        if missing:
            raise EnsembleError(f"{where}: missing dataset(s) {sorted(missing)}")
        ids = np.asarray(group["ids"].asstr()[()], dtype=object)
        probs = np.asarray(group["probs"][()], dtype=np.float32)
        attributes = np.asarray(group["attributes"][()], dtype=np.float32)
    n = len(ids)
    if probs.shape != (n, NUM_CLASSES):
        raise EnsembleError(f"{where}: probs has shape {probs.shape}, expected ({n}, 8)")
    if attributes.shape != (n, len(ATTRIBUTES)):
        raise EnsembleError(f"{where}: attributes has shape {attributes.shape}, expected ({n}, 3)")
    if len(set(ids)) != n:
        raise EnsembleError(f"{where}: duplicate ids")
    for name, values in (("probs", probs), ("attributes", attributes)):
        bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
        if len(bad):
            raise EnsembleError(f"{where}: non-finite {name} for id {ids[bad[0]]!r}")
    # Softmax outputs: a row that does not sum to one means a wrong dataset or class order.
    bad = np.flatnonzero(np.abs(probs.sum(axis=1) - 1.0) > 1e-3)
    if len(bad):
        raise EnsembleError(f"{where}: probs of id {ids[bad[0]]!r} do not sum to 1")
    order = np.argsort(ids.astype(str), kind="stable")
    return Posteriors(model, path, ids[order], probs[order], attributes[order])


def load_posteriors(
    posterior_paths: Sequence[str | os.PathLike], subset: str
) -> tuple[np.ndarray, list[Posteriors]]:
    """All models' posteriors for `subset`, checked to cover exactly the same ids.

    Nothing is dropped: a file whose ids differ from the first file's raises, naming the file,
    the subset and example ids, since a silent inner join would score models on different clips.
    """
    if not posterior_paths:
        raise EnsembleError("no posteriors files given")
    posts = [read_posteriors(p, subset) for p in posterior_paths]
    first = posts[0]
    seen: dict[str, Path] = {}
    for post in posts:
        if post.model in seen:
            raise EnsembleError(f"{post.path}: model {post.model!r} also in {seen[post.model]}")
        seen[post.model] = post.path
        if len(post.ids) != len(first.ids) or (post.ids != first.ids).any():
            missing = sorted(set(first.ids) - set(post.ids))
            extra = sorted(set(post.ids) - set(first.ids))
            raise EnsembleError(
                f"{post.path} [{subset}]: ids differ from {first.path}: "
                f"{len(missing)} missing (e.g. {missing[:3]}), {len(extra)} extra (e.g. {extra[:3]})"
            )
    return first.ids, posts


def load_ensemble_inputs(
    posterior_paths: Sequence[str | os.PathLike], subset: str
) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N], X [N, K*11]): per model [probs(8), attributes(3)], in the given model order."""
    ids, posts = load_posteriors(posterior_paths, subset)
    blocks = [np.concatenate([p.probs, p.attributes], axis=1) for p in posts]
    return ids, np.concatenate(blocks, axis=1).astype(np.float32)


def split_inputs(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undo the concatenation: (probs [K, N, 8], attributes [K, N, 3])."""
    n, width = X.shape
    if width % MODEL_OUTPUTS:
        raise EnsembleError(f"ensemble inputs have {width} columns, not a multiple of 11")
    per_model = X.reshape(n, width // MODEL_OUTPUTS, MODEL_OUTPUTS).transpose(1, 0, 2)
    return per_model[:, :, :NUM_CLASSES], per_model[:, :, NUM_CLASSES:]


def reorder_models(X: np.ndarray, have: Sequence[str], want: Sequence[str]) -> np.ndarray:
    """Rearrange X's per-model column blocks from model order `have` to `want`."""
    if sorted(have) != sorted(want) or len(set(want)) != len(want):
        raise EnsembleError(f"models differ: inputs have {list(have)}, head expects {list(want)}")
    blocks = np.split(X, len(have), axis=1)
    return np.concatenate([blocks[list(have).index(m)] for m in want], axis=1)


def paths_in_model_order(
    posterior_paths: Sequence[str | os.PathLike], models: Sequence[str]
) -> list[Path]:
    """The posteriors files ordered as `models` (a head's input order), matched by model name."""
    by_name: dict[str, Path] = {}
    for p in posterior_paths:
        name = posterior_model_name(p)
        if name in by_name:
            raise EnsembleError(f"{p}: model {name!r} also in {by_name[name]}")
        by_name[name] = Path(p)
    if set(by_name) != set(models):
        raise EnsembleError(
            f"the head was trained on models {list(models)} but the posteriors files hold "
            f"{sorted(by_name)} (missing {sorted(set(models) - set(by_name))}, "
            f"extra {sorted(set(by_name) - set(models))})"
        )
    return [by_name[m] for m in models]


def manifest_rows(manifest: pd.DataFrame, subset: str, ids: np.ndarray) -> pd.DataFrame:
    """The manifest rows of `subset` in the order of `ids`; the two id sets must be equal."""
    source = manifest.attrs.get("path", "manifest")
    part = manifest[manifest["subset"] == subset].set_index("id")
    missing = sorted(set(part.index) - set(ids))
    if missing:
        raise EnsembleError(
            f"{len(missing)} {subset!r} clip(s) of {source} have no posteriors "
            f"(e.g. {missing[:3]}); every clip must be scored: see the features and "
            "posteriors logs, or rerun them for the current manifest"
        )
    extra = sorted(set(ids) - set(part.index))
    if extra:
        raise EnsembleError(
            f"posteriors hold {len(extra)} {subset!r} id(s) that {source} does not list "
            f"in that subset (e.g. {extra[:3]})"
        )
    return part.loc[list(ids)]


def evaluation_data(
    posterior_paths: Sequence[str | os.PathLike],
    manifest: pd.DataFrame,
    balanced_holdout_seed: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Scored inputs and truths: {"dev", "holdout", "balanced_holdout"} -> (X, y)."""
    data = {}
    for subset in (DEV, HOLDOUT):
        ids, X = load_ensemble_inputs(posterior_paths, subset)
        keep, y = consensus_labels(manifest_rows(manifest, subset, ids)["emo_class"])
        if len(y) == 0:
            raise EnsembleError(f"no {subset!r} clip with an 8-class consensus to score")
        data[subset] = (X[keep], y)
    X, y = data[HOLDOUT]
    chosen = balanced_evaluation_subset(y, balanced_holdout_seed)
    data[BALANCED_HOLDOUT] = (X[chosen], y[chosen])
    return data


# --------------------------------------------------------------------------------------------
# Vote baselines


def majority_vote(probs_list: Sequence[np.ndarray]) -> np.ndarray:
    """Plurality of the models' argmax classes, [N] class indices.

    Ties between the most-voted classes go to the tied class with the largest summed
    probability over all models (then to the lowest class index, an exact tie being
    practically impossible).
    """
    probs = np.stack([np.asarray(p, dtype=np.float64) for p in probs_list])  # [K, N, 8]
    votes = np.eye(NUM_CLASSES, dtype=np.int64)[probs.argmax(axis=2)].sum(axis=0)  # [N, 8]
    summed = probs.sum(axis=0)
    tied = votes == votes.max(axis=1, keepdims=True)
    return np.where(tied, summed, -np.inf).argmax(axis=1)


def soft_vote(probs_list: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of the models' posteriors, [N, 8]; its argmax is the soft-vote prediction."""
    return np.stack([np.asarray(p, dtype=np.float64) for p in probs_list]).mean(axis=0)


# --------------------------------------------------------------------------------------------
# The meta-classifier


class MetaClassifier(nn.Module):
    """Concatenated ensemble outputs [B, K*11] -> 8 class logits and 3 attributes in [1, 7].

    `head="linear"` is the paper's single linear layer; `"mlp"` puts one ReLU hidden layer
    of `mlp_hidden` units in front of the same two output layers.
    """

    def __init__(self, n_inputs: int, head: str = "linear", mlp_hidden: int = 64):
        super().__init__()
        if n_inputs <= 0 or n_inputs % MODEL_OUTPUTS:
            raise ValueError(f"n_inputs must be a positive multiple of 11, got {n_inputs}")
        n_models = n_inputs // MODEL_OUTPUTS
        # Posteriors lie in [0, 1], attributes in [1, 7]: a fixed map brings the attributes to
        # [0, 1] too, so one learning rate suits every input. Fixed buffers, not weights: they
        # are the same in every seed and stay out of the state_dict the soup averages.
        lo, hi = ATTRIBUTE_RANGE
        shift = torch.tensor([0.0] * NUM_CLASSES + [lo] * len(ATTRIBUTES))
        scale = torch.tensor([1.0] * NUM_CLASSES + [hi - lo] * len(ATTRIBUTES))
        self.register_buffer("input_shift", shift.repeat(n_models), persistent=False)
        self.register_buffer("input_scale", scale.repeat(n_models), persistent=False)
        if head == "linear":
            self.body, width = nn.Identity(), n_inputs
        elif head == "mlp":
            self.body = nn.Sequential(nn.Linear(n_inputs, mlp_hidden), nn.ReLU())
            width = mlp_hidden
        else:
            raise ValueError(f"head must be 'linear' or 'mlp', got {head!r}")
        self.classes = nn.Linear(width, NUM_CLASSES)
        self.attributes = nn.Linear(width, len(ATTRIBUTES))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body((x - self.input_shift) / self.input_scale)
        lo, hi = ATTRIBUTE_RANGE
        return self.classes(h), lo + (hi - lo) * torch.sigmoid(self.attributes(h))


@dataclass(frozen=True)
class MetaConfig:
    """The `meta` block of the config (defaults: the paper's stage-3 recipe)."""

    head: str = "linear"
    mlp_hidden: int = 64
    init_seed: int = 0
    train_on: str = HOLDOUT
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 50
    weight_decay: float = 0.01
    class_weight: float = 1.5
    attribute_weight: float = 0.4

    @classmethod
    def from_dict(cls, cfg: Mapping) -> MetaConfig:
        cfg = dict(cfg)
        cfg.pop("seeds", None)  # the list of seeds is the workflow's business
        weights = dict(cfg.pop("loss_weights", None) or {})
        plain = set(cls.__dataclass_fields__) - {"class_weight", "attribute_weight"}
        unknown = sorted(set(cfg) - plain) + sorted(
            f"loss_weights.{k}" for k in set(weights) - {"classes", "attributes"}
        )
        if unknown:
            raise EnsembleError(f"meta config: unknown key(s) {unknown}")
        if "classes" in weights:
            cfg["class_weight"] = weights["classes"]
        if "attributes" in weights:
            cfg["attribute_weight"] = weights["attributes"]
        try:  # YAML may give "1e-3" as a string or 50 as a float: cast to the default's type
            meta = cls(**{k: type(getattr(cls, k))(v) for k, v in cfg.items()})
        except (TypeError, ValueError) as err:
            raise EnsembleError(f"meta config: {err}") from err
        if meta.head not in ("linear", "mlp"):
            raise EnsembleError(f"meta config: head must be linear or mlp, got {meta.head!r}")
        if meta.train_on not in (HOLDOUT, TRAIN):
            raise EnsembleError(
                f"meta config: train_on must be holdout or train, got {meta.train_on!r}"
            )
        for key in ("mlp_hidden", "batch_size", "epochs"):
            if getattr(meta, key) < 1:
                raise EnsembleError(f"meta config: {key} must be >= 1, got {getattr(meta, key)}")
        if meta.lr <= 0 or meta.weight_decay < 0:
            raise EnsembleError(f"meta config: need lr > 0 and weight_decay >= 0, got {meta}")
        return meta


def build_head(n_inputs: int, head: str, mlp_hidden: int, init_seed: int) -> MetaClassifier:
    """A fresh head whose initial weights depend on `init_seed` only (shared by all seeds)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return MetaClassifier(n_inputs, head, mlp_hidden)


@torch.no_grad()
def predict_probs(model: MetaClassifier, X: np.ndarray) -> np.ndarray:
    """Class posteriors [N, 8] of a head."""
    model.eval()
    logits, _ = model(torch.as_tensor(X, dtype=torch.float32))
    return torch.softmax(logits, dim=1).numpy()


@torch.no_grad()
def head_outputs(model: MetaClassifier, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class posteriors [N, 8], attributes [N, 3] act/val/dom) of a head on ensemble inputs
    X [N, K*11] (each model's 8 posteriors and 3 attributes, in the head's model order)."""
    model.eval()
    logits, attributes = model(torch.as_tensor(X, dtype=torch.float32))
    return torch.softmax(logits, dim=1).numpy(), attributes.numpy()


def score_head(model: MetaClassifier, X: np.ndarray, y: np.ndarray) -> dict:
    """classification_metrics of a head's argmax predictions."""
    return classification_metrics(y, predict_probs(model, X).argmax(axis=1))


def _evaluate(model: MetaClassifier, data: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    return {name: score_head(model, *data[name]) for name in EVALUATION_SETS}


def _training_data(
    posterior_paths: Sequence[Path], manifest: pd.DataFrame, subset: str
) -> dict[str, np.ndarray]:
    """Inputs and targets of the clips of `subset` that have a soft target."""
    ids, X = load_ensemble_inputs(posterior_paths, subset)
    rows = manifest_rows(manifest, subset, ids)
    soft = rows[list(CLASS_LETTERS)].to_numpy(dtype=np.float64)
    has_target = np.isfinite(soft).all(axis=1) & (np.nan_to_num(soft).sum(axis=1) > 0)
    if not has_target.any():
        raise EnsembleError(f"no {subset!r} clip has a soft target to train the meta-classifier")
    soft = soft[has_target] / soft[has_target].sum(axis=1, keepdims=True)
    return {
        "X": X[has_target],
        "soft": soft.astype(np.float32),
        "attributes": rows[list(ATTRIBUTES)].to_numpy(dtype=np.float32)[has_target],
        "hard": soft.argmax(axis=1),
        "ambiguous": rows["emo_class"].isin(AMBIGUOUS_LETTERS).to_numpy()[has_target],
    }


def single_threaded(fn: Callable) -> Callable:
    """Run `fn` with one intra-op torch thread, then restore the caller's setting.

    The head is a few thousand weights: extra threads only add synchronisation (a 128 x 8
    softmax took 10 ms with 2 threads on a busy 2-core machine, 0.07 ms with one), and one
    thread also makes results independent of the machine's core count.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapper


@single_threaded
def train_meta(
    posterior_paths: Sequence[str | os.PathLike],
    manifest_path: str | os.PathLike,
    meta_cfg: Mapping,
    seed: int,
    out_dir: str | os.PathLike,
    balanced_holdout_seed: int,
) -> dict:
    """Stage 3: train one meta-classifier seed; write out_dir/head.pt and out_dir/metrics.json.

    Every epoch draws a fresh stage-2 balanced subset of the `train_on` clips (hard label =
    argmax of the soft target, X/O consensus = ambiguous pool); `seed` drives that sampling
    and hence the batch order, `init_seed` the initial weights. The head trains for the
    configured number of epochs and the last weights are kept: with `train_on: holdout`
    there is no untouched labelled set left to select epochs on, and a fixed schedule keeps
    every seed comparable for the soup. Returns the metrics written.
    """
    cfg = MetaConfig.from_dict(meta_cfg)
    paths = [Path(p) for p in posterior_paths]
    models = [posterior_model_name(p) for p in paths]
    # The clips the head learns from, and the scored sets (the same files for every seed).
    manifest = read_manifest(manifest_path)
    train = _training_data(paths, manifest, cfg.train_on)
    data = evaluation_data(paths, manifest, balanced_holdout_seed)
    n_inputs = train["X"].shape[1]
    log.info(
        f"meta seed {seed}: {cfg.head} head over {len(models)} models ({n_inputs} inputs), "
        f"{len(train['X'])} {cfg.train_on} clips with soft targets "
        f"({int(train['ambiguous'].sum())} in the X/O pool)"
    )

    # Every seed starts from the same weights (init_seed) and keeps its last ones.
    model = build_head(n_inputs, cfg.head, cfg.mlp_hidden, cfg.init_seed)
    history, epoch_size = _fit_head(model, train, cfg, seed, data[BALANCED_HOLDOUT])

    metrics = {
        "seed": int(seed),
        "train_on": cfg.train_on,
        "n_train_clips": int(len(train["X"])),
        "epoch_size": epoch_size,
        "loss_history": history,
        **_evaluate(model, data),
    }
    info = {
        "models": models,
        "architecture": {"n_inputs": n_inputs, "head": cfg.head, "mlp_hidden": cfg.mlp_hidden},
        "init_seed": cfg.init_seed,
        "train_on": cfg.train_on,
        "seeds": [int(seed)],
    }
    _write_outputs(Path(out_dir), model, info, metrics)
    log.info(
        f"meta seed {seed}: dev macro-F1 {metrics[DEV]['macro_f1']:.4f}, balanced holdout "
        f"macro-F1 {metrics[BALANCED_HOLDOUT]['macro_f1']:.4f}"
    )
    return metrics


def _fit_head(
    model: MetaClassifier,
    train: Mapping[str, np.ndarray],
    cfg: MetaConfig,
    seed: int,
    balanced_holdout: tuple[np.ndarray, np.ndarray],
) -> tuple[list[float], int]:
    """The epoch loop of one seed: (mean training loss per epoch, clips per epoch).

    The balanced holdout is only scored for the log; it chooses nothing.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tensors = tuple(torch.from_numpy(train[k]) for k in ("X", "soft", "attributes"))
    rng = np.random.default_rng(seed)  # the seed's only source of randomness
    progress = "balanced holdout F1" + (" (in-sample)" if cfg.train_on == HOLDOUT else "")
    history = []
    for epoch in range(1, cfg.epochs + 1):
        # A fresh balanced draw of the training clips (stage-2 sampling), in shuffled order.
        order = torch.from_numpy(stage2_balanced_subset(train["hard"], train["ambiguous"], rng))
        history.append(_train_epoch(model, optimizer, tensors, order, cfg))
        if epoch == 1 or epoch % 10 == 0 or epoch == cfg.epochs:
            bal = score_head(model, *balanced_holdout)["macro_f1"]
            log.info(f"epoch {epoch}/{cfg.epochs}: loss {history[-1]:.4f}, {progress} {bal:.4f}")
    return history, int(len(order))


def _train_epoch(
    model: MetaClassifier,
    optimizer: torch.optim.Optimizer,
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    order: torch.Tensor,
    cfg: MetaConfig,
) -> float:
    """One pass over the clips `order` in batches; the epoch's mean loss per clip.

    The loss is the DeepSER objective (docs/method.md, section 4.5) with uniform class
    weights: class_weight x soft-target CE + attribute_weight x MSE over the rated attributes.
    """
    X, soft, attrs = tensors
    model.train()
    total = 0.0
    for batch in order.split(cfg.batch_size):
        logits, pred_attrs = model(X[batch])
        loss, _, _ = total_loss(
            logits,
            pred_attrs,
            soft[batch],
            attrs[batch],
            None,
            cfg.class_weight,
            cfg.attribute_weight,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
    return total / len(order)


# --------------------------------------------------------------------------------------------
# Checkpoints and soup


def load_head(path: str | os.PathLike) -> tuple[MetaClassifier, dict]:
    """(head in eval mode, its info: models, architecture, init_seed, train_on, seeds)."""
    path = Path(path)
    if path.is_dir():
        path = path / "head.pt"
    if not path.is_file():
        raise FileNotFoundError(f"meta-classifier checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    missing = {"format", "state_dict", "models", "architecture"} - set(ckpt)
    if missing:
        raise EnsembleError(f"{path}: not a meta-classifier checkpoint (missing {sorted(missing)})")
    if ckpt["format"] != HEAD_FORMAT:
        raise EnsembleError(f"{path}: checkpoint format {ckpt['format']}, expected {HEAD_FORMAT}")
    model = MetaClassifier(**ckpt["architecture"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    info = {k: v for k, v in ckpt.items() if k not in ("format", "state_dict")}
    info["path"] = str(path)
    return model, info


def average_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> dict:
    """Uniform mean of state_dicts with the same keys and shapes.

    The sum is taken in float64, so the mean of identical weights is exactly those weights.
    """
    if not state_dicts:
        raise EnsembleError("no state_dict to average")
    keys = list(state_dicts[0])
    for sd in state_dicts[1:]:
        if list(sd) != keys:
            raise EnsembleError(f"state_dicts differ in keys: {keys} vs {list(sd)}")
    return {
        k: torch.stack([sd[k].double() for sd in state_dicts])
        .mean(dim=0)
        .to(state_dicts[0][k].dtype)
        for k in keys
    }


def _soup_of(heads: Sequence[MetaClassifier], architecture: Mapping) -> MetaClassifier:
    model = MetaClassifier(**architecture)
    model.load_state_dict(average_state_dicts([h.state_dict() for h in heads]))
    return model.eval()


@single_threaded
def make_soup(
    seed_dirs: Sequence[str | os.PathLike],
    posterior_paths: Sequence[str | os.PathLike],
    manifest_path: str | os.PathLike,
    soup_cfg: Mapping,
    balanced_holdout_seed: int,
    out_dir: str | os.PathLike,
) -> dict:
    """Stage 4: average the seeds' heads; write out_dir/head.pt and out_dir/metrics.json.

    `soup_cfg["method"]`: "uniform" averages every seed. "greedy" (Wortsman et al., 2022)
    ranks the seeds by balanced-holdout macro-F1 and adds each in turn only if the soup's
    balanced-holdout macro-F1 does not drop. With `train_on: holdout` that score is measured
    on the heads' own training clips, which is why uniform is the default.
    """
    method = dict(soup_cfg).get("method", "uniform")
    if method not in ("uniform", "greedy"):
        raise EnsembleError(f"soup config: method must be uniform or greedy, got {method!r}")
    # The ingredients, and how each scores on the balanced holdout.
    heads, infos = _load_ingredients(seed_dirs)
    ref_info = infos[0]
    paths = paths_in_model_order(posterior_paths, ref_info["models"])
    data = evaluation_data(paths, read_manifest(manifest_path), balanced_holdout_seed)
    scores = [score_head(h, *data[BALANCED_HOLDOUT])["macro_f1"] for h in heads]

    # Which seeds go in, and their average.
    if method == "uniform":
        chosen = list(range(len(heads)))
    else:
        chosen = _greedy_ingredients(heads, scores, ref_info["architecture"], data)
    soup = _soup_of([heads[i] for i in chosen], ref_info["architecture"])

    seeds = [s for i in chosen for s in infos[i].get("seeds", [])]
    ingredients = [
        {
            "dir": str(seed_dirs[i]),
            "seeds": info.get("seeds", []),
            "balanced_holdout_macro_f1": scores[i],
            "in_soup": i in chosen,
        }
        for i, info in enumerate(infos)
    ]
    metrics = {
        "method": method,
        "train_on": ref_info["train_on"],
        "ingredients": ingredients,
        "seeds": seeds,
        **_evaluate(soup, data),
    }
    info = {**{k: v for k, v in ref_info.items() if k != "path"}, "seeds": seeds}
    _write_outputs(Path(out_dir), soup, info, metrics)
    log.info(
        f"{method} soup of {len(chosen)}/{len(heads)} seeds: dev macro-F1 "
        f"{metrics[DEV]['macro_f1']:.4f}, balanced holdout macro-F1 "
        f"{metrics[BALANCED_HOLDOUT]['macro_f1']:.4f}"
    )
    return metrics


def _load_ingredients(
    seed_dirs: Sequence[str | os.PathLike],
) -> tuple[list[MetaClassifier], list[dict]]:
    """(heads, their infos) of the seeds, checked to be averageable: same models, architecture
    and training data; for a non-linear head also the same initialisation (averaging only
    makes sense from a shared starting point)."""
    if not seed_dirs:
        raise EnsembleError("make_soup: no seed directories given")
    loaded = [load_head(Path(d) / "head.pt") for d in seed_dirs]
    infos = [info for _, info in loaded]
    ref = infos[0]
    for info in infos[1:]:
        for key in ("models", "architecture", "train_on"):
            if info[key] != ref[key]:
                raise EnsembleError(
                    f"{info['path']}: {key} {info[key]!r} differs from {ref['path']} "
                    f"({ref[key]!r}); a soup needs heads of one kind over the same models"
                )
        if ref["architecture"]["head"] != "linear" and info["init_seed"] != ref["init_seed"]:
            raise EnsembleError(
                f"{info['path']}: init_seed {info['init_seed']} differs from {ref['path']} "
                f"({ref['init_seed']}); an MLP soup needs a shared initialisation"
            )
    return [model for model, _ in loaded], infos


def _greedy_ingredients(
    heads: Sequence[MetaClassifier],
    scores: Sequence[float],
    architecture: Mapping,
    data: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> list[int]:
    """Greedy soup: seeds by decreasing balanced-holdout macro-F1 (`scores`), each added only if
    the soup's balanced-holdout macro-F1 does not drop. The indices of the seeds kept."""
    ranked = sorted(range(len(heads)), key=lambda i: -scores[i])  # stable: ties keep order
    chosen, best = [ranked[0]], scores[ranked[0]]
    for i in ranked[1:]:
        candidate = _soup_of([heads[j] for j in [*chosen, i]], architecture)
        score = score_head(candidate, *data[BALANCED_HOLDOUT])["macro_f1"]
        if score >= best:
            chosen, best = [*chosen, i], score
    return chosen


@single_threaded
def predict_test(
    soup_dir: str | os.PathLike,
    posterior_paths: Sequence[str | os.PathLike],
    manifest: str | os.PathLike | pd.DataFrame,
    out_csv: str | os.PathLike,
    out_posteriors_csv: str | os.PathLike,
) -> pd.DataFrame:
    """Challenge submission for every `test` clip of the manifest, from the soup head.

    `manifest`: a manifest path or table with the `test` rows (the workflow passes the
    unlabelled partition's clips, ``medusa.partitions.unlabelled_manifest``).

    Writes `out_csv` (`FileName,EmoClass`, one class letter per clip, sorted by FileName) and
    `out_posteriors_csv` (FileName and the 8 posteriors, columns named by class letter).
    FileName is the audio file's name (e.g. `MSP-PODCAST_test3_0001.wav`). Returns the
    posteriors table.
    """
    model, info = load_head(soup_dir)
    paths = paths_in_model_order(posterior_paths, info["models"])
    ids, X = load_ensemble_inputs(paths, TEST)
    if not isinstance(manifest, pd.DataFrame):
        manifest = read_manifest(manifest)
    rows = manifest_rows(manifest, TEST, ids)
    file_names = [Path(p).name for p in rows["path"]]  # read_manifest: never empty
    if len(set(file_names)) != len(file_names):
        where = manifest.attrs.get("path", "manifest")
        raise EnsembleError(f"{where}: two test clips share an audio file name")
    probs = predict_probs(model, X)
    table = pd.DataFrame(probs, columns=list(CLASS_LETTERS))
    table.insert(0, "FileName", file_names)
    table.insert(1, "EmoClass", np.asarray(CLASS_LETTERS)[probs.argmax(axis=1)])
    table = table.sort_values("FileName", kind="stable").reset_index(drop=True)
    atomic_write_text(out_csv, table[["FileName", "EmoClass"]].to_csv(index=False))
    posteriors = table.drop(columns="EmoClass")
    atomic_write_text(out_posteriors_csv, posteriors.to_csv(index=False, float_format="%.6f"))
    return posteriors


# --------------------------------------------------------------------------------------------
# Outputs


def _write_outputs(out_dir: Path, model: MetaClassifier, info: dict, metrics: dict) -> None:
    checkpoint = {"format": HEAD_FORMAT, "state_dict": model.state_dict(), **info}
    atomic_torch_save(out_dir / "head.pt", checkpoint)
    atomic_write_json(out_dir / "metrics.json", metrics)
