# Cross-corpus evaluation: the trained bundle scored on each corpus listed under `cross_corpus`
# in the config (table layout, labels mapped into the bundle's classes), as `medusa evaluate`
# does by hand (src/medusa/cross_corpus.py).


rule cross_corpus_evaluation:
    """The bundle on one evaluation corpus: metrics with speaker intervals, confusion, CCC."""
    input:
        bundle=run_path("bundle"),
        table=cross_corpus_table,
    output:
        metrics=report(
            run_path("cross_corpus/{corpus}/metrics.tsv"),
            caption="../report/cross_corpus.rst",
            category="Cross-corpus",
            labels={"corpus": "{corpus}", "file": "metrics"},
        ),
        confusion=run_path("cross_corpus/{corpus}/confusion.tsv"),
        per_gender=run_path("cross_corpus/{corpus}/per_gender.tsv"),
        clips=run_path("cross_corpus/{corpus}/clips.csv"),
        excluded=run_path("cross_corpus/{corpus}/excluded.tsv"),
        unmapped=run_path("cross_corpus/{corpus}/unmapped.tsv"),
        summary=report(
            run_path("cross_corpus/{corpus}/summary.md"),
            caption="../report/cross_corpus.rst",
            category="Cross-corpus",
            labels={"corpus": "{corpus}", "file": "summary"},
        ),
    log:
        log_path("cross_corpus/{corpus}.log"),
    benchmark:
        run_path("benchmarks/cross_corpus/{corpus}.tsv")
    conda:
        "../../envs/medusa.yaml"
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    params:
        corpus=cross_corpus_params,
        evaluation=evaluation_params(),
        model_store=MODEL_STORE,
    script:
        "../scripts/cross_corpus.py"


rule cross_corpus:
    """Target: every evaluation corpus of the config scored with the bundle."""
    input:
        expand(run_path("cross_corpus/{corpus}/metrics.tsv"), corpus=CROSS_CORPORA),
