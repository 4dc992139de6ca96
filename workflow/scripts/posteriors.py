"""Snakemake script for rule `posteriors` (labelled subsets, or the unlabelled partition)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

import torch  # noqa: E402

from medusa.core.devices import acquire_device  # noqa: E402
from medusa.corpus.audio_index import unlabelled_manifest  # noqa: E402
from medusa.training.posteriors import write_posteriors  # noqa: E402

torch.set_num_threads(snakemake.threads)
if "index" in snakemake.input.keys():
    clips = unlabelled_manifest(snakemake.input.index)
else:
    clips = snakemake.input.manifest
with acquire_device() as device:
    write_posteriors(
        snakemake.input.checkpoint,
        clips,
        {subset: list(snakemake.input[subset]) for subset in snakemake.params.subsets},
        snakemake.output[0],
        device=device,
    )
