"""Snakemake script for rule `audio_index` of the table layout (one audio partition)."""

import json
import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.corpus.audio_index import write_audio_index  # noqa: E402

# The corpus layout and, for a table, its path relative to data.root.
corpus = json.loads(snakemake.params.corpus)
index = write_audio_index(
    # From the config, not a param: moving the corpus must not rerun the job (the index
    # holds paths relative to it).
    snakemake.config["data"]["root"],
    snakemake.wildcards.partition,
    snakemake.output.index,
    snakemake.output.report,
    layout=corpus["layout"],
    table=corpus["table"],
)
usable = int((index["problem"] == "").sum())
logging.info("partition %s: %d files, %d usable", snakemake.wildcards.partition, len(index), usable)
