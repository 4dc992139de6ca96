"""Snakemake script for rule `asr_merge`."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.asr.transcripts import merge_transcripts  # noqa: E402

merge_transcripts(list(snakemake.input), snakemake.output[0])
logging.info("merged %d shard(s) into %s", len(snakemake.input), snakemake.output[0])
