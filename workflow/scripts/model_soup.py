"""Snakemake script for rule `model_soup` (stage 4)."""

import json
import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.ensemble.soup import make_soup  # noqa: E402

make_soup(
    [Path(head).parent for head in snakemake.input.heads],
    list(snakemake.input.posteriors),
    snakemake.input.manifest,
    json.loads(snakemake.params.soup),
    Path(snakemake.output.head).parent,
)
