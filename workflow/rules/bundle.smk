# The trained MEDUSA as a portable folder for `medusa predict` (src/medusa/bundle.py).
#
# Uses common.smk's MODELS, final_checkpoint (the checkpoint a model's posteriors come from:
# stage 2, or stage 1 when its stage 2 is disabled), bundle_feature_files, local_backbone_input,
# model_job_params.


rule bundle:
    """The trained models, the soup and its temperature, the backbone and ASR definitions,
    metrics and a model card in one checksummed folder: what `medusa predict` reads. One feature file per feature
    set is an input for its attributes (backbone revision, weights checksum, dim)."""
    input:
        checkpoints=[final_checkpoint(model) for model in MODELS],
        head=run_path("soup/head.pt"),
        soup_metrics=run_path("soup/metrics.json"),
        table1=run_path("report/table1.tsv"),
        table3=run_path("report/table3.tsv"),
        calibration=run_path("report/calibration.tsv"),
        temperature=run_path("soup/temperature.json"),
        data_report=run_path("data/report.md"),
        features=bundle_feature_files,
        asr_model=local_backbone_input(config["asr"]["model"]),
    output:
        directory(run_path("bundle")),
    log:
        log_path("bundle.log"),
    localrule: True
    conda:
        "../../envs/medusa.yaml"
    params:
        # The configuration the bundle records (model order, resolved model settings, ASR,
        # feature sets, ensemble, data); a change rebuilds the bundle.
        config=canonical_json(
            {
                "models": MODELS,
                "model_settings": {m: model_job_params(config, m) for m in MODELS},
                "asr": config["asr"],
                "feature_sets": {
                    fs: config["feature_sets"][fs] for fs in BUNDLE_FEATURE_SETS
                },
                "meta": config["meta"],
                "soup": config["soup"],
                "evaluation": config["evaluation"],
                "data": config["data"],
                "classes": config["classes"],
                "demo": "demo" in config,
                "model_store": MODEL_STORE,
            }
        ),
    script:
        "../scripts/bundle.py"
