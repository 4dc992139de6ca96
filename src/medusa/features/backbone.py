"""A feature backbone (docs/method.md, section 3): per-frame layer embeddings of one model.

A feature set (``feature_sets`` in config/config.yaml) is a dict: ``backbone`` (Hugging Face id
or local folder), ``kind`` (``audio`` | ``whisper`` | ``text``), ``layer`` (``last`` |
``sum_last4`` | an int index into the hidden states, 0 = embeddings), optional ``batch_size``
(default 8) and ``revision``.

Kinds:

- ``audio`` (WavLM, HuBERT, wav2vec2): raw 16 kHz audio through the model's feature extractor
  (per-clip normalisation, attention mask); each clip's frames are trimmed to the number its
  unpadded length gives (``_get_feat_extract_output_lengths``), about 50 frames/s. Models whose
  convolutions use group norm over time cannot mask padding: they are batched only with clips
  of identical length.
- ``whisper``: log-mels padded to 30 s (the encoder accepts nothing else), encoder output
  trimmed to the clip's real length, ``ceil(samples / 320)`` frames (50 frames/s); clips over
  30 s go through in 30 s windows whose outputs are concatenated.
- ``text`` (RoBERTa, ModernBERT, BERT): the ASR transcript, tokenised with the model's special
  tokens, truncated at the model's maximum length; an empty transcript is just the special
  tokens.

Layer views. transformers 5 reports ``hidden_states[-1]`` *before* the final LayerNorm for
wav2vec2-family models with ``do_stable_layer_norm`` (WavLM-large, HuBERT-large) but after it
for most others. We make it uniform: the list of hidden states used here is the model's
``hidden_states`` with its final entry replaced by ``last_hidden_state`` (the model's output,
after any final norm; the transformers 4 behaviour the reference release was built on). So
``last`` is ``last_hidden_state``, ``sum_last4`` sums the outputs of the last four layers
with the final one normalised, and index ``-1`` equals ``last``.

Batches are formed from clips sorted by length (padding and compute stay small), run in eval
mode under ``torch.inference_mode``, with bf16 autocast on CUDA (fp16 where bf16 is not
supported) and float32 on CPU.

API: ``load_backbone(feature_set_cfg, device) -> Backbone`` (``.encode_batch(inputs)``: one
forward pass; ``.encode(inputs, batch_size)``: sorted and batched; ``.dim``, ``.attrs``) and
``extract_feature_set(name, cfg, index_path, out_path, asr_path=None, shard=0,
n_shards=1, device="cpu")``.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoTokenizer

from medusa.core.audio import SAMPLE_RATE
from medusa.core.devices import amp_dtype, autocast
from medusa.core.fetch import verified_hub_copy

KINDS = ("audio", "whisper", "text")
FRAME_RATE = {"audio": 50.0, "whisper": 50.0, "text": 0.0}  # text: tokens, no time axis
WHISPER_HOP = 320  # samples per encoder frame: 160-sample mel hop x conv stride 2
MIXED_MASK_TYPES_WARNING = "Support for mismatched key_padding_mask and attn_mask"  # see _forward
# Parameters that a checkpoint may lack without harm: used only for training-time masking.
UNUSED_AT_INFERENCE = ("masked_spec_embed",)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")


def layer_view(hidden_states: Sequence[torch.Tensor], layer: str | int) -> torch.Tensor:
    """The layer view of `hidden_states` (embeddings first, final entry = last_hidden_state)."""
    n = len(hidden_states)
    if layer == "last":
        return hidden_states[-1].float()
    if layer == "sum_last4":
        if n - 1 < 4:
            raise ValueError(f"sum_last4 needs at least 4 layers; the backbone has {n - 1}")
        return torch.stack([h.float() for h in hidden_states[-4:]]).sum(0)
    if not -n <= layer < n:
        raise ValueError(f"layer {layer} out of range: the backbone has {n} hidden states")
    return hidden_states[layer].float()


def weights_sha256(folder: str | os.PathLike) -> str:
    """sha256 over the names and bytes of the weight files in a local model folder."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(folder).iterdir() if p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise ValueError(f"{folder}: no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            while block := f.read(2**24):
                digest.update(block)
    return digest.hexdigest()


