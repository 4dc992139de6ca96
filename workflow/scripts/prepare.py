"""Snakemake script for rule `prepare` (thin: read the snakemake object, call the library)."""

import json
import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.data import prepare  # noqa: E402

data = json.loads(snakemake.params.data)["data"]
manifest = prepare(
    # From the config, not a param: moving the corpus must not rerun the job (the label
    # files' digests are its params; the manifest's paths are relative to the corpus).
    root=snakemake.config["data"]["root"],
    audio_indexes=list(snakemake.input.audio),
    manifest_path=snakemake.output.manifest,
    report_path=snakemake.output.report,
    holdout_fraction=data["holdout_fraction"],
    split_seed=data["split_seed"],
    min_duration_s=data["min_duration_s"],
    meta_fraction=data["meta_fraction"],
)
logging.info("manifest: %d rows -> %s", len(manifest), snakemake.output.manifest)
