rule asr:
    """Whisper ASR of a subset, or of one shard of it (greedy, English, batched by length)."""
    input:
        manifest="results/data/manifest.tsv",
        model=asr_model_input,
    output:
        sharded_output("results/asr/{subset}", ".jsonl"),
    log:
        sharded_path("logs/asr/{subset}", ".log"),
    benchmark:
        sharded_path("results/benchmarks/asr/{subset}", ".tsv")
    conda:
        "../../envs/medusa.yaml"
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    params:
        asr=asr_params(),
        n_shards=config["shards"],
    script:
        "../scripts/asr.py"


if SHARDED:

    rule asr_merge:
        """Join the shards of a subset into one JSONL sorted by id."""
        input:
            asr_shards,
        output:
            "results/asr/{subset}.jsonl",
        log:
            "logs/asr/{subset}.merge.log",
        conda:
            "../../envs/medusa.yaml"
        script:
            "../scripts/asr_merge.py"
