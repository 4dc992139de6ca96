"""Stage 1 and 2's data: the manifest's subsets, their features and soft targets, and
length-bucketed batches (docs/method.md, 5).

Features stay on disk in HDF5 and are read one utterance slice at a time by DataLoader workers
(`num_workers`; 0 reads in the training process). One MSP-Podcast feature set is ~70 GB, so caching
everything in RAM cannot be the general path; files under IN_MEMORY_MAX_BYTES (the demo's) are read
into memory once instead. Batches group clips of similar length (shuffled buckets), so little time
goes into padding.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from medusa.core.emotions import AMBIGUOUS_LETTERS, ATTRIBUTES, CLASS_LETTERS
from medusa.core.manifest import consensus_labels, manifest_classes
from medusa.core.store import FeatureReader
from medusa.training.model import DeepSER, class_weights_from_targets
from medusa.training.plan import StagePlan
from medusa.training.sampling import stage2_balanced_subset
from medusa.training.settings import ModelSettings
from medusa.training.steps import predict, score

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
