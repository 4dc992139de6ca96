"""Snakemake script for rule `predict` (challenge-format predictions for unlabelled clips)."""

import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.corpus.audio_index import unlabelled_manifest  # noqa: E402
from medusa.ensemble.soup import predict_test  # noqa: E402

table = predict_test(
    Path(snakemake.input.head).parent,
    list(snakemake.input.posteriors),
    unlabelled_manifest(snakemake.input.index),
    snakemake.output.letters,
    snakemake.output.posteriors,
)
logging.info("predicted %d test clips -> %s", len(table), snakemake.output.letters)
