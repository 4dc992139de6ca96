# Cross-corpus evaluation: the trained bundle scored on each corpus listed under `cross_corpus`
# in the config (table layout, labels mapped into the bundle's classes), as `medusa evaluate`
# does by hand (src/medusa/cross_corpus.py).


rule cross_corpus_evaluation:
    """The bundle on one evaluation corpus: metrics with speaker intervals, confusion, CCC."""
    input:
        bundle=RUN + "/bundle",
        table=cross_corpus_table,
    output:
        metrics=report(
            RUN + "/cross_corpus/{corpus}/metrics.tsv",
            caption="../report/cross_corpus.rst",
            category="Cross-corpus",
            labels={"corpus": "{corpus}"},
        ),
        confusion=RUN + "/cross_corpus/{corpus}/confusion.tsv",
        per_gender=RUN + "/cross_corpus/{corpus}/per_gender.tsv",
        clips=RUN + "/cross_corpus/{corpus}/clips.csv",
        excluded=RUN + "/cross_corpus/{corpus}/excluded.tsv",
        summary=RUN + "/cross_corpus/{corpus}/summary.md",
    log:
        LOGS + "/cross_corpus/{corpus}.log",
    benchmark:
        RUN + "/benchmarks/cross_corpus/{corpus}.tsv"
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
        expand(RUN + "/cross_corpus/{corpus}/metrics.tsv", corpus=CROSS_CORPORA),
