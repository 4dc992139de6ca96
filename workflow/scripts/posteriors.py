"""Snakemake script for rule `posteriors`."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

import torch  # noqa: E402

from medusa.devices import acquire_device  # noqa: E402
from medusa.training import write_posteriors  # noqa: E402

SUBSETS = ("train", "holdout", "dev", "test")
log = logging.getLogger("posteriors")
torch.set_num_threads(snakemake.threads)
with acquire_device(log=log) as device:
    write_posteriors(
        snakemake.input.checkpoint,
        snakemake.input.manifest,
        {subset: list(snakemake.input[subset]) for subset in SUBSETS},
        snakemake.output[0],
        device=device,
        log=log.info,
    )
