"""Snakemake script for rule `table2` (the paper's Table 2: ablations)."""

import json
import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.core.atomic import atomic_write_text  # noqa: E402
from medusa.core.config import ablation_variants  # noqa: E402
from medusa.core.manifest import read_manifest  # noqa: E402
from medusa.ensemble.inputs import posterior_model_name  # noqa: E402
from medusa.evaluation.figures import ablation_table, bootstrap_settings  # noqa: E402

table = ablation_table(
    {posterior_model_name(path): path for path in snakemake.input.posteriors},
    read_manifest(snakemake.input.manifest),
    ablation_variants({"ablations": json.loads(snakemake.params.ablations)}),
    bootstrap_settings(json.loads(snakemake.params.evaluation)),
)
atomic_write_text(
    snakemake.output.table2, table.to_csv(sep="\t", index=False, float_format="%.4f", na_rep="")
)
logging.info("table 2: %d rows -> %s", len(table), snakemake.output.table2)
