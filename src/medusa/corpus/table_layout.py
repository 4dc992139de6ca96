"""The table layout: any labelled corpus described by one CSV or TSV file (``data.layout: table``).

One row per clip, or one row per annotator's vote, in ``<data.root>/<data.table>`` (delimiter
from the extension, ``.csv`` or ``.tsv``; a header row; UTF-8, a BOM allowed). Column names are
read in any case:

    path        required: the audio file, relative to the table's folder, or absolute
    partition   required: train / development (dev, valid, validation) / test, or fold
                numbers 1..k; every labelled row one style or the other
    speaker     required: empty or "Unknown" when not known (``medusa.core.manifest.is_unknown``)
    gender      optional
    id          optional: the clip id, unique per clip (default: the audio file's stem)
    act val dom optional: attribute ratings in [1, 7] (an empty cell: not rated)
    label       a class code or name (names in any case) ...
    annotator   ... with `label`: one row per vote, the clip's fields repeated on each row
    votes       or: the votes of one clip, codes or names separated by ";"

A row without a label or votes is unlabelled: it is predicted, like MSP-Podcast's Test3,
whatever its partition. ``read_table(root, table)`` reads and checks the table as a whole
(``TableError`` names the file and line: a missing column, an empty path, a repeated id, a bad
partition, both partition styles, clip fields that disagree between a clip's vote rows, a known
speaker in two partitions) and ``clip_votes(clip, classes)`` turns a clip's labels into a soft
target and consensus for a class set; labels outside the set are returned, for the data report,
never mapped.

Audio partitions (``medusa.corpus.partitions``; ASR and features run per partition and never read
labels) depend on a row's path, partition value and whether it is labelled, nothing else:
labelled rows in ``train``, ``development`` and ``test_labelled`` (split style) or all in
``labelled`` (fold style: features are extracted once for every fold), unlabelled rows in
``unlabelled``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

import numpy as np

from medusa.core.emotions import ATTRIBUTES, ClassSet
from medusa.core.manifest import is_unknown

UNLABELLED = "unlabelled"
# Audio partitions of a table's labelled rows: split style, and fold style (every fold).
SPLIT_PARTITIONS = {"train": "train", "development": "development", "test": "test_labelled"}
LABELLED = "labelled"
# Partition values of the split style (any case) -> train / development / test.
SPLIT_VALUES = {
    "train": "train",
    "development": "development",
    "dev": "development",
    "valid": "development",
    "validation": "development",
    "test": "test",
}
DELIMITERS = {".csv": ",", ".tsv": "\t"}
REQUIRED_COLUMNS = ("path", "partition", "speaker")
# A clip's fields: the same on every vote row of the clip.
CLIP_FIELDS = ("path", "partition", "speaker", "gender", "act", "val", "dom")
VOTE_SEPARATOR = ";"
SPLIT, FOLDS = "split", "folds"
STYLE_WORDS = {SPLIT: "train/development/test", FOLDS: "fold numbers"}
MAX_LISTED_SPEAKERS = 5


class TableError(ValueError):
    """A corpus table that cannot be used as a whole; the message names the file and line."""


@dataclass(slots=True)
class TableClip:
    """One clip of the table: its first row's fields and every label given for it."""

    id: str
    path: str  # relative to data.root (normalised), or absolute
    line: int  # the clip's first row
    split: str  # train / development / test, a fold ("3"), or "" when unlabelled
    cells: tuple[str, ...]  # its CLIP_FIELDS cells as written (stripped)
    labels: list[tuple[str, int]] = field(default_factory=list)  # (label as written, line)

    @property
    def speaker(self) -> str:
        return self.cells[2]

    @property
    def gender(self) -> str:
        return self.cells[3]

    @property
    def attributes(self) -> dict[str, str]:
        """act, val, dom as written ("" when not rated)."""
        return dict(zip(ATTRIBUTES, self.cells[4:], strict=True))

    def audio_partition(self, style: str) -> str:
        """The audio partition of the clip in a table of partition `style` (split / folds)."""
        if not self.labels:
            return UNLABELLED
        return LABELLED if style == FOLDS else SPLIT_PARTITIONS[self.split]


@dataclass
class Table:
    """A checked corpus table (``read_table``)."""

    file: Path  # the table file
    clips: list[TableClip]  # in the order of their first row
    style: str  # SPLIT or FOLDS ("" when no row is labelled)
    folds: tuple[str, ...]  # fold values in natural order (fold style), else ()
    rows: int
    votes: int  # labels and votes given, whatever their class
    duplicate_votes: list[str]  # "file:line: id annotator" of repeated (clip, annotator) rows

    @property
    def name(self) -> str:
        return self.file.name


