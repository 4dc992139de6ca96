"""Snakemake script for rule `bundle` (the trained MEDUSA as a folder for `medusa predict`)."""

import json
import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.inference.bundle import build_bundle, sources_from_snakemake  # noqa: E402

config = json.loads(snakemake.params.config)
sources = sources_from_snakemake(snakemake.input, config, config["models"])
out = build_bundle(sources, snakemake.output[0])
logging.info("bundle of %d models written to %s", len(config["models"]), out)
