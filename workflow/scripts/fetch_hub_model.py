"""Snakemake script for rule `fetch_hub_model` (runs where the network is)."""

import json
import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.core.fetch import HubModel, fetch_hub_model  # noqa: E402

model = HubModel(**json.loads(snakemake.params.model))
manifest = fetch_hub_model(model, snakemake.output[0])
logging.info(
    "fetched %s@%s (commit %s, %d files) into %s",
    model.repo_id,
    model.revision,
    manifest["commit"],
    len(manifest["files"]),
    snakemake.output[0],
)
