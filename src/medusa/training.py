"""Stage 1 and stage 2 of MEDUSA for one DeepSER model, and its posteriors (docs/method.md, 5).

Read top to bottom: manifest and feature files -> datasets and length-bucketed loaders ->
the epoch loop (train, score the balanced holdout, keep the best, stop early, save a resume
state) -> outputs (checkpoint.pt, metrics.json, history.tsv). `write_posteriors` runs a trained
checkpoint over every subset.

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

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from medusa.atomic import atomic_torch_save, atomic_write, atomic_write_json, atomic_write_text
from medusa.emotions import AMBIGUOUS_LETTERS, ATTRIBUTES, CLASS_LETTERS
from medusa.manifest import consensus_labels, read_manifest
from medusa.metrics import classification_metrics
from medusa.model import DeepSER, build_model, class_weights_from_targets, total_loss
from medusa.sampling import balanced_evaluation_subset, stage2_balanced_subset
from medusa.store import FeatureReader

Log = Callable[[str], None]

# Keys this module reads beyond the config schema's model settings, with their defaults.
DEFAULTS = {
    "num_workers": 0,  # DataLoader worker processes reading HDF5 (0: read in-process)
    "max_frames": 1500,  # longer sequences are cropped to their first max_frames frames
    "amp": True,  # bf16 autocast on CUDA (ignored on CPU)
    "frame_pooling": 1,  # average k audio frames before the encoders (1: off, the paper)
    "standardise_inputs": False,  # per-dimension train mean/std before the encoders (not paper)
    "balanced_holdout_seed": 0,  # config evaluation.balanced_holdout_seed
}
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
# Inputs: manifest rows with features


@dataclass
class Subset:
    """Manifest rows of one subset that have frames in every feature file, in manifest order."""

    name: str
    ids: list[str]
    emo_class: np.ndarray  # [N] consensus letters ('' when unlabelled)
    soft: np.ndarray  # [N, 8] float32 soft targets, NaN rows when the file has none
    attributes: np.ndarray  # [N, 3] float32 act/val/dom, NaN where missing
    feature_paths: list[Path]

    def take(self, keep: np.ndarray) -> Subset:
        keep = np.flatnonzero(keep)
        return Subset(
            self.name,
            [self.ids[i] for i in keep],
            self.emo_class[keep],
            self.soft[keep],
            self.attributes[keep],
            self.feature_paths,
        )


def load_subset(
    manifest: pd.DataFrame,
    manifest_path: str | os.PathLike,
    name: str,
    feature_paths: list[str | os.PathLike],
    feature_sets: list[str],
    log: Log,
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
        log(
            f"subset {name}: {len(missing)} of {len(ids)} manifest rows lack features in at "
            f"least one feature file and are skipped (e.g. {missing[:3]})"
        )
    rows = rows[present]
    soft = rows[list(CLASS_LETTERS)].to_numpy(dtype=np.float32)
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
    )


def training_targets(subset: Subset, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows to train on, their class targets [n, 8]).

    soft: every file with a soft target, X/O files included (the ambiguous pool).
    onehot (ablation): files whose consensus is one of the 8 classes, one-hot on that class.
    """
    if mode == "soft":
        keep = ~np.isnan(subset.soft).any(axis=1)
        return keep, subset.soft[keep]
    if mode == "onehot":
        keep, labels = consensus_labels(subset.emo_class)
        return keep, np.eye(len(CLASS_LETTERS), dtype=np.float32)[labels]
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
    """
    n = len(dataset)
    picks = np.unique(np.linspace(0, n - 1, min(n, max_clips)).round().astype(np.int64))
    sums = [np.zeros(d) for d in dataset.dims]
    squares = [np.zeros(d) for d in dataset.dims]
    frames = [0] * len(dataset.dims)
    for i in picks:
        for m, x in enumerate(dataset[int(i)][1]):
            x = x.numpy().astype(np.float64)
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
    stage: int,
    hard_labels: np.ndarray,
    ambiguous: np.ndarray,
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """The batches of one training epoch: all training files (stage 1) or a fresh class-balanced
    subset plus as many ambiguous files (stage 2)."""
    if stage == 1:
        indices = np.arange(len(hard_labels))
    else:
        indices = stage2_balanced_subset(hard_labels, ambiguous, rng)
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
) -> dict:
    """One pass over `loader`; returns mean losses, steps and time spent waiting for data."""
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
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits, attrs, y_class, y_attr = model(
                features, masks, y_class, y_attr, generator=mixup_generator
            )
            loss, ce, mse = total_loss(logits, attrs, y_class, y_attr, class_weights, *loss_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
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
    """(softmax posteriors [n, 8], attributes [n, 3]) in dataset order."""
    model.eval()
    probs = np.zeros((n, len(CLASS_LETTERS)), dtype=np.float32)
    attrs = np.zeros((n, len(ATTRIBUTES)), dtype=np.float32)
    for batch in loader:
        features, masks = to_device(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits, attributes, _, _ = model(features, masks)
        index = batch["index"].numpy()
        probs[index] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        attrs[index] = attributes.float().cpu().numpy()
    return probs, attrs


def predict_clips(
    model: DeepSER, ids: list[str], feature_paths: list[Path], cfg: dict, device, amp: bool
) -> tuple[np.ndarray, np.ndarray]:
    """`predict` over the clips `ids` (in that order), read from `feature_paths` in one pass."""
    dataset = ClipDataset(ids, feature_paths, int(cfg["max_frames"]))
    plan = BatchPlan(sorted_batches(dataset.lengths, 2 * int(cfg["stage1"]["batch_size"])))
    loader = make_loader(dataset, plan, int(cfg["num_workers"]), device, persistent=False)
    return predict(model, loader, len(dataset), device, amp)


def score(probs: np.ndarray, labels: np.ndarray, balanced: np.ndarray) -> tuple[dict, dict]:
    """(metrics on the balanced subset, metrics on all labelled rows)."""
    predicted = probs.argmax(axis=1)
    return (
        classification_metrics(labels[balanced], predicted[balanced]),
        classification_metrics(labels, predicted),
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


def load_resume_state(resume_dir: Path, expected: str, log: Log) -> dict | None:
    path = resume_dir / "state.pt"
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != expected:
        log(f"ignoring stale resume state {path} (config or inputs changed)")
        return None
    return state


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _write_history(path: Path, history: list[dict]) -> None:
    table = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    atomic_write_text(path, table.to_csv(sep="\t", index=False, na_rep="", float_format="%.6g"))


# ---------------------------------------------------------------------------------------------
# The stages


def resolve_config(model_cfg: dict) -> dict:
    """The model config with this module's extra keys defaulted; missing required keys raise."""
    cfg = {**DEFAULTS, **copy.deepcopy(model_cfg)}
    required = ["features", "hidden_size", "num_heads", "ff_size", "dropout", "encoder_layers"]
    required += ["targets", "multitask", "loss_weights", "mixup", "stage1", "stage2", "seed"]
    missing = [k for k in required if k not in cfg]
    if missing:
        raise KeyError(f"model config {cfg.get('name', '')!r} lacks key(s) {missing}")
    return cfg


