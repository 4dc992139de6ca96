"""Full-scale throughput of MEDUSA's GPU stages, and the GPU-hours MSP-Podcast would take.

The demo runs the recipe's code on tiny models, which says nothing about the cost of the real
recipe. This benchmark runs the same code on stand-ins of the recipe's backbones: random
weights with the published architecture hyperparameters (layers, widths, heads, FFN sizes,
conv feature encoder, mel bins, vocabularies), written offline with ``save_pretrained`` into a
cache folder (only ever used here) and loaded through ``medusa.features.backbone.load_backbone``, so
every figure is measured on the workflow's own extraction path. Random weights cost the same
FLOPs as trained ones; only autoregressive decoding depends on the weights (through when it
stops), so ASR decodes a fixed number of tokens per window.

Measured, in this order (a --budget-s run skips what no longer fits and says so):

1. ASR: an openai-whisper model of Whisper-large-v3's shape through
   ``medusa.asr.transcribe.transcribe_clips`` (fp16 on CUDA, as the workflow runs it), batched at
   the recipe's batch size vs one clip at a time. ``DecodingOptions`` gains ``sample_len`` = N and
   end-of-text is suppressed, so every window decodes exactly N tokens (checked).
2. Feature extraction per backbone (WavLM-large first, then HuBERT-large, the Whisper-large-v3
   encoder, RoBERTa-large, ModernBERT-large) with the recipe's layer views: real-time factor
   (audio seconds / wall seconds; for text, clips/s on ~20-token transcripts) and peak memory,
   one clip at a time and batched, in fp32 and (CUDA only) in the bf16 autocast the workflow
   uses on a GPU. The project never autocasts on CPU (bf16 gives wrong results there).
3. DeepSER training at the recipe's size (config/config.yaml ``model_defaults``): steps/s of
   ``medusa.training.steps.train_one_epoch`` for every distinct input signature of the 14 models
   (each feature set's width; ~6 s clips = 300 frames per audio modality, ~20 tokens per text
   modality), batches already on the device: the compute ceiling.
4. Data wait: the same loop fed from HDF5 files through FeatureReader / ClipDataset /
   make_loader (the recipe's DataLoader workers), for the signature with the most bytes per
   clip, read from disk as at MSP-Podcast scale (the in-memory shortcut for small files is
   off) and cold (page cache dropped with posix_fadvise after writing).
5. A projection to MSP-Podcast (GPU-hours per stage and in total; assumptions printed) and
   where each measurement lands against the issue's targets.

Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA (weights included); on CPU the peak
resident set size above the one at the start of the measurement.

``--tiny`` runs every measurement with small widths/depths and few clips (the same code
paths, on CPU in about a minute); its figures are not comparable to the targets.

    .venv/bin/python benchmarks/full_scale.py --device cuda --json full_scale.json
    .venv/bin/python benchmarks/full_scale.py --tiny --device cpu
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import gc
import hashlib
import json
import math
import os
import re
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import whisper  # noqa: E402
import yaml  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from medusa.asr.transcribe import transcribe_clips  # noqa: E402
from medusa.core.atomic import atomic_directory, atomic_write_json  # noqa: E402
from medusa.core.store import FeatureWriter  # noqa: E402
from medusa.demo.backbones import (  # noqa: E402
    CONV_KERNEL,
    CONV_STRIDE,
    _modernbert_tokenizer,
    _roberta_tokenizer,
    _wav2vec2_feature_extractor,
    _whisper_feature_extractor,
    tokenizer_training_sentences,
)
from medusa.features.backbone import load_backbone
from medusa.features.extract import FeatureSetConfig
from medusa.training import data as training_data  # noqa: E402
from medusa.training import steps as training_steps  # noqa: E402
from medusa.training.model import DeepSER, class_weights_from_targets  # noqa: E402

hf_logging.disable_progress_bar()
# DeepSER's masks (bool key padding, no attention mask) make torch warn once per process.
warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "config" / "config.yaml"
SR = 16_000
FRAME_RATE = 50  # audio feature frames per second (wav2vec2 family and the Whisper encoder)

# MSP-Podcast, as the projection assumes it (see assumptions()).
MSP = {
    "clips": 120_000,
    "audio_hours": 190.0,
    "train_clips": 76_000,
    "holdout_clips": 8_000,
    "stage2_clips": 10_800,
}
TARGETS = {
    "wavlm_rtf": 2000.0,  # WavLM-large extraction, bf16, one H100/H200-class GPU (x real time)
    "asr_rtf": 100.0,  # Whisper-large-v3 ASR batched (x real time)
    "epoch_minutes": 10.0,  # a DeepSER stage-1 epoch over MSP-Podcast's train set
    "data_wait": 0.10,  # share of step time waiting for data
}

# Published hyperparameters of the recipe's backbones (Hugging Face configs of the checkpoints).
_SSL_LARGE = {
    "hidden": 1024,
    "layers": 24,
    "heads": 16,
    "ffn": 4096,
    "conv": 512,
    "pos_kernel": 128,
    "pos_groups": 16,
}
FULL_SHAPES = {
    "wavlm": _SSL_LARGE,  # microsoft/wavlm-large
    "hubert": _SSL_LARGE,  # facebook/hubert-large-ls960-ft
    # openai/whisper-large-v3: 32 + 32 layers, 128 mel bins, multilingual vocabulary.
    "whisper": {"hidden": 1280, "layers": 32, "heads": 20, "ffn": 5120, "mels": 128},
    "roberta": {"hidden": 1024, "layers": 24, "heads": 16, "ffn": 4096, "vocab": 50265},
    "modernbert": {"hidden": 1024, "layers": 28, "heads": 16, "ffn": 2624, "vocab": 50368},
}
# --tiny: the same architectures, narrow and shallow (4 layers: sum_last4 needs them).
_SSL_TINY = {**_SSL_LARGE, "hidden": 64, "layers": 4, "heads": 4, "ffn": 128, "conv": 64}
TINY_SHAPES = {
    "wavlm": {**_SSL_TINY, "pos_kernel": 16, "pos_groups": 4},
    "hubert": {**_SSL_TINY, "pos_kernel": 16, "pos_groups": 4},
    "whisper": {"hidden": 64, "layers": 2, "heads": 4, "ffn": 128, "mels": 128},
    "roberta": {"hidden": 64, "layers": 4, "heads": 4, "ffn": 128, "vocab": 50265},
    "modernbert": {"hidden": 64, "layers": 4, "heads": 4, "ffn": 128, "vocab": 50368},
}
WHISPER_VOCAB = 51866  # large-v3's multilingual vocabulary (100 languages)
WHISPER_TEXT_CTX = 448
# Measurement order: what the targets need first (a time budget may cut the tail).
FEATURE_ORDER = ("wavlm", "hubert", "whisper", "roberta", "modernbert")


# ---------------------------------------------------------------------------------------------
# The plan: sizes of a full or a tiny run


@dataclass
class Plan:
    tiny: bool
    device: torch.device
    recipe: dict
    cache: Path
    shapes: dict
    clips: int  # extraction: clips per batched run
    single_clips: int  # extraction: clips run one at a time
    batch_sizes: tuple[int, ...]  # extraction; the first is the one the workflow runs
    asr_clips: int
    asr_single_clips: int
    asr_batch: int
    decode_steps: int
    train_batch: int
    train_steps: int
    audio_frames: int
    text_tokens: int
    h5_clips: int
    workers: int
    deepser: dict
    clip_seconds: tuple[float, float] = (3.0, 9.0)  # uniform: mean 6 s, as MSP-Podcast
    deadline: float = math.inf
    repeats: int = 2

    def time_left(self) -> float:
        return self.deadline - time.monotonic()


def make_plan(args: argparse.Namespace, device: torch.device) -> Plan:
    recipe = yaml.safe_load(RECIPE.read_text())
    defaults = recipe["model_defaults"]
    feature_batch = FeatureSetConfig.from_dict(recipe["feature_sets"]["wavlm"]).batch_size
    common = {"device": device, "recipe": recipe, "cache": Path(args.cache)}
    deadline = time.monotonic() + args.budget_s if args.budget_s else math.inf
    if args.tiny:
        return Plan(
            tiny=True,
            shapes=TINY_SHAPES,
            clips=6,
            single_clips=3,
            batch_sizes=(4,),
            asr_clips=4,
            asr_single_clips=2,
            asr_batch=4,
            decode_steps=20,
            train_batch=8,
            train_steps=4,
            audio_frames=50,
            text_tokens=20,
            h5_clips=48,
            workers=1,
            deepser={**defaults, "hidden_size": 64, "ff_size": 128},
            deadline=deadline,
            repeats=1,
            **common,
        )
    return Plan(
        tiny=False,
        shapes=FULL_SHAPES,
        clips=48,
        single_clips=12,
        batch_sizes=(feature_batch, 4 * feature_batch),
        asr_clips=32,
        asr_single_clips=4,
        asr_batch=int(recipe["asr"]["batch_size"]),
        decode_steps=20,
        train_batch=int(defaults["stage1"]["batch_size"]),
        train_steps=30,
        audio_frames=6 * FRAME_RATE,
        text_tokens=20,
        h5_clips=1200,
        workers=int(defaults["num_workers"]),
        deepser=dict(defaults),
        deadline=deadline,
        **common,
    )


# ---------------------------------------------------------------------------------------------
# Measuring: time and peak memory


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    """(fn(), wall seconds) with the device's queue drained on both sides."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def best_time(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[object, float]:
    """The fastest of `repeats` runs (the machine may be shared) and its result."""
    best, out = math.inf, None
    for _ in range(repeats):
        out, seconds = timed(fn, device)
        best = min(best, seconds)
    return out, best


