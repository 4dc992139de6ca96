"""Snakemake script for rule `robustness_asr` (one condition's perturbed audio partition).

Rule `asr`'s script reads clips below data.root; these lie below the condition's folder.
"""

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
        device=device,
        audio_root=snakemake.input.audio,
    )
