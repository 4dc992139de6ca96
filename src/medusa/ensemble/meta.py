"""Stage 3's meta-classifier (docs/method.md, section 6.2): the head over the concatenated
posteriors of the top-k models, its outputs and its saved form.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medusa.core.atomic import atomic_torch_save, atomic_write_json
from medusa.core.emotions import (
    ATTRIBUTE_RANGE,
    ATTRIBUTES,
    CLASS_LETTERS,
    NUM_CLASSES,
)
from medusa.core.integrity import load_torch
from medusa.core.metrics import classification_metrics
from medusa.corpus.partitions import HOLDOUT, META, TRAIN
from medusa.ensemble.inputs import (
    BALANCED_HOLDOUT,
    HEAD_FORMAT,
    POSTERIOR_FLOOR,
    SCORED_VIEWS,
    EnsembleError,
    model_outputs,
)

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
        # The choice of regularisation is medusa.ensemble.meta_cv's (rule meta_select).
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


def in_sample_views(train_on: str) -> list[str]:
    """The scored views a head trained on `train_on` has seen: not an evaluation."""
    return [HOLDOUT, BALANCED_HOLDOUT] if train_on == HOLDOUT else []


# --------------------------------------------------------------------------------------------
# Outputs


def _write_outputs(out_dir: Path, model: MetaClassifier, info: dict, metrics: dict) -> None:
    checkpoint = {"format": HEAD_FORMAT, "state_dict": model.state_dict(), **info}
    atomic_torch_save(out_dir / "head.pt", checkpoint, checksum=True)
    atomic_write_json(out_dir / "metrics.json", metrics)