def _status_kib(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", text)[1])


class PeakMemory:
    """Peak memory of a block in MiB: CUDA ``max_memory_allocated`` (weights included), or on
    CPU the peak resident set size above the one at entry (the kernel's high-water mark, reset
    at entry through /proc/self/clear_refs; a 2 ms sampling thread where that is refused)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mib = math.nan
        self._sampler: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back: an honest baseline
        self.base = self.peak = _status_kib("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            self._running = True
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, _status_kib("VmRSS"))
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._sampler is not None:
            self._running = False
            self._sampler.join()
            self.mib = max(0, self.peak - self.base) / 1024
        else:
            self.mib = max(0, _status_kib("VmHWM") - self.base) / 1024


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# Inputs


def make_clips(n: int, seconds: tuple[float, float], seed: int) -> list[np.ndarray]:
    """n clips of noise at 16 kHz, uniformly `seconds[0]`..`seconds[1]` long (fixed seed)."""
    rng = np.random.default_rng(seed)
    return [
        (0.1 * rng.standard_normal(int(rng.uniform(*seconds) * SR))).astype(np.float32)
        for _ in range(n)
    ]


def make_transcripts(n: int) -> list[str]:
    """n transcripts of two sentences each (~20 words, about as many tokens)."""
    sentences = tokenizer_training_sentences()
    return [
        f"{sentences[7 * i % len(sentences)]} {sentences[(7 * i + 5) % len(sentences)]}"
        for i in range(n)
    ]


# ---------------------------------------------------------------------------------------------
# Stand-in backbones: published shapes, random weights, save_pretrained


def _build_audio(name: str, s: dict):
    from transformers import HubertConfig, HubertModel, WavLMConfig, WavLMModel

    config_cls, model_cls = {
        "wavlm": (WavLMConfig, WavLMModel),
        "hubert": (HubertConfig, HubertModel),
    }[name]
    config = config_cls(
        hidden_size=s["hidden"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        intermediate_size=s["ffn"],
        conv_dim=(s["conv"],) * len(CONV_STRIDE),
        conv_stride=CONV_STRIDE,
        conv_kernel=CONV_KERNEL,
        conv_bias=True,
        num_conv_pos_embeddings=s["pos_kernel"],
        num_conv_pos_embedding_groups=s["pos_groups"],
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )
    return model_cls(config), [_wav2vec2_feature_extractor()]


def _build_whisper(name: str, s: dict):
    from transformers import WhisperConfig, WhisperModel

    layers = {"layers": s["layers"], "attention_heads": s["heads"], "ffn_dim": s["ffn"]}
    config = WhisperConfig(
        vocab_size=WHISPER_VOCAB,
        num_mel_bins=s["mels"],
        d_model=s["hidden"],
        **{f"encoder_{k}": v for k, v in layers.items()},
        **{f"decoder_{k}": v for k, v in layers.items()},
        max_source_positions=1500,
        max_target_positions=WHISPER_TEXT_CTX,
        pad_token_id=50256,
        bos_token_id=50257,
        eos_token_id=50257,
        decoder_start_token_id=50258,
    )
    return WhisperModel(config), [_whisper_feature_extractor(s["mels"])]


def _build_text(name: str, s: dict):
    from transformers import ModernBertConfig, ModernBertModel, RobertaConfig, RobertaModel

    shape = {
        "vocab_size": s["vocab"],
        "hidden_size": s["hidden"],
        "num_hidden_layers": s["layers"],
        "num_attention_heads": s["heads"],
        "intermediate_size": s["ffn"],
    }
    sentences = tokenizer_training_sentences()
    if name == "roberta":
        tokenizer = _roberta_tokenizer(sentences)
        config = RobertaConfig(
            max_position_embeddings=514,
            type_vocab_size=1,
            layer_norm_eps=1e-5,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            **shape,
        )
        return RobertaModel(config), [tokenizer]
    tokenizer = _modernbert_tokenizer(sentences)
    ids = {f"{k}_token_id": getattr(tokenizer, f"{k}_token_id") for k in ("pad", "cls", "sep")}
    config = ModernBertConfig(
        max_position_embeddings=8192,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        **ids,
        **shape,
    )
    return ModernBertModel(config), [tokenizer]


BUILDERS = {
    "wavlm": _build_audio,
    "hubert": _build_audio,
    "whisper": _build_whisper,
    "roberta": _build_text,
    "modernbert": _build_text,
}


def cached_backbone(name: str, plan: Plan) -> tuple[Path, float]:
    """(folder of the stand-in for feature set `name`, seconds spent building it; 0 if cached).

    Built with random weights on the device (fast initialisation), saved in float16 to halve
    the files (load_backbone reads them back as float32), keyed by the shape's hash.
    """
    shape = plan.shapes[name]
    key = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:10]
    folder = plan.cache / f"{name}-{'tiny' if plan.tiny else 'full'}-{key}"
    if (folder / "config.json").is_file():
        return folder, 0.0
    start = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(plan.device):
        model, extras = BUILDERS[name](name, shape)
    model = model.to("cpu", torch.float16).eval()
    with atomic_directory(folder) as tmp:
        model.save_pretrained(tmp)
        for extra in extras:
            extra.save_pretrained(tmp)
    del model
    free_memory(plan.device)
    return folder, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# 1. ASR (openai-whisper through medusa.asr.transcribe)


def build_asr_model(plan: Plan) -> whisper.Whisper:
    """An openai-whisper model of the whisper shape with random fp32 weights (as load_model
    gives them; it decodes in fp16 on CUDA)."""
    from whisper.model import ModelDimensions, Whisper

    s = plan.shapes["whisper"]
    dims = ModelDimensions(
        n_mels=s["mels"],
        n_audio_ctx=1500,
        n_audio_state=s["hidden"],
        n_audio_head=s["heads"],
        n_audio_layer=s["layers"],
        n_vocab=WHISPER_VOCAB,
        n_text_ctx=WHISPER_TEXT_CTX,
        n_text_state=s["hidden"],
        n_text_head=s["heads"],
        n_text_layer=s["layers"],
    )
    torch.manual_seed(0)
    with torch.device(plan.device):
        model = Whisper(dims)
    # openai-whisper leaves the decoder's positional embedding uninitialised (torch.empty).
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
    return model.eval()


@contextlib.contextmanager
def fixed_decoding_steps(model: whisper.Whisper, steps: int):
    """Every window medusa.asr.transcribe decodes gets exactly `steps` tokens: sample_len = steps
    and end-of-text suppressed. Yields the list of token counts per decoded window."""
    eot = whisper.tokenizer.get_tokenizer(
        model.is_multilingual, num_languages=model.num_languages
    ).eot
    options = functools.partial(
        whisper.DecodingOptions, sample_len=steps, suppress_tokens=f"-1,{eot}"
    )
    counts: list[int] = []
    real_decode = whisper.decode

    def decode(model, mel, options):
        results = real_decode(model, mel, options)
        counts.extend(len(r.tokens) for r in results)
        return results

    with (
        mock.patch.object(whisper, "DecodingOptions", options),
        mock.patch.object(whisper, "decode", decode),
    ):
        yield counts


def measure_asr(plan: Plan) -> list[dict]:
    model = build_asr_model(plan)
    clips = make_clips(plan.asr_clips, plan.clip_seconds, seed=1)
    items = [(f"clip{i:03d}", c) for i, c in enumerate(clips)]
    rows = []
    with fixed_decoding_steps(model, plan.decode_steps) as counts:
        transcribe_clips(model, items[:2], 2, plan.device, progress=False)  # warm-up
        for batch in (1, plan.asr_batch):
            subset = items[: plan.asr_single_clips] if batch == 1 else items
            run = functools.partial(
                transcribe_clips, model, subset, batch, plan.device, progress=False
            )
            counts.clear()
            with PeakMemory(plan.device) as peak:
                _, seconds = timed(run, plan.device)
            if set(counts) != {plan.decode_steps}:
                raise RuntimeError(f"decoded {sorted(set(counts))} tokens, not {plan.decode_steps}")
            audio_s = sum(len(c) for _, c in subset) / SR
            rows.append(
                {
                    "batch": batch,
                    "clips": len(subset),
                    "windows": len(counts),
                    "tokens_per_window": plan.decode_steps,
                    "precision": "fp16" if plan.device.type == "cuda" else "fp32",
                    "seconds": seconds,
                    "rtf": audio_s / seconds,
                    "clips_per_s": len(subset) / seconds,
                    "peak_mib": peak.mib,
                }
            )
    del model
    free_memory(plan.device)
    return rows


# ---------------------------------------------------------------------------------------------
# 2. Feature extraction (medusa.features)


def precisions(backbone) -> list[tuple[str, torch.dtype | None]]:
    """fp32, plus the autocast the workflow uses on CUDA (bf16, fp16 where bf16 is missing)."""
    auto = backbone.amp_dtype
    return [("fp32", None)] + ([({torch.bfloat16: "bf16"}.get(auto, "fp16"), auto)] if auto else [])


def measure_extraction(name: str, plan: Plan) -> dict:
    folder, build_s = cached_backbone(name, plan)
    cfg = {**plan.recipe["feature_sets"][name], "backbone": str(folder)}
    start = time.perf_counter()
    backbone = load_backbone(cfg, plan.device)
    load_s = time.perf_counter() - start
    clips = make_clips(plan.clips, plan.clip_seconds, seed=0)
    audio = [len(c) / SR for c in clips]
    text = cfg["kind"] == "text"
    inputs = make_transcripts(plan.clips) if text else clips
    rows = []
    for label, dtype in precisions(backbone):
        backbone.amp_dtype = dtype
        backbone.encode(inputs[:2], 2)  # warm-up: kernels, allocator
        for batch in (1, *plan.batch_sizes):
            n = plan.single_clips if batch == 1 else plan.clips
            run = functools.partial(backbone.encode, inputs[:n], batch)
            with PeakMemory(plan.device) as peak:
                out, seconds = best_time(run, plan.device, plan.repeats)
            row = {"backbone": name, "kind": cfg["kind"], "layer": str(cfg["layer"])}
            row |= {"precision": label, "batch": batch, "clips": n, "seconds": seconds}
            row |= {"rtf": sum(audio[:n]) / seconds, "clips_per_s": n / seconds}
            row |= {"frames_per_clip": float(np.mean([len(o) for o in out]))}
            rows.append(row | {"peak_mib": peak.mib})
    info = {"backbone": name, "folder": str(folder), "build_s": build_s, "load_s": load_s}
    info["parameters"] = sum(p.numel() for p in backbone.model.parameters())
    info["dim"] = backbone.dim
    del backbone
    free_memory(plan.device)
    return {"info": info, "rows": rows}


# ---------------------------------------------------------------------------------------------
# 3. DeepSER training steps (medusa.training)


def signatures(plan: Plan) -> dict[tuple, list[str]]:
    """Distinct DeepSER inputs of the recipe's models: ((dim, frames, a/t), ...) -> models."""
    out: dict[tuple, list[str]] = {}
    for model, cfg in plan.recipe["models"].items():
        if not cfg.get("enabled", True):
            continue
        key = []
        for fs in cfg["features"]:
            kind = plan.recipe["feature_sets"][fs]["kind"]
            length = plan.text_tokens if kind == "text" else plan.audio_frames
            key.append((plan.shapes[fs]["hidden"], length, "t" if kind == "text" else "a"))
        out.setdefault(tuple(key), []).append(model)
    return out


def signature_name(sig: tuple) -> str:
    return " + ".join(f"{dim}{kind}x{length}" for dim, length, kind in sig)


def random_frames(sig: tuple, rng: np.random.Generator, jitter: bool) -> list[torch.Tensor]:
    """One clip's float16 frames per modality (length +-20% with `jitter`)."""
    frames = []
    for dim, length, _ in sig:
        n = int(rng.integers(int(0.8 * length), int(1.2 * length) + 1)) if jitter else length
        frames.append(torch.from_numpy(rng.standard_normal((n, dim), dtype=np.float32)).half())
    return frames


def device_batches(sig: tuple, plan: Plan, n: int) -> list[dict]:
    """n collated batches of random frames, already on the device."""
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(n):
        batch = training_data.collate(
            [(i, random_frames(sig, rng, jitter=False)) for i in range(plan.train_batch)]
        )
        batch["features"] = [f.to(plan.device) for f in batch["features"]]
        batch["masks"] = [m.to(plan.device) for m in batch["masks"]]
        batches.append(batch)
    return batches


def build_deepser(cfg: dict, sig: tuple) -> DeepSER:
    """The DeepSER of the recipe's model settings `cfg` for inputs `sig` (the constructor
    medusa.training.model.build_model calls; frame pooling, 1 in the recipe, on audio modalities
    only)."""
    mixup = cfg["mixup"]
    k = int(cfg.get("frame_pooling", 1))
    attention_dropout = cfg.get("attention_dropout")
    return DeepSER(
        input_dims=[dim for dim, _, _ in sig],
        hidden_size=int(cfg["hidden_size"]),
        num_heads=int(cfg["num_heads"]),
        ff_size=int(cfg["ff_size"]),
        dropout=float(cfg["dropout"]),
        encoder_layers=int(cfg["encoder_layers"]),
        fusion=cfg.get("fusion", "deep"),
        mixup_p=float(mixup["p"]) if mixup["enabled"] else 0.0,
        mixup_alpha=float(mixup["alpha"]),
        attention_dropout=None if attention_dropout is None else float(attention_dropout),
        frame_pooling=[1 if kind == "t" else k for _, _, kind in sig],
    )


class Trainer:
    """A recipe-sized DeepSER, its AdamW (as train_stage builds them) and random targets."""

    def __init__(self, sig: tuple, plan: Plan, n_clips: int):
        torch.manual_seed(0)
        self.plan = plan
        self.model = build_deepser(plan.deepser, sig).to(plan.device)
        stage = plan.deepser["stage1"]
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=float(stage["lr"]),
            weight_decay=float(stage["weight_decay"]),
            foreach=True,
        )
        rng = np.random.default_rng(0)
        self.targets = torch.as_tensor(rng.dirichlet(np.ones(8), n_clips), dtype=torch.float32)
        self.attributes = torch.as_tensor(1 + 6 * rng.random((n_clips, 3)), dtype=torch.float32)
        self.class_weights = class_weights_from_targets(self.targets).to(plan.device)
        weights = plan.deepser["loss_weights"]
        self.loss_weights = (float(weights["classes"]), float(weights["attributes"]))

    def epoch(self, loader) -> tuple[dict, float]:
        """train_one_epoch over `loader`: (its stats, wall seconds with the device drained)."""
        run = functools.partial(
            training_steps.train_one_epoch,
            self.model,
            loader,
            self.optimizer,
            self.targets,
            self.attributes,
            self.class_weights,
            self.loss_weights,
            torch.Generator().manual_seed(0),
            self.plan.device,
            amp=self.plan.device.type == "cuda",  # the recipe's bf16 autocast, CUDA only
        )
        return timed(run, self.plan.device)


