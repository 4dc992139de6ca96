"""Snakemake script for rule `fold_summary` (cross-validation over a table's folds)."""

import json
import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.corpus.folds import write_fold_summary  # noqa: E402

folds = json.loads(snakemake.params.folds)
# Each fold's Table 1, in fold order: its report folder is the table's folder.
report_dirs = {
    fold: Path(table).parent for fold, table in zip(folds, snakemake.input.table1, strict=True)
}
summary = write_fold_summary(report_dirs, snakemake.output.summary, snakemake.output.headline)
logging.info("%d folds, %d systems -> %s", len(folds), len(summary), snakemake.output.summary)
