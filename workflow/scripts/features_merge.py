"""Snakemake script for rule `features_merge`."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.core.store import merge_feature_files  # noqa: E402

merge_feature_files(list(snakemake.input), snakemake.output[0])
logging.info("merged %d shard(s) into %s", len(snakemake.input), snakemake.output[0])
