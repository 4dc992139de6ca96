"""The ensemble's inputs (docs/method.md, section 6): every DeepSER model's posteriors, read,
checked against each other and ordered, and the models ranked on the balanced holdout.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from medusa.core.emotions import (
    ATTRIBUTES,
    CLASS_LETTERS,
    NUM_CLASSES,
)
from medusa.core.integrity import verify_hdf5
from medusa.core.manifest import consensus_labels
from medusa.core.metrics import classification_metrics
from medusa.corpus.partitions import DEV, HOLDOUT

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
