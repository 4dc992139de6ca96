"""Snakemake script for rule `fetch_whisper` (runs where the network is)."""

import json
import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.core.fetch import WhisperCheckpoint, fetch_whisper_checkpoint  # noqa: E402

checkpoint = json.loads(snakemake.params.checkpoint)
name = snakemake.wildcards.name
fetch_whisper_checkpoint(WhisperCheckpoint(name, **checkpoint), snakemake.output[0])
logging.info(
    "fetched %s (sha256 %s) into %s", checkpoint["url"], checkpoint["sha256"], snakemake.output[0]
)
