"""Stage 1 and stage 2 of MEDUSA for one DeepSER model, and its posteriors (docs/method.md, 5).

`train_stage` reads top to bottom like the method: load the stage's data, build or load the
model, resume or start, the epoch loop (train one epoch, evaluate on the holdout, update the
early-stopping state, save the resume state), write the outputs (checkpoint.pt, metrics.json,
history.tsv). What differs between the two stages is one `StagePlan`. `write_posteriors` runs a
trained checkpoint over every subset.

Data loading: features stay on disk in HDF5 and are read one utterance slice at a time by
DataLoader workers (`num_workers`; 0 reads in the training process). One MSP-Podcast feature set
is ~70 GB, so caching everything in RAM cannot be the general path; files under
IN_MEMORY_MAX_BYTES (the demo's) are read into memory once instead. Batches group clips of
similar length (shuffled buckets), so little time goes into padding.

Determinism: all randomness of epoch e (stage-2 subset, batch order, dropout, MixUp) is drawn
from generators seeded with (seed, stage, e). A resumed run therefore needs no RNG snapshot:
model, optimiser, best-so-far and early-stopping counters are enough to continue exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from medusa.atomic import atomic_torch_save, atomic_write, atomic_write_json, atomic_write_text
from medusa.emotions import AMBIGUOUS_LETTERS, ATTRIBUTES, CLASS_LETTERS
from medusa.integrity import USERBLOCK_BYTES, CorruptFileError, load_torch, seal_hdf5
from medusa.manifest import consensus_labels, manifest_classes, read_manifest
from medusa.metrics import classification_metrics
from medusa.model import DeepSER, build_model, class_weights_from_targets, total_loss
from medusa.sampling import stage2_balanced_subset
from medusa.settings import ModelSettings, StageSettings
from medusa.store import FeatureReader

log = logging.getLogger(__name__)

# Feature files up to this size are read into memory once per job (FeatureReader.load_into_memory);
# larger ones (a full MSP-Podcast feature set is ~70 GB) are read one clip at a time.
IN_MEMORY_MAX_BYTES = 2**30
# Input statistics (standardise_inputs) come from at most this many training clips, evenly
# spaced: plenty for a mean and std per dimension, and one pass over a full MSP-Podcast feature
# set would cost more than an epoch.
STATISTICS_MAX_CLIPS = 2000
# Clips per length bucket = batch size x this: large enough to shuffle well, small enough
# that a bucket's clips have similar lengths.
BUCKET_BATCHES = 50
HISTORY_COLUMNS = [
    "epoch",
    "train_files",
    "train_loss",
    "train_ce",
    "train_mse",
    "balanced_holdout_macro_f1",
    "holdout_macro_f1",
    "holdout_micro_f1",
    "holdout_accuracy",
]


# ---------------------------------------------------------------------------------------------
# What differs between stage 1 and stage 2


@dataclass(frozen=True)
class StagePlan:
    """Stage 1 (docs/method.md 5.1) or stage 2 (5.2): everything else is the same code."""

    stage: int
    settings: StageSettings  # lr, batch size, epochs, patience, weight decay
    class_weighted: bool  # stage 1: w_c = (N / (8 f_c))^0.5; stage 2: uniform
    balanced_epochs: bool  # stage 2: a fresh class-balanced subset (+ X/O pool) every epoch
    # Stage 2 starts from the best stage-1 weights, which are scored first as its epoch 0.
    init_checkpoint: Path | None
    metrics_marks: Mapping[str, object]  # extra keys of metrics.json


def stage_plan(
    stage: int, settings: ModelSettings, init_checkpoint: str | os.PathLike | None
) -> StagePlan:
    if stage == 1:
        return StagePlan(
            stage=1,
            settings=settings.stage1,
            class_weighted=True,
            balanced_epochs=False,
            init_checkpoint=None,
            metrics_marks={},
        )
    if stage == 2:
        if init_checkpoint is None:
            raise ValueError("stage 2 starts from the stage-1 checkpoint: pass init_checkpoint")
        return StagePlan(
            stage=2,
            settings=settings.stage2,
            class_weighted=False,
            balanced_epochs=True,
            init_checkpoint=Path(init_checkpoint),
            metrics_marks={"stage2_enabled": True},
        )
    raise ValueError(f"stage must be 1 or 2, got {stage}")


# ---------------------------------------------------------------------------------------------
# Inputs: manifest rows with features


@dataclass
class Subset:
    """Manifest rows of one subset that have frames in every feature file, in manifest order."""

    name: str
    ids: list[str]
    emo_class: np.ndarray  # [N] consensus codes ('' when unlabelled)
    soft: np.ndarray  # [N, C] float32 soft targets, NaN rows when the file has none
    attributes: np.ndarray  # [N, 3] float32 act/val/dom, NaN where missing
    feature_paths: list[Path]
    classes: tuple[str, ...] = CLASS_LETTERS  # the manifest's class codes (columns of `soft`)

    def take(self, keep: np.ndarray) -> Subset:
        keep = np.flatnonzero(keep)
        return Subset(
            self.name,
            [self.ids[i] for i in keep],
            self.emo_class[keep],
            self.soft[keep],
            self.attributes[keep],
            self.feature_paths,
            self.classes,
        )

    def consensus(self) -> tuple[np.ndarray, np.ndarray]:
        """(mask of the files whose consensus is a class, their class indices)."""
        return consensus_labels(self.emo_class, self.classes)


def load_subset(
    manifest: pd.DataFrame,
    manifest_path: str | os.PathLike,
    name: str,
    feature_paths: list[str | os.PathLike],
    feature_sets: list[str],
) -> Subset:
    """Rows of subset `name` present in all feature files (one per feature set, model order)."""
    if len(feature_paths) != len(feature_sets):
        raise ValueError(
            f"subset {name!r}: {len(feature_paths)} feature files for feature sets {feature_sets}"
        )
    rows = manifest[manifest["subset"] == name]
    ids = rows["id"].tolist()
    present = np.ones(len(rows), dtype=bool)
    for path, feature_set in zip(feature_paths, feature_sets, strict=True):
        reader = FeatureReader(path)
        stored = reader.attrs.get("feature_set")
        if stored is not None and stored != feature_set:
            raise ValueError(f"{path}: holds feature set {stored!r}, expected {feature_set!r}")
        present &= np.array([i in reader for i in ids], dtype=bool)
        reader.close()
    if not present.all():
        missing = [i for i, p in zip(ids, present, strict=True) if not p]
        log.info(
            f"subset {name}: {len(missing)} of {len(ids)} manifest rows lack features in at "
            f"least one feature file and are skipped (e.g. {missing[:3]})"
        )
    rows = rows[present]
    classes = manifest_classes(manifest)
    soft = rows[list(classes)].to_numpy(dtype=np.float32)
    attributes = rows[list(ATTRIBUTES)].to_numpy(dtype=np.float32)
    labelled = ~np.isnan(soft).any(axis=1)
    bad = labelled & (np.abs(soft.sum(axis=1) - 1.0) > 1e-3)
    if bad.any():
        raise ValueError(
            f"{manifest_path}: soft targets of {rows['id'].iloc[int(np.argmax(bad))]!r} "
            "do not sum to 1"
        )
    out_of_range = np.isfinite(attributes) & ((attributes < 1.0) | (attributes > 7.0))
    if out_of_range.any():
        row = int(np.argmax(out_of_range.any(axis=1)))
        raise ValueError(
            f"{manifest_path}: attributes of {rows['id'].iloc[row]!r} outside [1, 7]: "
            f"{attributes[row].tolist()}"
        )
    return Subset(
        name=name,
        ids=rows["id"].tolist(),
        emo_class=rows["emo_class"].fillna("").astype(str).to_numpy(),
        soft=soft,
        attributes=attributes,
        feature_paths=[Path(p) for p in feature_paths],
        classes=classes,
    )


@dataclass(frozen=True)
class Corpus:
    """The manifest and one model's feature files per subset (one per feature set, in the
    model's order): where every clip a stage or the posteriors read comes from."""

    manifest: pd.DataFrame
    manifest_path: str | os.PathLike
    feature_paths: Mapping[str, list[str | os.PathLike]]
    features: list[str]

    def subset(self, name: str) -> Subset:
        return load_subset(
            self.manifest, self.manifest_path, name, self.feature_paths[name], self.features
        )


