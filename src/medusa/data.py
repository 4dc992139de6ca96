"""The data layer: labels -> soft targets -> speaker-disjoint subsets -> manifest + report.

Two corpus layouts (``data.layout``): a corpus described by one table (``table``,
``medusa.table_layout``: ``build_table_manifest``), and MSP-Podcast's release
(``msp_podcast``: ``build_manifest``), which reads the corpus folder (never writes to it):

    <root>/Audios/<FileName>.wav
    <root>/Labels/labels_consensus.csv   FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set
    <root>/Labels/labels_detailed.csv    FileName,EmoDetail            (challenge release)
                                     or  FileName,WorkerID,EmoClass_Major,EmoClass_Second,EmoAct,EmoVal,EmoDom
                                                                        (MSP-Podcast 2.0)

and, joined with the audio indexes of the labelled partitions (`medusa.partitions`: durations and
readability of every audio file, computed without labels), produces the manifest of the
labelled clips that training and evaluation read (columns and reader: `medusa.manifest`) plus a
human-readable report of every problem found. Nothing is dropped silently: each excluded or
altered row is counted in the report with examples. Unlabelled audio (Test3) is its own
partition and never enters the manifest, so new unlabelled clips never retrain anything.

Both follow a class set (``medusa.emotions.ClassSet``, config ``classes``; MSP-Podcast's 8
emotions by default): soft targets count the votes for its classes only, and a vote or label
outside it is reported, never mapped. ``prepare`` dispatches on the layout.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medusa.atomic import atomic_write_text
from medusa.emotions import (
    AMBIGUOUS_LETTERS,
    ATTRIBUTE_RANGE,
    CLASS_LETTERS,
    CLASS_NAMES,
    MSP_PODCAST_CLASSES,
    NAME_TO_LETTER,
    ClassSet,
)
from medusa.manifest import (
    UNKNOWN_GENDER,
    UNKNOWN_SPEAKER,
    is_unknown,
    manifest_columns,
    write_manifest,
)
from medusa.partitions import (
    DEV,
    HOLDOUT,
    LAYOUTS,
    META,
    MSP_PODCAST,
    TABLE,
    TEST_LABELLED,
    TRAIN,
    UNLABELLED,
    audio_partitions,
    build_audio_index,
    partition_name,
    read_audio_index,
)
from medusa.table_layout import (
    FOLDS,
    Table,
    TableClip,
    clip_votes,
    held_out_fold,
    read_table,
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
SPLIT_TO_SUBSET = {"Train": TRAIN, "Development": DEV}
# A split-style table's partitions -> manifest subsets (a fold table: held-out fold -> dev).
TABLE_SPLIT_SUBSETS = {"train": TRAIN, "development": DEV, "test": TEST_LABELLED}
OTHER = "Other"
# The keys of the data sub-config that `prepare` reads (data.root comes apart).
DATA_KEYS = (
    "holdout_fraction",
    "split_seed",
    "min_duration_s",
    "meta_fraction",
    "layout",
    "table",
    "fold",
)

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


def speaker_disjoint_holdout(
    speakers: pd.Series, classes: pd.Series, fraction: float, seed: int
) -> np.ndarray:
    """Boolean mask of rows for the holdout: whole speakers, stratified as well as speakers allow.

    Speakers are visited in a seeded random order and a speaker joins the holdout when doing so
    brings the holdout's class counts closer (L1) to `fraction` of every class's total. Rows of
    unknown speakers (``is_unknown``: empty, "Unknown", "unknown", ...) stay in train, so no
    unknown speaker can straddle both. With at least two known speakers the holdout is never
    empty.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.holdout_fraction must be in (0, 1), got {fraction}")
    known = ~speakers.map(is_unknown).to_numpy(dtype=bool)
    speakers = speakers.astype(str)
    letters = sorted(set(classes.fillna("").astype(str)))
    onehot = pd.get_dummies(classes.fillna("").astype(str)).reindex(columns=letters, fill_value=0)
    per_speaker = onehot[known].groupby(speakers[known]).sum().astype(float)
    target = fraction * onehot.sum().to_numpy(dtype=float)
    order = np.random.default_rng(seed).permutation(sorted(per_speaker.index))
    held = np.zeros_like(target)
    chosen = []
    for speaker in order:
        counts = per_speaker.loc[speaker].to_numpy()
        if np.abs(target - held - counts).sum() < np.abs(target - held).sum():
            held += counts
            chosen.append(speaker)
    if not chosen and len(order) > 1:
        # Tiny corpora: any single speaker overshoots the target, but model selection needs data.
        chosen.append(order[0])
    return (speakers.isin(chosen) & known).to_numpy()


