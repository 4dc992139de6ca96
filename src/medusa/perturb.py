"""Named, seeded perturbations of 16 kHz mono audio, for measuring robustness beyond clean dev.

Each perturbation is a pure function ``f(waveform, seed, **params) -> waveform`` of a float32
mono waveform at 16 kHz (``medusa.audio.SAMPLE_RATE``), returning float32 at the same rate;
equal inputs give equal outputs, bit for bit (numpy's seeded generator, no global state).
Values may exceed full scale (noise at 0 dB); ``perturb_files`` scales such a clip down as a
whole when it writes it (a gain changes neither the SNR nor the spectrum).

Built on torchaudio, numpy and soundfile (libsndfile writes MP3 and Opus): an augmentation
library (audiomentations) would add librosa and numba for transforms of a few lines each.

Kinds (``KINDS``), their parameters, and what they do:

- ``noise``: generated coloured noise (``colour``: white, pink 1/f, brown 1/f^2 power) added
  at ``snr_db`` dB SNR (clean power over noise power, both over the whole clip).
- ``noise_file``: a noise file drawn by the seed from ``folder`` (every .wav/.flac/.ogg below
  it, sorted by path: ESC-50's ``audio/`` works), read mono at 16 kHz, looped from a seeded
  offset to the clip's length, added at ``snr_db``.
- ``babble``: ``talkers`` clips drawn by the seed from ``clips`` (paths the caller gives, e.g.
  training clips, whose speakers are not the dev speakers), each scaled to unit power, looped
  from a seeded offset and summed; added at ``snr_db``.
- ``speedup``: a seeded span (``span``: its share of the clip) played ``factor`` times faster
  (resampled, as a tape played faster: pitch rises too); the clip gets shorter by
  span * (1 - 1 / factor) of its length.
- ``fade``: linear (or ``shape``: any of ``torchaudio.transforms.Fade``'s) fade-in over
  ``fade_in_s`` and fade-out over ``fade_out_s`` seconds, each at most half the clip.
- ``telephone``: resampled to ``rate`` Hz (8000), band-limited to ``low_hz``-``high_hz``
  (300-3400 Hz) by an FFT mask with 50 Hz cosine edges centred on the limits, resampled back
  to 16 kHz and masked again there (removing the resampler's images above 4 kHz).
- ``codec``: a round trip through a lossy codec in memory (libsndfile via soundfile):
  ``codec`` mp3 (constant bitrate) or opus (in Ogg), at libsndfile's ``compression_level``
  (0 best, 1 smallest). At 16 kHz mono, MP3 levels 0.9/0.95/0.99 give 24/16/8 kbps (1.0 is
  refused by libsndfile); Opus 0.9/0.95/0.99 about 30/19/9 kbps. A decoder delay (LAME's
  1105 samples at low MP3 bitrates) is found by cross-correlation and removed, and the end
  is cropped or padded with zeros, so the length is the input's.

Seeds: a clip's seed is ``clip_seed(condition.seed, clip_id)`` (SHA-256 of both), so its
perturbation does not depend on which other clips are processed, nor in which order.

``REGISTRY`` holds the named conditions: ``noise_{white,pink,brown}_snr{20,10,0}``,
``babble_snr{20,10,0}`` (4 talkers), ``noise_file_snr{20,10,0}`` (needs a folder),
``speedup`` (1.25x over 30 % of the clip), ``fade`` (1 s each end), ``telephone``,
``mp3_low`` (16 kbps) and ``opus_low`` (about 9 kbps).

Configuration (``conditions_from_config(config["robustness"], babble_clips=...)``)::

    robustness:
      seed: 0                # seed of every condition without its own `seed`
      noise_dir: null        # folder of noise files, for `noise_file` conditions
      conditions:            # name: null, or overrides of the registry's parameters
        noise_pink_snr10: null
        babble_snr0: {talkers: 6}
        telephone: {}
        street_snr10: {kind: noise_file, snr_db: 10, folder: /data/ESC-50/audio}

A name in ``REGISTRY`` starts from its parameters; any other name needs ``kind`` and every
parameter of that kind. ``noise_file`` conditions without ``folder`` take ``noise_dir``;
``babble`` conditions take the ``babble_clips`` the caller passes. Names are letters, digits,
``_`` and ``-`` (they become folder names and wildcards). Bad entries raise
``PerturbationError`` naming the key (``robustness.conditions.babble_snr0.talkers``).

Files: ``perturb_files(files, root, out_dir, condition)`` writes each clip's perturbation as
16-bit WAV under ``out_dir`` at its path relative to ``root`` (the clip id), plus
``condition.json`` (``Condition.canonical()``; ``Condition.key`` is its digest), the whole
folder replaced atomically (``medusa.atomic.atomic_directory``).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from medusa.atomic import atomic_directory, atomic_write_json
from medusa.audio import SAMPLE_RATE, load_audio

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # exponent of 1/f in the power spectrum
CODECS = {"mp3": ("MP3", "MPEG_LAYER_III", "CONSTANT"), "opus": ("OGG", "OPUS", None)}
FADE_SHAPES = ("linear", "logarithmic", "exponential", "quarter_sine", "half_sine")
TELEPHONE_EDGE_HZ = 50.0
CONDITION_FILE = "condition.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class PerturbationError(ValueError):
    """A perturbation or condition that cannot be used; the message names the key or file."""


def _check_waveform(waveform: np.ndarray) -> np.ndarray:
    wav = np.asarray(waveform)
    if wav.ndim != 1:
        raise PerturbationError(f"expected a mono waveform [samples], got shape {wav.shape}")
    return wav.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# Mixing


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean`` plus ``noise`` (same length) scaled to ``snr_db`` dB below the clean power.

    A silent clip stays silent (its SNR is undefined; adding nothing keeps it a clean clip),
    silent noise is an error.
    """
    clean64, noise64 = clean.astype(np.float64), noise.astype(np.float64)
    clean_power, noise_power = np.mean(clean64**2), np.mean(noise64**2)
    if len(clean) == 0 or clean_power == 0:
        return clean.astype(np.float32)
    if noise_power == 0:
        raise PerturbationError("the noise is silent: cannot mix it at an SNR")
    gain = math.sqrt(clean_power / (noise_power * 10 ** (snr_db / 10)))
    return (clean64 + gain * noise64).astype(np.float32)


