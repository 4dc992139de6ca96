rule features:
    """Layer embeddings of one backbone for one shard of a subset, float16 HDF5."""
    input:
        unpack(feature_inputs),
    output:
        temp("results/features/{feature_set}/{subset}/shard{shard}.h5"),
    log:
        "logs/features/{feature_set}/{subset}/shard{shard}.log",
    benchmark:
        "results/benchmarks/features/{feature_set}/{subset}/shard{shard}.tsv"
    conda:
        "../../envs/medusa.yaml"
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    params:
        feature_set=feature_set_params,
        n_shards=config["shards"],
    script:
        "../scripts/features.py"


rule features_merge:
    """Join the shards of a (feature set, subset) into the final store."""
    input:
        feature_shards,
    output:
        "results/features/{feature_set}/{subset}.h5",
    log:
        "logs/features/{feature_set}/{subset}/merge.log",
    conda:
        "../../envs/medusa.yaml"
    script:
        "../scripts/features_merge.py"
