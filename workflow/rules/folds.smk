# Cross-validation over a fold-style table: `snakemake soup --config 'data={fold: <k>}'` runs the
# recipe for one held-out fold (results/fold<k>/); `snakemake folds` aggregates every fold.


rule fold_summary:
    """Every fold's held-out results, with their mean and spread over the folds."""
    input:
        unpack(fold_reports),
    output:
        summary=report(
            "results/folds/summary.tsv",
            caption="../report/folds.rst",
            category="Cross-validation",
        ),
        headline=report(
            "results/folds/summary.md",
            caption="../report/folds.rst",
            category="Cross-validation",
        ),
    log:
        "logs/folds/summary.log",
    conda:
        "../../envs/medusa.yaml"
    params:
        folds=fold_summary_params,
    script:
        "../scripts/fold_summary.py"


rule folds:
    """Target: the cross-validation summary over every fold of the table."""
    input:
        rules.fold_summary.output,