def measure_training_steps(sig: tuple, models: list[str], plan: Plan) -> dict:
    batches = device_batches(sig, plan, n=4)
    trainer = Trainer(sig, plan, plan.train_batch)
    trainer.epoch(batches[:1])  # warm-up
    loader = [batches[i % len(batches)] for i in range(plan.train_steps)]
    with PeakMemory(plan.device) as peak:
        stats, seconds = trainer.epoch(loader)
    del trainer, batches
    free_memory(plan.device)
    return {
        "signature": signature_name(sig),
        "models": models,
        "steps": stats["steps"],
        "steps_per_s": stats["steps"] / seconds,
        "peak_mib": peak.mib,
    }


# ---------------------------------------------------------------------------------------------
# 4. Data wait: the same loop fed from HDF5


def write_feature_files(sig: tuple, plan: Plan, folder: Path) -> list[Path]:
    """One feature file per modality of `sig`, plan.h5_clips clips of random frames."""
    rng = np.random.default_rng(1)
    paths = [folder / f"modality{m}.h5" for m in range(len(sig))]
    writers = [
        FeatureWriter(p, dim, {"frame_rate": 0.0 if kind == "t" else float(FRAME_RATE)})
        for p, (dim, _, kind) in zip(paths, sig, strict=True)
    ]
    with contextlib.ExitStack() as stack:
        for writer in writers:
            stack.enter_context(writer)
        # A pool of clips, reused: drawing every frame would cost more than the measurement.
        pool = [random_frames(sig, rng, jitter=True) for _ in range(16)]
        for i in range(plan.h5_clips):
            for writer, frames in zip(writers, pool[i % len(pool)], strict=True):
                writer.add(f"clip{i:06d}", frames.numpy())
    return paths