def _load_weights(cfg: FeatureSetConfig, config, source: str, revision: str | None):
    """The backbone's float32 weights (only the encoder of a Whisper checkpoint); a checkpoint
    that lacks or mismatches weights is refused rather than initialised at random."""
    kwargs = {"revision": revision, "dtype": torch.float32, "output_loading_info": True}
    if config.model_type == "wavlm":
        kwargs["attn_implementation"] = "eager"  # the only one WavLM implements
    if cfg.kind == "whisper" and config.model_type != "whisper":
        raise ValueError(f"{source}: kind whisper needs a Whisper model, got {config.model_type}")
    model, info = AutoModel.from_pretrained(source, **kwargs)
    missing = [k for k in info["missing_keys"] if not k.endswith(UNUSED_AT_INFERENCE)]
    if cfg.kind == "whisper":
        model = model.get_encoder()  # a full checkpoint; we only run the encoder
        missing = [k for k in missing if not k.startswith("decoder.")]
    if missing or info.get("mismatched_keys"):
        raise ValueError(
            f"{source}: checkpoint lacks or mismatches weights {missing[:10]} "
            f"{list(info.get('mismatched_keys') or [])[:10]}; refusing random weights"
        )
    return model


def _check_layer(cfg: FeatureSetConfig, config) -> None:
    """The layer view exists in this backbone."""
    n_layers = config.encoder_layers if cfg.kind == "whisper" else config.num_hidden_layers
    if cfg.layer == "sum_last4" and n_layers < 4:
        raise ValueError(
            f"{cfg.backbone}: sum_last4 needs at least 4 layers, the model has {n_layers}"
        )
    if isinstance(cfg.layer, int) and not -(n_layers + 1) <= cfg.layer <= n_layers:
        raise ValueError(f"{cfg.backbone}: layer {cfg.layer} out of range (0..{n_layers})")


