rule features:
    """Layer embeddings of one backbone for an audio partition (or one shard of it), float16 HDF5."""
    input:
        unpack(feature_inputs),
    output:
        sharded_output("results/features/{feature_set}/{partition}", ".h5"),
    log:
        sharded_path("logs/features/{feature_set}/{partition}", ".log"),
    benchmark:
        sharded_path("results/benchmarks/features/{feature_set}/{partition}", ".tsv")
    conda:
        "../../envs/medusa.yaml"
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    params:
        feature_set=feature_set_params,
        n_shards=config["shards"],
        audio=audio_fingerprint,  # the partition's content (see rule asr)
    script:
        "../scripts/features.py"


if SHARDED:

    rule features_merge:
        """Join the shards of a (feature set, partition) into the final store."""
        input:
            feature_shards,
        output:
            "results/features/{feature_set}/{partition}.h5",
        log:
            "logs/features/{feature_set}/{partition}.merge.log",
        conda:
            "../../envs/medusa.yaml"
        script:
            "../scripts/features_merge.py"
