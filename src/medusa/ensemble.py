"""Stages 3 and 4 (docs/method.md, section 6): a meta-classifier over the DeepSER ensemble, and its soup.

Every DeepSER model leaves, per subset, C class posteriors (the run's class set, recorded in the
file's ``classes`` attribute; MSP-Podcast's 8 by default) and 3 attributes per clip
(``results/posteriors/{model}.h5``, one group per subset with ``ids``, ``probs`` [N, C],
``attributes`` [N, 3]). Here:

- the vote baselines combine the posteriors directly (majority vote, soft vote);
- stage 3 trains a small head on the concatenated outputs (K models x 11 numbers), starting
  at the product-of-experts vote, with a class-balanced loss, once per seed on that seed's
  bootstrap resample of the meta-classifier's clips (``train_meta``, ``fit_head``), with the
  prior strength (or "stay at the vote") that ``medusa.meta_cv`` chose by cross-validation;
- stage 4 averages the seeds' weights into one head, the soup (``make_soup``), which writes
  the challenge predictions for the unlabelled ``test`` clips (``predict_test``).

Scoring follows the challenge: the truth is the consensus letter, only the 8 emotion classes
count (X/O and unlabelled clips are left out), macro-F1 first. The "balanced holdout" scores
every 8-class clip of the selection holdout, each weighted by 1 / its class's count
(``classification_metrics(balanced=True)``). By default the head trains on the `meta` subset,
which shares no speaker with the selection holdout; the holdout views are still selection-biased
(every model's checkpoint was chosen on it), so dev is the evaluation. With `train_on: holdout`
(the paper's way) the holdout views are in-sample and say so.

The head is tiny, so it always runs on the CPU; one seed trains in seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
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
    ATTRIBUTE_RANGE,
    ATTRIBUTES,
    CLASS_LETTERS,
    NUM_CLASSES,
)
from medusa.integrity import load_torch, verify_hdf5
from medusa.manifest import consensus_labels, is_unknown, read_manifest
from medusa.metrics import classification_metrics
from medusa.model import total_loss
from medusa.partitions import DEV, HOLDOUT, META, TEST, TRAIN

log = logging.getLogger(__name__)

# Numbers each DeepSER model contributes per clip: C posteriors, then act, val, dom (C = 8 for
# MSP-Podcast's classes).
MODEL_OUTPUTS = NUM_CLASSES + len(ATTRIBUTES)


def model_outputs(n_classes: int) -> int:
    """Numbers each model contributes per clip for a class set of `n_classes`."""
    return n_classes + len(ATTRIBUTES)


HEAD_FORMAT = 3  # 2: log-posterior inputs; 3: the linear attribute layer reads attributes only
# The scored views of the labelled data, written to every metrics.json: view -> (subset,
# class-balanced?). The class-balanced holdout is the selection score.
BALANCED_HOLDOUT = "balanced_holdout"
SCORED_VIEWS = {DEV: (DEV, False), HOLDOUT: (HOLDOUT, False), BALANCED_HOLDOUT: (HOLDOUT, True)}
# Posteriors enter the head as logs, floored here (a model's 0 would be -inf).
POSTERIOR_FLOOR = 1e-4


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
    probs: np.ndarray  # [N, C] float32
    attributes: np.ndarray  # [N, 3] float32
    classes: tuple[str, ...] = CLASS_LETTERS  # the codes of the probs columns


def posterior_classes(path: str | os.PathLike) -> tuple[str, ...]:
    """The class codes of a posteriors file, in column order (its `classes` attribute: codes
    joined by commas; a string of one-letter codes in files written before class sets)."""
    with h5py.File(path, "r") as f:
        text = f.attrs.get("classes", "".join(CLASS_LETTERS))
    text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
    return tuple(text.split(",")) if "," in text else tuple(text)


def ensemble_classes(posterior_paths: Sequence[str | os.PathLike]) -> tuple[str, ...]:
    """The class set every posteriors file shares (an ensemble of different class sets is
    refused, naming the file)."""
    if not posterior_paths:
        raise EnsembleError("no posteriors files given")
    first = posterior_classes(posterior_paths[0])
    for path in posterior_paths[1:]:
        classes = posterior_classes(path)
        if classes != first:
            raise EnsembleError(
                f"{path}: classes {list(classes)}, but {posterior_paths[0]} has {list(first)}"
            )
    return first


def posterior_model_name(path: str | os.PathLike) -> str:
    """The model a posteriors file belongs to: its root attribute `model`, else its stem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"posteriors file not found: {path}")
    verify_hdf5(path)  # once per process: read_posteriors comes through here first
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
    n, classes = len(ids), posterior_classes(path)
    if probs.shape != (n, len(classes)):
        raise EnsembleError(
            f"{where}: probs has shape {probs.shape}, expected ({n}, {len(classes)}) for "
            f"classes {list(classes)}"
        )
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
    return Posteriors(model, path, ids[order], probs[order], attributes[order], classes)


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
    """(ids [N], X [N, K*(C+3)]): per model [probs(C), attributes(3)], in the given model
    order (K*11 for MSP-Podcast's 8 classes)."""
    ids, posts = load_posteriors(posterior_paths, subset)
    blocks = [np.concatenate([p.probs, p.attributes], axis=1) for p in posts]
    return ids, np.concatenate(blocks, axis=1).astype(np.float32)


