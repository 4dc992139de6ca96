"""Snakemake script for rule `robustness_table` (Table R)."""

import json
import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.evaluation.figures import bootstrap_settings  # noqa: E402
from medusa.evaluation.robustness import write_robustness  # noqa: E402

table = write_robustness(
    snakemake.input.manifest,
    list(snakemake.input.clean),
    snakemake.input.soup,
    list(snakemake.input.perturbed),
    dict(json.loads(snakemake.params.conditions)),
    bootstrap_settings(json.loads(snakemake.params.evaluation)),
    snakemake.output.table,
    snakemake.output.markdown,
)
logging.info("Table R: %d rows -> %s", len(table), snakemake.output.table)
