"""Snakemake script for rule `asr` (one shard of one audio partition)."""

import json
import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

import torch  # noqa: E402

from medusa.asr.transcribe import run_asr  # noqa: E402
from medusa.core.devices import acquire_device  # noqa: E402

asr = json.loads(snakemake.params.asr)
torch.set_num_threads(snakemake.threads)
with acquire_device() as device:
    run_asr(
        asr["model"],
        snakemake.input.index,
        snakemake.output[0],
        batch_size=asr["batch_size"],
        language=asr["language"],
        no_speech_threshold=asr["no_speech_threshold"],
        revision=asr.get("revision"),
        checkpoint=snakemake.input.get("fetched"),
        shard=int(snakemake.wildcards.get("shard", 0)),
        n_shards=snakemake.params.n_shards,
        device=device,
        # From the config, not a param: moving the corpus must not rerun the job.
        audio_root=snakemake.config["data"]["root"],
    )
