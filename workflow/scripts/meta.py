"""Snakemake script for rule `meta` (one seed of the stage-3 meta-classifier)."""

import json
import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.ensemble.meta_training import train_meta  # noqa: E402

meta = json.loads(snakemake.params.meta)["meta"]
selection = json.loads(Path(snakemake.input.selection).read_text(encoding="utf-8"))
train_meta(
    list(snakemake.input.posteriors),
    snakemake.input.manifest,
    meta,
    int(snakemake.wildcards.seed),
    Path(snakemake.output.head).parent,
    top_k=int(snakemake.wildcards["k"]) if "k" in snakemake.wildcards.keys() else None,
    selection=selection,
)