def drop_page_cache(path: Path) -> None:
    """Evict `path` from the page cache (no root needed): later reads come from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def filesystem(path: Path) -> str:
    """Type of the file system holding `path` (ext4, xfs, tmpfs: a tmpfs read is no disk read)."""
    resolved, best, kind = str(path.resolve()) + "/", "", "unknown"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype = line.split()[:3]
            mount = mount.rstrip("/") + "/"
            if resolved.startswith(mount) and len(mount) >= len(best):
                best, kind = mount, fstype
    return kind


def measure_data_wait(sig: tuple, plan: Plan) -> dict:
    with tempfile.TemporaryDirectory(dir=plan.cache, prefix="h5-") as tmp:
        paths = write_feature_files(sig, plan, Path(tmp))
        ids = [f"clip{i:06d}" for i in range(plan.h5_clips)]
        max_frames = int(plan.deepser["max_frames"])
        # MSP-Podcast feature files (~40-70 GB) are far above the in-memory threshold.
        with mock.patch.object(training_data, "IN_MEMORY_MAX_BYTES", 0):
            dataset = training_data.ClipDataset(ids, paths, max_frames)
        batch_plan = training_data.BatchPlan()
        loader = training_data.make_loader(
            dataset, batch_plan, plan.workers, plan.device, persistent=True
        )
        rng = np.random.default_rng(0)
        batches = training_data.length_bucketed_batches(
            np.arange(len(ids)), dataset.lengths, plan.train_batch, rng
        )
        warm = max(2, len(batches) // 4)
        trainer = Trainer(sig, plan, len(ids))
        batch_plan.batches = batches[:warm]
        trainer.epoch(loader)  # starts the workers, warms the kernels
        for path in paths:
            drop_page_cache(path)
        batch_plan.batches = batches[warm:]
        stats, seconds = trainer.epoch(loader)
        nbytes = sum(p.stat().st_size for p in paths)
        del loader, trainer
    free_memory(plan.device)
    read = sum(len(b) for b in batches[warm:]) / len(ids) * nbytes
    return {
        "signature": signature_name(sig),
        "clips": len(ids),
        "file_gb": nbytes / 1e9,
        "workers": plan.workers,
        "steps": stats["steps"],
        "steps_per_s": stats["steps"] / seconds,
        "data_wait_share": stats["data_wait_seconds"] / seconds,
        "read_mb_per_s": read / seconds / 1e6,
        "filesystem": filesystem(plan.cache),
    }


def heaviest(sigs: dict[tuple, list[str]]) -> tuple:
    """The signature with the most bytes per clip (the hardest on the data path)."""
    return max(sigs, key=lambda sig: sum(dim * length for dim, length, _ in sig))


# ---------------------------------------------------------------------------------------------
# 5. Projection to MSP-Podcast and the targets


def pick(rows: list[dict], batch: int, precision: str | None = None) -> dict | None:
    for row in rows:
        if row["batch"] == batch and precision in (None, row["precision"]):
            return row
    return None


def workflow_row(report: dict, name: str, plan: Plan) -> dict | None:
    """The extraction row of feature set `name` as the workflow runs it: the recipe's batch
    size, bf16 autocast on CUDA (the last precision measured), fp32 on CPU."""
    rows = report["features"].get(name, {}).get("rows", [])
    if not rows:
        return None
    return pick(rows, plan.batch_sizes[0], rows[-1]["precision"])


def model_costs(report: dict, plan: Plan) -> dict[str, dict]:
    """Per model (recipe name): seconds of a stage-1 epoch, a stage-2 epoch and one forward
    pass over every clip, from its signature's steps/s and the measured data-wait share."""
    rates = {r["signature"]: r["steps_per_s"] for r in report["training"]}
    wait = report.get("data_wait", {}).get("data_wait_share", 0.0)
    batch, costs = plan.train_batch, {}
    for sig, models in signatures(plan).items():
        rate = rates.get(signature_name(sig))
        if rate is None:
            continue
        step_s = 1.0 / rate / (1.0 - min(wait, 0.9))
        forward_clip_s = 1.0 / rate / batch / 3.0  # forward only: ~1/3 of a step (assumptions)
        holdout_s = MSP["holdout_clips"] * forward_clip_s
        for model in models:
            costs[model] = {
                "stage1_epoch_s": MSP["train_clips"] / batch * step_s + holdout_s,
                "stage2_epoch_s": MSP["stage2_clips"] / batch * step_s + holdout_s,
                "holdout_s": holdout_s,
                "posteriors_s": MSP["clips"] * forward_clip_s,
            }
    return costs


