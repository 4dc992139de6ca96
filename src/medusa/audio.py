"""Audio input shared by the ASR and feature stages.

- ``load_audio(path, target_sr=16000)``: float32 mono waveform at `target_sr` (soundfile
  read, channels averaged, torchaudio resampling when the file's rate differs).
- ``read_manifest(manifest_path, subset)``: ``[(utt_id, audio_path)]`` of one subset of the
  manifest TSV (columns ``id``, ``path``, ``subset``, ...; relative paths are relative to the
  working directory, as Snakemake runs jobs from the workflow folder).

ffmpeg is not assumed anywhere: openai-whisper's and torchaudio's own loaders need it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional

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
        wav = torchaudio.functional.resample(torch.from_numpy(wav), sr, target_sr).numpy()
    return np.ascontiguousarray(wav, dtype=np.float32)


def read_manifest(manifest_path: str | os.PathLike, subset: str) -> list[tuple[str, str]]:
    """``(id, path)`` of every manifest row whose ``subset`` column equals `subset`, in file order.

    Raises ValueError naming the file for missing columns, empty fields or repeated ids.
    """
    manifest_path = Path(manifest_path)
    rows = []
    with open(manifest_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = {"id", "path", "subset"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{manifest_path}: missing column(s) {sorted(missing)}")
        seen = set()
        for line, row in enumerate(reader, start=2):
            if row["subset"] != subset:
                continue
            utt_id, audio = (row["id"] or "").strip(), (row["path"] or "").strip()
            if not utt_id or not audio:
                raise ValueError(f"{manifest_path}:{line}: empty id or path")
            if utt_id in seen:
                raise ValueError(f"{manifest_path}:{line}: id {utt_id!r} appears twice")
            seen.add(utt_id)
            rows.append((utt_id, audio))
    return rows
