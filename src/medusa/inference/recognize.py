"""What `medusa predict` reads and writes: the audio files found under the paths it is given,
the segment, summary, gap and skipped tables of a run (``Predictions``), and the files they go
to. The recognition itself: ``medusa.inference.recognizer.Recognizer``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from medusa.core.emotions import ATTRIBUTES, ClassSet

# Extensions searched for in folders: what this libsndfile reads (mp3 needs libsndfile >= 1.1).
_FORMAT_EXTENSIONS = {
    "WAV": ("wav",),
    "WAVEX": ("wav",),
    "FLAC": ("flac",),
    "OGG": ("ogg", "oga", "opus"),
    "MP3": ("mp3",),
    "AIFF": ("aiff", "aif", "aifc"),
    "CAF": ("caf",),
    "W64": ("w64",),
    "RF64": ("rf64",),
    "AU": ("au", "snd"),
}
AUDIO_EXTENSIONS = frozenset(
    ext for fmt, exts in _FORMAT_EXTENSIONS.items() if fmt in sf.available_formats() for ext in exts
)
SKIPPED_COLUMNS = ["file", "reason"]
GAP_COLUMNS = ["file", "start_s", "end_s"]
# Gaps shorter than this (the pauses between turns cut from one stretch of speech) are not listed.
MIN_GAP_S = 0.1


def summary_columns(classes: ClassSet) -> list[str]:
    return ["file", "duration_s", "segments", "emotion", *classes.letters, *ATTRIBUTES]


@dataclass
class Predictions:
    """What `Recognizer.predict` returns (see segment_columns, summary_columns)."""

    segments: pd.DataFrame  # one row per segment
    summary: pd.DataFrame  # one row per predicted file: duration-weighted posteriors
    skipped: pd.DataFrame  # file, reason
    gaps: pd.DataFrame  # file, start_s, end_s: what no segment covers (VAD: no speech)
    classes: ClassSet  # the posterior columns' codes and names
    calibration: str = "uncalibrated"  # how the posteriors were calibrated (``calibration_note``)

    def __iter__(self):  # segments, summary = recognizer.predict(paths)
        return iter((self.segments, self.summary))


# --------------------------------------------------------------------------------------------
# Inputs


def find_audio(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """(audio files, sorted and without duplicates; [(path, reason)] of arguments that are
    neither a file nor a folder). Folders are searched recursively for AUDIO_EXTENSIONS; files
    named explicitly are taken whatever their extension."""
    found: dict[Path, Path] = {}
    missing = []
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            for sub in sorted(path.rglob("*")):
                if sub.is_file() and sub.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS:
                    found.setdefault(sub.resolve(), sub)
        elif path.is_file():
            found.setdefault(path.resolve(), path)
        else:
            missing.append((str(path), "not found"))
    return sorted(found.values(), key=str), missing


def summarise(
    segments: pd.DataFrame, durations: Mapping[str, float] | None, classes: ClassSet
) -> pd.DataFrame:
    """Per file: duration (from `durations`, else the end of its last segment), number of
    segments, duration-weighted posteriors and attributes, and the class of the weighted
    posteriors."""
    durations = durations or {}
    letters = list(classes.letters)
    rows = []
    for file, group in segments.groupby("file", sort=False):
        weights = (group["end_s"] - group["start_s"]).to_numpy(dtype=np.float64)
        if weights.sum() <= 0:
            weights = np.ones(len(group))
        probs = np.average(group[letters].to_numpy(np.float64), axis=0, weights=weights)
        attrs = np.average(group[list(ATTRIBUTES)].to_numpy(np.float64), axis=0, weights=weights)
        rows.append(
            {
                "file": file,
                "duration_s": float(durations.get(file, group["end_s"].max())),
                "segments": len(group),
                "emotion": letters[int(probs.argmax())],
                **dict(zip(letters, probs, strict=True)),
                **dict(zip(ATTRIBUTES, attrs, strict=True)),
            }
        )
    return pd.DataFrame(rows, columns=summary_columns(classes))


def output_paths(output: str | os.PathLike) -> dict[str, Path]:
    """The segment table and what is written next to it."""
    output = Path(output)
    stem = output.with_suffix("") if output.suffix else output
    return {
        "segments": output,
        "summary": stem.with_name(stem.name + ".summary.csv"),
        "skipped": stem.with_name(stem.name + ".skipped.csv"),
        "gaps": stem.with_name(stem.name + ".gaps.csv"),
        "timelines": stem.with_name(stem.name + ".timelines"),
        "html": stem.with_name(stem.name + ".html"),
    }


def write_predictions(
    predictions: Predictions,
    output: str | os.PathLike,
    fmt: str = "csv",
    timelines: bool = False,
    html: bool = False,
    title: str = "",
) -> dict[str, Path]:
    """Write the segments (CSV or JSON lines), the per-file summary, the skipped files and the
    gaps (always, so an old file never lingers); with `timelines` a PNG per file
    (``medusa.inference.timeline``), with `html` one self-contained page; atomically. Returns the
    paths written."""
    from medusa.core.atomic import atomic_write_text

    paths = output_paths(output)
    paths["segments"].parent.mkdir(parents=True, exist_ok=True)
    segments = predictions.segments.copy()
    for column in ("start_s", "end_s"):
        segments[column] = segments[column].astype(float).round(3)
    if fmt == "csv":
        text = segments.to_csv(index=False, float_format="%.6f")
    elif fmt == "jsonl":
        text = segments.to_json(orient="records", lines=True, double_precision=6, force_ascii=False)
        if text and not text.endswith("\n"):
            text += "\n"
    else:
        raise ValueError(f"format must be csv or jsonl, got {fmt!r}")
    atomic_write_text(paths["segments"], text)
    summary = predictions.summary.copy()
    summary["duration_s"] = summary["duration_s"].astype(float).round(3)
    atomic_write_text(paths["summary"], summary.to_csv(index=False, float_format="%.6f"))
    atomic_write_text(paths["skipped"], predictions.skipped.to_csv(index=False))
    gap_table = predictions.gaps.copy()
    for column in ("start_s", "end_s"):
        gap_table[column] = gap_table[column].astype(float).round(3)
    atomic_write_text(paths["gaps"], gap_table.to_csv(index=False))
    written = {k: paths[k] for k in ("segments", "summary", "skipped", "gaps")}
    if timelines or html:
        from medusa.inference.timeline import timeline_pngs, write_html, write_timelines

        pngs = timeline_pngs(predictions)
        if timelines:
            written["timelines"] = write_timelines(pngs, predictions, paths["timelines"])
        if html:
            written["html"] = write_html(predictions, pngs, paths["html"], title)
    return written


def real_time_factor(seconds: float, audio_seconds: float) -> float:
    """Processing time per second of audio (below 1: faster than real time)."""
    return seconds / audio_seconds if audio_seconds > 0 else math.nan


def segment_columns(classes: ClassSet) -> list[str]:
    """Columns of the segment table: the posteriors are the bundle's class codes."""
    return ["file", "start_s", "end_s", "transcript", "emotion", *classes.letters, *ATTRIBUTES]
