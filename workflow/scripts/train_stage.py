"""Snakemake script for rules `stage1` and `stage2` (the rule name says which)."""

import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

import torch  # noqa: E402

from medusa.core.devices import acquire_device  # noqa: E402
from medusa.training.loop import train_stage  # noqa: E402
from medusa.training.settings import ModelSettings  # noqa: E402

SUBSETS = ("train", "holdout", "dev")
stage = {"stage1": 1, "stage2": 2}[snakemake.rule]
settings = ModelSettings.from_params(snakemake.params.model)
torch.set_num_threads(snakemake.threads)
with acquire_device() as device:
    train_stage(
        stage,
        settings,
        snakemake.input.manifest,
        {subset: list(snakemake.input[subset]) for subset in SUBSETS},
        out_dir=Path(snakemake.output.checkpoint).parent,
        resume_dir=snakemake.params.resume_dir,
        init_checkpoint=snakemake.input.get("init"),
        device=device,
    )