def modality_frame_pooling(cfg: dict, paths: list) -> list[int]:
    """`frame_pooling` for modalities with a frame rate (audio, Whisper), 1 for token sequences."""
    k = int(cfg.get("frame_pooling", 1))
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


def train_stage(
    stage: int,
    model_cfg: dict,
    manifest_path: str | os.PathLike,
    feature_paths: dict[str, list[str | os.PathLike]],
    out_dir: str | os.PathLike,
    resume_dir: str | os.PathLike,
    init_checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    log: Log | None = None,
) -> dict:
    """Train stage 1 (full train set) or stage 2 (balanced epochs from the stage-1 checkpoint).

    Writes checkpoint.pt, metrics.json and history.tsv into `out_dir` and returns the metrics.
    `feature_paths` maps subsets (train, holdout, and dev for the final report) to one feature
    file per feature set of the model. An interrupted call resumes from `resume_dir`.
    """
    log = log or logging.getLogger(__name__).info
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    cfg = resolve_config(model_cfg)
    stage_cfg = cfg[f"stage{stage}"]
    out_dir, resume_dir = Path(out_dir), Path(resume_dir)
    device = torch.device(device)
    amp = bool(cfg["amp"]) and device.type == "cuda"
    if stage == 2 and init_checkpoint is None:
        raise ValueError("stage 2 starts from the stage-1 checkpoint: pass init_checkpoint")
    if stage == 2 and not stage_cfg.get("enabled", True):
        return _skip_stage2(
            cfg, manifest_path, feature_paths, out_dir, init_checkpoint, device, log
        )

    # --- data ------------------------------------------------------------------------------
    features = list(cfg["features"])
    input_dims = _check_paths(feature_paths, ["train", "holdout"], features)
    cfg["modality_frame_pooling"] = modality_frame_pooling(cfg, feature_paths["train"])
    manifest = read_manifest(manifest_path)

    def subset(name: str) -> Subset:
        return load_subset(manifest, manifest_path, name, feature_paths[name], features, log)

    train = subset("train")
    keep, targets = training_targets(train, cfg["targets"])
    train = train.take(keep)
    if len(train.ids) == 0:
        raise ValueError(f"{manifest_path}: no train file with a class target and features")
    # Stage-2 balancing classes: argmax of the target, among files with a consensus class.
    hard_labels = np.where(np.isin(train.emo_class, CLASS_LETTERS), targets.argmax(axis=1), -1)
    ambiguous = np.isin(train.emo_class, AMBIGUOUS_LETTERS)
    if stage == 1:
        class_weights = class_weights_from_targets(targets)
    else:  # balanced epochs: uniform weights
        class_weights = torch.ones(len(CLASS_LETTERS))
    log(
        f"stage {stage}: {len(train.ids)} training files, class weights "
        + " ".join(
            f"{c}={w:.3f}" for c, w in zip(CLASS_LETTERS, class_weights.tolist(), strict=True)
        )
    )

    holdout = subset("holdout")
    labelled, holdout_labels = consensus_labels(holdout.emo_class)
    holdout = holdout.take(labelled)
    if len(holdout.ids) == 0:
        raise ValueError(f"{manifest_path}: no holdout file with a consensus class and features")
    balanced = balanced_evaluation_subset(holdout_labels, int(cfg["balanced_holdout_seed"]))

    max_frames, workers = int(cfg["max_frames"]), int(cfg["num_workers"])
    batch_size = int(stage_cfg["batch_size"])
    train_set = ClipDataset(train.ids, train.feature_paths, max_frames)
    train_plan = BatchPlan()
    train_loader = make_loader(train_set, train_plan, workers, device, persistent=True)
    holdout_set = ClipDataset(holdout.ids, holdout.feature_paths, max_frames)
    holdout_loader = make_loader(
        holdout_set,
        BatchPlan(sorted_batches(holdout_set.lengths, 2 * batch_size)),
        workers,
        device,
        persistent=True,
    )
    targets_t = torch.as_tensor(targets, dtype=torch.float32)
    attributes_t = torch.as_tensor(train.attributes, dtype=torch.float32)
    class_weights = class_weights.to(device)
    attribute_weight = float(cfg["loss_weights"]["attributes"]) if cfg["multitask"] else 0.0
    loss_weights = (float(cfg["loss_weights"]["classes"]), attribute_weight)

    def evaluate(model: DeepSER) -> tuple[dict, dict]:
        probs, _ = predict(model, holdout_loader, len(holdout_set), device, amp)
        return score(probs, holdout_labels, balanced)

    # --- model and optimiser -----------------------------------------------------------------
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    model = build_model(cfg, input_dims)
    if stage == 1 and cfg["standardise_inputs"]:
        model.set_input_statistics(feature_statistics(train_set))
        log(
            "stage 1: inputs standardised with statistics of "
            f"{min(len(train_set), STATISTICS_MAX_CLIPS)} training files"
        )
    if stage == 2:
        checkpoint = torch.load(init_checkpoint, map_location="cpu", weights_only=True)
        if checkpoint["input_dims"] != input_dims or checkpoint["features"] != features:
            raise ValueError(
                f"{init_checkpoint}: trained on {checkpoint['features']} {checkpoint['input_dims']}, "
                f"this model fuses {features} {input_dims}"
            )
        model.load_state_dict(checkpoint["model_state"])
    model.to(device)
    # foreach: one fused update over all parameters (the default only on CUDA); on CPU the
    # per-parameter loop costs ~10% of a small model's step.
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=float(stage_cfg["lr"]),
        weight_decay=float(stage_cfg["weight_decay"]),
        foreach=True,
    )

    # --- resume or start ---------------------------------------------------------------------
    expected = fingerprint(stage, cfg, manifest_path, feature_paths, init_checkpoint)
    state = load_resume_state(resume_dir, expected, log)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, best, since_best = state["epoch"], state["best"], state["since_best"]
        stopped, history = state["stopped"], state["history"]
        log(f"stage {stage}: resuming after epoch {epoch} from {resume_dir}")
    else:
        epoch, since_best, stopped, history = 0, 0, False, []
        best = {"score": -math.inf, "epoch": None, "metrics": None, "state": None}
        if stage == 2:
            # The starting point is a candidate too: stage 2 must not return a worse model.
            bal, full = evaluate(model)
            best = {
                "score": bal["macro_f1"],
                "epoch": 0,
                "metrics": [bal, full],
                "state": _cpu_state(model),
            }
            history.append(_history_row(0, None, bal, full))

    # --- the epoch loop ----------------------------------------------------------------------
    max_epochs, patience = int(stage_cfg["max_epochs"]), int(stage_cfg["patience"])
    while epoch < max_epochs and not stopped:
        epoch += 1
        # Everything random in this epoch derives from (seed, stage, epoch): see module doc.
        torch_seed, mixup_seed, numpy_seed = np.random.SeedSequence(
            [seed, stage, epoch]
        ).generate_state(3)
        torch.manual_seed(int(torch_seed))
        mixup_generator = torch.Generator().manual_seed(int(mixup_seed))
        rng = np.random.default_rng(int(numpy_seed))
        train_plan.batches = epoch_batches(
            stage, hard_labels, ambiguous, train_set.lengths, batch_size, rng
        )
        stats = train_one_epoch(
            model,
            train_loader,
            optimizer,
            targets_t,
            attributes_t,
            class_weights,
            loss_weights,
            mixup_generator,
            device,
            amp,
        )
        bal, full = evaluate(model)
        if bal["macro_f1"] > best["score"]:
            best = {
                "score": bal["macro_f1"],
                "epoch": epoch,
                "metrics": [bal, full],
                "state": _cpu_state(model),
            }
            since_best = 0
        else:
            since_best += 1
        stopped = since_best >= patience
        history.append(_history_row(epoch, stats, bal, full))
        atomic_torch_save(
            resume_dir / "state.pt",
            {
                "fingerprint": expected,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "best": best,
                "since_best": since_best,
                "stopped": stopped,
                "history": history,
            },
        )
        log(
            f"stage {stage} epoch {epoch}/{max_epochs}: loss {stats['loss']:.4f} "
            f"(CE {stats['ce']:.4f}, MSE {stats['mse']:.4f}) | balanced holdout macro-F1 "
            f"{bal['macro_f1']:.4f}, holdout {full['macro_f1']:.4f} | best {best['score']:.4f} "
            f"at epoch {best['epoch']} | {stats['steps'] / stats['seconds']:.1f} steps/s, data wait "
            f"{100 * stats['data_wait_seconds'] / stats['seconds']:.1f}%"
        )
        if stopped:
            log(f"stage {stage}: early stop, no improvement for {patience} epochs")

    # --- outputs -----------------------------------------------------------------------------
    model.load_state_dict(best["state"])
    bal, full = best["metrics"]
    dev = _evaluate_dev(
        model, manifest, manifest_path, feature_paths, features, cfg, device, amp, log
    )
    metrics = {
        "model": cfg.get("name"),
        "stage": stage,
        "selection": "balanced holdout macro_f1",
        "best_epoch": best["epoch"],
        "epochs_completed": epoch,
        "stopped_early": stopped,
        "train_files": len(train.ids),
        "targets": cfg["targets"],
        "class_weights": dict(zip(CLASS_LETTERS, class_weights.cpu().tolist(), strict=True)),
        "balanced_holdout": bal,
        "holdout": full,
        "dev": dev,
    }
    if stage == 2:
        metrics["stage2_enabled"] = True
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(
        out_dir / "checkpoint.pt", _checkpoint(best["state"], cfg, input_dims, stage, best["epoch"])
    )
    _write_history(out_dir / "history.tsv", history)
    atomic_write_json(out_dir / "metrics.json", metrics, sort_keys=True)
    shutil.rmtree(resume_dir, ignore_errors=True)
    log(
        f"stage {stage}: best epoch {best['epoch']}, balanced holdout macro-F1 {bal['macro_f1']:.4f}"
        + (f", dev macro-F1 {dev['macro_f1']:.4f}" if dev else "")
    )
    return metrics


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


