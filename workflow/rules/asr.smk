rule asr:
    """Whisper ASR of one shard of a subset (greedy, English, batched by length)."""
    input:
        manifest="results/data/manifest.tsv",
        model=asr_model_input,
    output:
        temp("results/asr/{subset}/shard{shard}.jsonl"),
    log:
        "logs/asr/{subset}/shard{shard}.log",
    benchmark:
        "results/benchmarks/asr/{subset}/shard{shard}.tsv"
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


rule asr_merge:
    """Join the shards of a subset into one JSONL sorted by id."""
    input:
        asr_shards,
    output:
        "results/asr/{subset}.jsonl",
    log:
        "logs/asr/{subset}/merge.log",
    conda:
        "../../envs/medusa.yaml"
    script:
        "../scripts/asr_merge.py"