def epochs(plan: Plan, model: str, stage: int) -> int:
    cfg = plan.recipe["model_defaults"][f"stage{stage}"] | plan.recipe["models"][model].get(
        f"stage{stage}", {}
    )
    return int(cfg["max_epochs"])


def feature_projection(report: dict, plan: Plan) -> list[dict]:
    asr = pick(report.get("asr", []), plan.asr_batch)
    rows = [
        {
            "stage": "ASR (Whisper-large-v3)",
            "work": f"{MSP['clips']:,} clips",
            "rate": asr and f"{asr['clips_per_s']:.2f} clips/s ({asr['rtf']:,.1f}x RT)",
            "gpu_hours": asr and MSP["clips"] / asr["clips_per_s"] / 3600,
        }
    ]
    return rows + [feature_stage(name, workflow_row(report, name, plan)) for name in FEATURE_ORDER]


def feature_stage(name: str, row: dict | None) -> dict:
    """Projection row of one feature set: audio models cost per second of audio; the Whisper
    encoder (every clip padded to a 30 s window) and text models cost per clip."""
    per_audio = row is not None and row["kind"] == "audio"
    stage = {
        "stage": f"features: {name}",
        "work": f"{MSP['audio_hours']:.0f} h audio" if per_audio else f"{MSP['clips']:,} clips",
        "rate": None,
        "gpu_hours": None,
    }
    if row is not None:
        stage["rate"] = (
            f"{row['rtf']:,.1f}x RT, {row['clips_per_s']:.2f} clips/s "
            f"({row['precision']}, batch {row['batch']})"
        )
        stage["gpu_hours"] = (
            MSP["audio_hours"] / row["rtf"]
            if per_audio
            else MSP["clips"] / row["clips_per_s"] / 3600
        )
    return stage