def _attribute(value: str, key: str, file_name: str, problems: Problems) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    low, high = ATTRIBUTE_RANGE
    if not (low <= number <= high):
        problems.add("attribute out of range", f"{file_name}: {key}={value!r}")
        return float("nan")
    return number


def _audio_rows(indexes: list[str | os.PathLike | pd.DataFrame]) -> dict[str, dict]:
    """FileName -> its row of the labelled partitions' audio indexes (medusa.partitions)."""
    rows: dict[str, dict] = {}
    for index in indexes:
        table = index if isinstance(index, pd.DataFrame) else read_audio_index(index)
        for row in table.to_dict("records"):
            rows[Path(row["path"]).name] = row
    return rows


def _audio_rows_by_id(indexes: list[str | os.PathLike | pd.DataFrame]) -> dict[str, dict]:
    """Clip id -> its row of the labelled partitions' audio indexes (a table's clips)."""
    rows: dict[str, dict] = {}
    for index in indexes:
        table = index if isinstance(index, pd.DataFrame) else read_audio_index(index)
        rows.update((row["id"], row) for row in table.to_dict("records"))
    return rows


def labelled_audio_indexes(
    root: str | os.PathLike, *, layout: str = MSP_PODCAST, table: str | None = None
) -> list[pd.DataFrame]:
    """The audio indexes of every labelled partition of a corpus, built in memory (what the
    workflow's `audio_index` jobs write to results/audio/), for `build_manifest`."""
    corpus = {"layout": layout, "table": table}
    partitions = audio_partitions(root, **corpus)
    return [build_audio_index(root, p, **corpus) for p in sorted(partitions) if p != UNLABELLED]


def _consensus(letter: str, name: str, codes: dict, classes: ClassSet, problems: Problems) -> str:
    """The emo_class of an EmoClass letter: the class set's code of its emotion; O, X as
    written; an emotion outside the set as written (not scored) unless a code of the set
    names another class; an unknown letter empty. Each departure is reported."""
    if letter in AMBIGUOUS_LETTERS:
        return letter
    if letter not in codes:
        problems.add("unknown consensus class", f"{name}: EmoClass={letter!r}")
        return ""
    if codes[letter] is not None:
        return codes[letter]
    problems.add("consensus outside the class set", f"{name}: EmoClass={letter!r}")
    return "" if letter in classes.letters else letter


def _no_vote_kind(classes: ClassSet) -> str:
    return "no 8-class vote" if classes == MSP_PODCAST_CLASSES else "no vote in the class set"


def _label_row(
    rec: dict, targets: dict, problems: Problems, classes: ClassSet, codes: dict
) -> dict:
    """One consensus row as manifest fields (labels, subset, soft target, attributes)."""
    name = rec["FileName"]
    letter = _consensus(rec["EmoClass"], name, codes, classes, problems)
    split = rec["Split_Set"]
    subset = SPLIT_TO_SUBSET.get(split)
    if subset is None:
        problems.add("unknown split", f"{name}: Split_Set={split!r}")
        subset = partition_name(split)
    if name not in targets:
        problems.add("no annotator rows", name)
    elif targets[name] is None:
        problems.add(_no_vote_kind(classes), name)
    target = targets.get(name)
    return {
        "file_name": name,
        "subset": subset,
        "speaker": UNKNOWN_SPEAKER if is_unknown(rec["SpkrID"]) else rec["SpkrID"],
        "gender": UNKNOWN_GENDER if is_unknown(rec["Gender"]) else rec["Gender"],
        "emo_class": letter,
        **{c: (target[i] if target is not None else np.nan) for i, c in enumerate(classes.letters)},
        "act": _attribute(rec["EmoAct"], "EmoAct", name, problems),
        "val": _attribute(rec["EmoVal"], "EmoVal", name, problems),
        "dom": _attribute(rec["EmoDom"], "EmoDom", name, problems),
    }


def _with_audio(row: dict, audio: dict | None, min_duration_s: float, problems: Problems) -> bool:
    """Add the clip's audio fields to `row`; False (and a reported problem) when unusable."""
    name = row["file_name"]
    if audio is None:
        problems.add("missing audio", name)
        return False
    if audio["problem"]:
        kind = "empty audio" if audio["problem"] == "empty audio" else "unreadable audio"
        problems.add(kind, f"{name}: {audio['problem']}")
        return False
    duration = float(audio["duration_s"])
    if duration < min_duration_s:
        problems.add("short audio", f"{name}: {duration:.2f} s")
    if audio["sample_rate"] != 16000:
        problems.add("resampled on read", f"{name}: {int(audio['sample_rate'])} Hz")
    if audio["channels"] != 1:
        problems.add("downmixed on read", f"{name}: {int(audio['channels'])} channels")
    row.update(
        id=audio["id"],
        path=audio["path"],
        duration_s=duration,
        sample_rate=int(audio["sample_rate"]),
        channels=int(audio["channels"]),
    )
    return True


