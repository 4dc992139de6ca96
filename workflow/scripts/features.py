"""Snakemake script for rule `features` (one feature set, one shard of one audio partition)."""

import json
import logging
import os
import sys

# Jobs load local folders only (a hub backbone was fetched by fetch_models): never the network.
os.environ["HF_HUB_OFFLINE"] = "1"
sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

import torch  # noqa: E402

from medusa.core.devices import acquire_device  # noqa: E402
from medusa.features.extract import extract_feature_set  # noqa: E402

torch.set_num_threads(snakemake.threads)
with acquire_device() as device:
    extract_feature_set(
        snakemake.wildcards.feature_set,
        json.loads(snakemake.params.feature_set),
        snakemake.input.index,
        snakemake.output[0],
        asr_path=snakemake.input.get("transcripts"),
        shard=int(snakemake.wildcards.get("shard", 0)),
        n_shards=snakemake.params.n_shards,
        device=device,
        local_copy=snakemake.input.get("fetched"),
        # From the config, not a param: moving the corpus must not rerun the job.
        audio_root=snakemake.config["data"]["root"],
    )
