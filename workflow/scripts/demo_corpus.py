"""Snakemake script for rule `demo_corpus`."""

import json
import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.demo.corpus import generate_corpus  # noqa: E402

demo = json.loads(snakemake.params.demo)
out_dir = Path(snakemake.output.consensus).parents[1]
summary = generate_corpus(
    out_dir, n_labelled=demo["n_labelled"], n_test=demo["n_test"], seed=demo["seed"]
)
logging.info("demo corpus in %s: %s", out_dir, json.dumps(summary, default=str))