def _labelled_rows(
    consensus: list[dict],
    source: str,
    targets: dict[str, np.ndarray | None],
    audio: dict[str, dict],
    min_duration_s: float,
    problems: Problems,
    classes: ClassSet,
) -> list[dict]:
    """Manifest rows of the consensus rows whose audio is usable (first row of a repeated
    FileName only); every row left out or altered is reported in `problems`."""
    rows = []
    labelled: set[str] = set()
    codes = msp_class_codes(classes)
    for line_no, rec in enumerate(consensus, start=2):
        name = rec["FileName"]
        if name in labelled:
            problems.add("duplicate consensus row", f"{source} line {line_no}: {name}")
            continue
        labelled.add(name)
        row = _label_row(rec, targets, problems, classes, codes)
        if _with_audio(row, audio.get(name), min_duration_s, problems):
            rows.append(row)
    return rows


def _split_off(
    manifest: pd.DataFrame, source: str, target: str, fraction: float, seed: int
) -> pd.DataFrame:
    """Move a speaker-disjoint share of the `source` rows to `target` (in place; returned)."""
    rows = (manifest["subset"] == source).to_numpy()
    moved = speaker_disjoint_holdout(
        manifest.loc[rows, "speaker"], manifest.loc[rows, "emo_class"], fraction, seed
    )
    manifest.loc[np.flatnonzero(rows)[moved], "subset"] = target
    return manifest


def _held_out_subsets(
    manifest: pd.DataFrame, holdout_fraction: float, meta_fraction: float, split_seed: int
) -> pd.DataFrame:
    """Split whole speakers of `train` off to `holdout`, and of those to `meta`; sort by id."""
    manifest = _split_off(manifest, TRAIN, HOLDOUT, holdout_fraction, split_seed)
    if meta_fraction > 0:
        manifest = _split_off(manifest, HOLDOUT, META, meta_fraction, split_seed + 1)
    return manifest.sort_values("id", kind="stable").reset_index(drop=True)


def build_manifest(
    root: str | os.PathLike,
    audio_indexes: list[str | os.PathLike | pd.DataFrame],
    holdout_fraction: float = 0.1,
    split_seed: int = 0,
    min_duration_s: float = 0.5,
    meta_fraction: float = 0.0,
    classes: ClassSet = MSP_PODCAST_CLASSES,
) -> tuple[pd.DataFrame, Problems, dict]:
    """MSP-Podcast: read the labels, join the labelled partitions' audio indexes, split
    train/holdout/meta; soft targets and consensus follow `classes`.

    `holdout_fraction` of the Train speakers form the held-out data; `meta_fraction` of those
    speakers (0: none) become the `meta` subset that trains the meta-classifier, the rest the
    `holdout` that selects DeepSER checkpoints: no clip serves both purposes.

    Returns (manifest, problems, summary). Unlabelled audio is not in the manifest: it is the
    `unlabelled` partition (medusa.partitions). Never writes to `root`.
    """
    root = Path(root)
    problems = Problems()
    # The labels: consensus rows, and the annotators' primary votes as soft targets.
    consensus_path = root / "Labels" / "labels_consensus.csv"
    consensus = _read_csv(consensus_path, CONSENSUS_COLUMNS)
    votes = read_detailed_votes(root / "Labels" / "labels_detailed.csv", problems, classes)
    targets = soft_targets(votes, classes)
    # One row per labelled clip whose audio is usable, in the subset its Split_Set names.
    audio = _audio_rows(audio_indexes)
    rows = _labelled_rows(
        consensus, consensus_path.name, targets, audio, min_duration_s, problems, classes
    )
    for name in sorted({v.file for v in votes} - {rec["FileName"] for rec in consensus}):
        problems.add("annotations without consensus row", name)
    manifest = pd.DataFrame(rows).reindex(columns=manifest_columns(classes.letters))
    manifest = _held_out_subsets(manifest, holdout_fraction, meta_fraction, split_seed)
    summary = {
        "root": str(root),
        "audio_files": len(audio),
        "consensus_rows": len(consensus),
        "annotator_votes": len(votes),
    }
    return manifest, problems, summary