def training_targets(subset: Subset, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows to train on, their class targets [n, C]).

    soft: every file with a soft target, X/O files included (the ambiguous pool).
    onehot (ablation): files whose consensus is one of the classes, one-hot on that class.
    """
    if mode == "soft":
        keep = ~np.isnan(subset.soft).any(axis=1)
        return keep, subset.soft[keep]
    if mode == "onehot":
        keep, labels = subset.consensus()
        return keep, np.eye(len(subset.classes), dtype=np.float32)[labels]
    raise ValueError(f"targets must be 'soft' or 'onehot', got {mode!r}")


# ---------------------------------------------------------------------------------------------
# Dataset, batches, loader


class ClipDataset(Dataset):
    """Item i -> (i, [frames of modality m as float16 tensors [T_m, D_m]]) read from HDF5."""

    def __init__(self, ids: list[str], feature_paths: list[Path], max_frames: int):
        self.readers = [FeatureReader(p) for p in feature_paths]
        for reader in self.readers:
            if reader.nbytes <= IN_MEMORY_MAX_BYTES:
                reader.load_into_memory()
        self.rows = [np.array([r.index(i) for i in ids], dtype=np.int64) for r in self.readers]
        self.max_frames = max_frames
        self.dims = [r.dim for r in self.readers]
        # Cost of a clip for bucketing: its frames summed over modalities, after cropping.
        self.lengths = sum(
            np.minimum(r.lengths[rows], max_frames)
            for r, rows in zip(self.readers, self.rows, strict=True)
        )

    def __len__(self) -> int:
        return len(self.rows[0])

    def __getitem__(self, i: int) -> tuple[int, list[torch.Tensor]]:
        frames = [
            torch.from_numpy(r.get_by_index(int(rows[i]))[: self.max_frames])
            for r, rows in zip(self.readers, self.rows, strict=True)
        ]
        return i, frames


def feature_statistics(
    dataset: ClipDataset, max_clips: int = STATISTICS_MAX_CLIPS
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per modality `(mean, std)` over every frame of (up to `max_clips` evenly spaced) clips.

    Frames are cropped as training crops them. A constant dimension gets std 1 (only centred).
    A clip with NaN or inf frames stops it with an error naming the file and the clip.
    """
    n = len(dataset)
    picks = np.unique(np.linspace(0, n - 1, min(n, max_clips)).round().astype(np.int64))
    sums = [np.zeros(d) for d in dataset.dims]
    squares = [np.zeros(d) for d in dataset.dims]
    frames = [0] * len(dataset.dims)
    for i in picks:
        for m, x in enumerate(dataset[int(i)][1]):
            x = x.numpy().astype(np.float64)
            if not np.isfinite(x).all():
                reader = dataset.readers[m]
                clip = reader.ids[int(dataset.rows[m][i])]
                raise ValueError(
                    f"{reader.path}: clip {clip!r} has NaN or inf frames, so the feature "
                    "statistics (standardise_inputs) cannot be computed; rebuild the file "
                    f"(rm {reader.path}, then run snakemake again)"
                )
            sums[m] += x.sum(axis=0)
            squares[m] += (x**2).sum(axis=0)
            frames[m] += len(x)
    statistics = []
    for total, square, count in zip(sums, squares, frames, strict=True):
        mean = total / count
        std = np.sqrt(np.maximum(square / count - mean**2, 0.0))
        std = np.where(std > 1e-6, std, 1.0)
        statistics.append((torch.from_numpy(mean).float(), torch.from_numpy(std).float()))
    return statistics


