rule meta_select:
    """Stage 3's self-validation: speaker-grouped cross-validation on the meta clips chooses
    the head's prior strength (or "stay at the vote") for every seed."""
    input:
        manifest=run_path("data/manifest.tsv"),
        posteriors=labelled_posteriors,
    output:
        run_path("meta/select.json"),
    log:
        log_path("meta/select.log"),
    benchmark:
        run_path("benchmarks/meta/select.tsv")
    conda:
        "../../envs/medusa.yaml"
    params:
        meta=meta_params,
    script:
        "../scripts/meta_select.py"


rule meta_select_top:
    """The self-validation of a top-k ensemble (its own models, its own choice)."""
    input:
        manifest=run_path("data/manifest.tsv"),
        posteriors=labelled_posteriors,
    output:
        run_path("meta/top{k}/select.json"),
    log:
        log_path("meta/top{k}/select.log"),
    benchmark:
        run_path("benchmarks/meta/top{k}/select.tsv")
    conda:
        "../../envs/medusa.yaml"
    params:
        meta=meta_params,
    script:
        "../scripts/meta_select.py"


rule meta:
    """Stage 3: a meta-classifier over all models' posteriors, balanced sampling, one seed."""
    input:
        manifest=run_path("data/manifest.tsv"),
        posteriors=labelled_posteriors,
        selection=run_path("meta/select.json"),
    output:
        head=run_path("meta/seed{seed}/head.pt"),
        metrics=run_path("meta/seed{seed}/metrics.json"),
    log:
        log_path("meta/seed{seed}.log"),
    benchmark:
        run_path("benchmarks/meta/seed{seed}.tsv")
    conda:
        "../../envs/medusa.yaml"
    params:
        meta=meta_params,
    script:
        "../scripts/meta.py"


rule meta_top:
    """Stage 3 for a top-k ensemble (Table 3): the k models with the best selection score."""
    input:
        manifest=run_path("data/manifest.tsv"),
        posteriors=labelled_posteriors,
        selection=run_path("meta/top{k}/select.json"),
    output:
        head=run_path("meta/top{k}/seed{seed}/head.pt"),
        metrics=run_path("meta/top{k}/seed{seed}/metrics.json"),
    log:
        log_path("meta/top{k}/seed{seed}.log"),
    benchmark:
        run_path("benchmarks/meta/top{k}/seed{seed}.tsv")
    conda:
        "../../envs/medusa.yaml"
    params:
        meta=meta_params,
    script:
        "../scripts/meta.py"


rule model_soup_top:
    """Stage 4 for a top-k ensemble: its seeds averaged into one head."""
    input:
        manifest=run_path("data/manifest.tsv"),
        posteriors=labelled_posteriors,
        heads=top_k_heads,
    output:
        head=run_path("soup/top{k}/head.pt"),
        metrics=run_path("soup/top{k}/metrics.json"),
    log:
        log_path("soup/top{k}.log"),
    conda:
        "../../envs/medusa.yaml"
    params:
        soup=soup_params(),
    script:
        "../scripts/model_soup.py"


rule model_soup:
    """Stage 4: the meta-classifier seeds averaged into one model (uniform or greedy soup)."""
    input:
        manifest=run_path("data/manifest.tsv"),
        posteriors=labelled_posteriors,
        heads=expand(run_path("meta/seed{seed}/head.pt"), seed=META_SEEDS),
    output:
        head=run_path("soup/head.pt"),
        metrics=report(
            run_path("soup/metrics.json"),
            caption="../report/soup_metrics.rst",
            category="Ensemble",
        ),
    log:
        log_path("soup.log"),
    conda:
        "../../envs/medusa.yaml"
    params:
        soup=soup_params(),
    script:
        "../scripts/model_soup.py"


rule temperature:
    """Temperature scaling of the soup: one T fitted on the clips the meta-classifier trained
    on (meta.train_on, never dev); the report and the bundle apply it."""
    input:
        manifest=run_path("data/manifest.tsv"),
        posteriors=labelled_posteriors,
        head=run_path("soup/head.pt"),
    output:
        run_path("soup/temperature.json"),
    log:
        log_path("soup/temperature.log"),
    conda:
        "../../envs/medusa.yaml"
    script:
        "../scripts/temperature.py"


rule predict:
    """Challenge-format predictions of the soup for every unlabelled clip (Test3)."""
    input:
        index=f"results/audio/{UNLABELLED}.tsv",
        posteriors=unlabelled_posteriors,
        head=run_path("soup/head.pt"),
    output:
        letters=report(
            run_path("predictions/test.csv"),
            caption="../report/predictions.rst",
            category="Predictions",
        ),
        posteriors=run_path("predictions/test_posteriors.csv"),
    log:
        log_path("predict.log"),
    conda:
        "../../envs/medusa.yaml"
    script:
        "../scripts/predict.py"


rule report:
    """Paper-shaped tables (Table 1, Table 3, Table C: calibration), per-class F1 and figures."""
    input:
        unpack(report_inputs),
    output:
        table1=report(
            run_path("report/table1.tsv"),
            caption="../report/table1.rst",
            category="Ensemble",
        ),
        table3=report(
            run_path("report/table3.tsv"),
            caption="../report/table3.rst",
            category="Ensemble",
        ),
        per_class=report(
            run_path("report/per_class_f1.tsv"),
            caption="../report/per_class.rst",
            category="Ensemble",
        ),
        confusion=report(
            run_path("report/confusion.png"),
            caption="../report/confusion.rst",
            category="Figures",
        ),
        models=report(
            run_path("report/models.png"),
            caption="../report/models.rst",
            category="Figures",
        ),
        comparisons=report(
            run_path("report/comparisons.tsv"),
            caption="../report/comparisons.rst",
            category="Ensemble",
        ),
        attributes=report(
            run_path("report/attributes.tsv"),
            caption="../report/attributes.rst",
            category="Attributes",
        ),
        fairness=report(
            run_path("report/fairness.tsv"),
            caption="../report/fairness.rst",
            category="Fairness",
        ),
        fairness_figure=report(
            run_path("report/fairness.png"),
            caption="../report/fairness.rst",
            category="Fairness",
        ),
        selection=report(
            run_path("report/meta_selection.tsv"),
            caption="../report/meta_selection.rst",
            category="Ensemble",
        ),
        calibration=report(
            run_path("report/calibration.tsv"),
            caption="../report/calibration.rst",
            category="Calibration",
        ),
        reliability=report(
            run_path("report/calibration.png"),
            caption="../report/reliability.rst",
            category="Calibration",
        ),
        headline=report(
            run_path("report/headline.md"),
            caption="../report/headline.rst",
            category="Ensemble",
        ),
    log:
        log_path("report.log"),
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
