"""Stage 1 and stage 2 of MEDUSA for one DeepSER model (docs/method.md, 5).

`train_stage` reads top to bottom like the method: load the stage's data, build or load the
model, resume or start, the epoch loop (train one epoch, evaluate on the holdout, update the
early-stopping state, save the resume state), write the outputs (checkpoint.pt, metrics.json,
history.tsv). What differs between the two stages is one `StagePlan` (``medusa.training.plan``); the
data and batches come from ``medusa.training.data``, one epoch's steps from
``medusa.training.steps``, and ``medusa.training.posteriors`` runs the trained checkpoint over
every subset.

Determinism: all randomness of epoch e (stage-2 subset, batch order, dropout, MixUp) is drawn
from generators seeded with (seed, stage, e). A resumed run therefore needs no RNG snapshot:
model, optimiser, best-so-far and early-stopping counters are enough to continue exactly.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from medusa.core.atomic import atomic_torch_save, atomic_write_json
from medusa.core.integrity import load_torch
from medusa.core.manifest import read_manifest
from medusa.core.metrics import classification_metrics
from medusa.training.checkpoints import (
    Progress,
    checkpoint_classes,
    checkpoint_settings,
    fingerprint,
    resume_or_start,
    save_resume_state,
    stage_checkpoint,
)
from medusa.training.data import (
    STATISTICS_MAX_CLIPS,
    ClipDataset,
    Corpus,
    TrainingData,
    _check_paths,
    epoch_batches,
    feature_statistics,
    load_holdout,
    load_training_data,
    modality_frame_pooling,
)
from medusa.training.model import DeepSER, build_model
from medusa.training.plan import StagePlan, _write_history, stage_plan
from medusa.training.posteriors import predict_clips
from medusa.training.settings import ModelSettings, StageSettings
from medusa.training.steps import require_finite_weights, train_one_epoch

log = logging.getLogger(__name__)


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
