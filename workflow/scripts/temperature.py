"""Snakemake script for rule `temperature` (the soup's temperature, fitted on its meta clips)."""

import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.evaluation.temperature import fit_soup_temperature  # noqa: E402

fit_soup_temperature(
    Path(snakemake.input.head).parent,
    list(snakemake.input.posteriors),
    snakemake.input.manifest,
    snakemake.output[0],
)
