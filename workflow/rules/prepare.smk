rule prepare:
    """Labels -> soft targets -> speaker-disjoint subsets -> manifest, plus a data report."""
    input:
        labels=corpus_label_files(),
    output:
        manifest="results/data/manifest.tsv",
        report=report(
            "results/data/report.md",
            caption="../report/data.rst",
            category="Data",
        ),
    log:
        "logs/prepare.log",
    benchmark:
        "results/benchmarks/prepare.tsv"
    conda:
        "../../envs/medusa.yaml"
    params:
        data=prepare_params(),
    script:
        "../scripts/prepare.py"
