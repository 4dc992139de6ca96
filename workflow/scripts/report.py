"""Snakemake script for rule `report` (paper-shaped tables and figures)."""

import json
import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.ensemble import posterior_model_name  # noqa: E402
from medusa.report import build_report  # noqa: E402

build_report(
    {posterior_model_name(path): path for path in snakemake.input.posteriors},
    [Path(metrics).parent for metrics in snakemake.input.meta],
    Path(snakemake.input.soup).parent,
    snakemake.input.manifest,
    json.loads(snakemake.params.evaluation)["balanced_holdout_seed"],
    Path(snakemake.output.table1).parent,
    model_features=json.loads(snakemake.params.model_features),
)