def training_projection(report: dict, plan: Plan) -> list[dict]:
    costs = model_costs(report, plan)
    models = [m for m, cfg in plan.recipe["models"].items() if cfg.get("enabled", True)]
    done = [m for m in models if m in costs]
    complete = len(done) == len(models)
    e1, e2 = epochs(plan, models[0], 1), epochs(plan, models[0], 2)

    def total(fn) -> float | None:
        return sum(fn(m, costs[m]) for m in done) / 3600 if complete else None

    return [
        {
            "stage": "DeepSER stage 1",
            "work": f"{len(models)} models x {e1} epochs x {MSP['train_clips']:,} clips",
            "rate": "per-model steps/s (training table)",
            "gpu_hours": total(lambda m, c: epochs(plan, m, 1) * c["stage1_epoch_s"]),
        },
        {
            "stage": "DeepSER stage 2",
            "work": f"{len(models)} models x {e2} epochs x {MSP['stage2_clips']:,} clips",
            "rate": "per-model steps/s (training table)",
            "gpu_hours": total(
                lambda m, c: epochs(plan, m, 2) * c["stage2_epoch_s"] + c["holdout_s"]
            ),
        },
        {
            "stage": "posteriors",
            "work": f"{len(models)} models x {MSP['clips']:,} clips",
            "rate": "forward only: 1/3 of a step per clip",
            "gpu_hours": total(lambda m, c: c["posteriors_s"]),
        },
    ]


def projection(report: dict, plan: Plan) -> list[dict]:
    rows = feature_projection(report, plan) + training_projection(report, plan)
    hours = [r["gpu_hours"] for r in rows]
    missing = [r["stage"] for r in rows if r["gpu_hours"] is None]
    rows.append(
        {
            "stage": "total" + (f" (without {len(missing)} unmeasured stages)" if missing else ""),
            "work": "",
            "rate": "",
            "gpu_hours": sum(h for h in hours if h is not None),
        }
    )
    return rows


def worst_epoch_minutes(report: dict, plan: Plan) -> float | None:
    """The slowest model's stage-1 epoch, or the HDF5-fed rate's epoch if that is slower."""
    costs = model_costs(report, plan)
    if not costs:
        return None
    worst = max(c["stage1_epoch_s"] for c in costs.values())
    fed = report.get("data_wait")
    if fed:
        worst = max(worst, MSP["train_clips"] / plan.train_batch / fed["steps_per_s"])
    return worst / 60


def verdict(value: float | None, ok: bool, plan: Plan) -> str:
    if value is None:
        return "not measured"
    if plan.tiny:
        return "no verdict (--tiny shapes)"
    if plan.device.type != "cuda":
        return "no verdict (CPU)"
    return "meets" if ok else "MISSES"


def best_batch_note(report: dict, row: dict | None) -> str:
    """' (batch 8; 2400x at batch 32)' when another batch size beats the workflow's."""
    if row is None:
        return ""
    rows = report["features"][row["backbone"]]["rows"]
    best = max((r for r in rows if r["precision"] == row["precision"]), key=lambda r: r["rtf"])
    if best["batch"] == row["batch"]:
        return f" (batch {row['batch']})"
    return f" (batch {row['batch']}; {best['rtf']:.0f}x at batch {best['batch']})"


def at_least(value: float | None, target: float) -> bool:
    return value is not None and value >= target


def below(value: float | None, target: float) -> bool:
    return value is not None and value < target


def target_row(name: str, threshold: str, value: float | None, unit: str, ok: bool, plan: Plan):
    measured = None if value is None else unit.format(value)
    return {"target": name, "threshold": threshold, "measured": measured, "value": value} | {
        "verdict": verdict(value, ok, plan)
    }