def collate(items: list[tuple[int, list[torch.Tensor]]]) -> dict:
    """Pad each modality to the batch's longest sequence; masks are True on real frames."""
    index = torch.tensor([i for i, _ in items], dtype=torch.long)
    features, masks = [], []
    for m in range(len(items[0][1])):
        seqs = [frames[m] for _, frames in items]
        lengths = torch.tensor([len(s) for s in seqs])
        features.append(pad_sequence(seqs, batch_first=True))  # stays float16 until the device
        masks.append(torch.arange(features[-1].shape[1])[None, :] < lengths[:, None])
    return {"index": index, "features": features, "masks": masks}


def length_bucketed_batches(
    indices: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffle, cut into buckets of BUCKET_BATCHES batches, sort each bucket by length, cut
    into batches, shuffle the batches: random order, little padding."""
    order = rng.permutation(np.asarray(indices))
    bucket = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), bucket):
        chunk = order[start : start + bucket]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation order: by length, so batches carry little padding."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def epoch_batches(
    balanced: bool,
    hard_labels: np.ndarray,
    ambiguous: np.ndarray,
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """The batches of one training epoch: all training files, or (`balanced`, stage 2) a fresh
    class-balanced subset plus as many ambiguous files."""
    if balanced:
        indices = stage2_balanced_subset(hard_labels, ambiguous, rng)
    else:
        indices = np.arange(len(hard_labels))
    return length_bucketed_batches(indices, lengths, batch_size, rng)


class BatchPlan:
    """A batch sampler whose batches are replaced every epoch (workers can then persist)."""

    def __init__(self, batches: list[np.ndarray] | None = None):
        self.batches = batches or []

    def __iter__(self):
        return iter([b.tolist() for b in self.batches])

    def __len__(self) -> int:
        return len(self.batches)


def make_loader(
    dataset: ClipDataset, plan: BatchPlan, num_workers: int, device: torch.device, persistent: bool
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=plan,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=persistent and num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        pin_memory=device.type == "cuda",
        # A private generator: DataLoader draws a worker seed per epoch, which would otherwise
        # consume the global torch RNG and make dropout depend on num_workers.
        generator=torch.Generator().manual_seed(0),
    )


def to_device(batch: dict, device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    features = [f.to(device, non_blocking=True).float() for f in batch["features"]]
    masks = [m.to(device, non_blocking=True) for m in batch["masks"]]
    return features, masks


# ---------------------------------------------------------------------------------------------
# One epoch of training, prediction


def autocast(device: torch.device, amp: bool):
    """bf16 autocast when `amp` (the config's) is on and the device is CUDA; CPUs keep float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


class NonFiniteTrainingError(FloatingPointError):
    """A training step gave a non-finite loss or gradient; its update was not applied."""


def non_finite_step(model: DeepSER, loss: torch.Tensor) -> str | None:
    """What is not finite after a backward pass (the loss, a parameter's gradient), else None.

    One device synchronisation per step: a single flag over the loss and the gradient norm.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, foreach=True) if grads else loss.new_zeros(())
    if bool(torch.isfinite(loss.detach().float() + norm)):
        return None
    if not bool(torch.isfinite(loss)):
        return f"loss {loss.item()}"
    for name, p in model.named_parameters():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            return f"gradient of {name}"
    return f"gradient norm ({norm.item()})"


def require_finite_weights(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Refuse to write weights that are not all finite: a model that learnt nothing usable."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise NonFiniteTrainingError(f"{path}: not written, non-finite weights in {bad[:3]}")


def train_one_epoch(
    model: DeepSER,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    targets: torch.Tensor,
    attributes: torch.Tensor,
    class_weights: torch.Tensor,
    loss_weights: tuple[float, float],
    mixup_generator: torch.Generator,
    device: torch.device,
    amp: bool,
    where: str = "training",
) -> dict:
    """One pass over `loader`; returns mean losses, steps and time spent waiting for data.

    Stops with NonFiniteTrainingError (naming `where` and the batch) at the first non-finite
    loss or gradient, before the optimiser applies it.
    """
    model.train()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    files = steps = 0
    wait = 0.0
    start = time.perf_counter()
    batches = iter(loader)
    while True:
        tick = time.perf_counter()
        batch = next(batches, None)
        wait += time.perf_counter() - tick
        if batch is None:
            break
        features, masks = to_device(batch, device)
        index = batch["index"]
        y_class = targets[index].to(device, non_blocking=True)
        y_attr = attributes[index].to(device, non_blocking=True)
        with autocast(device, amp):
            logits, attrs, y_class, y_attr = model(
                features, masks, y_class, y_attr, generator=mixup_generator
            )
            loss, ce, mse = total_loss(logits, attrs, y_class, y_attr, class_weights, *loss_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        problem = non_finite_step(model, loss)
        if problem is not None:
            raise NonFiniteTrainingError(
                f"{where}, batch {steps + 1} of {len(loader)}: non-finite {problem}. Stopped "
                "before applying it: no checkpoint was written, and the resume state keeps "
                "the last completed epoch (if any). Usual causes: a learning rate too large, "
                "features with extreme values."
            )
        optimizer.step()
        n = len(index)
        totals += torch.stack([loss.detach(), ce.detach(), mse.detach()]).double() * n
        files += n
        steps += 1
    seconds = time.perf_counter() - start
    loss, ce, mse = (totals / max(files, 1)).tolist()
    return {
        "files": files,
        "loss": loss,
        "ce": ce,
        "mse": mse,
        "steps": steps,
        "seconds": seconds,
        "data_wait_seconds": wait,
    }


@torch.no_grad()
def predict(
    model: DeepSER, loader: DataLoader, n: int, device: torch.device, amp: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(softmax posteriors [n, C], attributes [n, 3]) in dataset order."""
    model.eval()
    probs = np.zeros((n, model.classifier.out_features), dtype=np.float32)
    attrs = np.zeros((n, len(ATTRIBUTES)), dtype=np.float32)
    for batch in loader:
        features, masks = to_device(batch, device)
        with autocast(device, amp):
            logits, attributes, _, _ = model(features, masks)
        index = batch["index"].numpy()
        probs[index] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        attrs[index] = attributes.float().cpu().numpy()
    return probs, attrs


def predict_clips(
    model: DeepSER,
    ids: list[str],
    feature_paths: list[Path],
    settings: ModelSettings,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """`predict` over the clips `ids` (in that order), read from `feature_paths` in one pass."""
    dataset = ClipDataset(ids, feature_paths, settings.max_frames)
    plan = BatchPlan(sorted_batches(dataset.lengths, 2 * settings.stage1.batch_size))
    loader = make_loader(dataset, plan, settings.num_workers, device, persistent=False)
    return predict(model, loader, len(dataset), device, settings.amp)


def score(
    probs: np.ndarray, labels: np.ndarray, classes: Sequence[str] = CLASS_LETTERS
) -> tuple[dict, dict]:
    """(class-balanced metrics over every clip, plain metrics over every clip)."""
    predicted = probs.argmax(axis=1)
    return (
        classification_metrics(labels, predicted, balanced=True, classes=classes),
        classification_metrics(labels, predicted, classes=classes),
    )


# ---------------------------------------------------------------------------------------------
# Files: resume state


def _file_signature(path: str | os.PathLike) -> list:
    stat = os.stat(path)
    return [str(path), stat.st_size, stat.st_mtime_ns]


def fingerprint(stage: int, cfg: dict, manifest_path, feature_paths: dict, init_checkpoint) -> str:
    """What a resume state must match: config, manifest contents, feature and init files."""
    manifest_hash = hashlib.sha256(Path(manifest_path).read_bytes()).hexdigest()
    payload = {
        "stage": stage,
        "config": cfg,
        "manifest": manifest_hash,
        "features": {
            s: [_file_signature(p) for p in ps] for s, ps in sorted(feature_paths.items())
        },
        "init": _file_signature(init_checkpoint) if init_checkpoint else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def load_resume_state(resume_dir: Path, expected: str) -> dict | None:
    path = resume_dir / "state.pt"
    if not path.exists():
        return None
    try:
        state = load_torch(path)
    except CorruptFileError as err:  # only a cache of finished epochs: start over instead
        log.warning(f"ignoring damaged resume state: {err}")
        return None
    if state.get("fingerprint") != expected:
        log.info(f"ignoring stale resume state {path} (config or inputs changed)")
        return None
    return state


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _write_history(path: Path, history: list[dict]) -> None:
    table = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    atomic_write_text(path, table.to_csv(sep="\t", index=False, na_rep="", float_format="%.6g"))


# ---------------------------------------------------------------------------------------------
# The steps of a stage


@dataclass
class TrainingData:
    """The files a stage trains on, their targets and the loader whose batches change per epoch."""

    subset: Subset
    targets: torch.Tensor  # [N, C] class targets
    attributes: torch.Tensor  # [N, 3] act/val/dom, NaN where missing
    hard_labels: np.ndarray  # stage-2 balancing class per file, -1 outside the classes
    ambiguous: np.ndarray  # files of the X/O pool
    class_weights: torch.Tensor  # [C], on the device
    dataset: ClipDataset
    batches: BatchPlan  # replaced every epoch
    loader: DataLoader


def load_training_data(
    plan: StagePlan, settings: ModelSettings, corpus: Corpus, device: torch.device
) -> TrainingData:
    """Every `train` file with a class target (docs/method.md 4.5) and its class weights."""
    train = corpus.subset("train")
    keep, targets = training_targets(train, settings.targets)
    train = train.take(keep)
    if len(train.ids) == 0:
        raise ValueError(f"{corpus.manifest_path}: no train file with a class target and features")
    # Stage-2 balancing classes: argmax of the target, among files with a consensus class.
    hard_labels = np.where(np.isin(train.emo_class, train.classes), targets.argmax(axis=1), -1)
    ambiguous = np.isin(train.emo_class, AMBIGUOUS_LETTERS)
    if plan.class_weighted:
        class_weights = class_weights_from_targets(targets)
    else:
        class_weights = torch.ones(len(train.classes))
    log.info(
        f"stage {plan.stage}: {len(train.ids)} training files, class weights "
        + " ".join(
            f"{c}={w:.3f}" for c, w in zip(train.classes, class_weights.tolist(), strict=True)
        )
    )
    dataset = ClipDataset(train.ids, train.feature_paths, settings.max_frames)
    batches = BatchPlan()
    return TrainingData(
        subset=train,
        targets=torch.as_tensor(targets, dtype=torch.float32),
        attributes=torch.as_tensor(train.attributes, dtype=torch.float32),
        hard_labels=hard_labels,
        ambiguous=ambiguous,
        class_weights=class_weights.to(device),
        dataset=dataset,
        batches=batches,
        loader=make_loader(dataset, batches, settings.num_workers, device, persistent=True),
    )


@dataclass
class Holdout:
    """Holdout files with an 8-class consensus; their class-balanced macro-F1 (every clip
    weighted by 1 / its class's count) selects the model (docs/method.md 5.3), the unbalanced
    figures are logged next to it."""

    labels: np.ndarray
    classes: tuple[str, ...]
    dataset: ClipDataset
    loader: DataLoader
    device: torch.device
    amp: bool

    def score(self, model: DeepSER) -> tuple[dict, dict]:
        """(class-balanced metrics of the holdout, plain metrics of the holdout)."""
        probs, _ = predict(model, self.loader, len(self.dataset), self.device, self.amp)
        return score(probs, self.labels, self.classes)


def load_holdout(
    plan: StagePlan, settings: ModelSettings, corpus: Corpus, device: torch.device
) -> Holdout:
    holdout = corpus.subset("holdout")
    labelled, labels = holdout.consensus()
    holdout = holdout.take(labelled)
    if len(holdout.ids) == 0:
        raise ValueError(
            f"{corpus.manifest_path}: no holdout file with a consensus class and features"
        )
    dataset = ClipDataset(holdout.ids, holdout.feature_paths, settings.max_frames)
    batches = BatchPlan(sorted_batches(dataset.lengths, 2 * plan.settings.batch_size))
    loader = make_loader(dataset, batches, settings.num_workers, device, persistent=True)
    return Holdout(labels, holdout.classes, dataset, loader, device, settings.amp)


def build_or_load_model(
    plan: StagePlan,
    settings: ModelSettings,
    input_dims: list[int],
    frame_pooling: list[int],
    train_set: ClipDataset,
    classes: Sequence[str],
) -> DeepSER:
    """A fresh DeepSER for `classes`, inputs standardised with the training frames' statistics
    when `standardise_inputs`; or (stage 2) the stage-1 weights, their statistics included."""
    torch.manual_seed(settings.seed)
    model = build_model(settings, input_dims, frame_pooling, len(classes))
    if plan.init_checkpoint is None:
        if settings.standardise_inputs:
            model.set_input_statistics(feature_statistics(train_set))
            log.info(
                f"stage {plan.stage}: inputs standardised with statistics of "
                f"{min(len(train_set), STATISTICS_MAX_CLIPS)} training files"
            )
        return model
    checkpoint = load_torch(plan.init_checkpoint)
    if checkpoint_classes(checkpoint) != tuple(classes):
        raise ValueError(
            f"{plan.init_checkpoint}: trained on classes {checkpoint_classes(checkpoint)}, "
            f"the manifest has {tuple(classes)}"
        )
    if checkpoint["input_dims"] != input_dims or checkpoint["features"] != list(settings.features):
        raise ValueError(
            f"{plan.init_checkpoint}: trained on {checkpoint['features']} "
            f"{checkpoint['input_dims']}, this model fuses {list(settings.features)} {input_dims}"
        )
    model.load_state_dict(checkpoint["model_state"])
    return model


def adamw(model: DeepSER, stage: StageSettings) -> torch.optim.AdamW:
    """A fresh AdamW (stage 2 carries no optimiser state over from stage 1)."""
    # foreach: one fused update over all parameters (the default only on CUDA); on CPU the
    # per-parameter loop costs ~10% of a small model's step.
    return torch.optim.AdamW(
        model.parameters(), lr=stage.lr, weight_decay=stage.weight_decay, foreach=True
    )


@dataclass
class Progress:
    """A stage after `epoch` completed epochs: best candidate so far (score, epoch, holdout
    metrics, weights), early-stopping counter, history. With the model and the optimiser it is
    the whole resume state: every epoch's randomness is derived from (seed, stage, epoch)."""

    epoch: int = 0
    best: dict = field(
        default_factory=lambda: {"score": -math.inf, "epoch": None, "metrics": None, "state": None}
    )
    since_best: int = 0
    stopped: bool = False
    history: list[dict] = field(default_factory=list)

    def candidate(self, epoch: int, bal: dict, full: dict, model: DeepSER) -> None:
        self.best = {"score": bal["macro_f1"], "epoch": epoch, "metrics": [bal, full]}
        self.best["state"] = _cpu_state(model)

    def record(self, stats: dict, bal: dict, full: dict, model: DeepSER, patience: int) -> None:
        """One more completed epoch: keep it if strictly better, stop after `patience` without."""
        self.epoch += 1
        if bal["macro_f1"] > self.best["score"]:
            self.candidate(self.epoch, bal, full, model)
            self.since_best = 0
        else:
            self.since_best += 1
        self.stopped = self.since_best >= patience
        self.history.append(_history_row(self.epoch, stats, bal, full))


def resume_or_start(
    plan: StagePlan,
    resume_dir: Path,
    expected: str,
    model: DeepSER,
    optimizer: torch.optim.Optimizer,
    holdout: Holdout,
) -> Progress:
    """The saved state of this very run (same fingerprint), or a start; a stage that starts
    from a checkpoint scores it as epoch 0, so stage 2 never returns a worse model."""
    state = load_resume_state(resume_dir, expected)
    if state is not None:
        model.load_state_dict(state.pop("model"))
        optimizer.load_state_dict(state.pop("optimizer"))
        del state["fingerprint"]
        log.info(f"stage {plan.stage}: resuming after epoch {state['epoch']} from {resume_dir}")
        return Progress(**state)
    progress = Progress()
    if plan.init_checkpoint is not None:
        bal, full = holdout.score(model)
        progress.candidate(0, bal, full, model)
        progress.history.append(_history_row(0, None, bal, full))
    return progress


def save_resume_state(
    resume_dir: Path,
    expected: str,
    progress: Progress,
    model: DeepSER,
    optimizer: torch.optim.Optimizer,
) -> None:
    """Progress, model and optimiser after an epoch, atomically, under the run's fingerprint."""
    state = {f.name: getattr(progress, f.name) for f in dataclasses.fields(progress)}
    state.update(fingerprint=expected, model=model.state_dict(), optimizer=optimizer.state_dict())
    require_finite_weights(model.state_dict(), resume_dir / "state.pt")
    atomic_torch_save(resume_dir / "state.pt", state, checksum=True)


def seed_epoch(seed: int, stage: int, epoch: int) -> tuple[torch.Generator, np.random.Generator]:
    """Seed the global torch RNG (dropout) from (seed, stage, epoch); return the generators of
    MixUp and of the epoch's batches (and stage-2 subset)."""
    torch_seed, mixup_seed, numpy_seed = np.random.SeedSequence(
        [seed, stage, epoch]
    ).generate_state(3)
    torch.manual_seed(int(torch_seed))
    return torch.Generator().manual_seed(int(mixup_seed)), np.random.default_rng(int(numpy_seed))


def train_epoch(
    plan: StagePlan,
    settings: ModelSettings,
    epoch: int,
    model: DeepSER,
    optimizer: torch.optim.Optimizer,
    train: TrainingData,
    device: torch.device,
) -> dict:
    """Epoch `epoch` of the stage: its batches (all files, or a balanced subset), one pass."""
    mixup_generator, rng = seed_epoch(settings.seed, plan.stage, epoch)
    train.batches.batches = epoch_batches(
        plan.balanced_epochs,
        train.hard_labels,
        train.ambiguous,
        train.dataset.lengths,
        plan.settings.batch_size,
        rng,
    )
    loss_weights = (settings.loss_weights.classes, settings.attribute_weight)
    return train_one_epoch(
        model,
        train.loader,
        optimizer,
        train.targets,
        train.attributes,
        train.class_weights,
        loss_weights,
        mixup_generator,
        device,
        settings.amp,
        where=f"model {settings.name}, stage {plan.stage} (lr {plan.settings.lr:g}), epoch {epoch}",
    )


def log_epoch(plan: StagePlan, progress: Progress, stats: dict, bal: dict, full: dict) -> None:
    best = progress.best
    log.info(
        f"stage {plan.stage} epoch {progress.epoch}/{plan.settings.max_epochs}: loss "
        f"{stats['loss']:.4f} (CE {stats['ce']:.4f}, MSE {stats['mse']:.4f}) | balanced holdout "
        f"macro-F1 {bal['macro_f1']:.4f}, holdout {full['macro_f1']:.4f} | best "
        f"{best['score']:.4f} at epoch {best['epoch']} | {stats['steps'] / stats['seconds']:.1f} "
        f"steps/s, data wait {100 * stats['data_wait_seconds'] / stats['seconds']:.1f}%"
    )
    if progress.stopped:
        log.info(
            f"stage {plan.stage}: early stop, no improvement for {plan.settings.patience} epochs"
        )


def evaluate_dev(
    model: DeepSER, settings: ModelSettings, corpus: Corpus, device: torch.device
) -> dict | None:
    """Metrics of `model` on dev's consensus files (X/O excluded); None without dev."""
    if "dev" not in corpus.feature_paths:
        log.info("no dev features given: dev metrics skipped")
        return None
    dev = corpus.subset("dev")
    labelled, labels = dev.consensus()
    dev = dev.take(labelled)
    if len(dev.ids) == 0:
        log.info("dev has no file with a consensus class and features: dev metrics skipped")
        return None
    probs, _ = predict_clips(model, dev.ids, dev.feature_paths, settings, device)
    return classification_metrics(labels, probs.argmax(axis=1), classes=dev.classes)


def stage_metrics(
    plan: StagePlan,
    settings: ModelSettings,
    progress: Progress,
    train: TrainingData,
    dev: dict | None,
) -> dict:
    """metrics.json: the best epoch's holdout metrics, dev's, and how the stage went."""
    bal, full = progress.best["metrics"]
    class_weights = train.class_weights.cpu().tolist()
    return {
        "model": settings.name,
        "stage": plan.stage,
        "selection": "balanced holdout macro_f1",
        "best_epoch": progress.best["epoch"],
        "epochs_completed": progress.epoch,
        "stopped_early": progress.stopped,
        "train_files": len(train.subset.ids),
        "targets": settings.targets,
        "class_weights": dict(zip(train.subset.classes, class_weights, strict=True)),
        "balanced_holdout": bal,
        "holdout": full,
        "dev": dev,
        **plan.metrics_marks,
    }


def stage_checkpoint(
    plan: StagePlan,
    progress: Progress,
    model_cfg: dict,
    input_dims: list[int],
    classes: Sequence[str],
) -> dict:
    """The best epoch's weights with what rebuilds the model (`load_checkpoint`)."""
    return {
        "model_state": progress.best["state"],
        "model_cfg": model_cfg,
        "input_dims": list(input_dims),
        "features": list(model_cfg["features"]),
        "classes": list(classes),
        "stage": plan.stage,
        "epoch": progress.best["epoch"],
    }


def checkpoint_classes(checkpoint: Mapping) -> tuple[str, ...]:
    """The class codes a checkpoint predicts, in logit order (MSP-Podcast's when unrecorded)."""
    return tuple(checkpoint.get("classes", CLASS_LETTERS))


def write_outputs(out_dir: Path, checkpoint: dict, history: list[dict], metrics: dict) -> None:
    """checkpoint.pt, history.tsv and metrics.json of a stage, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    require_finite_weights(checkpoint["model_state"], out_dir / "checkpoint.pt")
    atomic_torch_save(out_dir / "checkpoint.pt", checkpoint, checksum=True)
    _write_history(out_dir / "history.tsv", history)
    atomic_write_json(out_dir / "metrics.json", metrics, sort_keys=True)
    dev = metrics["dev"]
    log.info(
        f"stage {metrics['stage']}: best epoch {metrics['best_epoch']}, balanced holdout "
        f"macro-F1 {metrics['balanced_holdout']['macro_f1']:.4f}"
        + (f", dev macro-F1 {dev['macro_f1']:.4f}" if dev else "")
    )


# ---------------------------------------------------------------------------------------------
# A stage


def train_stage(
    stage: int,
    settings: ModelSettings,
    manifest_path: str | os.PathLike,
    feature_paths: Mapping[str, list[str | os.PathLike]],
    out_dir: str | os.PathLike,
    resume_dir: str | os.PathLike,
    init_checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Train stage 1 (full train set) or stage 2 (balanced epochs from the stage-1 checkpoint).

    Writes checkpoint.pt, metrics.json and history.tsv into `out_dir` and returns the metrics.
    `feature_paths` maps subsets (train, holdout, and dev for the final report) to one feature
    file per feature set of the model. An interrupted call resumes from `resume_dir`.
    """
    plan = stage_plan(stage, settings, init_checkpoint)
    device, resume_dir = torch.device(device), Path(resume_dir)

    # Load the stage's data: training files and targets, the holdout that selects the model.
    features = list(settings.features)
    input_dims = _check_paths(feature_paths, ["train", "holdout"], features)
    corpus = Corpus(read_manifest(manifest_path), manifest_path, feature_paths, features)
    train = load_training_data(plan, settings, corpus, device)
    holdout = load_holdout(plan, settings, corpus, device)

    # Build the model (stage 1) or load the stage-1 weights (stage 2), and a fresh AdamW.
    frame_pooling = modality_frame_pooling(settings.frame_pooling, feature_paths["train"])
    classes = train.subset.classes
    model = build_or_load_model(plan, settings, input_dims, frame_pooling, train.dataset, classes)
    model = model.to(device)
    optimizer = adamw(model, plan.settings)

    # Resume after the last completed epoch of this very run, or start.
    model_cfg = checkpoint_settings(settings, frame_pooling)
    expected = fingerprint(plan.stage, model_cfg, manifest_path, feature_paths, init_checkpoint)
    progress = resume_or_start(plan, resume_dir, expected, model, optimizer, holdout)

    # The epoch loop: up to max_epochs, or until `patience` epochs bring no better model.
    while progress.epoch < plan.settings.max_epochs and not progress.stopped:
        # Train one epoch: every training file, or (stage 2) a fresh balanced subset.
        stats = train_epoch(plan, settings, progress.epoch + 1, model, optimizer, train, device)
        # Evaluate: the balanced holdout's macro-F1 selects the model.
        bal, full = holdout.score(model)
        # Update the early-stopping state: keep the epoch if strictly better than the best.
        progress.record(stats, bal, full, model, plan.settings.patience)
        # Save the resume state: a killed job continues after this epoch.
        save_resume_state(resume_dir, expected, progress, model, optimizer)
        log_epoch(plan, progress, stats, bal, full)

    # Write the outputs: the best epoch's weights, also scored on dev, and the history.
    model.load_state_dict(progress.best["state"])
    dev = evaluate_dev(model, settings, corpus, device)
    metrics = stage_metrics(plan, settings, progress, train, dev)
    checkpoint = stage_checkpoint(plan, progress, model_cfg, input_dims, classes)
    write_outputs(Path(out_dir), checkpoint, progress.history, metrics)
    shutil.rmtree(resume_dir, ignore_errors=True)
    return metrics


# ---------------------------------------------------------------------------------------------
# Model settings and feature files


def checkpoint_settings(settings: ModelSettings, frame_pooling: list[int]) -> dict:
    """The `model_cfg` a checkpoint stores: the settings as a plain dict (loadable with
    `weights_only`) and the frame pooling per modality the model was built with."""
    return {**settings.to_params(), "modality_frame_pooling": list(frame_pooling)}


def settings_of(checkpoint: dict) -> tuple[ModelSettings, list[int]]:
    """(settings, frame pooling per modality) of a checkpoint, as `checkpoint_settings` stored them."""
    params = dict(checkpoint["model_cfg"])
    frame_pooling = params.pop("modality_frame_pooling")
    return ModelSettings.from_params(params), frame_pooling


def modality_frame_pooling(k: int, paths: list) -> list[int]:
    """`frame_pooling` k for modalities with a frame rate (audio, Whisper), 1 for token sequences."""
    pooling = []
    for p in paths:
        with FeatureReader(p) as reader:
            pooling.append(k if float(reader.attrs.get("frame_rate", 0.0)) > 0 else 1)
    return pooling


def _input_dims(paths: list) -> list[int]:
    dims = []
    for p in paths:
        reader = FeatureReader(p)
        dims.append(reader.dim)
        reader.close()
    return dims


def _check_paths(feature_paths: dict, needed: list[str], features: list[str]) -> list[int]:
    """Every needed subset has one file per feature set, with the same dims in every subset."""
    dims = None
    for subset in needed:
        if subset not in feature_paths:
            raise KeyError(f"feature_paths has no {subset!r} subset (has {sorted(feature_paths)})")
    for subset, paths in feature_paths.items():
        if len(paths) != len(features):
            raise ValueError(f"subset {subset!r}: {len(paths)} feature files for {features}")
        subset_dims = _input_dims(paths)
        if dims is not None and subset_dims != dims:
            raise ValueError(f"feature dims differ between subsets: {subset_dims} vs {dims}")
        dims = subset_dims
    return dims


def _history_row(epoch: int, stats: dict | None, bal: dict, full: dict) -> dict:
    stats = stats or {}
    return {
        "epoch": epoch,
        "train_files": stats.get("files", 0),
        "train_loss": stats.get("loss", math.nan),
        "train_ce": stats.get("ce", math.nan),
        "train_mse": stats.get("mse", math.nan),
        "balanced_holdout_macro_f1": bal["macro_f1"],
        "holdout_macro_f1": full["macro_f1"],
        "holdout_micro_f1": full["micro_f1"],
        "holdout_accuracy": full["accuracy"],
    }


# ---------------------------------------------------------------------------------------------
# Posteriors


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[DeepSER, dict]:
    """(model in eval mode on `device`, the checkpoint dict)."""
    checkpoint = load_torch(path)
    settings, frame_pooling = settings_of(checkpoint)
    classes = checkpoint_classes(checkpoint)
    model = build_model(settings, checkpoint["input_dims"], frame_pooling, len(classes))
    model.load_state_dict(checkpoint["model_state"])
    return model.to(device).eval(), checkpoint


def write_posteriors(
    checkpoint_path: str | os.PathLike,
    manifest: str | os.PathLike | pd.DataFrame,
    feature_paths: Mapping[str, list[str | os.PathLike]],
    out_path: str | os.PathLike,
    device: str | torch.device = "cpu",
) -> None:
    """Softmax posteriors and attributes of every manifest row with features, per subset.

    `manifest`: the manifest (a path, or a table such as the unlabelled partition's clips as
    `test` rows, ``medusa.partitions.unlabelled_manifest``); `feature_paths` maps each subset
    to write to the model's feature files of the audio partition that holds it.

    HDF5 layout: one group per subset with `ids` (utf-8, sorted), `probs` float32 [N, C]
    (class order: the file's `classes` attribute, codes joined by commas, e.g. A,S,H,U,F,D,C,N)
    and `attributes` float32 [N, 3] (act, val, dom).
    """
    device = torch.device(device)
    model, checkpoint = load_checkpoint(checkpoint_path, device)
    settings, _ = settings_of(checkpoint)
    features = list(checkpoint["features"])
    dims = _check_paths(feature_paths, [], features)
    if dims != checkpoint["input_dims"]:
        raise ValueError(
            f"{checkpoint_path}: trained on dims {checkpoint['input_dims']}, features have {dims}"
        )
    if not isinstance(manifest, pd.DataFrame):
        manifest = read_manifest(manifest)
    corpus = Corpus(manifest, manifest.attrs.get("path", "manifest"), feature_paths, features)
    results = {}
    for name in sorted(feature_paths):
        subset = corpus.subset(name)
        ids = sorted(subset.ids)
        probs = np.zeros((0, len(checkpoint_classes(checkpoint))), dtype=np.float32)
        attrs = np.zeros((0, len(ATTRIBUTES)), dtype=np.float32)
        if ids:
            probs, attrs = predict_clips(model, ids, subset.feature_paths, settings, device)
        results[name] = (ids, probs, attrs)
        log.info(f"posteriors: {name}: {len(ids)} files")
    classes = checkpoint_classes(checkpoint)
    _write_posterior_file(Path(out_path), settings.name, checkpoint_path, classes, results)


def _write_posterior_file(
    out_path: Path, model: str, checkpoint_path, classes: Sequence[str], results: dict
) -> None:
    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w", userblock_size=USERBLOCK_BYTES) as f:
            f.attrs["model"] = model
            f.attrs["classes"] = ",".join(classes)
            f.attrs["attributes"] = ",".join(ATTRIBUTES)
            f.attrs["checkpoint"] = str(checkpoint_path)
            for name, (ids, probs, attrs) in results.items():
                group = f.create_group(name)
                group.create_dataset("ids", data=ids, dtype=h5py.string_dtype("utf-8"))
                group.create_dataset("probs", data=probs.astype(np.float32))
                group.create_dataset("attributes", data=attrs.astype(np.float32))
        seal_hdf5(tmp)  # readers (medusa.ensemble) check the file against this digest

    atomic_write(out_path, write)
