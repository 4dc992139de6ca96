"""Snakemake script for rules `meta_select` and `meta_select_top` (stage 3's self-validation)."""

import json
import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.ensemble.meta_cv import select_meta  # noqa: E402

select_meta(
    list(snakemake.input.posteriors),
    snakemake.input.manifest,
    json.loads(snakemake.params.meta)["meta"],
    snakemake.output[0],
    top_k=int(snakemake.wildcards["k"]) if "k" in snakemake.wildcards.keys() else None,
)
