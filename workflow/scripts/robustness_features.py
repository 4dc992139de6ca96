"""Snakemake script for rule `robustness_features` (one feature set, one condition's audio).

Rule `features`' script reads clips below data.root; these lie below the condition's folder.
"""

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
        device=device,
        local_copy=snakemake.input.get("fetched"),
        audio_root=snakemake.input.audio,
    )
