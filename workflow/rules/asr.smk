rule asr:
    """Whisper ASR of an audio partition, or of one shard of it (greedy, batched by length)."""
    input:
        unpack(asr_inputs),
    output:
        sharded_output("results/asr/{partition}", ".jsonl"),
    log:
        sharded_path("logs/asr/{partition}", ".log"),
    benchmark:
        sharded_path("results/benchmarks/asr/{partition}", ".tsv")
    conda:
        "../../envs/medusa.yaml"
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    params:
        asr=asr_params(),
        n_shards=config["shards"],
        # The partition's content: replaced audio reruns the job even when an earlier
        # invocation already rebuilt an index that reads the same.
        audio=audio_fingerprint,
    script:
        "../scripts/asr.py"


if SHARDED:

    rule asr_merge:
        """Join the shards of a partition into one JSONL sorted by id."""
        input:
            asr_shards,
        output:
            "results/asr/{partition}.jsonl",
        log:
            "logs/asr/{partition}.merge.log",
        conda:
            "../../envs/medusa.yaml"
        script:
            "../scripts/asr_merge.py"
