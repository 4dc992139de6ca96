"""openai-whisper checkpoint -> Hugging Face `WhisperModel` folder, for Whisper encoder features.

The converted encoder is checked against openai-whisper's own before anything is written.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch

from medusa.demo.build_common import (
    SAMPLE_RATE,
    WHISPER_CHECKPOINT_NAME,
    atomic_model_dir,
    whisper_feature_extractor,
)
from medusa.demo.whisper_convert import build_whisper_tiny_en

# openai-whisper -> Hugging Face `WhisperModel` parameter names, applied in order (strict
# loading afterwards catches any name this misses).
_WHISPER_TO_HF = (
    (r"^(encoder|decoder)\.positional_embedding$", r"\1.embed_positions.weight"),
    (r"^decoder\.token_embedding\.", "decoder.embed_tokens."),
    (r"^encoder\.ln_post\.", "encoder.layer_norm."),
    (r"^decoder\.ln\.", "decoder.layer_norm."),
    (r"\.blocks\.(\d+)\.", r".layers.\1."),
    (r"\.cross_attn_ln\.", ".encoder_attn_layer_norm."),
    (r"\.cross_attn\.", ".encoder_attn."),
    (r"\.attn_ln\.", ".self_attn_layer_norm."),
    (r"\.attn\.", ".self_attn."),
    (r"\.mlp_ln\.", ".final_layer_norm."),
    (r"\.mlp\.0\.", ".fc1."),
    (r"\.mlp\.2\.", ".fc2."),
    (r"\.query\.", ".q_proj."),
    (r"\.key\.", ".k_proj."),
    (r"\.value\.", ".v_proj."),
    (r"\.out\.", ".out_proj."),
)


def _whisper_to_hf_name(name: str) -> str:
    for pattern, replacement in _WHISPER_TO_HF:
        name = re.sub(pattern, replacement, name)
    return name


def _hf_whisper_config(dims: dict[str, int]):
    """The HF `WhisperConfig` of an openai-whisper model with dimensions `dims`."""
    from transformers import WhisperConfig

    english_only = dims["n_vocab"] < 51865
    return WhisperConfig(
        vocab_size=dims["n_vocab"],
        num_mel_bins=dims["n_mels"],
        d_model=dims["n_audio_state"],
        encoder_layers=dims["n_audio_layer"],
        encoder_attention_heads=dims["n_audio_head"],
        encoder_ffn_dim=4 * dims["n_audio_state"],
        decoder_layers=dims["n_text_layer"],
        decoder_attention_heads=dims["n_text_head"],
        decoder_ffn_dim=4 * dims["n_text_state"],
        max_source_positions=dims["n_audio_ctx"],
        max_target_positions=dims["n_text_ctx"],
        # <|endoftext|> and <|startoftranscript|> ids of the English-only / multilingual vocab.
        pad_token_id=50256 if english_only else 50257,
        bos_token_id=50257 if english_only else 50258,
        eos_token_id=50256 if english_only else 50257,
        decoder_start_token_id=50257 if english_only else 50258,
    )


def _load_both(dims: dict[str, int], source: dict[str, torch.Tensor]):
    """(HF `WhisperModel`, openai-whisper `AudioEncoder`) holding the checkpoint's weights in
    float32, in eval mode."""
    import whisper
    from transformers import WhisperModel

    config = _hf_whisper_config(dims)
    # Build on the meta device and assign the mapped tensors: no time spent on random init.
    with torch.device("meta"):
        model = WhisperModel(config)
        reference = whisper.model.AudioEncoder(
            dims["n_mels"],
            dims["n_audio_ctx"],
            dims["n_audio_state"],
            dims["n_audio_head"],
            dims["n_audio_layer"],
        )
    state = {_whisper_to_hf_name(k): v.float().contiguous() for k, v in source.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    encoder_state = {
        k.removeprefix("encoder."): v.float() for k, v in source.items() if k.startswith("encoder.")
    }
    reference.load_state_dict(encoder_state, strict=True, assign=True)
    reference.eval()
    return model, reference


def _check_encoder(model, reference, dims: dict[str, int]) -> None:
    """Raise unless the HF encoder reproduces openai-whisper's on a test log-mel (1e-4)."""
    import whisper

    mel = whisper.log_mel_spectrogram(_test_signal(), n_mels=dims["n_mels"])
    mel = whisper.pad_or_trim(mel, 2 * dims["n_audio_ctx"])[None]  # conv2 halves the frames
    with torch.inference_mode():
        error = (reference(mel) - model.get_encoder()(mel).last_hidden_state).abs().max().item()
    if not error <= 1e-4:
        raise RuntimeError(f"HF Whisper encoder differs from openai-whisper's by {error:.2e}")


def whisper_checkpoint_to_hf(
    checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike
) -> Path:
    """Write an openai-whisper checkpoint as a HF `WhisperModel` folder (+ feature extractor).

    Encoder and decoder are both mapped exactly; weights are stored in float32 so that
    `AutoModel.from_pretrained` gives a CPU-ready model. Raises if the HF encoder does not
    reproduce openai-whisper's encoder (max abs difference above 1e-4) on a test log-mel.
    """
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    dims, source = checkpoint["dims"], checkpoint["model_state_dict"]
    if dims["n_text_state"] != dims["n_audio_state"]:
        raise ValueError(f"{checkpoint_path}: HF Whisper needs equal audio/text widths, got {dims}")
    model, reference = _load_both(dims, source)
    _check_encoder(model, reference, dims)
    out_dir = Path(out_dir)
    with atomic_model_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        whisper_feature_extractor(dims["n_mels"], dims["n_audio_ctx"]).save_pretrained(tmp)
    return out_dir


def _test_signal(seconds: float = 4.0) -> torch.Tensor:
    """A deterministic speech-like signal (harmonic glide plus noise) at 16 kHz."""
    t = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float32) / SAMPLE_RATE
    f0 = 120.0 + 60.0 * t / seconds
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / SAMPLE_RATE
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 8))
    noise = torch.randn(t.shape, generator=torch.Generator().manual_seed(0))
    return 0.1 * voiced + 0.01 * noise


def build_whisper_tiny_en_encoder(out_dir: str | os.PathLike, audio_ctx: int | None = None) -> Path:
    """Write the real Whisper tiny.en as a HF `WhisperModel` folder (+ `WhisperFeatureExtractor`).

    Both encoder and decoder carry the real weights; the encoder is checked against
    openai-whisper's encoder before anything is written. The folder is meant for encoder
    features (`AutoModel.from_pretrained(out_dir).get_encoder()`): it has no tokenizer or
    generation config, so use the openai-whisper checkpoint ("whisper-tiny-en-asr") for ASR.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as tmp:
        checkpoint = build_whisper_tiny_en(Path(tmp) / WHISPER_CHECKPOINT_NAME, audio_ctx)
        return whisper_checkpoint_to_hf(checkpoint, out_dir)
