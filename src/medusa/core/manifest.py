"""The manifest: the one table of clips that the data stage writes and every later stage reads.

A tab-separated file, one row per audio clip, with the columns MANIFEST_COLUMNS:

    id, path, subset           clip id (the audio file's stem), audio path (relative to the
                               corpus folder, data.root), train/holdout/dev/test
    speaker, gender            "Unknown" / "" when not known (``is_unknown``)
    duration_s, sample_rate, channels
    emo_class                  consensus code (a class of the run's class set, O: other,
                               X: no agreement) or "" (none)
    <one column per class>     soft target (votes per class / votes), empty when there is none;
                               MSP-Podcast's A S H U F D C N by default (``medusa.core.emotions``)
    act val dom                mean attribute ratings in [1, 7], empty when missing

Every column that is not one of TEXT_COLUMNS is a number; the class columns are the ones
between ``emo_class`` and ``act`` (``manifest_classes``), so a manifest names its class set.

- ``read_manifest(path, required=BASE_COLUMNS)``: the table as a DataFrame (text columns
  as strings, so "N" and ids like "0001" survive; empty numbers as NaN), checked: the file
  exists, has the `required` columns, and every row has an id and a path, with ids unique.
  Errors name the file (and the line).
- ``write_manifest(manifest, path)``: atomic, full float precision, empty cells for NaN.
- ``subset_paths(path, subset, root="")``: ``[(id, audio path)]`` of one subset in file order (ASR and
  feature stages, which need no labels).
- ``manifest_columns(classes)``: the columns of a manifest of a class set;
  ``manifest_classes(manifest)``: the class codes of a manifest read back.
- ``consensus_labels(letters, classes)``: which clips are scored (a consensus in the class set)
  and their class indices.
- ``is_unknown(label)``: whether a speaker or gender label means "not known"; the one rule of
  the library (the split, the data report, the bootstrap and the fairness tables use it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medusa.core.atomic import atomic_write_text
from medusa.core.emotions import ATTRIBUTES, CLASS_LETTERS

# The columns every manifest has, whatever its class set; the class columns follow emo_class.
CLIP_COLUMNS = [
    "id",
    "path",
    "subset",
    "speaker",
    "gender",
    "duration_s",
    "sample_rate",
    "channels",
]
BASE_COLUMNS = [*CLIP_COLUMNS, "emo_class", *ATTRIBUTES]
# Read as text; every other column is a number (empty cells: NaN).
TEXT_COLUMNS = ("id", "path", "subset", "speaker", "gender", "emo_class")


def manifest_columns(classes: Sequence[str] = CLASS_LETTERS) -> list[str]:
    """The manifest's columns for a class set (its codes, in order)."""
    return [*CLIP_COLUMNS, "emo_class", *classes, *ATTRIBUTES]


# The MSP-Podcast manifest (the default class set).
MANIFEST_COLUMNS = manifest_columns()
# What the stages that only read audio need.
AUDIO_COLUMNS = ("id", "path", "subset")


def manifest_classes(manifest: pd.DataFrame) -> tuple[str, ...]:
    """The class codes of a manifest: its columns between emo_class and the attributes."""
    columns = list(manifest.columns)
    if "emo_class" not in columns:
        raise ManifestError(f"{manifest.attrs.get('path', 'manifest')}: no emo_class column")
    after = columns[columns.index("emo_class") + 1 :]
    return tuple(c for c in after if c not in BASE_COLUMNS)


# Speaker and gender labels (any case, stripped) that mean "not known" (``is_unknown``), and
# how the manifest writes them.
UNKNOWN_LABELS = frozenset({"", "unknown", "nan", "none"})
UNKNOWN_SPEAKER, UNKNOWN_GENDER = "Unknown", ""


def is_unknown(label: object) -> bool:
    """Whether a speaker or gender label means "not known": None, NaN, or "", "Unknown",
    "nan", "None" in any case and with any surrounding blanks."""
    if label is None:
        return True
    if isinstance(label, float | np.floating):
        return bool(np.isnan(label))
    if isinstance(label, str | np.str_):
        return label.strip().lower() in UNKNOWN_LABELS
    return False


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file (and line)."""


def read_manifest(path: str | os.PathLike, required: Sequence[str] = BASE_COLUMNS) -> pd.DataFrame:
    """Read and check a manifest TSV (module docstring); ``attrs["path"]`` names its file.

    `required`: the columns the caller needs (``id`` always). Other columns are kept as read:
    TEXT_COLUMNS as strings, every other column as numbers with NaN for empty cells.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    # Everything as text first ("N" for Neutral and ids like "0001" must stay as written), and
    # blank lines kept, so that a row's index still gives its line in the file.
    manifest = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, skip_blank_lines=False)
    missing = [c for c in dict.fromkeys(["id", *required]) if c not in manifest.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; found {list(manifest.columns)}")
    manifest = manifest[~(manifest == "").all(axis=1)]
    line = manifest.index.to_numpy() + 2  # 1-based, after the header line

    def where(rows: pd.Series) -> str:
        """`file:line` of the first row of the boolean mask `rows`."""
        return f"{path}:{line[int(np.argmax(rows.to_numpy()))]}"

    for column in ("id", "path"):
        if column in manifest.columns:
            manifest[column] = manifest[column].str.strip()
            empty = manifest[column] == ""
            if empty.any():
                raise ManifestError(f"{where(empty)}: empty {column}")
    repeated = manifest["id"].duplicated()
    if repeated.any():
        utt_id = manifest["id"][repeated].iloc[0]
        raise ManifestError(f"{where(repeated)}: id {utt_id!r} appears twice")
    for column in manifest.columns:
        if column not in TEXT_COLUMNS:
            text = manifest[column].str.strip()
            empty = text.isin(["", "nan", "NaN"])
            values = pd.to_numeric(text.mask(empty), errors="coerce")
            bad = values.isna() & ~empty
            if bad.any():
                utt_id, value = manifest["id"][bad].iloc[0], text[bad].iloc[0]
                raise ManifestError(
                    f"{where(bad)}: {column} of {utt_id!r} is not a number: {value!r}"
                )
            manifest[column] = values
    manifest = manifest.reset_index(drop=True)
    manifest.attrs["path"] = str(path)
    return manifest


def write_manifest(manifest: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the manifest TSV atomically (soft targets with full float precision)."""
    atomic_write_text(path, manifest.to_csv(sep="\t", index=False, na_rep=""))


def subset_paths(
    path: str | os.PathLike, subset: str, root: str | os.PathLike = ""
) -> list[tuple[str, str]]:
    """``(id, audio path)`` of every row of `subset`, in file order.

    Relative audio paths are taken relative to `root`: the corpus folder (data.root) for the
    workflow's manifest, whose paths are relative to it; by default the working directory.
    """
    manifest = read_manifest(path, required=AUDIO_COLUMNS)
    rows = manifest[manifest["subset"] == subset]
    paths = [os.path.join(root, p) for p in rows["path"]]
    return list(zip(rows["id"].tolist(), paths, strict=True))


def consensus_labels(
    letters: Sequence[str] | np.ndarray | pd.Series, classes: Sequence[str] = CLASS_LETTERS
) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the clips whose consensus is one of `classes`, their class indices).

    These are the clips the challenge scores: X, O and unlabelled clips are left out.
    """
    letters = np.asarray(letters, dtype=object)
    keep = np.isin(letters, list(classes))
    index = {letter: i for i, letter in enumerate(classes)}
    return keep, np.array([index[c] for c in letters[keep]], dtype=np.int64)