def _loop_to(source: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """``length`` samples of ``source`` repeated end to end, from a seeded offset."""
    offset = int(rng.integers(len(source)))
    return np.resize(np.roll(source, -offset), length)


def coloured_noise(length: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of unit power whose power spectrum falls as 1/f^k (white 0, pink 1, brown 2)."""
    white = rng.standard_normal(length)
    if COLOURS[colour] == 0 or length < 2:
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(length)
    shape = np.zeros_like(freqs)
    shape[1:] = freqs[1:] ** (-COLOURS[colour] / 2)  # amplitude: square root of the power law
    noise = np.fft.irfft(spectrum * shape, n=length)
    return noise / np.sqrt(np.mean(noise**2))


def add_coloured_noise(
    waveform: np.ndarray, seed: int, *, colour: str, snr_db: float
) -> np.ndarray:
    """Generated white, pink or brown noise at ``snr_db``."""
    wav = _check_waveform(waveform)
    noise = coloured_noise(len(wav), colour, np.random.default_rng(seed))
    return mix_at_snr(wav, noise, snr_db)


def _audio_below(folder: str | os.PathLike, what: str) -> tuple[Path, ...]:
    root = Path(folder)
    if not root.is_dir():
        raise PerturbationError(f"{what} not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise PerturbationError(f"no {'/'.join(AUDIO_SUFFIXES)} file in the {what} {root}")
    return tuple(files)


@functools.lru_cache(maxsize=16)
def noise_files(folder: str) -> tuple[Path, ...]:
    """Every .wav/.flac/.ogg file below ``folder`` (any depth), sorted by path (listed once)."""
    return _audio_below(folder, "noise folder")


def _audible(path: Path) -> np.ndarray:
    wav = load_audio(path, SAMPLE_RATE)
    if len(wav) == 0 or not np.any(wav):
        raise PerturbationError(f"silent or empty noise source: {path}")
    return wav


def add_file_noise(waveform: np.ndarray, seed: int, *, folder: str, snr_db: float) -> np.ndarray:
    """A noise file drawn by the seed from ``folder``, looped to the clip, at ``snr_db``."""
    wav = _check_waveform(waveform)
    rng = np.random.default_rng(seed)
    files = noise_files(str(folder))
    noise = _audible(files[int(rng.integers(len(files)))])
    return mix_at_snr(wav, _loop_to(noise, len(wav), rng), snr_db)


def add_babble(
    waveform: np.ndarray, seed: int, *, clips: Sequence[str], talkers: int, snr_db: float
) -> np.ndarray:
    """``talkers`` clips drawn by the seed from ``clips``, each at unit power, at ``snr_db``."""
    wav = _check_waveform(waveform)
    if len(clips) < talkers:
        raise PerturbationError(
            f"babble of {talkers} talkers needs as many clips, got {len(clips)}"
        )
    rng = np.random.default_rng(seed)
    babble = np.zeros(len(wav))
    for index in rng.choice(len(clips), size=talkers, replace=False):
        voice = _audible(Path(clips[index])).astype(np.float64)
        voice /= np.sqrt(np.mean(voice**2))
        babble += _loop_to(voice, len(wav), rng)
    return mix_at_snr(wav, babble, snr_db)


# --------------------------------------------------------------------------------------------
# Time and channel


def speed_up_segment(waveform: np.ndarray, seed: int, *, factor: float, span: float) -> np.ndarray:
    """A seeded segment of ``span`` times the clip's length played ``factor`` times faster."""
    wav = _check_waveform(waveform)
    length = int(round(span * len(wav)))
    if length < 2:
        return wav.copy()
    start = int(np.random.default_rng(seed).integers(len(wav) - length + 1))
    # Resampling from factor * rate to rate: as many samples per second of audio as 1 / factor.
    orig, new = int(round(factor * 1000)), 1000
    divisor = math.gcd(orig, new)
    import torch  # torch in the transforms only: the workflow's parse reads the conditions
    import torchaudio.functional

    segment = torch.from_numpy(wav[start : start + length].copy())
    faster = torchaudio.functional.resample(segment, orig // divisor, new // divisor).numpy()
    return np.concatenate([wav[:start], faster, wav[start + length :]]).astype(np.float32)


def fade(
    waveform: np.ndarray,
    seed: int,
    *,
    fade_in_s: float,
    fade_out_s: float,
    shape: str = "linear",
) -> np.ndarray:
    """Fade-in and fade-out ramps (``torchaudio.transforms.Fade``); ``seed`` is not used."""
    wav = _check_waveform(waveform)
    half = len(wav) // 2
    fade_in = min(int(round(fade_in_s * SAMPLE_RATE)), half)
    fade_out = min(int(round(fade_out_s * SAMPLE_RATE)), half)
    import torch
    import torchaudio.transforms

    ramps = torchaudio.transforms.Fade(fade_in, fade_out, shape)
    return ramps(torch.from_numpy(wav.copy())[None])[0].numpy().astype(np.float32)


def band_mask(freqs: np.ndarray, low_hz: float, high_hz: float, edge_hz: float) -> np.ndarray:
    """1 inside [low, high], 0 beyond edge / 2 outside it, raised-cosine edges centred on both."""

    def rise(distance: np.ndarray) -> np.ndarray:  # 0 at -edge/2, 0.5 at 0, 1 at +edge/2
        x = np.clip(distance / edge_hz + 0.5, 0.0, 1.0)
        return 0.5 - 0.5 * np.cos(np.pi * x)

    return rise(freqs - low_hz) * rise(high_hz - freqs)


def telephone_band(
    waveform: np.ndarray, seed: int, *, rate: int, low_hz: float, high_hz: float
) -> np.ndarray:
    """Narrow-band telephone channel: ``rate`` Hz, ``low_hz``-``high_hz``; ``seed`` is not used."""
    wav = _check_waveform(waveform)
    if len(wav) < 2:
        return wav.copy()
    import torch
    import torchaudio.functional

    narrow = torchaudio.functional.resample(torch.from_numpy(wav.copy()), SAMPLE_RATE, rate)
    narrow = _band_limited(narrow.numpy().astype(np.float64), rate, low_hz, high_hz)
    wide = torchaudio.functional.resample(torch.from_numpy(narrow), rate, SAMPLE_RATE).numpy()
    # The band again at 16 kHz: the resampler's images of the band above rate / 2 are only
    # about 37 dB down, an ideal receiver's reconstruction filter removes them.
    return _fit_length(_band_limited(wide, SAMPLE_RATE, low_hz, high_hz), len(wav))


def _band_limited(wav: np.ndarray, rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    freqs = np.fft.rfftfreq(len(wav), d=1.0 / rate)
    mask = band_mask(freqs, low_hz, high_hz, TELEPHONE_EDGE_HZ)
    return np.fft.irfft(np.fft.rfft(wav) * mask, len(wav))


def _fit_length(wav: np.ndarray, length: int) -> np.ndarray:
    """Cropped or zero-padded at the end to ``length`` samples, float32."""
    out = np.zeros(length, dtype=np.float32)
    out[: min(length, len(wav))] = wav[:length]
    return out


def encode(waveform: np.ndarray, codec: str, compression_level: float) -> bytes:
    """The clip encoded by libsndfile as ``codec`` (mp3 or opus) at ``compression_level``."""
    container, subtype, bitrate_mode = CODECS[codec]
    buffer = io.BytesIO()
    sf.write(
        buffer,
        _check_waveform(waveform),
        SAMPLE_RATE,
        format=container,
        subtype=subtype,
        compression_level=compression_level,
        bitrate_mode=bitrate_mode,
    )
    return buffer.getvalue()


def codec_round_trip(
    waveform: np.ndarray, seed: int, *, codec: str, compression_level: float
) -> np.ndarray:
    """Encoded and decoded again, aligned to the input and of its length; ``seed`` not used."""
    wav = _check_waveform(waveform)
    if len(wav) == 0:
        return wav.copy()
    decoded, _ = sf.read(io.BytesIO(encode(wav, codec, compression_level)), dtype="float32")
    extra = len(decoded) - len(wav)
    if extra > 0:
        # Decoders that keep the encoder's delay return it as leading samples: find the lag of
        # best match within the surplus (FFT correlation) and drop it.
        size = 1 << (len(decoded) + len(wav)).bit_length()
        cross = np.fft.irfft(np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(wav, size)), size)
        decoded = decoded[int(np.argmax(cross[: extra + 1])) :]
    return _fit_length(decoded, len(wav))


# --------------------------------------------------------------------------------------------
# Kinds, conditions, registry


@dataclass(frozen=True)
class Param:
    """One parameter of a kind: its type and the values it accepts."""

    kind: type | tuple[type, ...]
    accepts: Callable[[object], bool]
    meaning: str


def _positive(x) -> bool:
    return x > 0


def _non_negative(x) -> bool:
    return x >= 0


def _share(x) -> bool:
    return 0 < x <= 1


def _level(x) -> bool:
    return 0 <= x < 1


SNR = Param((int, float), math.isfinite, "a finite number of dB")
KINDS: dict[str, tuple[Callable[..., np.ndarray], dict[str, Param]]] = {
    "noise": (
        add_coloured_noise,
        {"colour": Param(str, COLOURS.__contains__, f"one of {sorted(COLOURS)}"), "snr_db": SNR},
    ),
    "noise_file": (
        add_file_noise,
        {"folder": Param(str, bool, "a folder of noise files"), "snr_db": SNR},
    ),
    "babble": (
        add_babble,
        {
            "clips": Param((list, tuple), bool, "a non-empty list of audio paths"),
            "talkers": Param(int, _positive, "a positive whole number"),
            "snr_db": SNR,
        },
    ),
    "speedup": (
        speed_up_segment,
        {
            "factor": Param((int, float), _positive, "a positive number (1.25: 25 % faster)"),
            "span": Param((int, float), _share, "a share of the clip in (0, 1]"),
        },
    ),
    "fade": (
        fade,
        {
            "fade_in_s": Param((int, float), _non_negative, "seconds >= 0"),
            "fade_out_s": Param((int, float), _non_negative, "seconds >= 0"),
            "shape": Param(str, FADE_SHAPES.__contains__, f"one of {list(FADE_SHAPES)}"),
        },
    ),
    "telephone": (
        telephone_band,
        {
            "rate": Param(int, _positive, "a sample rate in Hz"),
            "low_hz": Param((int, float), _positive, "a frequency in Hz"),
            "high_hz": Param((int, float), _positive, "a frequency in Hz"),
        },
    ),
    "codec": (
        codec_round_trip,
        {
            "codec": Param(str, CODECS.__contains__, f"one of {sorted(CODECS)}"),
            "compression_level": Param((int, float), _level, "a number in [0, 1)"),
        },
    ),
}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def clip_seed(condition_seed: int, clip_id: str) -> int:
    """The seed of one clip under one condition: SHA-256 of both, as a 63-bit integer."""
    digest = hashlib.sha256(f"{int(condition_seed)}\0{clip_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class Condition:
    """A named perturbation: its kind, parameters and seed (build with ``make_condition``)."""

    name: str
    kind: str
    params: tuple[tuple[str, object], ...]
    seed: int = 0
    key: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "key", sha256_hex(text.encode())[:16])

    def canonical(self) -> dict:
        """Kind, seed and parameters, JSON-ready: what decides the output (the name does not).

        A babble's clip list (tens of thousands of paths) is given as its count and digest.
        """
        params = dict(self.params)
        if "clips" in params:
            listing = "\n".join(params["clips"]).encode()
            params["clips"] = {"count": len(params["clips"]), "sha256": sha256_hex(listing)}
        return {"kind": self.kind, "seed": self.seed, "params": params}

    def apply(self, waveform: np.ndarray, clip_id: str) -> np.ndarray:
        """The perturbation of one clip, seeded by ``clip_seed(self.seed, clip_id)``."""
        function, _ = KINDS[self.kind]
        return function(waveform, clip_seed(self.seed, clip_id), **dict(self.params))


def make_condition(
    name: str, kind: str, params: Mapping, seed: int = 0, key_prefix: str | None = None
) -> Condition:
    """A checked ``Condition``; errors name ``key_prefix`` (default: the name) and the parameter."""
    where = key_prefix or name
    if not isinstance(name, str) or not _NAME.match(name):
        raise PerturbationError(f"{where}: a condition name is letters, digits, _ and -")
    if kind not in KINDS:
        raise PerturbationError(f"{where}.kind: {kind!r} is not one of {sorted(KINDS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PerturbationError(f"{where}.seed: {seed!r} is not a whole number >= 0")
    spec = KINDS[kind][1]
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise PerturbationError(f"{where}.{unknown[0]}: not a parameter of {kind} ({sorted(spec)})")
    checked = {}
    for key, param in spec.items():
        if key not in params:
            raise PerturbationError(f"{where}.{key}: missing ({param.meaning})")
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, param.kind) or not param.accepts(value):
            raise PerturbationError(f"{where}.{key}: {value!r} is not {param.meaning}")
        checked[key] = tuple(str(v) for v in value) if key == "clips" else value
    if kind == "telephone" and not checked["low_hz"] < checked["high_hz"] < checked["rate"] / 2:
        raise PerturbationError(f"{where}: telephone needs low_hz < high_hz < rate / 2")
    return Condition(name, kind, tuple(sorted(checked.items())), seed)


def _registry() -> dict[str, tuple[str, dict]]:
    conditions = {}
    for snr in (20, 10, 0):
        for colour in COLOURS:
            conditions[f"noise_{colour}_snr{snr}"] = ("noise", {"colour": colour, "snr_db": snr})
        conditions[f"noise_file_snr{snr}"] = ("noise_file", {"snr_db": snr})
        conditions[f"babble_snr{snr}"] = ("babble", {"talkers": 4, "snr_db": snr})
    conditions["speedup"] = ("speedup", {"factor": 1.25, "span": 0.3})
    conditions["fade"] = ("fade", {"fade_in_s": 1.0, "fade_out_s": 1.0, "shape": "linear"})
    conditions["telephone"] = ("telephone", {"rate": 8000, "low_hz": 300, "high_hz": 3400})
    conditions["mp3_low"] = ("codec", {"codec": "mp3", "compression_level": 0.95})
    conditions["opus_low"] = ("codec", {"codec": "opus", "compression_level": 0.99})
    return conditions


#: name -> (kind, parameters); ``noise_file`` lacks its folder, ``babble`` its clips.
REGISTRY: dict[str, tuple[str, dict]] = _registry()


def conditions_from_config(
    section: Mapping, babble_clips: Sequence[str] | None = None, where: str = "robustness"
) -> list[Condition]:
    """The conditions of the config's ``robustness`` block, in its order (see the module doc)."""
    if not isinstance(section, Mapping):
        raise PerturbationError(f"{where}: expected a mapping")
    unknown = sorted(set(section) - {"seed", "noise_dir", "conditions"})
    if unknown:
        raise PerturbationError(f"{where}.{unknown[0]}: unknown key")
    entries = section.get("conditions") or {}
    if not isinstance(entries, Mapping):
        raise PerturbationError(f"{where}.conditions: expected a mapping of name: parameters")
    base_seed = section.get("seed", 0)
    conditions = []
    for name, overrides in entries.items():
        key = f"{where}.conditions.{name}"
        overrides = dict(overrides or {})
        if not isinstance(overrides, dict):
            raise PerturbationError(f"{key}: expected a mapping of parameters or null")
        kind, params = REGISTRY.get(name, (None, {}))
        kind = overrides.pop("kind", kind)
        if kind is None:
            raise PerturbationError(f"{key}.kind: missing (not a registered condition name)")
        seed = overrides.pop("seed", base_seed)
        params = {**params, **overrides}
        if kind == "noise_file" and "folder" not in params:
            if not section.get("noise_dir"):
                raise PerturbationError(f"{key}.folder: missing, and {where}.noise_dir is not set")
            params["folder"] = str(section["noise_dir"])
        if kind == "babble" and "clips" not in params:
            if not babble_clips:
                raise PerturbationError(f"{key}: babble needs clips to mix, and none were given")
            params["clips"] = list(babble_clips)
        conditions.append(make_condition(str(name), kind, params, seed, key))
    return conditions


def registered_condition(name: str, seed: int = 0, **extra) -> Condition:
    """A ``REGISTRY`` condition, ``extra`` adding or replacing parameters (a folder, clips)."""
    if name not in REGISTRY:
        raise PerturbationError(f"unknown condition {name!r}; registered: {sorted(REGISTRY)}")
    kind, params = REGISTRY[name]
    return make_condition(name, kind, {**params, **extra}, seed)


# --------------------------------------------------------------------------------------------
# Files


def to_full_scale(waveform: np.ndarray) -> np.ndarray:
    """The waveform scaled down as a whole when its peak exceeds 1 (16-bit files would clip)."""
    peak = float(np.max(np.abs(waveform))) if len(waveform) else 0.0
    return waveform / np.float32(peak) if peak > 1 else waveform


def _check_apart(root: Path, out_dir: Path) -> None:
    """The output folder neither is, nor lies in, nor holds the audio root: it is replaced
    as a whole, and the corpus is never written."""
    root_real, out_real = root.resolve(), out_dir.resolve()
    if out_real == root_real or root_real in out_real.parents or out_real in root_real.parents:
        raise PerturbationError(
            f"the output folder {out_dir} and the audio root {root} overlap: "
            "perturbed clips go to a folder of their own"
        )


def perturb_files(
    files: Sequence[str | os.PathLike],
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    condition: Condition,
) -> list[Path]:
    """Each file's perturbation, as 16-bit 16 kHz WAV at its path relative to ``root`` in
    ``out_dir`` (the relative path is the clip id), plus ``condition.json``; ``out_dir`` is
    replaced as a whole when all are written. Returns the written audio paths.
    """
    root, out_dir = Path(root), Path(out_dir)
    _check_apart(root, out_dir)
    relative = []
    for file in files:
        # Lexically normalised, not resolved: a symlinked clip keeps its name below the root.
        rel = Path(os.path.relpath(os.path.abspath(file), os.path.abspath(root)))
        if rel.parts[:1] == ("..",) or rel.is_absolute():
            raise PerturbationError(f"{file} is not below the audio root {root}")
        relative.append(rel)
    written = [rel.with_suffix(".wav") for rel in relative]
    if len(set(written)) != len(written):
        raise PerturbationError("two clips would be written to the same file (same name twice)")
    with atomic_directory(out_dir) as tmp:
        for file, rel, out in zip(files, relative, written, strict=True):
            perturbed = condition.apply(load_audio(file, SAMPLE_RATE), rel.as_posix())
            if not np.all(np.isfinite(perturbed)):
                raise PerturbationError(f"{condition.name} gave non-finite samples for {file}")
            target = tmp / out
            target.parent.mkdir(parents=True, exist_ok=True)
            sf.write(target, to_full_scale(perturbed), SAMPLE_RATE, subtype="PCM_16")
        record = {"name": condition.name, "key": condition.key, **condition.canonical()}
        atomic_write_json(tmp / CONDITION_FILE, record, sort_keys=True)
    return [out_dir / out for out in written]


def audio_files(folder: str | os.PathLike) -> list[Path]:
    """Every .wav/.flac/.ogg file below ``folder``, sorted (the input of ``perturb_folder``)."""
    return list(_audio_below(folder, "audio folder"))


def perturb_folder(
    in_dir: str | os.PathLike, out_dir: str | os.PathLike, condition: Condition
) -> list[Path]:
    """``perturb_files`` of every audio file below ``in_dir``, mirrored under ``out_dir``."""
    return perturb_files(audio_files(in_dir), in_dir, out_dir, condition)