def table_file(root: str | os.PathLike, table: str | None) -> Path:
    """The table's file, `table` relative to data.root; a TableError naming data.table when
    it is not set, has no .csv/.tsv extension or does not exist."""
    if not table:
        raise TableError("data.table: data.layout is table, but no table file is set")
    path = Path(root) / table
    if path.suffix.lower() not in DELIMITERS:
        raise TableError(f"data.table: {table!r} must end in .csv or .tsv")
    if not path.is_file():
        raise TableError(f"{path}: table not found (data.table: {table!r})")
    return path


def _split_of(value: str) -> str | None:
    """train / development / test, a fold as a canonical number ("03" -> "3"), or None."""
    split = SPLIT_VALUES.get(value.lower())
    if split is not None:
        return split
    if value.isdigit() and int(value) > 0:
        return str(int(value))
    return None


def read_table(root: str | os.PathLike, table: str | None) -> Table:
    """Read and check the corpus table (module docstring); raises TableError."""
    path = table_file(root, table)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=DELIMITERS[path.suffix.lower()])
        header = [c.strip().lower() for c in next(reader, [])]
        rows = _Rows(path, _column_positions(path, header), os.path.dirname(table))
        width = len(header)
        for row in reader:
            cells = [c.strip() for c in row]
            if any(cells):
                if len(cells) < width:
                    cells += [""] * (width - len(cells))
                cells.append("")  # what an absent optional column reads (position -1)
                rows.add(cells, reader.line_num)
    clips = list(rows.clips.values())
    _check_speakers(path, clips)
    folds = ()
    if rows.style == FOLDS:
        folds = tuple(sorted({c.split for c in clips if c.labels}, key=int))
    return Table(path, clips, rows.style, folds, rows.count, rows.votes, rows.duplicates)


def _column_positions(path: Path, header: list[str]) -> dict[str, int]:
    """Column name -> position; TableError for a missing required column or label source."""
    repeated = sorted({c for c in header if c and header.count(c) > 1})
    if repeated:
        raise TableError(f"{path}:1: column(s) {repeated} appear twice")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise TableError(f"{path}:1: missing column(s) {missing}; found {header}")
    if "label" not in header and "votes" not in header:
        raise TableError(
            f"{path}:1: no label column: add `label` (one label per clip, or one vote per row "
            f"with `annotator`) or `votes` (votes separated by ';'); found {header}"
        )
    if "label" in header and "votes" in header:
        raise TableError(f"{path}:1: both `label` and `votes` columns: keep one")
    if "annotator" in header and "label" not in header:
        raise TableError(
            f"{path}:1: an `annotator` column needs a `label` column (one vote per row)"
        )
    return {name: i for i, name in enumerate(header) if name}


class _Rows:
    """The clips of the rows read so far, and what checking them needs (the partition style,
    which annotators voted). Rows are lists of stripped cells, "" last (absent columns)."""

    def __init__(self, path: Path, at: dict[str, int], base: str):
        self.path = path
        self.base = base  # the table's folder, relative to data.root
        # One C call per row fetches every cell the reader needs (-1: the trailing "").
        self.cells_of = itemgetter(*(at.get(c, -1) for c in ("id", "label", "votes", "annotator")))
        self.clip_cells_of = itemgetter(*(at.get(c, -1) for c in CLIP_FIELDS))
        self.per_vote = "annotator" in at
        self.vote_column = "votes" in at
        self.clips: dict[str, TableClip] = {}
        self.splits: dict[str, str | None] = {}  # partition value -> split (a handful)
        self.style = ""
        self.style_line = 0
        self.count = self.votes = 0
        self.duplicates: list[str] = []
        self.voted: set[tuple[str, str]] = set()  # (clip id, annotator) of one-vote rows

    def add(self, row: list[str], line: int) -> None:
        """One row: a new clip, or (one row per vote) one more vote of a known clip."""
        self.count += 1
        clip_id, label, votes, annotator = self.cells_of(row)
        cells = self.clip_cells_of(row)
        path = cells[0]
        if not path:
            raise TableError(f"{self.path}:{line}: empty path")
        clip_id = clip_id or os.path.splitext(os.path.basename(path))[0]
        if self.vote_column:
            labels = [v.strip() for v in votes.split(VOTE_SEPARATOR) if v.strip()]
        else:
            labels = [label] if label else []
        split = self._split(cells[1], line) if labels else ""
        clip = self.clips.get(clip_id)
        if clip is None:
            full = os.path.normpath(os.path.join(self.base, path) if self.base else path)
            clip = self.clips[clip_id] = TableClip(clip_id, full, line, split, cells)
        elif not self.per_vote:
            raise TableError(
                f"{self.path}:{line}: id {clip_id!r} appears twice (first at line {clip.line}); "
                "ids default to the audio file's stem: add an `id` column to tell clips apart"
            )
        else:
            self._same_clip(clip, cells, line)
            clip.split = clip.split or split
        if labels and self.per_vote:
            if annotator and (clip_id, annotator) in self.voted:
                self.duplicates.append(f"{self.path.name}:{line}: {clip_id} {annotator}")
                return
            self.voted.add((clip_id, annotator))
        clip.labels += [(label, line) for label in labels]
        self.votes += len(labels)

    def _split(self, partition: str, line: int) -> str:
        """The split of a labelled row's partition value, checked (value, one style)."""
        if partition not in self.splits:
            self.splits[partition] = _split_of(partition)
        split = self.splits[partition]
        if split is None:
            raise TableError(
                f"{self.path}:{line}: partition {partition!r} of a labelled row is not train, "
                "development (dev, valid, validation), test or a fold number 1, 2, ..."
            )
        style = FOLDS if split.isdigit() else SPLIT
        if not self.style:
            self.style, self.style_line = style, line
        elif style != self.style:
            raise TableError(
                f"{self.path}:{line}: partition {partition!r} mixes the two styles (line "
                f"{self.style_line} uses {STYLE_WORDS[self.style]}): use train/development/test "
                "or fold numbers for every labelled row"
            )
        return split

    def _same_clip(self, clip: TableClip, cells: tuple[str, ...], line: int) -> None:
        """The vote rows of one clip repeat its fields (partition in any case)."""
        differ = [
            (name, first, now)
            for name, first, now in zip(CLIP_FIELDS, clip.cells, cells, strict=True)
            if first != now and not (name == "partition" and first.lower() == now.lower())
        ]
        if differ:
            shown = ", ".join(f"{name} {first!r} vs {now!r}" for name, first, now in differ)
            raise TableError(
                f"{self.path}:{line}: the rows of clip {clip.id!r} (lines {clip.line} and "
                f"{line}) disagree: {shown}; every row of a clip repeats its fields"
            )


