# Table R (target `robustness`, never part of `soup`): the dev clips perturbed per named
# condition (config `robustness`), their ASR, features and posteriors, and the ensemble on them.


wildcard_constraints:
    condition=robustness_condition_pattern(),


rule robustness_perturb:
    """One condition applied to every usable clip of an audio partition (seeded per clip),
    with their clip table in the audio-index format (paths relative to the folder)."""
    input:
        unpack(robustness_perturb_inputs),
    output:
        audio=directory("results/robustness/{condition}/audio/{partition}"),
        index="results/robustness/{condition}/audio/{partition}.tsv",
    log:
        "logs/robustness/{condition}/perturb/{partition}.log",
    benchmark:
        "results/benchmarks/robustness/{condition}/perturb/{partition}.tsv"
    conda:
        "../../envs/medusa.yaml"
    params:
        condition=robustness_perturb_params,
        audio=robustness_audio_params,
    script:
        "../scripts/robustness_perturb.py"


rule robustness_asr:
    """Whisper ASR of a condition's perturbed partition (as rule asr, one job)."""
    input:
        unpack(robustness_asr_inputs),
    output:
        "results/robustness/{condition}/asr/{partition}.jsonl",
    log:
        "logs/robustness/{condition}/asr/{partition}.log",
    benchmark:
        "results/benchmarks/robustness/{condition}/asr/{partition}.tsv"
    conda:
        "../../envs/medusa.yaml"
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    params:
        asr=asr_params(),
    script:
        "../scripts/robustness_asr.py"


rule robustness_features:
    """One feature set of a condition's perturbed partition (as rule features, one job)."""
    input:
        unpack(robustness_feature_inputs),
    output:
        "results/robustness/{condition}/features/{feature_set}/{partition}.h5",
    log:
        "logs/robustness/{condition}/features/{feature_set}/{partition}.log",
    benchmark:
        "results/benchmarks/robustness/{condition}/features/{feature_set}/{partition}.tsv"
    conda:
        "../../envs/medusa.yaml"
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    params:
        feature_set=feature_set_params,
    script:
        "../scripts/robustness_features.py"


rule robustness_posteriors:
    """A model's posteriors of the dev clips of a condition's perturbed audio."""
    input:
        unpack(robustness_posterior_inputs),
    output:
        run_path("robustness/{condition}/posteriors/{model}.h5"),
    log:
        log_path("robustness/{condition}/posteriors/{model}.log"),
    benchmark:
        run_path("benchmarks/robustness/{condition}/posteriors/{model}.tsv")
    conda:
        "../../envs/medusa.yaml"
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    params:
        subsets=["dev"],
    script:
        "../scripts/posteriors.py"


rule robustness_table:
    """Table R: macro-F1 and CCC per condition and clean, best model, soft vote and soup,
    with intervals and the paired change against clean audio."""
    input:
        unpack(robustness_table_inputs),
    output:
        table=report(
            run_path("report/robustness.tsv"),
            caption="../report/robustness.rst",
            category="Robustness",
        ),
        markdown=report(
            run_path("report/robustness.md"),
            caption="../report/robustness.rst",
            category="Robustness",
        ),
    log:
        log_path("robustness/table.log"),
    conda:
        "../../envs/medusa.yaml"
    params:
        conditions=robustness_table_params(),
        evaluation=evaluation_params(),
    script:
        "../scripts/robustness_table.py"


rule robustness:
    """Target: Table R (README, "Robustness")."""
    input:
        rules.robustness_table.output,
