"""Snakemake script for rule `evidence` (evidence beyond the clean dev set)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.evaluation.evidence import write_evidence  # noqa: E402

write_evidence(
    snakemake.input.robustness_table,
    snakemake.input.robustness_markdown,
    snakemake.input.calibration,
    snakemake.input.table1,
    list(snakemake.input.cross_corpus),
    snakemake.output[0],
)
logging.info("evidence -> %s", snakemake.output[0])
