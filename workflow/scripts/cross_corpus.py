"""Snakemake script for rule `cross_corpus_evaluation` (the bundle on another corpus)."""

import json
import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

import torch  # noqa: E402

from medusa.evaluation.figures import bootstrap_settings  # noqa: E402
from medusa.inference.cross_corpus import evaluate_table  # noqa: E402

torch.set_num_threads(snakemake.threads)
corpus = json.loads(snakemake.params.corpus)
metrics = evaluate_table(
    snakemake.input.bundle,
    snakemake.input.table,
    Path(snakemake.output.metrics).parent,
    mapping_pairs=corpus["map"],
    bootstrap=bootstrap_settings(json.loads(snakemake.params.evaluation)),
    # Local backbones recorded relative to the working directory, as the workflow loads them.
    backbone_root=".",
    model_store=snakemake.params.model_store,
    progress=False,
)
logging.info("%s: %s", snakemake.wildcards.corpus, metrics.to_dict("records"))
