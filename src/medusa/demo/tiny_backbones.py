"""Tiny random audio backbones (hidden 32, 2 layers, 2 heads, FFN 64), built from their config
classes with a fixed seed: an openai-whisper ASR checkpoint, a HF Whisper encoder, WavLM and
HuBERT. They keep the interfaces of the real models (50 frames/s audio, 80-mel Whisper input
padded to 30 s), so the demo runs the recipe's code paths, not its accuracy."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch

from medusa.demo.build_common import (
    CONV_KERNEL,
    CONV_STRIDE,
    TINY_FFN,
    TINY_HEADS,
    TINY_HIDDEN,
    TINY_LAYERS,
    atomic_model_dir,
    seeded,
    wav2vec2_feature_extractor,
    whisper_feature_extractor,
)
from medusa.demo.whisper_convert import save_whisper_checkpoint


def build_random_whisper_asr(out_path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random openai-whisper checkpoint (English-only vocabulary) for fast tests.

    It decodes junk or empty strings, never NaN: openai-whisper leaves the decoder positional
    embedding uninitialised (`torch.empty`), so it is drawn here like the other weights.
    Greedy decoding stops after at most 32 tokens per 30 s window.
    """
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=TINY_HIDDEN,
        n_audio_head=TINY_HEADS,
        n_audio_layer=TINY_LAYERS,
        n_vocab=51864,  # < 51865: openai-whisper picks its English-only tokenizer
        # A short text context caps junk decodes at n_text_ctx // 2 = 32 tokens (tiny.en: 224).
        n_text_ctx=64,
        n_text_state=TINY_HIDDEN,
        n_text_head=TINY_HEADS,
        n_text_layer=TINY_LAYERS,
    )
    with seeded(seed):
        model = Whisper(dims)
        torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
    return save_whisper_checkpoint(asdict(dims), model.state_dict(), out_path)


def build_tiny_whisper_encoder(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random HF `WhisperModel` (d_model 32, 80 mels, 1500 source positions) plus its
    `WhisperFeatureExtractor`; `AutoModel.from_pretrained(out_dir).get_encoder()` gives features.

    The decoder is kept (WhisperModel needs one) with a 64-token vocabulary to stay small.
    """
    from transformers import WhisperConfig, WhisperModel

    config = WhisperConfig(
        vocab_size=64,
        num_mel_bins=80,
        d_model=TINY_HIDDEN,
        encoder_layers=TINY_LAYERS,
        encoder_attention_heads=TINY_HEADS,
        encoder_ffn_dim=TINY_FFN,
        decoder_layers=TINY_LAYERS,
        decoder_attention_heads=TINY_HEADS,
        decoder_ffn_dim=TINY_FFN,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    with seeded(seed):
        model = WhisperModel(config).eval()
    out_dir = Path(out_dir)
    with atomic_model_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        whisper_feature_extractor(80).save_pretrained(tmp)
    return out_dir


def build_tiny_audio_backbone(kind: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random WavLM or HuBERT (`kind`: "wavlm" | "hubert") with its feature extractor.

    The conv feature encoder keeps the real strides and kernels (50 frames/s at 16 kHz) and, like
    WavLM-large and HuBERT-large, uses layer-norm convs and the stable (pre-norm) layer norm.
    Layerdrop and SpecAugment keep their library defaults: extraction must call `.eval()`.
    """
    if kind not in ("wavlm", "hubert"):
        raise ValueError(f"unknown audio backbone kind {kind!r}; expected 'wavlm' or 'hubert'")
    from transformers import HubertConfig, HubertModel, WavLMConfig, WavLMModel

    config_cls, model_cls = {
        "wavlm": (WavLMConfig, WavLMModel),
        "hubert": (HubertConfig, HubertModel),
    }[kind]
    config = config_cls(
        hidden_size=TINY_HIDDEN,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=TINY_HEADS,
        intermediate_size=TINY_FFN,
        conv_dim=(TINY_HIDDEN,) * len(CONV_STRIDE),
        conv_stride=CONV_STRIDE,
        conv_kernel=CONV_KERNEL,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )
    with seeded(seed):
        model = model_cls(config).eval()
    out_dir = Path(out_dir)
    with atomic_model_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        wav2vec2_feature_extractor().save_pretrained(tmp)
    return out_dir
