"""An audio partition's index: one row per clip with its path and duration, written by the
workflow's audio-index rule and read by ASR and features.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from medusa.core.atomic import atomic_write_text
from medusa.core.emotions import ATTRIBUTES, CLASS_LETTERS
from medusa.core.manifest import manifest_columns
from medusa.corpus.partitions import (
    INDEX_COLUMNS,
    MSP_PODCAST,
    TEST,
    TEST3_MARKER,
    PartitionError,
    audio_partitions,
)
from medusa.corpus.table_layout import UNLABELLED


def _header(path: Path) -> tuple[dict, str]:
    """(duration/rate/channels, problem) of one audio file; problem is '' when usable."""
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises several types for corrupt files
        return {}, f"unreadable audio: {err}"
    if info.frames == 0:
        return {}, "empty audio"
    return {
        "duration_s": round(info.frames / info.samplerate, 4),
        "sample_rate": info.samplerate,
        "channels": info.channels,
    }, ""


def build_audio_index(
    root: str | os.PathLike,
    partition: str,
    *,
    layout: str = MSP_PODCAST,
    table: str | None = None,
) -> pd.DataFrame:
    """The clip table of one partition (every file, unusable ones with their problem)."""
    root = Path(root)
    files = audio_partitions(root, layout=layout, table=table).get(partition, [])
    rows = []
    for audio in files:
        header, problem = _header(root / audio.path)
        rows.append(
            {"id": audio.id, "path": audio.path, "partition": partition, **header,
             "problem": problem}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=INDEX_COLUMNS)


def format_index_report(
    index: pd.DataFrame, partition: str, examples: int = 5, layout: str = MSP_PODCAST
) -> str:
    """Markdown summary of a partition's audio: counts, hours, and every file left out."""
    usable = index[index["problem"] == ""]
    lines = [
        f"# Audio partition `{partition}`",
        "",
        f"Files: {len(index)}; usable: {len(usable)}; hours: "
        f"{usable['duration_s'].sum() / 3600:.3f}.",
        "",
    ]
    notes: dict[str, list[str]] = defaultdict(list)
    for row in index.itertuples():
        if row.problem:
            notes[row.problem.split(":")[0] + " (left out)"].append(f"{row.id}: {row.problem}")
        elif row.sample_rate != 16000:
            notes["resampled on read"].append(f"{row.id}: {row.sample_rate} Hz")
        if not row.problem and row.channels != 1:
            notes["downmixed on read"].append(f"{row.id}: {row.channels} channels")
        if layout == MSP_PODCAST and partition == UNLABELLED and TEST3_MARKER not in row.id.lower():
            notes["unlabelled, no test3 marker (predicted as test)"].append(row.id)
    lines += ["| note | count | examples |", "|---|---|---|"] if notes else ["No problems."]
    for kind, found in sorted(notes.items()):
        shown = "; ".join(s.replace("|", "/") for s in found[:examples])
        more = f" (+{len(found) - examples} more)" if len(found) > examples else ""
        lines.append(f"| {kind} | {len(found)} | {shown}{more} |")
    return "\n".join(lines) + "\n"


def write_audio_index(
    root: str | os.PathLike,
    partition: str,
    index_path: str | os.PathLike,
    report_path: str | os.PathLike,
    *,
    layout: str = MSP_PODCAST,
    table: str | None = None,
) -> pd.DataFrame:
    """The `audio_index` stage: the partition's clip table and report, written atomically."""
    index = build_audio_index(root, partition, layout=layout, table=table)
    atomic_write_text(index_path, index.to_csv(sep="\t", index=False, na_rep=""))
    atomic_write_text(report_path, format_index_report(index, partition, layout=layout))
    return index


def read_audio_index(path: str | os.PathLike) -> pd.DataFrame:
    """A partition's clip table as written by `write_audio_index` (checked columns)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio index not found: {path}")
    index = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise PartitionError(f"{path}: missing column(s) {missing}")
    for column in ("duration_s", "sample_rate", "channels"):
        index[column] = pd.to_numeric(index[column].replace("", np.nan))
    return index


def clip_paths(index_path: str | os.PathLike, root: str | os.PathLike) -> list[tuple[str, str]]:
    """``(id, audio path)`` of every usable clip of a partition, in id order; the index's
    paths are relative to the corpus folder `root` (data.root)."""
    index = read_audio_index(index_path)
    usable = index[index["problem"] == ""].sort_values("id", kind="stable")
    paths = [os.path.join(root, p) for p in usable["path"]]
    return list(zip(usable["id"].tolist(), paths, strict=True))


def unlabelled_manifest(
    index_path: str | os.PathLike, classes: Sequence[str] = CLASS_LETTERS
) -> pd.DataFrame:
    """The usable clips of the unlabelled partition as manifest rows of subset `test`, with
    the class columns of `classes` (codes)."""
    index = read_audio_index(index_path)
    rows = index[index["problem"] == ""].sort_values("id", kind="stable").copy()
    rows["subset"] = TEST
    rows["speaker"] = "Unknown"
    rows["gender"] = ""
    rows["emo_class"] = ""
    for column in (*classes, *ATTRIBUTES):
        rows[column] = np.nan
    manifest = rows.reindex(columns=manifest_columns(classes)).reset_index(drop=True)
    manifest.attrs["path"] = str(index_path)
    return manifest
