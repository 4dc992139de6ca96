"""A recording read in pieces, so that memory does not grow with its length.

``read_range(info, start, end)`` gives samples [start, end) of a file at 16 kHz mono exactly as
``medusa.core.audio.load_audio`` gives them for the whole file (channels averaged, then torchaudio's
resampling), while reading only that range plus a margin: at 16 kHz the range itself; at
another rate a range that starts on a resampling period (so each output sample is computed from
the same input samples with the same filter phase as in the whole file) with a margin wider
than the resampling filter, trimmed off afterwards. ``blocks`` walks a whole file that way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional

from medusa.core.audio import SAMPLE_RATE, AudioError

# Resampling margin (output seconds): torchaudio's default filter (6 zero crossings, rolloff
# 0.99) spans about 6 input periods of the lower rate, far less than this.
MARGIN_S = 0.05


@dataclass(frozen=True)
class AudioInfo:
    """A file's header: its native rate and frames, and its length at the target rate."""

    path: Path
    rate: int
    frames: int
    target_rate: int = SAMPLE_RATE

    @property
    def samples(self) -> int:
        """Length at the target rate (torchaudio's output length: ceil(new * n / orig))."""
        if self.rate == self.target_rate:
            return self.frames
        return math.ceil(self.target_rate * self.frames / self.rate)


def audio_info(path: str | os.PathLike, target_rate: int = SAMPLE_RATE) -> AudioInfo:
    """The header of `path` (AudioError, naming the file, if it cannot be read)."""
    path = Path(path)
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises several types for corrupt files
        raise AudioError(f"cannot read audio file {path}: {err}") from err
    return AudioInfo(path, int(info.samplerate), int(info.frames), target_rate)


def _read_mono(path: Path, start: int, stop: int) -> np.ndarray:
    try:
        data = sf.read(path, start=start, stop=stop, dtype="float32", always_2d=True)[0]
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"cannot read audio file {path}: {err}") from err
    return data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]


def read_range(info: AudioInfo, start: int, end: int) -> np.ndarray:
    """Samples [start, end) at the target rate, float32 mono (see the module docstring)."""
    start, end = max(0, start), min(end, info.samples)
    if end <= start:
        return np.zeros(0, dtype=np.float32)
    if info.rate == info.target_rate:
        return np.ascontiguousarray(_read_mono(info.path, start, end), dtype=np.float32)
    common = math.gcd(info.rate, info.target_rate)
    period_in, period_out = info.rate // common, info.target_rate // common
    margin = math.ceil(MARGIN_S * info.target_rate)
    # Output sample j is computed around input j * period_in / period_out: start on a period.
    out_start = max(0, start - margin) // period_out * period_out
    in_start = out_start // period_out * period_in
    in_stop = min(info.frames, math.ceil((end + margin) * period_in / period_out) + 1)
    wav = _read_mono(info.path, in_start, in_stop)
    resampled = torchaudio.functional.resample(
        torch.from_numpy(np.ascontiguousarray(wav)), info.rate, info.target_rate
    ).numpy()
    return np.ascontiguousarray(resampled[start - out_start : end - out_start], dtype=np.float32)


def blocks(info: AudioInfo, block_s: float) -> Iterator[tuple[int, np.ndarray]]:
    """(start, samples) of consecutive blocks of `block_s` seconds covering the whole file."""
    size = max(1, round(block_s * info.target_rate))
    for start in range(0, info.samples, size):
        yield start, read_range(info, start, min(start + size, info.samples))
