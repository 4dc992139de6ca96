"""Snakemake script for rule `robustness_perturb` (one condition, one audio partition)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.evaluation.conditions import build_condition  # noqa: E402
from medusa.evaluation.robustness import perturb_partition, usable_clip_files  # noqa: E402

# From the config, not a param: moving the corpus must not rerun the job.
root = snakemake.config["data"]["root"]
babble = snakemake.input.get("babble")
condition = build_condition(
    snakemake.config["robustness"],
    snakemake.wildcards.condition,
    usable_clip_files(babble, root) if babble else [],
)
index = perturb_partition(
    snakemake.input.index, root, snakemake.output.audio, snakemake.output.index, condition
)
logging.info("%s: %d clips of %s perturbed", condition.name, len(index), snakemake.input.index)
