"""Snakemake script for rule `demo_backbone`."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log stays open for the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from medusa.demo.backbones import build_backbone  # noqa: E402

build_backbone(snakemake.wildcards.backbone, snakemake.output[0])
logging.info("built %s -> %s", snakemake.wildcards.backbone, snakemake.output[0])
