"""Snakemake script for rule `prepare` (thin: read the snakemake object, call the library)."""

import json
import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.core.emotions import ClassSet  # noqa: E402
from medusa.corpus.prepare import prepare  # noqa: E402

# The data sub-config without data.root, the label files' digests and the class set.
params = json.loads(snakemake.params.data)
manifest = prepare(
    # From the config, not a param: moving the corpus must not rerun the job (the label
    # files' digests are its params; the manifest's paths are relative to the corpus).
    root=snakemake.config["data"]["root"],
    audio_indexes=list(snakemake.input.audio),
    manifest_path=snakemake.output.manifest,
    report_path=snakemake.output.report,
    data=params["data"],
    classes=ClassSet.from_config(params["classes"]),
)
logging.info("manifest: %d rows -> %s", len(manifest), snakemake.output.manifest)
