"""Audio input shared by the ASR and feature stages.

- ``load_audio(path, target_sr=16000)``: float32 mono waveform at `target_sr` (soundfile
  read, channels averaged, torchaudio resampling when the file's rate differs).

Which clips to read comes from the manifest: ``medusa.core.manifest.subset_paths``.

ffmpeg is not assumed anywhere: openai-whisper's and torchaudio's own loaders need it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file."""


def load_audio(path: str | os.PathLike, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read `path` as float32 mono at `target_sr` Hz, shape ``[samples]``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"cannot read audio file {path}: {err}") from err
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sr != target_sr and len(wav) > 0:
        import torch  # imported here: the workflow's parse reads SAMPLE_RATE, never torch
        import torchaudio.functional

        wav = torchaudio.functional.resample(torch.from_numpy(wav), sr, target_sr).numpy()
    return np.ascontiguousarray(wav, dtype=np.float32)
