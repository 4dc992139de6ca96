"""Snakemake script for rule `audio_index` (one audio partition)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.corpus.audio_index import write_audio_index  # noqa: E402

index = write_audio_index(
    # From the config, not a param: moving the corpus must not rerun the job (the index
    # holds paths relative to it).
    snakemake.config["data"]["root"],
    snakemake.wildcards.partition,
    snakemake.output.index,
    snakemake.output.report,
)
usable = int((index["problem"] == "").sum())
logging.info("partition %s: %d files, %d usable", snakemake.wildcards.partition, len(index), usable)
