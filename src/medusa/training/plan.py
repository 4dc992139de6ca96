"""What differs between stage 1 and stage 2 of training (docs/method.md, 5.1-5.2), and the
per-epoch history both write."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medusa.core.atomic import atomic_write_text
from medusa.training.settings import ModelSettings, StageSettings

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


def _write_history(path: Path, history: list[dict]) -> None:
    table = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    atomic_write_text(path, table.to_csv(sep="\t", index=False, na_rep="", float_format="%.6g"))


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
