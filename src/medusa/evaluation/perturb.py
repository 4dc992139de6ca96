"""Named, seeded perturbations of 16 kHz mono audio, for measuring robustness beyond clean dev.

Each perturbation is a pure function ``f(waveform, seed, **params) -> waveform`` of a float32
mono waveform at 16 kHz (``medusa.core.audio.SAMPLE_RATE``), returning float32 at the same rate;
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
folder replaced atomically (``medusa.core.atomic.atomic_directory``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from medusa.core.atomic import atomic_directory, atomic_write_json
from medusa.core.audio import SAMPLE_RATE, load_audio
from medusa.evaluation.degrade import (
    CODECS,
    COLOURS,
    FADE_SHAPES,
    PerturbationError,
    _audio_below,
    add_babble,
    add_coloured_noise,
    add_file_noise,
    codec_round_trip,
    fade,
    speed_up_segment,
    telephone_band,
)

CONDITION_FILE = "condition.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


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
