# MEDUSA speech emotion recognition on MSP-Podcast (see README.md and config/config.yaml).
import os

from snakemake.utils import min_version

min_version("9.0")


# The recipe; --configfile files (e.g. config/demo.yaml) are merged on top of it.
configfile: os.path.join(workflow.basedir, "config/config.yaml")


# Aggregation targets run no code: never submit them to a cluster.
localrules:
    all,
    soup,
    ablations,
    folds,
    cross_corpus,
    robustness,


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/asr.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/ensemble.smk"
include: "workflow/rules/ablations.smk"
include: "workflow/rules/bundle.smk"
include: "workflow/rules/folds.smk"
include: "workflow/rules/cross_corpus.smk"
include: "workflow/rules/robustness.smk"
include: "workflow/rules/evidence.smk"


rule all:
    default_target: True
    input:
        rules.soup.input,


# Last, once every rule is defined: the corpus is only read (medusa.corpus.guard).
refuse_writes_into_corpus()
