"""What the Snakemake rules see (workflow/rules/common.smk): the artifact layout under results/
and logs/, the corpus state a parse reads, and each job's inputs and params, computed from the
config alone. It sits above every stage package and imports no model library, so a parse (and
each cluster job's parse) stays fast."""
