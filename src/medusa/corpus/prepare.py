"""The data layer: labels (``medusa.corpus.labels``) -> soft targets -> speaker-disjoint subsets
-> manifest + report (``medusa.corpus.data_report``).

Two corpus layouts (``data.layout``): a corpus described by one table (``table``,
``medusa.corpus.table_layout``: ``build_table_manifest``), and MSP-Podcast's release
(``msp_podcast``: ``build_manifest``), which reads the corpus folder (never writes to it):

    <root>/Audios/<FileName>.wav
    <root>/Labels/labels_consensus.csv   FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set
    <root>/Labels/labels_detailed.csv    FileName,EmoDetail            (challenge release)
                                     or  FileName,WorkerID,EmoClass_Major,EmoClass_Second,EmoAct,EmoVal,EmoDom
                                                                        (MSP-Podcast 2.0)

and, joined with the audio indexes of the labelled partitions (`medusa.corpus.audio_index`:
durations and readability of every audio file, computed without labels), produces the manifest of
the labelled clips that training and evaluation read (columns and reader: `medusa.core.manifest`)
plus a human-readable report of every problem found. Nothing is dropped silently: each excluded or
altered row is counted in the report with examples. Unlabelled audio (Test3) is its own
partition and never enters the manifest, so new unlabelled clips never retrain anything.

Both follow a class set (``medusa.core.emotions.ClassSet``, config ``classes``; MSP-Podcast's 8
emotions by default): soft targets count the votes for its classes only, and a vote or label
outside it is reported, never mapped. ``prepare`` dispatches on the layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from medusa.core.atomic import atomic_write_text
from medusa.core.emotions import (
    AMBIGUOUS_LETTERS,
    ATTRIBUTE_RANGE,
    MSP_PODCAST_CLASSES,
    ClassSet,
)
from medusa.core.manifest import (
    UNKNOWN_GENDER,
    UNKNOWN_SPEAKER,
    is_unknown,
    manifest_columns,
    write_manifest,
)
from medusa.corpus.audio_index import build_audio_index, read_audio_index
from medusa.corpus.data_report import format_report
from medusa.corpus.labels import (
    CONSENSUS_COLUMNS,
    DataError,
    Problems,
    _read_csv,
    msp_class_codes,
    read_detailed_votes,
    soft_targets,
)
from medusa.corpus.partitions import (
    DEV,
    HOLDOUT,
    LAYOUTS,
    META,
    MSP_PODCAST,
    TABLE,
    TEST_LABELLED,
    TRAIN,
    audio_partitions,
    partition_name,
)
from medusa.corpus.table_layout import (
    FOLDS,
    UNLABELLED,
    Table,
    TableClip,
    clip_votes,
    held_out_fold,
    read_table,
)

SPLIT_TO_SUBSET = {"Train": TRAIN, "Development": DEV}
# A split-style table's partitions -> manifest subsets (a fold table: held-out fold -> dev).
TABLE_SPLIT_SUBSETS = {"train": TRAIN, "development": DEV, "test": TEST_LABELLED}
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
    """FileName -> its row of the labelled partitions' audio indexes (medusa.corpus.audio_index)."""
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
    `unlabelled` partition (medusa.corpus.partitions). Never writes to `root`.
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
    """The table layout (``medusa.corpus.table_layout``): the manifest of the table's labelled
    clips.

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
