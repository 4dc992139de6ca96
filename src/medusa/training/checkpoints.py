"""What a training job keeps on disk between runs: its resume state, keyed by a fingerprint of
its inputs, and the checkpoint it writes (docs/method.md, 5.4).

A resumed run needs no RNG snapshot (every epoch's randomness is seeded by (seed, stage,
epoch)): model, optimiser, best-so-far and early-stopping counters are enough to continue exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medusa.core.atomic import atomic_torch_save
from medusa.core.emotions import CLASS_LETTERS
from medusa.core.integrity import CorruptFileError, load_torch
from medusa.training.data import Holdout
from medusa.training.model import DeepSER, build_model
from medusa.training.plan import StagePlan, _history_row
from medusa.training.settings import ModelSettings
from medusa.training.steps import require_finite_weights

log = logging.getLogger(__name__)


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