def _checkpoint(state: dict, cfg: dict, input_dims: list[int], stage: int, epoch: int) -> dict:
    return {
        "model_state": state,
        "model_cfg": cfg,
        "input_dims": list(input_dims),
        "features": list(cfg["features"]),
        "stage": stage,
        "epoch": epoch,
    }


def _evaluate_dev(model, manifest, manifest_path, feature_paths, features, cfg, device, amp, log):
    """Metrics of `model` on dev's 8-class consensus files (X/O excluded); None without dev."""
    if "dev" not in feature_paths:
        log("no dev features given: dev metrics skipped")
        return None
    dev = load_subset(manifest, manifest_path, "dev", feature_paths["dev"], features, log)
    labelled, labels = consensus_labels(dev.emo_class)
    dev = dev.take(labelled)
    if len(dev.ids) == 0:
        log("dev has no file with a consensus class and features: dev metrics skipped")
        return None
    probs, _ = predict_clips(model, dev.ids, dev.feature_paths, cfg, device, amp)
    return classification_metrics(labels, probs.argmax(axis=1))


def _skip_stage2(cfg, manifest_path, feature_paths, out_dir, init_checkpoint, device, log) -> dict:
    """Ablation "no stage 2": the stage-1 checkpoint is the stage-2 result, re-scored."""
    log("stage 2 disabled: passing the stage-1 checkpoint through")
    model, checkpoint = load_checkpoint(init_checkpoint, device)
    features = list(cfg["features"])
    amp = bool(cfg["amp"]) and device.type == "cuda"
    manifest = read_manifest(manifest_path)
    holdout = load_subset(
        manifest, manifest_path, "holdout", feature_paths["holdout"], features, log
    )
    labelled, labels = consensus_labels(holdout.emo_class)
    holdout = holdout.take(labelled)
    probs, _ = predict_clips(model, holdout.ids, holdout.feature_paths, cfg, device, amp)
    bal, full = score(
        probs, labels, balanced_evaluation_subset(labels, int(cfg["balanced_holdout_seed"]))
    )
    dev = _evaluate_dev(
        model, manifest, manifest_path, feature_paths, features, cfg, device, amp, log
    )
    metrics = {
        "model": cfg.get("name"),
        "stage": 2,
        "stage2_enabled": False,
        "copied_from": str(init_checkpoint),
        "best_epoch": checkpoint.get("epoch"),
        "epochs_completed": 0,
        "balanced_holdout": bal,
        "holdout": full,
        "dev": dev,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "checkpoint.pt", lambda tmp: shutil.copyfile(init_checkpoint, tmp))
    _write_history(out_dir / "history.tsv", [])
    atomic_write_json(out_dir / "metrics.json", metrics, sort_keys=True)
    return metrics