def _table_row(
    clip: TableClip, table: Table, held_out: str | None, classes: ClassSet, problems: Problems
) -> dict:
    """One labelled clip of a table as manifest fields (labels, subset, soft target,
    attributes); labels outside the class set and bad attributes are reported."""
    where = f"{table.name}:{clip.line}"
    target, emo_class, outside = clip_votes(clip, classes)
    for label, line in outside:
        problems.add("label outside the class set", f"{table.name}:{line}: {label!r}")
    if table.style == FOLDS:
        subset = DEV if clip.split == held_out else TRAIN
    else:
        subset = TABLE_SPLIT_SUBSETS[clip.split]
    return {
        "file_name": f"{clip.path} ({where})",  # names the clip in the report
        "subset": subset,
        "speaker": UNKNOWN_SPEAKER if is_unknown(clip.speaker) else clip.speaker,
        "gender": UNKNOWN_GENDER if is_unknown(clip.gender) else clip.gender,
        "emo_class": emo_class,
        **{c: (target[i] if target is not None else np.nan) for i, c in enumerate(classes.letters)},
        **{
            key: _attribute(value, key, where, problems) if value else np.nan
            for key, value in clip.attributes.items()
        },
    }


def build_table_manifest(
    root: str | os.PathLike,
    audio_indexes: list[str | os.PathLike | pd.DataFrame],
    table: str | None,
    fold: str | int | None = None,
    holdout_fraction: float = 0.1,
    split_seed: int = 0,
    min_duration_s: float = 0.5,
    meta_fraction: float = 0.0,
    classes: ClassSet = MSP_PODCAST_CLASSES,
) -> tuple[pd.DataFrame, Problems, dict]:
    """The table layout (``medusa.table_layout``): the manifest of the table's labelled clips.

    Split style: `train`, `dev` (development) and `test_labelled` (labelled test rows); fold
    style: the held-out `fold` (data.fold) is `dev`, the other folds `train`. Then whole
    speakers of `train` go to `holdout` and `meta` as in the MSP-Podcast layout. Unlabelled
    rows are the `unlabelled` partition, not in the manifest. Returns (manifest, problems,
    summary); raises TableError for a table that cannot be used (names the file and line).
    """
    root = Path(root)
    problems = Problems()
    checked = read_table(root, table)
    held_out = held_out_fold(fold, checked.folds, table)
    for example in checked.duplicate_votes:
        problems.add("duplicate annotator row", example)
    audio = _audio_rows_by_id(audio_indexes)
    rows = []
    for clip in checked.clips:
        if not clip.labels:
            if not os.path.isfile(os.path.join(root, clip.path)):
                problems.add(
                    "missing unlabelled audio", f"{clip.path} ({checked.name}:{clip.line})"
                )
            continue
        row = _table_row(clip, checked, held_out, classes, problems)
        if _with_audio(row, audio.get(clip.id), min_duration_s, problems):
            rows.append(row)
    manifest = pd.DataFrame(rows).reindex(columns=manifest_columns(classes.letters))
    manifest = _held_out_subsets(manifest, holdout_fraction, meta_fraction, split_seed)
    labelled = sum(1 for clip in checked.clips if clip.labels)
    summary = {
        "layout": TABLE,
        "root": str(root),
        "table": str(table),
        "audio_files": len(audio),
        "table_rows": checked.rows,
        "labelled_clips": labelled,
        "unlabelled_clips": len(checked.clips) - labelled,
        "votes": checked.votes,
        "folds": checked.folds,
        "fold": held_out,
    }
    return manifest, problems, summary


def _report_header(manifest: pd.DataFrame, summary: dict, classes: ClassSet) -> list[str]:
    """The report's title and corpus lines, which name the layout."""
    if summary.get("layout", MSP_PODCAST) == MSP_PODCAST:
        lines = [
            "# MSP-Podcast data report",
            "",
            f"Corpus: `{summary['root']}` (read only).",
            f"Audio files in labelled partitions: {summary['audio_files']}; consensus rows: {summary['consensus_rows']}; "
            f"annotator votes: {summary['annotator_votes']}; manifest rows: {len(manifest)}.",
        ]
    else:
        lines = [
            "# Table data report",
            "",
            f"Corpus: `{summary['root']}` (read only); table: `{summary['table']}`.",
            f"Audio files in labelled partitions: {summary['audio_files']}; table rows: "
            f"{summary['table_rows']}; labelled clips: {summary['labelled_clips']}; unlabelled "
            f"clips (partition `unlabelled`, predicted): {summary['unlabelled_clips']}; labels "
            f"and votes: {summary['votes']}; manifest rows: {len(manifest)}.",
        ]
        if summary["folds"]:
            lines.append(
                f"Folds: {', '.join(summary['folds'])}; held out (data.fold): {summary['fold']}, "
                "the `dev` subset; the other folds are `train` (and `holdout`, `meta`)."
            )
    if classes != MSP_PODCAST_CLASSES:
        named = ", ".join(f"{c} ({n})" for c, n in zip(classes.letters, classes.names, strict=True))
        lines.append(f"Classes: {named}.")
    return lines


