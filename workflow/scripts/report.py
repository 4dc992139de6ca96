"""Snakemake script for rule `report` (paper-shaped tables, intervals and figures)."""

import json
import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.ensemble.inputs import posterior_model_name  # noqa: E402
from medusa.evaluation.report import Ensemble, build_report  # noqa: E402

# Each top-k ensemble: its soup folder results/soup/top<k>, its seeds results/meta/top<k>/seed*.
top_ensembles = [
    Ensemble(
        f"top {Path(soup).parent.name.removeprefix('top')} models",
        [
            Path(m).parent
            for m in snakemake.input.top_meta
            if Path(m).parts[-3] == Path(soup).parent.name
        ],
        Path(soup).parent,
    )
    for soup in snakemake.input.top_soups
]
build_report(
    {posterior_model_name(path): path for path in snakemake.input.posteriors},
    [Path(metrics).parent for metrics in snakemake.input.meta],
    Path(snakemake.input.soup).parent,
    snakemake.input.manifest,
    json.loads(snakemake.params.evaluation),
    Path(snakemake.output.table1).parent,
    model_features=json.loads(snakemake.params.model_features),
    top_ensembles=top_ensembles,
    temperature=snakemake.input.temperature,
)
