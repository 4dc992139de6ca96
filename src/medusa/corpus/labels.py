"""The corpus's labels (docs/method.md, 1.2): annotators' votes read and checked, turned into
soft targets, and the problems found in them.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medusa.core.emotions import (
    CLASS_LETTERS,
    CLASS_NAMES,
    MSP_PODCAST_CLASSES,
    NAME_TO_LETTER,
    ClassSet,
)

CONSENSUS_COLUMNS = [
    "FileName",
    "EmoClass",
    "EmoAct",
    "EmoVal",
    "EmoDom",
    "SpkrID",
    "Gender",
    "Split_Set",
]
DETAILED_STRING_COLUMNS = ["FileName", "EmoDetail"]
DETAILED_V2_COLUMNS = ["FileName", "WorkerID", "EmoClass_Major", "EmoClass_Second"]

# `WORKER<id>; <Primary>; <Secondary,...>; A:<x>; V:<x>; D:<x>;` -- the primary is free text for
# Other-* votes, so the worker is split off the front and the ratings off the back.
_RATINGS_TAIL = re.compile(
    r";\s*A:\s*(?P<A>[^;]*?)\s*;\s*V:\s*(?P<V>[^;]*?)\s*;\s*D:\s*(?P<D>[^;]*?)\s*;?\s*$"
)


class DataError(ValueError):
    """A corpus file is unusable as a whole (missing, wrong columns): names the file."""


@dataclass
class Vote:
    file: str
    worker: str
    primary: str  # a class letter, "Other" or the raw unknown string
    known: bool  # False when the primary string is outside the vocabulary


@dataclass
class Problems:
    """Problems found while reading the corpus: kind -> list of example strings (all kept)."""

    items: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, example: str) -> None:
        self.items[kind].append(example)

    def count(self, kind: str) -> int:
        return len(self.items.get(kind, []))


# Problem kinds and what happened to the affected rows (shown in the report).
PROBLEM_ACTIONS = {
    "missing audio": "label row whose audio file does not exist: excluded from the manifest",
    "unreadable audio": "audio file soundfile cannot read: excluded from the manifest",
    "empty audio": "audio file with zero samples: excluded from the manifest",
    "duplicate consensus row": "FileName listed twice in labels_consensus.csv: first row kept",
    "duplicate annotator row": "same worker twice for one file in labels_detailed.csv: first vote kept",
    "unknown label string": "primary vote outside the 8 emotions and Other-*: counted as no 8-class vote",
    "unknown consensus class": "EmoClass outside A S H U F D C N O X: emo_class left empty",
    "attribute out of range": "EmoAct/EmoVal/EmoDom missing or outside [1, 7]: that attribute left empty",
    "malformed annotation": "EmoDetail string that cannot be parsed: vote ignored",
    "no 8-class vote": "labelled file whose votes are all Other or unknown: no soft target, not trained on",
    "no vote in the class set": "labelled file whose votes are all Other, unknown or outside the class set: no soft target, not trained on",
    "vote outside the class set": "primary vote for an MSP-Podcast emotion that is not one of the configured classes: counted for none",
    "consensus outside the class set": "EmoClass an MSP-Podcast emotion that is not one of the configured classes: kept as written, not scored (left empty if the code names another class of the set)",
    "label outside the class set": "label or vote that is no code or name of the configured classes: counted for none, never mapped (a clip with no vote in the set: no soft target, emo_class O)",
    "missing unlabelled audio": "unlabelled row whose audio file does not exist: not predicted",
    "no annotator rows": "labelled file with no readable row in labels_detailed.csv (absent from it, or only malformed rows): no soft target, not trained on",
    "annotations without consensus row": "labels_detailed.csv rows for a file absent from labels_consensus.csv: ignored",
    "unknown split": "Split_Set other than Train/Development: kept under its own subset name (and audio partition), not used by the recipe",
    "short audio": "clip shorter than data.min_duration_s: kept",
    "resampled on read": "sample rate other than 16 kHz: kept, resampled when read",
    "downmixed on read": "more than one channel: kept, downmixed when read",
}
# What happened, for the kinds whose MSP-Podcast wording names its files or columns.
TABLE_PROBLEM_ACTIONS = {
    "attribute out of range": "act/val/dom not a number or outside [1, 7]: that attribute left empty",
    "duplicate annotator row": "same annotator twice for one clip: first vote kept",
}


def normalise_primary(raw: str) -> tuple[str, bool]:
    """Map a primary-vote string to (class letter | "Other" | raw, known)."""
    text = raw.strip()
    for name in CLASS_NAMES:
        if text.lower() == name.lower():
            return NAME_TO_LETTER[name], True
    if text.lower().startswith("other"):
        return OTHER, True
    return text, False


def parse_emo_detail(detail: str) -> dict:
    """Parse one EmoDetail string into worker, primary, secondaries and A/V/D ratings.

    Raises ValueError on a string that does not follow the documented shape.
    """
    text = detail.strip()
    tail = _RATINGS_TAIL.search(text)
    if tail is None:
        raise ValueError(f"no 'A:..; V:..; D:..;' ratings in {detail!r}")
    head = text[: tail.start()]
    worker, sep, rest = head.partition(";")
    if not sep:
        raise ValueError(f"no worker field in {detail!r}")
    # The secondary list (commas, no semicolons) is the last field before the ratings.
    primary, sep, secondary = rest.rpartition(";")
    if not sep:
        raise ValueError(f"no primary/secondary fields in {detail!r}")
    secondaries = [s.strip() for s in secondary.split(",") if s.strip()]
    ratings = {}
    for key in ("A", "V", "D"):
        value = tail.group(key)
        try:
            ratings[key] = float(value)
        except ValueError:
            ratings[key] = float("nan")
    return {
        "worker": worker.strip(),
        "primary": primary.strip(),
        "secondary": secondaries,
        **ratings,
    }


def _read_csv(path: Path, required: list[str]) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; found {columns}")
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def msp_class_codes(classes: ClassSet) -> dict[str, str | None]:
    """MSP-Podcast's letter -> the code of the class of `classes` with its name (any case),
    None when the set has no class of that name."""
    return {
        letter: classes.letter_of(name)
        for letter, name in zip(CLASS_LETTERS, CLASS_NAMES, strict=True)
    }


def read_detailed_votes(
    path: Path, problems: Problems, classes: ClassSet = MSP_PODCAST_CLASSES
) -> list[Vote]:
    """Primary votes from labels_detailed.csv in either layout (EmoDetail strings or 2.0
    columns); a vote for an emotion outside `classes` is reported (`soft_targets` skips it)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        columns = [c.strip() for c in next(csv.reader(handle), [])]
    if "EmoDetail" in columns:
        rows = _read_csv(path, DETAILED_STRING_COLUMNS)
        layout = "string"
    elif all(c in columns for c in DETAILED_V2_COLUMNS):
        rows = _read_csv(path, DETAILED_V2_COLUMNS)
        layout = "columns"
    else:
        raise DataError(
            f"{path}: neither the EmoDetail layout ({DETAILED_STRING_COLUMNS}) nor the "
            f"MSP-Podcast 2.0 layout ({DETAILED_V2_COLUMNS}); found {columns}"
        )
    votes: list[Vote] = []
    seen: set[tuple[str, str]] = set()
    codes = msp_class_codes(classes)
    for line_no, row in enumerate(rows, start=2):
        file_name = row["FileName"]
        if layout == "string":
            try:
                parsed = parse_emo_detail(row["EmoDetail"])
            except ValueError as err:
                problems.add("malformed annotation", f"{path.name} line {line_no}: {err}")
                continue
            worker, primary_raw = parsed["worker"], parsed["primary"]
        else:
            worker, primary_raw = row["WorkerID"], row["EmoClass_Major"]
        if (file_name, worker) in seen:
            problems.add(
                "duplicate annotator row", f"{path.name} line {line_no}: {file_name} {worker}"
            )
            continue
        seen.add((file_name, worker))
        primary, known = normalise_primary(primary_raw)
        if not known:
            problems.add("unknown label string", f"{path.name} line {line_no}: {primary_raw!r}")
        elif primary in codes and codes[primary] is None:
            example = f"{path.name} line {line_no}: {primary_raw!r}"
            problems.add("vote outside the class set", example)
        votes.append(Vote(file_name, worker, primary, known))
    return votes


def soft_targets(
    votes: list[Vote], classes: ClassSet = MSP_PODCAST_CLASSES
) -> dict[str, np.ndarray | None]:
    """Per file: counts of primary votes in the classes of `classes` divided by their sum
    (docs/method.md, section 1.2), in the set's order.

    Other-* and unknown votes (``Vote.known`` False, e.g. a bare letter "N", which the data
    report lists as an unknown label string) and votes for an emotion whose name is no class of
    the set count for none; a file with votes but none in the set maps to None; a file without
    votes is absent.
    """
    index = {
        letter: classes.index(code)
        for letter, code in msp_class_codes(classes).items()
        if code is not None
    }
    counts: dict[str, np.ndarray] = {}
    for vote in votes:
        vec = counts.setdefault(vote.file, np.zeros(len(classes)))
        if vote.known and vote.primary in index:
            vec[index[vote.primary]] += 1
    return {f: (c / c.sum() if c.sum() > 0 else None) for f, c in counts.items()}


OTHER = "Other"