def format_report(
    manifest: pd.DataFrame,
    problems: Problems,
    summary: dict,
    examples: int = 5,
    classes: ClassSet = MSP_PODCAST_CLASSES,
) -> str:
    """The human-readable data report (markdown): one column per class of `classes`."""
    letters = classes.letters
    lines = [
        *_report_header(manifest, summary, classes),
        "",
        "## Subsets",
        "",
        "| subset | files | speakers | hours | with soft target | "
        + " | ".join(letters)
        + " | O | X |",
        "|---" * (6 + len(letters)) + "|",
    ]
    for subset, part in manifest.groupby("subset", sort=False):
        counts = part["emo_class"].value_counts()
        lines.append(
            f"| {subset} | {len(part)} | {part['speaker'].nunique()} | "
            f"{part['duration_s'].sum() / 3600:.3f} | {int(part[letters[0]].notna().sum())} | "
            + " | ".join(str(int(counts.get(c, 0))) for c in (*letters, "O", "X"))
            + " |"
        )
    known = ~manifest["speaker"].map(is_unknown)
    train_speakers = set(manifest.loc[known & (manifest["subset"] == TRAIN), "speaker"])
    holdout_speakers = set(manifest.loc[known & (manifest["subset"] == HOLDOUT), "speaker"])
    lines += [
        "",
        f"Speakers shared by train and holdout: {len(train_speakers & holdout_speakers)} "
        "(speaker-disjoint split; files of unknown speakers stay in train). The `holdout` "
        "selects DeepSER checkpoints; the `meta` subset, speakers of neither, trains the "
        "meta-classifier.",
        "",
        "## Problems",
        "",
    ]
    actions = PROBLEM_ACTIONS
    if summary.get("layout", MSP_PODCAST) == TABLE:
        actions = PROBLEM_ACTIONS | TABLE_PROBLEM_ACTIONS
    if not problems.items:
        lines.append("None found.")
    else:
        lines += ["| problem | count | what happened | examples |", "|---|---|---|---|"]
        for kind in sorted(problems.items):
            found = problems.items[kind]
            shown = "; ".join(str(e).replace("|", "/") for e in found[:examples])
            more = f" (+{len(found) - examples} more)" if len(found) > examples else ""
            lines.append(f"| {kind} | {len(found)} | {actions[kind]} | {shown}{more} |")
    return "\n".join(lines) + "\n"


def prepare(
    root: str | os.PathLike,
    audio_indexes: list[str | os.PathLike],
    manifest_path: str | os.PathLike,
    report_path: str | os.PathLike,
    data: dict,
    classes: ClassSet,
) -> pd.DataFrame:
    """The `prepare` stage: build the manifest and the report, both written atomically.

    `data`: the data sub-config without data.root (DATA_KEYS); its `layout` picks the
    builder, MSP-Podcast's release or a table (``build_table_manifest``).
    """
    missing = [f"data.{key}" for key in DATA_KEYS if key not in data]
    if missing:
        raise DataError(f"config: missing {', '.join(missing)}")
    split = {
        key: data[key]
        for key in ("holdout_fraction", "split_seed", "min_duration_s", "meta_fraction")
    }
    layout = data["layout"]
    if layout == TABLE:
        manifest, problems, summary = build_table_manifest(
            root, audio_indexes, data["table"], data["fold"], **split, classes=classes
        )
    elif layout == MSP_PODCAST:
        # data.table is not read (the config keeps a default for it); a fold would be.
        if data["fold"] is not None:
            raise DataError(
                f"data.fold: {data['fold']!r} is only read with data.layout: table and a table "
                f"of numbered folds (data.layout is {layout}); leave it empty (null)"
            )
        manifest, problems, summary = build_manifest(root, audio_indexes, **split, classes=classes)
    else:
        raise DataError(f"data.layout: {layout!r} is not one of {', '.join(LAYOUTS)}")
    write_manifest(manifest, manifest_path)
    atomic_write_text(report_path, format_report(manifest, problems, summary, classes=classes))
    return manifest
