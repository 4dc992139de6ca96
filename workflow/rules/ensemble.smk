rule meta_select:
    """Stage 3's self-validation: speaker-grouped cross-validation on the meta clips chooses
    the head's prior strength (or "stay at the vote") for every seed."""
    input:
        manifest="results/data/manifest.tsv",
        posteriors=labelled_posteriors,
    output:
        "results/meta/select.json",
    log:
        "logs/meta/select.log",
    benchmark:
        "results/benchmarks/meta/select.tsv"
    conda:
        "../../envs/medusa.yaml"
    params:
        meta=meta_params,
    script:
        "../scripts/meta_select.py"


rule meta_select_top:
    """The self-validation of a top-k ensemble (its own models, its own choice)."""
    input:
        manifest="results/data/manifest.tsv",
        posteriors=labelled_posteriors,
    output:
        "results/meta/top{k}/select.json",
    log:
        "logs/meta/top{k}/select.log",
    benchmark:
        "results/benchmarks/meta/top{k}/select.tsv"
    conda:
        "../../envs/medusa.yaml"
    params:
        meta=meta_params,
    script:
        "../scripts/meta_select.py"


rule meta:
    """Stage 3: a meta-classifier over all models' posteriors, balanced sampling, one seed."""
    input:
        manifest="results/data/manifest.tsv",
        posteriors=labelled_posteriors,
        selection="results/meta/select.json",
    output:
        head="results/meta/seed{seed}/head.pt",
        metrics="results/meta/seed{seed}/metrics.json",
    log:
        "logs/meta/seed{seed}.log",
    benchmark:
        "results/benchmarks/meta/seed{seed}.tsv"
    conda:
        "../../envs/medusa.yaml"
    params:
        meta=meta_params,
    script:
        "../scripts/meta.py"


rule meta_top:
    """Stage 3 for a top-k ensemble (Table 3): the k models with the best selection score."""
    input:
        manifest="results/data/manifest.tsv",
        posteriors=labelled_posteriors,
        selection="results/meta/top{k}/select.json",
    output:
        head="results/meta/top{k}/seed{seed}/head.pt",
        metrics="results/meta/top{k}/seed{seed}/metrics.json",
    log:
        "logs/meta/top{k}/seed{seed}.log",
    benchmark:
        "results/benchmarks/meta/top{k}/seed{seed}.tsv"
    conda:
        "../../envs/medusa.yaml"
    params:
        meta=meta_params,
    script:
        "../scripts/meta.py"


rule model_soup_top:
    """Stage 4 for a top-k ensemble: its seeds averaged into one head."""
    input:
        manifest="results/data/manifest.tsv",
        posteriors=labelled_posteriors,
        heads=top_k_heads,
    output:
        head="results/soup/top{k}/head.pt",
        metrics="results/soup/top{k}/metrics.json",
    log:
        "logs/soup/top{k}.log",
    conda:
        "../../envs/medusa.yaml"
    params:
        soup=soup_params(),
    script:
        "../scripts/model_soup.py"


rule model_soup:
    """Stage 4: the meta-classifier seeds averaged into one model (uniform or greedy soup)."""
    input:
        manifest="results/data/manifest.tsv",
        posteriors=labelled_posteriors,
        heads=expand("results/meta/seed{seed}/head.pt", seed=META_SEEDS),
    output:
        head="results/soup/head.pt",
        metrics=report(
            "results/soup/metrics.json",
            caption="../report/soup_metrics.rst",
            category="Ensemble",
        ),
    log:
        "logs/soup.log",
    conda:
        "../../envs/medusa.yaml"
    params:
        soup=soup_params(),
    script:
        "../scripts/model_soup.py"


rule predict:
    """Challenge-format predictions of the soup for every unlabelled clip (Test3)."""
    input:
        index=f"results/audio/{UNLABELLED}.tsv",
        posteriors=unlabelled_posteriors,
        head="results/soup/head.pt",
    output:
        letters=report(
            "results/predictions/test.csv",
            caption="../report/predictions.rst",
            category="Predictions",
        ),
        posteriors="results/predictions/test_posteriors.csv",
    log:
        "logs/predict.log",
    conda:
        "../../envs/medusa.yaml"
    script:
        "../scripts/predict.py"


rule report:
    """Paper-shaped tables (Table 1, Table 3), per-class F1 and figures."""
    input:
        unpack(report_inputs),
    output:
        table1=report(
            "results/report/table1.tsv",
            caption="../report/table1.rst",
            category="Ensemble",
        ),
        table3=report(
            "results/report/table3.tsv",
            caption="../report/table3.rst",
            category="Ensemble",
        ),
        per_class=report(
            "results/report/per_class_f1.tsv",
            caption="../report/per_class.rst",
            category="Ensemble",
        ),
        confusion=report(
            "results/report/confusion.png",
            caption="../report/confusion.rst",
            category="Figures",
        ),
        models=report(
            "results/report/models.png",
            caption="../report/models.rst",
            category="Figures",
        ),
        comparisons=report(
            "results/report/comparisons.tsv",
            caption="../report/comparisons.rst",
            category="Ensemble",
        ),
        attributes=report(
            "results/report/attributes.tsv",
            caption="../report/attributes.rst",
            category="Attributes",
        ),
        fairness=report(
            "results/report/fairness.tsv",
            caption="../report/fairness.rst",
            category="Fairness",
        ),
        fairness_figure=report(
            "results/report/fairness.png",
            caption="../report/fairness.rst",
            category="Fairness",
        ),
        selection=report(
            "results/report/meta_selection.tsv",
            caption="../report/meta_selection.rst",
            category="Ensemble",
        ),
        headline=report(
            "results/report/headline.md",
            caption="../report/headline.rst",
            category="Ensemble",
        ),
    log:
        "logs/report.log",
    conda:
        "../../envs/medusa.yaml"
    params:
        evaluation=evaluation_params(),
        model_features=model_features_json(),
    script:
        "../scripts/report.py"


rule soup:
    """The final target: the soup, its evaluation report and the test predictions."""
    input:
        rules.model_soup.output,
        rules.report.output,
        rules.predict.output,