def _check_speakers(path: Path, clips: list[TableClip]) -> None:
    """A known speaker in two partitions of labelled rows: a TableError listing up to 5."""
    seen: dict[str, dict[str, int]] = {}  # speaker -> split -> its first line
    for clip in clips:
        if clip.labels:
            seen.setdefault(clip.speaker, {}).setdefault(clip.split, clip.line)
    crossing = sorted(s for s, splits in seen.items() if len(splits) > 1 and not is_unknown(s))
    if not crossing:
        return
    listed = "; ".join(
        f"{speaker!r} in "
        + ", ".join(f"{split} (line {line})" for split, line in seen[speaker].items())
        for speaker in crossing[:MAX_LISTED_SPEAKERS]
    )
    more = (
        f" (+{len(crossing) - MAX_LISTED_SPEAKERS} more)"
        if len(crossing) > MAX_LISTED_SPEAKERS
        else ""
    )
    raise TableError(
        f"{path}: {len(crossing)} speaker(s) in more than one partition: {listed}{more}; "
        "partitions must be speaker-independent (a speaker's clips all in one partition)"
    )


def held_out_fold(fold: str | int | None, folds: tuple[str, ...], table: str | None) -> str | None:
    """The held-out fold (``data.fold``) as the table writes it, checked against the table's
    `folds` (empty: a split-style table, which takes no fold); TableError naming data.fold."""
    if not folds:
        if fold is not None:
            raise TableError(
                f"data.fold: {fold!r} is set, but the table {table!r} has no folds (its "
                "partitions are train/development/test); leave data.fold empty (null)"
            )
        return None
    found = ", ".join(folds)
    if fold is None:
        raise TableError(
            f"data.fold: the table {table!r} has folds {found}: set data.fold to the fold "
            "held out for evaluation (the recipe runs once per fold)"
        )
    text = str(fold).strip()
    canonical = str(int(text)) if text.isdigit() else text
    if canonical not in folds:
        raise TableError(
            f"data.fold: {fold!r} is not a fold of the table {table!r} (folds: {found})"
        )
    return canonical


def clip_votes(clip: TableClip, classes: ClassSet) -> tuple[np.ndarray | None, str, list]:
    """(soft target, consensus, labels outside the class set) of a labelled clip.

    Soft target: in-set votes per class / in-set votes (one label: one-hot); consensus: the
    plurality class, "X" on a tie, "O" (and no soft target) when no vote is in the set.
    Outside labels come back as ``(label, line)``, counted for none, never mapped.
    """
    counts = np.zeros(len(classes))
    outside = []
    for label, line in clip.labels:
        letter = classes.letter_of(label)
        if letter is None:
            outside.append((label, line))
        else:
            counts[classes.index(letter)] += 1
    total = counts.sum()
    if total == 0:
        return None, "O", outside
    top = np.flatnonzero(counts == counts.max())
    consensus = classes.letters[top[0]] if len(top) == 1 else "X"
    return counts / total, consensus, outside