def split_inputs(X: np.ndarray, n_classes: int = NUM_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Undo the concatenation: (probs [K, N, C], attributes [K, N, 3])."""
    n, width = X.shape
    outputs = model_outputs(n_classes)
    if width % outputs:
        raise EnsembleError(f"ensemble inputs have {width} columns, not a multiple of {outputs}")
    per_model = X.reshape(n, width // outputs, outputs).transpose(1, 0, 2)
    return per_model[:, :, :n_classes], per_model[:, :, n_classes:]


def reorder_models(X: np.ndarray, have: Sequence[str], want: Sequence[str]) -> np.ndarray:
    """X's per-model column blocks of the models `want` (all, or a top-k subset of `have`),
    in that order."""
    if not set(want) <= set(have) or len(set(want)) != len(want):
        raise EnsembleError(f"models differ: inputs have {list(have)}, head expects {list(want)}")
    blocks = np.split(X, len(have), axis=1)
    return np.concatenate([blocks[list(have).index(m)] for m in want], axis=1)


def paths_in_model_order(
    posterior_paths: Sequence[str | os.PathLike], models: Sequence[str]
) -> list[Path]:
    """The posteriors files of `models` (a head's inputs), in that order, matched by model name;
    files of other models are left out (a top-k head reads a subset of the ensemble)."""
    by_name: dict[str, Path] = {}
    for p in posterior_paths:
        name = posterior_model_name(p)
        if name in by_name:
            raise EnsembleError(f"{p}: model {name!r} also in {by_name[name]}")
        by_name[name] = Path(p)
    missing = sorted(set(models) - set(by_name))
    if missing:
        raise EnsembleError(
            f"the head was trained on models {list(models)} but no posteriors file holds "
            f"{missing} (files hold {sorted(by_name)})"
        )
    return [by_name[m] for m in models]


def selection_scores(
    posterior_paths: Sequence[str | os.PathLike], manifest: pd.DataFrame
) -> dict[str, float]:
    """Each model's selection score: class-balanced holdout macro-F1 of its own posteriors."""
    X, y = evaluation_data(posterior_paths, manifest)[HOLDOUT]
    classes = ensemble_classes(posterior_paths)
    probs, _ = split_inputs(X, len(classes))
    return {
        posterior_model_name(path): classification_metrics(
            y, p.argmax(axis=1), True, classes=classes
        )["macro_f1"]
        for path, p in zip(posterior_paths, probs, strict=True)
    }


def top_models(
    posterior_paths: Sequence[str | os.PathLike], manifest: pd.DataFrame, k: int
) -> list[Path]:
    """The posteriors files of the k best models by selection score (ties: config order),
    kept in config order (the paper's top-7 and top-5 ensembles of Table 3)."""
    scores = list(selection_scores(posterior_paths, manifest).values())
    best = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
    return [Path(posterior_paths[i]) for i in sorted(best)]


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


def scored_subsets(
    posterior_paths: Sequence[str | os.PathLike], manifest: pd.DataFrame
) -> dict[str, tuple[np.ndarray, np.ndarray, pd.DataFrame]]:
    """The scored clips (a consensus in the class set), read once: {"dev", "holdout"} ->
    (X, y, their manifest rows)."""
    scored = {}
    classes = ensemble_classes(posterior_paths)
    for subset in (DEV, HOLDOUT):
        ids, X = load_ensemble_inputs(posterior_paths, subset)
        rows = manifest_rows(manifest, subset, ids)
        keep, y = consensus_labels(rows["emo_class"], classes)
        if len(y) == 0:
            raise EnsembleError(
                f"no {subset!r} clip with a consensus in the classes {list(classes)} to score"
            )
        scored[subset] = (X[keep], y, rows[keep])
    return scored


def evaluation_data(
    posterior_paths: Sequence[str | os.PathLike], manifest: pd.DataFrame
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Scored inputs and truths of the scored clips: {"dev", "holdout"} -> (X, y)."""
    return {s: (X, y) for s, (X, y, _) in scored_subsets(posterior_paths, manifest).items()}


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


# --------------------------------------------------------------------------------------------
# The meta-classifier


class MetaClassifier(nn.Module):
    """Concatenated ensemble outputs [B, K*(C+3)] -> C class logits and 3 attributes in [1, 7]
    (C = 8, K*11 inputs, for MSP-Podcast's classes).

    Each model's C posteriors enter as log-posteriors (floored at 1e-4) and its 3 attributes
    scaled from [1, 7] to [0, 1], so that a linear head can start exactly at the product of the
    models' posteriors (``start_at_votes``). `head="linear"` is the paper's single linear layer;
    `"mlp"` puts one ReLU hidden layer of `mlp_hidden` units in front of the two output layers.
    """

    def __init__(
        self,
        n_inputs: int,
        head: str = "linear",
        mlp_hidden: int = 64,
        n_classes: int = NUM_CLASSES,
    ):
        super().__init__()
        outputs = model_outputs(n_classes)
        if n_inputs <= 0 or n_inputs % outputs:
            raise ValueError(f"n_inputs must be a positive multiple of {outputs}, got {n_inputs}")
        self.n_models = n_inputs // outputs
        self.n_classes = n_classes
        # Which inputs are posteriors: a fixed buffer, the same in every seed and kept out of
        # the state_dict the soup averages.
        is_posterior = torch.tensor([True] * n_classes + [False] * len(ATTRIBUTES))
        self.register_buffer("is_posterior", is_posterior.repeat(self.n_models), persistent=False)
        if head == "linear":
            self.body, width = nn.Identity(), n_inputs
        elif head == "mlp":
            self.body = nn.Sequential(nn.Linear(n_inputs, mlp_hidden), nn.ReLU())
            width = mlp_hidden
        else:
            raise ValueError(f"head must be 'linear' or 'mlp', got {head!r}")
        self.classes = nn.Linear(width, n_classes)
        self.attributes = nn.Linear(width, len(ATTRIBUTES))

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = ATTRIBUTE_RANGE
        log_posteriors = torch.log(x.clamp_min(POSTERIOR_FLOOR))
        return torch.where(self.is_posterior, log_posteriors, (x - lo) / (hi - lo))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.inputs(x)
        h = self.body(z)
        # A linear head regresses the attributes on the models' attribute estimates only: the
        # log-posteriors (down to log 1e-4) would push its sigmoid into saturation.
        a = torch.where(self.is_posterior, 0.0, z) if isinstance(self.body, nn.Identity) else h
        lo, hi = ATTRIBUTE_RANGE
        return self.classes(h), lo + (hi - lo) * torch.sigmoid(self.attributes(a))

    @torch.no_grad()
    def start_at_votes(self) -> None:
        """Linear head only: class logits = the mean of the models' log-posteriors (the
        product-of-experts vote), attributes ~ the mean of the models' attributes."""
        if not isinstance(self.body, nn.Identity):
            raise ValueError("only a linear head can start at the votes")
        k, c = self.n_models, self.n_classes
        eye_classes = torch.eye(c, model_outputs(c))
        self.classes.weight.copy_(eye_classes.repeat(1, k) / k)
        self.classes.bias.zero_()
        # sigmoid(4 (u - 1/2)) ~ u on [0.2, 0.8]: the mean scaled attribute, back in [1, 7].
        block = torch.zeros(len(ATTRIBUTES), model_outputs(c))
        block[:, c:] = torch.eye(len(ATTRIBUTES))
        self.attributes.weight.copy_(4.0 * block.repeat(1, k) / k)
        self.attributes.bias.fill_(-2.0)


@dataclass(frozen=True)
class MetaConfig:
    """The `meta` block of config/config.yaml (the list of seeds aside); every key required."""

    head: str
    mlp_hidden: int
    init: str
    init_seed: int
    train_on: str
    lr: float
    steps: int
    prior_strength: float
    class_weight: float
    attribute_weight: float

    @classmethod
    def from_dict(cls, cfg: Mapping) -> MetaConfig:
        # The seeds and top-k ensembles are the workflow's business (one job each).
        # The choice of regularisation is medusa.meta_cv's (rule meta_select).
        cfg = {k: v for k, v in cfg.items() if k not in ("seeds", "top_k", "selection")}
        weights = dict(cfg.pop("loss_weights", {}))
        cfg["class_weight"] = weights.pop("classes", None)
        cfg["attribute_weight"] = weights.pop("attributes", None)
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - set(fields)) + [f"loss_weights.{k}" for k in weights]
        missing = sorted(k for k in fields if cfg.get(k) is None)
        if unknown or missing:
            raise EnsembleError(f"meta config: unknown key(s) {unknown}, missing {missing}")
        cast = {"str": str, "int": int, "float": float}
        try:  # YAML may give "1e-3" as a string or 50 as a float
            meta = cls(**{k: cast[fields[k]](v) for k, v in cfg.items()})
        except (TypeError, ValueError) as err:
            raise EnsembleError(f"meta config: {err}") from err
        meta.check()
        return meta

    def check(self) -> None:
        choices = {"head": ("linear", "mlp"), "init": ("votes", "random"),
                   "train_on": (META, HOLDOUT, TRAIN)}  # fmt: skip
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise EnsembleError(f"meta.{key} must be one of {allowed}: {getattr(self, key)!r}")
        if self.init == "votes" and self.head != "linear":
            raise EnsembleError("meta.init: votes needs meta.head: linear (an MLP starts random)")
        if math.isinf(self.prior_strength) and self.init != "votes":
            raise EnsembleError("meta: staying at the vote (an infinite prior) needs init: votes")
        if self.mlp_hidden < 1 or self.steps < 1 or self.lr <= 0 or self.prior_strength < 0:
            raise EnsembleError(f"meta config: need mlp_hidden, steps >= 1, lr > 0: {self}")


def build_head(n_inputs: int, cfg: MetaConfig, n_classes: int = NUM_CLASSES) -> MetaClassifier:
    """A fresh head: at the votes (`init: votes`), or random weights from `init_seed` only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        head = MetaClassifier(n_inputs, cfg.head, cfg.mlp_hidden, n_classes)
    if cfg.init == "votes":
        head.start_at_votes()
    return head


@torch.no_grad()
def predict_probs(model: MetaClassifier, X: np.ndarray) -> np.ndarray:
    """Class posteriors [N, C] of a head."""
    return head_outputs(model, X)[0]


@torch.no_grad()
def head_outputs(model: MetaClassifier, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class posteriors [N, C], attributes [N, 3] act/val/dom) of a head on ensemble inputs
    X [N, K*(C+3)] (each model's C posteriors and 3 attributes, in the head's model order)."""
    model.eval()
    logits, attributes = model(torch.as_tensor(X, dtype=torch.float32))
    return torch.softmax(logits, dim=1).numpy(), attributes.numpy()


def score_head(
    model: MetaClassifier,
    X: np.ndarray,
    y: np.ndarray,
    balanced: bool,
    classes: Sequence[str] = CLASS_LETTERS,
) -> dict:
    """classification_metrics of a head's argmax predictions (`classes`: the head's codes)."""
    predicted = predict_probs(model, X).argmax(axis=1)
    return classification_metrics(y, predicted, balanced, classes=classes)


def head_classes(info: Mapping) -> tuple[str, ...]:
    """The class codes of a head checkpoint's info (MSP-Podcast's when unrecorded)."""
    return tuple(info.get("classes", CLASS_LETTERS))


def _evaluate(
    model: MetaClassifier,
    data: Mapping[str, tuple[np.ndarray, np.ndarray]],
    classes: Sequence[str],
) -> dict:
    """The head's metrics on every scored view (SCORED_VIEWS)."""
    return {
        view: score_head(model, *data[subset], balanced, classes)
        for view, (subset, balanced) in SCORED_VIEWS.items()
    }


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
        # For medusa.meta_cv: the class consensus (-1: X/O, not scored) and the speaker
        # groups its folds keep together (a clip of an unknown speaker is a group of its own).
        "y": consensus,
        "groups": np.array(
            [f"clip:{i}" if is_unknown(s) else f"speaker:{s}" for i, s in rows["speaker"].items()],
            dtype=object,
        ),
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
    top_k: int | None = None,
    selection: Mapping | None = None,
) -> dict:
    """Stage 3: train one meta-classifier seed; write out_dir/head.pt and out_dir/metrics.json.

    The head learns from the `train_on` clips (by default the `meta` part of the holdout, which
    selected no DeepSER checkpoint), on the bootstrap resample of them that `seed` draws: the
    seeds differ in their data, and the soup averages them (bagging). See ``fit_head``.
    `top_k`: combine only the k models with the best selection score (``top_models``).
    `selection`: the cross-validated choice of regularisation for these models
    (``medusa.meta_cv.select_meta``, rule meta_select); None: `meta_cfg` as given.
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
    """`cfg` with the prior strength `selection` chose (``medusa.meta_cv``): its value, or an
    infinite one for "stay at the vote". The choice must have been made for these models."""
    if list(selection.get("models", [])) != list(models):
        raise EnsembleError(
            f"the meta selection was made for models {selection.get('models')}, not {models}: "
            "rerun rule meta_select"
        )
    choice = selection["choice"]
    return dataclasses.replace(cfg, prior_strength=math.inf if choice == VOTE else float(choice))


def in_sample_views(train_on: str) -> list[str]:
    """The scored views a head trained on `train_on` has seen: not an evaluation."""
    return [HOLDOUT, BALANCED_HOLDOUT] if train_on == HOLDOUT else []


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
    clips as given (cross-validation folds, ``medusa.meta_cv``).
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


# Logit that takes an absent class out of the training softmax (0 x log-softmax stays finite).
ABSENT_LOGIT = -1.0e4


def at_the_vote(cfg: MetaConfig) -> bool:
    """Whether `cfg` is "stay at the vote": an infinite prior, the head kept at its start."""
    return math.isinf(cfg.prior_strength)


@torch.no_grad()
def _recentre_classes(model: MetaClassifier, start: Sequence[torch.Tensor], present) -> None:
    """Absent classes: the loss (softmax over the present classes) is blind to a shift shared
    by every present class's row, yet Adam's per-weight steps move along it. Remove the present
    rows' mean change, which changes no training prediction, so that an absent class (still at
    its start) stands against the present ones as it did in the vote."""
    for param, param_start in zip((model.classes.weight, model.classes.bias), start, strict=True):
        change = param[present] - param_start[present]
        param[present] = param[present] - change.mean(dim=0, keepdim=True)
        param[~present] = param_start[~present]


def balancing_class_weights(soft: torch.Tensor) -> torch.Tensor:
    """w_c = N / (C m_c), m_c the class's target mass floored at one clip, C the classes with
    mass: every class with at least one clip's worth of votes weighs the same in the loss (the
    meta-classifier's balanced training), and a class seen only as a fraction of one vote
    weighs less than a whole class rather than up to N / C times more. A class without mass
    gets 0 (it is also out of the training softmax, ``fit_head``)."""
    mass = soft.sum(dim=0).double()
    weights = torch.zeros(soft.shape[1], dtype=torch.float64)
    present = mass > 0
    weights[present] = len(soft) / (int(present.sum()) * mass[present].clamp(min=1.0))
    return weights.float()


# --------------------------------------------------------------------------------------------
# Checkpoints and soup


def load_head(path: str | os.PathLike) -> tuple[MetaClassifier, dict]:
    """(head in eval mode, its info: models, architecture, init_seed, train_on, seeds)."""
    path = Path(path)
    if path.is_dir():
        path = path / "head.pt"
    if not path.is_file():
        raise FileNotFoundError(f"meta-classifier checkpoint not found: {path}")
    ckpt = load_torch(path)
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


def soup_of(heads: Sequence[MetaClassifier], architecture: Mapping) -> MetaClassifier:
    """The uniform soup: one head whose weights are the mean of `heads`."""
    model = MetaClassifier(**architecture)
    model.load_state_dict(average_state_dicts([h.state_dict() for h in heads]))
    return model.eval()


@single_threaded
def make_soup(
    seed_dirs: Sequence[str | os.PathLike],
    posterior_paths: Sequence[str | os.PathLike],
    manifest_path: str | os.PathLike,
    soup_cfg: Mapping,
    out_dir: str | os.PathLike,
) -> dict:
    """Stage 4: average the seeds' heads; write out_dir/head.pt and out_dir/metrics.json.

    `soup_cfg["method"]`: "uniform" averages every seed. "greedy" (Wortsman et al., 2022)
    ranks the seeds by class-balanced holdout macro-F1 and adds each in turn only if the
    soup's does not drop. With `train_on: holdout` that score is measured on the heads' own
    training clips, which is why uniform is the default.
    """
    method = dict(soup_cfg).get("method", "uniform")
    if method not in ("uniform", "greedy"):
        raise EnsembleError(f"soup config: method must be uniform or greedy, got {method!r}")
    # The ingredients, and how each scores on the balanced holdout.
    heads, infos = _load_ingredients(seed_dirs)
    ref_info = infos[0]
    paths = paths_in_model_order(posterior_paths, ref_info["models"])
    data = evaluation_data(paths, read_manifest(manifest_path))
    scores = [score_head(h, *data[HOLDOUT], balanced=True)["macro_f1"] for h in heads]

    # Which seeds go in, and their average.
    if method == "uniform":
        chosen = list(range(len(heads)))
    else:
        chosen = _greedy_ingredients(heads, scores, ref_info["architecture"], data)
    soup = soup_of([heads[i] for i in chosen], ref_info["architecture"])

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
        "in_sample": in_sample_views(ref_info["train_on"]),
        "ingredients": ingredients,
        "seeds": seeds,
        "selection": ref_info.get("selection"),
        **_evaluate(soup, data, head_classes(ref_info)),
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
        for key in ("models", "architecture", "train_on", "selection"):
            if info.get(key) != ref.get(key):
                raise EnsembleError(
                    f"{info['path']}: {key} {info.get(key)!r} differs from {ref['path']} "
                    f"({ref.get(key)!r}); a soup needs heads of one kind over the same models"
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
        candidate = soup_of([heads[j] for j in [*chosen, i]], architecture)
        score = score_head(candidate, *data[HOLDOUT], balanced=True)["macro_f1"]
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
    `out_posteriors_csv` (FileName and the class posteriors, columns named by class code).
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
    classes = ensemble_classes(paths)
    table = pd.DataFrame(probs, columns=list(classes))
    table.insert(0, "FileName", file_names)
    table.insert(1, "EmoClass", np.asarray(classes)[probs.argmax(axis=1)])
    table = table.sort_values("FileName", kind="stable").reset_index(drop=True)
    atomic_write_text(out_csv, table[["FileName", "EmoClass"]].to_csv(index=False))
    posteriors = table.drop(columns="EmoClass")
    atomic_write_text(out_posteriors_csv, posteriors.to_csv(index=False, float_format="%.6f"))
    return posteriors


# --------------------------------------------------------------------------------------------
# Outputs


def _write_outputs(out_dir: Path, model: MetaClassifier, info: dict, metrics: dict) -> None:
    checkpoint = {"format": HEAD_FORMAT, "state_dict": model.state_dict(), **info}
    atomic_torch_save(out_dir / "head.pt", checkpoint, checksum=True)
    atomic_write_json(out_dir / "metrics.json", metrics)
