# Remote models fetched once, where the network is, pinned to a revision (medusa.core.fetch).
# Local rules: under a cluster profile they run on the node Snakemake runs on (the login node);
# the ASR and feature jobs then load only these local copies, with the hub offline.


localrules:
    fetch_models,
    fetch_hub_model,
    fetch_whisper,


rule fetch_models:
    """Every hub backbone and the ASR checkpoint of the config, under model_store."""
    input:
        fetched_models(),


rule fetch_hub_model:
    """One hub backbone at one revision: configs, tokenizer, one weight format, checked."""
    output:
        directory(f"{MODEL_STORE}/hub/{{repo}}@{{revision}}"),
    log:
        "logs/fetch/hub/{repo}@{revision}.log",
    conda:
        "../../envs/medusa.yaml"
    params:
        model=fetch_hub_params,
    script:
        "../scripts/fetch_hub_model.py"


rule fetch_whisper:
    """The openai-whisper ASR checkpoint, checked against its sha256."""
    output:
        f"{MODEL_STORE}/whisper/{{name}}-{{sha256}}.pt",
    log:
        "logs/fetch/whisper/{name}-{sha256}.log",
    conda:
        "../../envs/medusa.yaml"
    params:
        checkpoint=fetch_whisper_params,
    script:
        "../scripts/fetch_whisper.py"
