"""MSP-Podcast data layer: labels -> soft targets -> speaker-disjoint subsets -> manifest + report.

Reads the corpus folder (never writes to it):

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
    ALL_CONSENSUS_LETTERS,
    ATTRIBUTE_RANGE,
    CLASS_LETTERS,
    CLASS_NAMES,
    NAME_TO_LETTER,
)
from medusa.manifest import (
    MANIFEST_COLUMNS,
    UNKNOWN_GENDER,
    UNKNOWN_SPEAKER,
    is_unknown,
    write_manifest,
)
from medusa.partitions import (
    DEV,
    HOLDOUT,
    META,
    TRAIN,
    UNLABELLED,
    audio_partitions,
    build_audio_index,
    partition_name,
    read_audio_index,
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
OTHER = "Other"

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
    "no annotator rows": "labelled file with no readable row in labels_detailed.csv (absent from it, or only malformed rows): no soft target, not trained on",
    "annotations without consensus row": "labels_detailed.csv rows for a file absent from labels_consensus.csv: ignored",
    "unknown split": "Split_Set other than Train/Development: kept under its own subset name (and audio partition), not used by the recipe",
    "short audio": "clip shorter than data.min_duration_s: kept",
    "resampled on read": "sample rate other than 16 kHz: kept, resampled when read",
    "downmixed on read": "more than one channel: kept, downmixed when read",
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


def read_detailed_votes(path: Path, problems: Problems) -> list[Vote]:
    """Primary votes from labels_detailed.csv in either layout (EmoDetail strings or 2.0 columns)."""
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
        votes.append(Vote(file_name, worker, primary, known))
    return votes


def soft_targets(votes: list[Vote]) -> dict[str, np.ndarray | None]:
    """Per file: counts of primary votes in the 8 classes divided by their sum (docs/method.md, section 1.2).

    Other-* and unknown votes (``Vote.known`` False, e.g. a bare letter "N", which the data
    report lists as an unknown label string) count for none; a file with votes but no 8-class
    vote maps to None; a file without votes is absent.
    """
    counts: dict[str, np.ndarray] = {}
    for vote in votes:
        vec = counts.setdefault(vote.file, np.zeros(len(CLASS_LETTERS)))
        if vote.known and vote.primary in CLASS_LETTERS:
            vec[CLASS_LETTERS.index(vote.primary)] += 1
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


def labelled_audio_indexes(root: str | os.PathLike) -> list[pd.DataFrame]:
    """The audio indexes of every labelled partition of a corpus, built in memory (what the
    workflow's `audio_index` jobs write to results/audio/), for `build_manifest`."""
    partitions = audio_partitions(root)
    return [build_audio_index(root, p) for p in sorted(partitions) if p != UNLABELLED]


def _label_row(rec: dict, targets: dict, problems: Problems) -> dict:
    """One consensus row as manifest fields (labels, subset, soft target, attributes)."""
    name = rec["FileName"]
    letter = rec["EmoClass"]
    if letter not in ALL_CONSENSUS_LETTERS:
        problems.add("unknown consensus class", f"{name}: EmoClass={letter!r}")
        letter = ""
    split = rec["Split_Set"]
    subset = SPLIT_TO_SUBSET.get(split)
    if subset is None:
        problems.add("unknown split", f"{name}: Split_Set={split!r}")
        subset = partition_name(split)
    if name not in targets:
        problems.add("no annotator rows", name)
    elif targets[name] is None:
        problems.add("no 8-class vote", name)
    target = targets.get(name)
    return {
        "file_name": name,
        "subset": subset,
        "speaker": UNKNOWN_SPEAKER if is_unknown(rec["SpkrID"]) else rec["SpkrID"],
        "gender": UNKNOWN_GENDER if is_unknown(rec["Gender"]) else rec["Gender"],
        "emo_class": letter,
        **{c: (target[i] if target is not None else np.nan) for i, c in enumerate(CLASS_LETTERS)},
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
) -> list[dict]:
    """Manifest rows of the consensus rows whose audio is usable (first row of a repeated
    FileName only); every row left out or altered is reported in `problems`."""
    rows = []
    labelled: set[str] = set()
    for line_no, rec in enumerate(consensus, start=2):
        name = rec["FileName"]
        if name in labelled:
            problems.add("duplicate consensus row", f"{source} line {line_no}: {name}")
            continue
        labelled.add(name)
        row = _label_row(rec, targets, problems)
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


def build_manifest(
    root: str | os.PathLike,
    audio_indexes: list[str | os.PathLike | pd.DataFrame],
    holdout_fraction: float = 0.1,
    split_seed: int = 0,
    min_duration_s: float = 0.5,
    meta_fraction: float = 0.0,
) -> tuple[pd.DataFrame, Problems, dict]:
    """Read the labels, join the labelled partitions' audio indexes, split train/holdout/meta.

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
    votes = read_detailed_votes(root / "Labels" / "labels_detailed.csv", problems)
    targets = soft_targets(votes)
    # One row per labelled clip whose audio is usable, in the subset its Split_Set names.
    audio = _audio_rows(audio_indexes)
    rows = _labelled_rows(consensus, consensus_path.name, targets, audio, min_duration_s, problems)
    for name in sorted({v.file for v in votes} - {rec["FileName"] for rec in consensus}):
        problems.add("annotations without consensus row", name)
    # The holdout: whole speakers of `train`.
    manifest = pd.DataFrame(rows).reindex(columns=MANIFEST_COLUMNS)
    manifest = _split_off(manifest, TRAIN, HOLDOUT, holdout_fraction, split_seed)
    if meta_fraction > 0:
        manifest = _split_off(manifest, HOLDOUT, META, meta_fraction, split_seed + 1)
    manifest = manifest.sort_values("id", kind="stable").reset_index(drop=True)
    summary = {
        "root": str(root),
        "audio_files": len(audio),
        "consensus_rows": len(consensus),
        "annotator_votes": len(votes),
    }
    return manifest, problems, summary


def format_report(
    manifest: pd.DataFrame, problems: Problems, summary: dict, examples: int = 5
) -> str:
    """The human-readable data report (markdown)."""
    lines = [
        "# MSP-Podcast data report",
        "",
        f"Corpus: `{summary['root']}` (read only).",
        f"Audio files in labelled partitions: {summary['audio_files']}; consensus rows: {summary['consensus_rows']}; "
        f"annotator votes: {summary['annotator_votes']}; manifest rows: {len(manifest)}.",
        "",
        "## Subsets",
        "",
        "| subset | files | speakers | hours | with soft target | "
        + " | ".join(CLASS_LETTERS)
        + " | O | X |",
        "|---" * (6 + len(CLASS_LETTERS)) + "|",
    ]
    for subset, part in manifest.groupby("subset", sort=False):
        letters = part["emo_class"].value_counts()
        lines.append(
            f"| {subset} | {len(part)} | {part['speaker'].nunique()} | "
            f"{part['duration_s'].sum() / 3600:.3f} | {int(part['A'].notna().sum())} | "
            + " | ".join(str(int(letters.get(c, 0))) for c in (*CLASS_LETTERS, "O", "X"))
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
    if not problems.items:
        lines.append("None found.")
    else:
        lines += ["| problem | count | what happened | examples |", "|---|---|---|---|"]
        for kind in sorted(problems.items):
            found = problems.items[kind]
            shown = "; ".join(str(e).replace("|", "/") for e in found[:examples])
            more = f" (+{len(found) - examples} more)" if len(found) > examples else ""
            lines.append(f"| {kind} | {len(found)} | {PROBLEM_ACTIONS[kind]} | {shown}{more} |")
    return "\n".join(lines) + "\n"


def prepare(
    root: str | os.PathLike,
    audio_indexes: list[str | os.PathLike],
    manifest_path: str | os.PathLike,
    report_path: str | os.PathLike,
    holdout_fraction: float = 0.1,
    split_seed: int = 0,
    min_duration_s: float = 0.5,
    meta_fraction: float = 0.0,
) -> pd.DataFrame:
    """The `prepare` stage: build the manifest and the report, both written atomically."""
    manifest, problems, summary = build_manifest(
        root, audio_indexes, holdout_fraction, split_seed, min_duration_s, meta_fraction
    )
    write_manifest(manifest, manifest_path)
    atomic_write_text(report_path, format_report(manifest, problems, summary))
    return manifest