class Backbone:
    """A loaded backbone: turns clips (16 kHz arrays) or transcripts into frame sequences.

    `local_copy`: the folder ``medusa.core.fetch`` fetched a hub backbone into; it is checked
    against its manifest and loaded instead of the hub id (the workflow's jobs never download).
    """

    def __init__(
        self,
        cfg: FeatureSetConfig,
        device: torch.device | str = "cpu",
        local_copy: str | os.PathLike | None = None,
    ):
        self.cfg = cfg
        self.device = torch.device(device)
        self.source, self.revision, self.commit = cfg.backbone, cfg.revision, None
        if local_copy is not None:
            self.commit = _fetched_commit(cfg, local_copy)
            self.source, self.revision = str(local_copy), None
        config = AutoConfig.from_pretrained(self.source, revision=self.revision)
        model = _load_weights(cfg, config, self.source, self.revision)
        _check_layer(cfg, config)
        self.model = model.to(self.device).eval()
        self.model_type = config.model_type
        self.dim = int(config.d_model if cfg.kind == "whisper" else config.hidden_size)
        self._set_up_inputs(config)
        # Reduced precision on CUDA (devices.amp_dtype); None, float32, on the CPU.
        self.amp_dtype = amp_dtype(self.device)
        self.attrs = self._describe(config)

    def _set_up_inputs(self, config) -> None:
        """What turns a clip or transcript into model inputs, and the limits of batching."""
        source, revision = self.source, self.revision
        if self.cfg.kind == "text":
            self.tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
            self.max_length = self._text_max_length(config)
        else:
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(source, revision=revision)
        if self.cfg.kind == "audio":
            if not hasattr(self.model, "_get_feat_extract_output_lengths"):
                raise ValueError(f"{source}: kind audio needs a wav2vec2-family model")
            # Group norm over time lets padding leak into every frame: no mixed-length batches.
            self.pads_safely = getattr(config, "feat_extract_norm", "layer") != "group"
            self.min_samples = self._receptive_field(config)
        else:
            self.pads_safely = True

    def _describe(self, config) -> dict:
        """The HDF5 attributes that say where the features come from."""
        local = Path(self.source).is_dir()
        hub_commit = "" if local else getattr(config, "_commit_hash", None) or ""
        return {
            "backbone": self.cfg.backbone,
            "revision": self.commit or self.revision or hub_commit,
            "weights_sha256": weights_sha256(self.source) if local else "",
            "kind": self.cfg.kind,
            "layer": str(self.cfg.layer),
            "layer_convention": "hidden_states[-1] is last_hidden_state (after the final norm)",
            "model_type": config.model_type,
            "dim": self.dim,
            "frame_rate": FRAME_RATE[self.cfg.kind],
        }

    def _text_max_length(self, config) -> int:
        limits = []
        if self.tokenizer.model_max_length < 10**6:  # unset: a huge sentinel
            limits.append(int(self.tokenizer.model_max_length))
        if getattr(config, "max_position_embeddings", None):
            # RoBERTa-style positions start after the padding index.
            padding_idx = getattr(getattr(self.model, "embeddings", None), "padding_idx", None)
            offset = padding_idx + 1 if isinstance(padding_idx, int) else 0
            limits.append(int(config.max_position_embeddings) - offset)
        if not limits:
            raise ValueError(f"{self.cfg.backbone}: cannot tell the model's maximum length")
        return min(limits)

    @staticmethod
    def _receptive_field(config) -> int:
        """Fewest samples that give one frame (400 for the standard conv stack)."""
        n = 1
        for kernel, stride in zip(
            reversed(config.conv_kernel), reversed(config.conv_stride), strict=True
        ):
            n = (n - 1) * stride + kernel
        return n

    def length(self, item) -> int:
        """The sort key of an input: samples or characters."""
        return len(item)

    def _forward(self, **inputs) -> list[torch.Tensor]:
        want_all = self.cfg.layer != "last"  # "last" needs no other layer: spare the memory
        with (
            autocast(self.device, enabled=self.amp_dtype is not None, dtype=self.amp_dtype),
            warnings.catch_warnings(),
        ):
            # transformers' WavLM hands torch its own boolean padding mask next to its float
            # position bias; torch converts the mask (same outputs) but warns that mixing the
            # types is deprecated. No argument of ours sets those types: silence just that.
            warnings.filterwarnings(
                "ignore", MIXED_MASK_TYPES_WARNING, UserWarning, r"torch\.nn\.functional"
            )
            out = self.model(**inputs, output_hidden_states=want_all)
        if not want_all:
            return [out.last_hidden_state]
        states = list(out.hidden_states)
        states[-1] = out.last_hidden_state  # the uniform convention (module docstring)
        return states

    @torch.inference_mode()
    def encode_batch(self, inputs: Sequence) -> list[np.ndarray]:
        """One forward pass over `inputs`; one float32 array ``[T_i, dim]`` per input."""
        if not inputs:
            return []
        encode = {"audio": self._audio, "whisper": self._whisper, "text": self._text}
        return encode[self.cfg.kind](list(inputs))

    def _audio(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        if not self.pads_safely and len({len(w) for w in waves}) > 1:
            return [self._audio([w])[0] for w in waves]
        # Clips shorter than one receptive field are zero-padded to give one frame.
        waves = [
            np.pad(w, (0, self.min_samples - len(w))) if len(w) < self.min_samples else w
            for w in waves
        ]
        batch = self.feature_extractor(
            waves,
            sampling_rate=SAMPLE_RATE,
            padding=True,
            return_attention_mask=self.pads_safely,
            return_tensors="pt",
        )
        inputs = {"input_values": batch["input_values"].to(self.device)}
        if self.pads_safely:
            inputs["attention_mask"] = batch["attention_mask"].to(self.device)
        view = layer_view(self._forward(**inputs), self.cfg.layer)
        frames = self.model._get_feat_extract_output_lengths(torch.tensor([len(w) for w in waves]))
        return [view[i, : int(n)].cpu().numpy() for i, n in enumerate(frames)]

    def _whisper(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        # The encoder's window: 30 s for released models, shorter for a reduced audio context.
        window = self.feature_extractor.n_samples
        windows, owner = [], []
        for i, wave in enumerate(waves):
            for start in range(0, max(len(wave), 1), window):
                windows.append(wave[start : start + window])
                owner.append(i)
        # Default padding: every window to the encoder's length (3000 mel frames for 30 s).
        mel = self.feature_extractor(
            windows, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features.to(self.device)
        view = layer_view(self._forward(input_features=mel), self.cfg.layer)
        parts: list[list[np.ndarray]] = [[] for _ in waves]
        for w, (window, i) in enumerate(zip(windows, owner, strict=True)):
            n = min(view.shape[1], max(1, math.ceil(len(window) / WHISPER_HOP)))
            parts[i].append(view[w, :n].cpu().numpy())
        return [np.concatenate(p) for p in parts]

    def _text(self, texts: list[str]) -> list[np.ndarray]:
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        for i, seq in enumerate(ids):
            if not seq:  # a tokenizer without special tokens on an empty transcript
                ids[i] = [self._fallback_token()]
        batch = self.tokenizer.pad(
            {"input_ids": ids}, padding=True, return_attention_mask=True, return_tensors="pt"
        )
        view = layer_view(
            self._forward(
                input_ids=batch["input_ids"].to(self.device),
                attention_mask=batch["attention_mask"].to(self.device),
            ),
            self.cfg.layer,
        )
        return [view[i, : len(seq)].cpu().numpy() for i, seq in enumerate(ids)]

    def _fallback_token(self) -> int:
        tok = self.tokenizer
        for token_id in (tok.cls_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id):
            if token_id is not None:
                return token_id
        raise ValueError(f"{self.cfg.backbone}: empty transcript and no special token to stand in")

    def encode(
        self,
        inputs: Sequence,
        batch_size: int | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[np.ndarray]:
        """Encode many inputs in batches of similar length; results in input order.

        `on_batch(n)` is called after each batch of n inputs (progress bars).
        """
        batch_size = batch_size or self.cfg.batch_size
        order = sorted(range(len(inputs)), key=lambda i: -self.length(inputs[i]))
        batches, current = [], []
        for i in order:
            same_length = (
                self.pads_safely
                or not current
                or (self.length(inputs[i]) == self.length(inputs[current[0]]))
            )
            if len(current) == batch_size or not same_length:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        out: list[np.ndarray | None] = [None] * len(inputs)
        for batch in batches:
            for i, frames in zip(batch, self.encode_batch([inputs[i] for i in batch]), strict=True):
                out[i] = frames
            if on_batch:
                on_batch(len(batch))
        return out


def _fetched_commit(cfg: FeatureSetConfig, local_copy: str | os.PathLike) -> str:
    """The commit a fetched folder holds, after checking its files and that it is this model."""
    manifest = verified_hub_copy(local_copy)
    if manifest["repo_id"] != cfg.backbone:
        raise ValueError(f"{local_copy}: holds {manifest['repo_id']}, not {cfg.backbone}")
    if cfg.revision not in (None, manifest["revision"], manifest["commit"]):
        raise ValueError(
            f"{local_copy}: holds {cfg.backbone}@{manifest['revision']}, not @{cfg.revision}"
        )
    return manifest["commit"]


def load_backbone(
    feature_set_cfg: dict,
    device: torch.device | str = "cpu",
    local_copy: str | os.PathLike | None = None,
) -> Backbone:
    """Load the backbone a feature-set config names (or its fetched `local_copy`), in eval mode
    on `device`."""
    return Backbone(FeatureSetConfig.from_dict(feature_set_cfg), device, local_copy)


@dataclass(frozen=True)
class FeatureSetConfig:
    backbone: str
    kind: str
    layer: str | int
    batch_size: int = 8
    revision: str | None = None

    @classmethod
    def from_dict(cls, cfg: dict, name: str = "feature set") -> FeatureSetConfig:
        """Validate a config dict (other keys are ignored); errors name the feature set."""
        for key in ("backbone", "kind", "layer"):
            if key not in cfg:
                raise ValueError(f"feature set {name!r}: missing key {key!r}")
        if cfg["kind"] not in KINDS:
            raise ValueError(f"feature set {name!r}: kind {cfg['kind']!r} not in {KINDS}")
        layer = cfg["layer"]
        if isinstance(layer, bool) or not (
            isinstance(layer, int) or layer in ("last", "sum_last4")
        ):
            raise ValueError(
                f"feature set {name!r}: layer {layer!r} must be last, sum_last4 or an int"
            )
        # The workflow always passes the configured batch size; direct callers of
        # load_backbone (tests, benchmarks) need none.
        batch_size = int(cfg.get("batch_size") or 8)
        if batch_size < 1:
            raise ValueError(f"feature set {name!r}: batch_size must be >= 1")
        return cls(str(cfg["backbone"]), cfg["kind"], layer, batch_size, cfg.get("revision"))
