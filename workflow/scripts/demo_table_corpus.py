"""Snakemake script for rule `demo_table_corpus`."""

import json
import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.demo.table_corpus import generate_table_corpus  # noqa: E402

demo = json.loads(snakemake.params.demo)
out_dir = Path(snakemake.output.table).parent
summary = generate_table_corpus(
    out_dir,
    n_labelled=demo["n_labelled"],
    n_test=demo["n_test"],
    folds=demo["folds"],
    seed=demo["seed"],
)
logging.info("demo table corpus in %s: %s", out_dir, json.dumps(summary, default=str))
