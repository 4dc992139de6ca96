rule stage1:
    """DeepSER stage 1: full train subset, class-weighted soft-target loss, Manifold MixUp."""
    input:
        unpack(stage1_inputs),
    output:
        checkpoint=run_path("models/{model}/stage1/checkpoint.pt"),
        metrics=run_path("models/{model}/stage1/metrics.json"),
        history=run_path("models/{model}/stage1/history.tsv"),
    log:
        log_path("models/{model}/stage1.log"),
    benchmark:
        run_path("benchmarks/models/{model}/stage1.tsv")
    conda:
        "../../envs/medusa.yaml"
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    params:
        model=model_params,
        resume_dir=run_path("models/{model}/stage1.resume"),
    script:
        "../scripts/train_stage.py"


rule stage2:
    """DeepSER stage 2: from the stage-1 best checkpoint, a fresh balanced subset every epoch.
    Only for models whose stage2.enabled is true (the others' posteriors read stage 1).
    """
    input:
        unpack(stage2_inputs),
    output:
        checkpoint=run_path("models/{model}/stage2/checkpoint.pt"),
        metrics=report(
            run_path("models/{model}/stage2/metrics.json"),
            caption="../report/model_metrics.rst",
            category="Models",
            labels={"model": "{model}", "file": "stage-2 metrics"},
        ),
        history=run_path("models/{model}/stage2/history.tsv"),
    log:
        log_path("models/{model}/stage2.log"),
    benchmark:
        run_path("benchmarks/models/{model}/stage2.tsv")
    wildcard_constraints:
        model=stage2_model_pattern(),
    conda:
        "../../envs/medusa.yaml"
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    params:
        model=model_params,
        resume_dir=run_path("models/{model}/stage2.resume"),
    script:
        "../scripts/train_stage.py"


rule posteriors:
    """Class posteriors and attributes of the final model (stage 2, or stage 1 when stage 2 is
    disabled): every labelled subset, or the unlabelled partition's clips (kept apart so that
    new unlabelled audio reruns only them).
    """
    input:
        unpack(posterior_inputs),
    output:
        run_path("posteriors/{model}/{posterior_set}.h5"),
    log:
        log_path("posteriors/{model}/{posterior_set}.log"),
    benchmark:
        run_path("benchmarks/posteriors/{model}/{posterior_set}.tsv")
    conda:
        "../../envs/medusa.yaml"
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    params:
        subsets=posterior_subsets,
    script:
        "../scripts/posteriors.py"
