"""Signal degradations of 16 kHz mono audio: noise at an SNR, babble, a sped-up segment, fades,
the telephone band and lossy codecs. Each is a pure function of the waveform and its seed.
"""

from __future__ import annotations

import functools
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from medusa.core.audio import SAMPLE_RATE, load_audio

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # exponent of 1/f in the power spectrum
CODECS = {"mp3": ("MP3", "MPEG_LAYER_III", "CONSTANT"), "opus": ("OGG", "OPUS", None)}
FADE_SHAPES = ("linear", "logarithmic", "exponential", "quarter_sine", "half_sine")
TELEPHONE_EDGE_HZ = 50.0


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