def targets(report: dict, plan: Plan) -> list[dict]:
    """Where each measurement lands against the issue's targets (verdicts on CUDA only)."""
    wavlm = workflow_row(report, "wavlm", plan)
    asr = pick(report.get("asr", []), plan.asr_batch)
    wavlm_rtf = None if wavlm is None else wavlm["rtf"]
    wavlm_unit = "{:,.1f}x RT" + best_batch_note(report, wavlm)
    asr_rtf = None if asr is None else asr["rtf"]
    epoch = worst_epoch_minutes(report, plan)
    wait = report.get("data_wait", {}).get("data_wait_share")
    wait_pct = None if wait is None else 100 * wait
    wavlm_label = "WavLM-large extraction, bf16, one H100/H200-class GPU"
    epoch_label = "DeepSER stage-1 epoch over MSP-Podcast train (slowest model)"
    return [
        target_row(
            wavlm_label,
            ">= 2,000x RT",
            wavlm_rtf,
            wavlm_unit,
            at_least(wavlm_rtf, TARGETS["wavlm_rtf"]),
            plan,
        ),
        target_row(
            "Whisper-large-v3 ASR, batched",
            ">= 100x RT",
            asr_rtf,
            "{:,.1f}x RT",
            at_least(asr_rtf, TARGETS["asr_rtf"]),
            plan,
        ),
        target_row(
            epoch_label,
            "< 10 min",
            epoch,
            "{:.1f} min",
            below(epoch, TARGETS["epoch_minutes"]),
            plan,
        ),
        target_row(
            "data wait, share of step time",
            "< 10%",
            wait_pct,
            "{:.1f}%",
            below(wait, TARGETS["data_wait"]),
            plan,
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Printing


def assumptions(plan: Plan) -> list[str]:
    """What the projection takes for granted, in words (printed and in the JSON)."""
    stage1, stage2 = (
        plan.recipe["model_defaults"]["stage1"],
        plan.recipe["model_defaults"]["stage2"],
    )
    precision = "bf16 autocast" if plan.device.type == "cuda" else "fp32"
    return [
        f"MSP-Podcast: ~{MSP['clips']:,} clips, ~{MSP['audio_hours']:.0f} h of audio (mean 5.7 s); "
        f"ASR and all 5 feature sets run over every clip; stage 1 trains on "
        f"~{MSP['train_clips']:,} clips and scores a ~{MSP['holdout_clips']:,}-clip holdout "
        "every epoch.",
        "Stage 2: each epoch draws a class-balanced subset (every class undersampled to the "
        f"rarest, plus as many ambiguous X/O clips): assumed {MSP['stage2_clips']:,} clips "
        "(9 x a rarest class of ~1,200 train clips); the real size follows from the labels.",
        f"Epochs: every model runs the recipe's max_epochs (stage 1: {stage1['max_epochs']}, "
        f"stage 2: {stage2['max_epochs']}) with no early stop, so the training rows are upper "
        f"bounds; patience {stage1['patience']} usually stops earlier.",
        "A forward-only pass (holdout scoring, posteriors over every clip for each model) costs "
        "1/3 of a training step per clip.",
        f"Training: batch {plan.train_batch}, ~{plan.audio_frames} frames per audio modality and "
        f"~{plan.text_tokens} tokens per text modality per clip; steps/s from batches already "
        "on the device, plus the data-wait share measured on the heaviest signature "
        "(time / (1 - share)) for every model.",
        f"Feature sets run at batch {plan.batch_sizes[0]} in {precision} (as the workflow does "
        "on this device); the audio models cost per second of audio, the Whisper encoder "
        "(every clip padded to a 30 s window) and the text models per clip.",
        f"ASR: batch {plan.asr_batch}, {'fp16' if plan.device.type == 'cuda' else 'fp32'}, "
        f"{plan.decode_steps} tokens per 30 s window (a ~6 s clip holds ~15 words), one window "
        "per clip (clips over 30 s are rare), cost per clip.",
        "Meta-classifier and soup run on the CPU in minutes: not counted.",
    ]


def md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join("n/a" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def peak_header(plan: Plan) -> str:
    return "peak GPU MiB" if plan.device.type == "cuda" else "peak RSS +MiB"


def show_asr(rows: list[dict], plan: Plan) -> None:
    print(f"\n## ASR: openai-whisper, Whisper-large-v3 shape{' (tiny)' if plan.tiny else ''}\n")
    headers = ["batch", "clips", "windows", "tokens/window", "precision", "wall s", "x RT"]
    headers += ["clips/s", peak_header(plan)]
    cells = [
        [r["batch"], r["clips"], r["windows"], r["tokens_per_window"], r["precision"]]
        + [f"{r['seconds']:.2f}", f"{r['rtf']:.1f}", f"{r['clips_per_s']:.2f}"]
        + [f"{r['peak_mib']:.0f}"]
        for r in rows
    ]
    print(md_table(headers, cells))


def show_features(result: dict, plan: Plan) -> None:
    info = result["info"]
    print(
        f"\n## Features: {info['backbone']} ({info['parameters'] / 1e6:.1f}M parameters run, dim "
        f"{info['dim']}; built in {info['build_s']:.1f} s, load_backbone {info['load_s']:.1f} s)\n"
    )
    if plan.device.type != "cuda":
        print("bf16: not run on CPU (the project never autocasts there: wrong results).\n")
    headers = ["precision", "batch", "clips", "layer", "frames/clip", "wall s", "x RT"]
    headers += ["clips/s", peak_header(plan)]
    cells = [
        [r["precision"], r["batch"], r["clips"], r["layer"], f"{r['frames_per_clip']:.0f}"]
        + [f"{r['seconds']:.3f}", f"{r['rtf']:.1f}", f"{r['clips_per_s']:.1f}"]
        + [f"{r['peak_mib']:.0f}"]
        for r in result["rows"]
    ]
    print(md_table(headers, cells))


def show_training(rows: list[dict], plan: Plan) -> None:
    cfg = plan.deepser
    print(
        f"\n## DeepSER training steps (hidden {cfg['hidden_size']}, heads {cfg['num_heads']}, FF "
        f"{cfg['ff_size']}, {cfg['encoder_layers']} layers, batch {plan.train_batch}; batches on "
        f"the device; signature = dim + a(udio)/t(ext) x frames per modality)\n"
    )
    headers = ["signature", "models", "steps/s", "ms/step", peak_header(plan)]
    cells = [
        [r["signature"], " ".join(m.split("_")[0] for m in r["models"]), f"{r['steps_per_s']:.1f}"]
        + [f"{1000 / r['steps_per_s']:.1f}", f"{r['peak_mib']:.0f}"]
        for r in rows
    ]
    print(md_table(headers, cells))


def show_data_wait(row: dict, plan: Plan) -> None:
    print("\n## Data wait: HDF5 -> FeatureReader -> ClipDataset -> DataLoader, cold page cache\n")
    headers = ["signature", "clips", "files GB", "workers", "steps", "steps/s", "data wait"]
    headers += ["read MB/s"]
    cells = [row["signature"], row["clips"], f"{row['file_gb']:.2f}", row["workers"]]
    cells += [row["steps"], f"{row['steps_per_s']:.1f}", f"{100 * row['data_wait_share']:.1f}%"]
    cells += [f"{row['read_mb_per_s']:.0f}"]
    print(md_table(headers, [cells]))
    print(f"\n(scratch file system: {row['filesystem']})")


def show_summary(report: dict, plan: Plan) -> None:
    where = (
        "(--tiny: only the arithmetic means anything)"
        if plan.tiny
        else "on one " + report["device_name"]
    )
    print(f"\n## Projection: MSP-Podcast {where}\n")
    rows = [
        [
            r["stage"],
            r["work"],
            r["rate"],
            None if r["gpu_hours"] is None else f"{r['gpu_hours']:.1f}",
        ]
        for r in report["projection"]
    ]
    # Hours of the device measured on (a CPU run projects CPU-hours).
    hours = "GPU-hours" if plan.device.type == "cuda" else f"{plan.device.type.upper()}-hours"
    print(md_table(["stage", "work", "throughput", hours], rows))
    print("\nAssumptions:")
    for line in report["assumptions"]:
        print(f"- {line}")
    print("\n## Targets (from the issue)\n")
    rows = [[t["target"], t["threshold"], t["measured"], t["verdict"]] for t in report["targets"]]
    print(md_table(["target", "threshold", "measured", "verdict"], rows))
    for key in report["skipped"]:
        print(f"\nskipped (time budget): {key}")
    for key, error in report["errors"].items():
        print(f"\nFAILED {key}:\n{error}")


# ---------------------------------------------------------------------------------------------
# Main


def steps(plan: Plan) -> list[tuple[str, Callable[[], object], Callable]]:
    """(report key, measurement, printer) in order of priority."""
    sigs = signatures(plan)

    def training_steps() -> list[dict]:
        return [measure_training_steps(sig, models, plan) for sig, models in sigs.items()]

    def features(name: str) -> tuple:
        return (
            f"features.{name}",
            functools.partial(measure_extraction, name, plan),
            show_features,
        )

    return [
        ("asr", functools.partial(measure_asr, plan), show_asr),
        features("wavlm"),
        ("training", training_steps, show_training),
        ("data_wait", functools.partial(measure_data_wait, heaviest(sigs), plan), show_data_wait),
        *(features(name) for name in FEATURE_ORDER[1:]),
    ]


def run(plan: Plan, report: dict, save: Callable[[], None]) -> None:
    for key, measure, show in steps(plan):
        if plan.time_left() < 10:
            report["skipped"].append(key)
            continue
        start = time.perf_counter()
        try:
            result = measure()
        except Exception:  # one failed measurement must not lose the others
            report["errors"][key] = traceback.format_exc()
            print(f"\nFAILED {key}", flush=True)
            continue
        finally:
            report["step_seconds"][key] = time.perf_counter() - start
        if key.startswith("features."):
            report["features"][key.removeprefix("features.")] = result
        else:
            report[key] = result
        show(result, plan)
        print(f"\n({key}: {report['step_seconds'][key]:.1f} s)", flush=True)
        save()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(name)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="scaled-down shapes, CPU-quick")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument(
        "--cache",
        default=str(Path(tempfile.gettempdir()) / "medusa-full-scale"),
        help="folder for the stand-in backbones and scratch HDF5 files (never results)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--budget-s", type=float, help="skip measurements past this many seconds")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: 1 with --tiny)")
    return parser.parse_args()


PLAN_KEYS = ("clips", "single_clips", "batch_sizes", "clip_seconds", "asr_clips", "asr_batch")
PLAN_KEYS += ("decode_steps", "train_batch", "train_steps", "audio_frames", "text_tokens")
PLAN_KEYS += ("h5_clips", "workers", "shapes")


def header(plan: Plan) -> dict:
    name = torch.cuda.get_device_name(plan.device) if plan.device.type == "cuda" else "CPU"
    return {
        "mode": "tiny" if plan.tiny else "full",
        "device": str(plan.device),
        "device_name": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "targets": TARGETS,
        "msp_podcast": MSP,
        "assumptions": assumptions(plan),
        "plan": {k: getattr(plan, k) for k in PLAN_KEYS},
        "features": {},
        "training": [],
        "skipped": [],
        "errors": {},
        "step_seconds": {},
    }


def main() -> int:
    args = parse_args()
    device = resolve_device(args.device)
    threads = args.threads or (1 if args.tiny else None)
    if threads:
        torch.set_num_threads(threads)
    plan = make_plan(args, device)
    plan.cache.mkdir(parents=True, exist_ok=True)
    report = header(plan)
    started = time.perf_counter()
    print(
        f"# MEDUSA full-scale benchmark ({report['mode']}) on {report['device_name']}, torch "
        f"{torch.__version__}, {report['threads']} torch CPU thread(s); cache {plan.cache}"
    )

    def save() -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(args.json, report)

    run(plan, report, save)
    report["projection"] = projection(report, plan)
    report["targets"] = targets(report, plan)
    report["seconds"] = time.perf_counter() - started
    save()
    show_summary(report, plan)
    print(f"\n(benchmark wall time {report['seconds']:.0f} s)")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