# ---------------------------------------------------------------------------------------------
# Posteriors


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[DeepSER, dict]:
    """(model in eval mode on `device`, the checkpoint dict)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(checkpoint["model_cfg"], checkpoint["input_dims"])
    model.load_state_dict(checkpoint["model_state"])
    return model.to(device).eval(), checkpoint


def write_posteriors(
    checkpoint_path: str | os.PathLike,
    manifest: str | os.PathLike | pd.DataFrame,
    feature_paths: dict[str, list[str | os.PathLike]],
    out_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    log: Log | None = None,
) -> None:
    """Softmax posteriors and attributes of every manifest row with features, per subset.

    `manifest`: the manifest (a path, or a table such as the unlabelled partition's clips as
    `test` rows, ``medusa.partitions.unlabelled_manifest``); `feature_paths` maps each subset
    to write to the model's feature files of the audio partition that holds it.

    HDF5 layout: one group per subset with `ids` (utf-8, sorted), `probs` float32 [N, 8]
    (class order A S H U F D C N) and `attributes` float32 [N, 3] (act, val, dom).
    """
    log = log or logging.getLogger(__name__).info
    device = torch.device(device)
    out_path = Path(out_path)
    model, checkpoint = load_checkpoint(checkpoint_path, device)
    cfg = resolve_config(checkpoint["model_cfg"])
    features = list(checkpoint["features"])
    dims = _check_paths(feature_paths, [], features)
    if dims != checkpoint["input_dims"]:
        raise ValueError(
            f"{checkpoint_path}: trained on dims {checkpoint['input_dims']}, features have {dims}"
        )
    amp = bool(cfg["amp"]) and device.type == "cuda"
    if not isinstance(manifest, pd.DataFrame):
        manifest = read_manifest(manifest)
    manifest_path = manifest.attrs.get("path", "manifest")
    results = {}
    for name in sorted(feature_paths):
        subset = load_subset(manifest, manifest_path, name, feature_paths[name], features, log)
        ids = sorted(subset.ids)
        probs = np.zeros((0, len(CLASS_LETTERS)), dtype=np.float32)
        attrs = np.zeros((0, len(ATTRIBUTES)), dtype=np.float32)
        if ids:
            probs, attrs = predict_clips(model, ids, subset.feature_paths, cfg, device, amp)
        results[name] = (ids, probs, attrs)
        log(f"posteriors: {name}: {len(ids)} files")

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs["model"] = cfg.get("name") or out_path.stem
            f.attrs["classes"] = "".join(CLASS_LETTERS)
            f.attrs["attributes"] = ",".join(ATTRIBUTES)
            f.attrs["checkpoint"] = str(checkpoint_path)
            for name, (ids, probs, attrs) in results.items():
                group = f.create_group(name)
                group.create_dataset("ids", data=ids, dtype=h5py.string_dtype("utf-8"))
                group.create_dataset("probs", data=probs.astype(np.float32))
                group.create_dataset("attributes", data=attrs.astype(np.float32))

    atomic_write(out_path, write)
