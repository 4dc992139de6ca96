"""Audio partitions: the corpus's audio files grouped the way the corpus releases them.

ASR and feature extraction are the expensive stages, so they are keyed by audio only: they run
per *audio partition* and never read labels, the train/holdout split or its seed.

- A labelled file's partition is the (normalised) ``Split_Set`` of its row in
  ``labels_consensus.csv``: ``train``, ``development`` (``test1``, ``test2`` in older releases).
- Every other audio file (Test3, clips added later) is in ``unlabelled``.

Membership depends on the audio folder and on the ``FileName``/``Split_Set`` columns only, so
changing label values or the split re-extracts nothing, and a clip dropped into ``Audios/``
changes exactly one partition. A corpus in the table layout (``layout="table"``, the table's
path relative to the corpus folder in ``table``; ``medusa.corpus.table_layout``) has ``train``,
``development`` and ``test_labelled`` (split style) or one ``labelled`` partition holding every
fold, and ``unlabelled``; membership follows each row's path, partition value and whether it is
labelled. ``audio_partitions(root, layout=, table=)`` lists them;
``corpus_fingerprints(root, cache_path, layout=, table=)`` gives a fingerprint of each partition
(its files' names relative to the corpus folder, with the clip ids for a table, and the digests
of their bytes, ``medusa.core.content_hash``; never absolute paths of the corpus or times), the
digest of each label file (the table) and a table's folds; the whole result is cached by the
state of the folders and files it read (``medusa.corpus.scan_cache``). The workflow passes a
partition's fingerprint to its ``audio_index``, ``asr`` and ``features`` jobs, so replaced
audio, and only that, is indexed, transcribed and extracted again, while a corpus moved or
copied without its times reruns nothing.

``write_audio_index(root, partition, out_tsv, out_report)`` writes the partition's clip table
(``INDEX_COLUMNS``; ``path`` relative to the corpus folder, so the table does not change when
the corpus moves; unusable files keep a row with the reason in ``problem``) and a short report;
``clip_paths(index, root)`` gives the usable ``(id, path)`` pairs that the ASR and feature
stages read.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import hashlib
import os
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import NamedTuple

from medusa.core import content_hash
from medusa.core.content_hash import FileState, file_digests
from medusa.corpus import scan_cache, table_layout
from medusa.corpus.table_layout import LABELLED, UNLABELLED, read_table

# Corpus layouts (data.layout): MSP-Podcast's release, or one table (medusa.corpus.table_layout).
MSP_PODCAST, TABLE = "msp_podcast", "table"
LAYOUTS = (MSP_PODCAST, TABLE)
AUDIO_SUFFIX = ".wav"
TEST3_MARKER = "_test3_"
AUDIO_DIR = "Audios"
LABEL_FILES = ("Labels/labels_consensus.csv", "Labels/labels_detailed.csv")
INDEX_COLUMNS = ["id", "path", "partition", "duration_s", "sample_rate", "channels", "problem"]
# The subsets of the clips (docs/method.md, section 1.4): the labelled ones, which the manifest
# holds (medusa.corpus.prepare), and `test`, the usable clips of the unlabelled partition.
TRAIN, HOLDOUT, META, DEV, TEST = "train", "holdout", "meta", "dev", "test"
# A split-style table's labelled `test` rows (`test` names the unlabelled clips).
TEST_LABELLED = "test_labelled"
# `holdout` selects the DeepSER checkpoints; `meta` (speakers of neither) trains the
# meta-classifier (data.meta_fraction of the held-out speakers).
LABELLED_SUBSETS = (TRAIN, HOLDOUT, META, DEV)
# Which partition holds the clips of each subset: the holdout is carved out of Split_Set=Train,
# and `test` is every unlabelled file.
SUBSET_PARTITIONS = {
    TRAIN: "train",
    HOLDOUT: "train",
    META: "train",
    DEV: "development",
    TEST: UNLABELLED,
}


class PartitionError(ValueError):
    """The corpus cannot be partitioned (bad label file); the message names the file/row."""


def partition_name(split_set: str) -> str:
    """File-name-safe partition name of a Split_Set value (``Train`` -> ``train``)."""
    name = re.sub(r"[^a-z0-9]+", "_", split_set.strip().lower()).strip("_")
    return name or "unknown"


def partition_of_subset(subset: str, folds: bool = False) -> str:
    """The audio partition a manifest subset's clips are stored in; `folds`: a fold-style
    table, whose labelled subsets (whichever fold is held out) all live in `labelled`."""
    if folds and subset in LABELLED_SUBSETS:
        return LABELLED
    return SUBSET_PARTITIONS.get(subset, subset)


class AudioFile(NamedTuple):  # a tuple: 120k of them are made at every parse
    id: str  # the clip id (MSP-Podcast: the file's stem)
    path: str  # relative to the corpus folder (what the index and fingerprints hold), or absolute
    state: FileState  # inode, size and times: the key of its cached digest

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def _audio_entries(audio_dir: Path) -> list[tuple[str, os.stat_result]]:
    """(name, stat) of every ``*.wav`` file of the (flat) audio folder, in listing order."""
    with os.scandir(audio_dir) as entries:
        return [
            (e.name, e.stat())
            for e in entries
            if e.name.lower().endswith(AUDIO_SUFFIX) and e.is_file()
        ]


def list_audio(audio_dir: Path) -> list[AudioFile]:
    """Every ``*.wav`` of the (flat) audio folder with its file state, sorted by name."""
    files = [
        AudioFile(name[: -len(AUDIO_SUFFIX)], f"{AUDIO_DIR}/{name}", FileState.of(stat))
        for name, stat in _audio_entries(audio_dir)
    ]
    return sorted(files, key=lambda f: f.path)


def labelled_split_sets(consensus_path: Path) -> dict[str, str]:
    """FileName -> partition for every consensus row (the first row of a repeated name wins)."""
    if not consensus_path.is_file():
        raise PartitionError(f"{consensus_path}: file not found")
    with open(consensus_path, newline="", encoding="utf-8-sig") as handle:
        # Rows as lists, two columns read: this runs at every parse, over 100k+ rows.
        reader = csv.reader(handle)
        columns = [c.strip() for c in next(reader, [])]
        for needed in ("FileName", "Split_Set"):
            if needed not in columns:
                raise PartitionError(f"{consensus_path}: no {needed} column (found {columns})")
        name_at, split_at = columns.index("FileName"), columns.index("Split_Set")
        width = max(name_at, split_at) + 1
        partitions: dict[str, str] = {}  # Split_Set value -> partition (a handful)
        splits: dict[str, str] = {}
        for row in reader:
            if not row:
                continue
            row += [""] * (width - len(row))
            split = row[split_at].strip()
            if split not in partitions:
                partitions[split] = partition_name(split)
            splits.setdefault(row[name_at].strip(), partitions[split])
    return splits


def audio_partitions(
    root: str | os.PathLike, *, layout: str = MSP_PODCAST, table: str | None = None
) -> dict[str, list[AudioFile]]:
    """Partition -> its audio files (see module docstring). Labelled rows without audio are
    not here: the data stage reports them."""
    return _scan(Path(root), layout, table).partitions


class _Scan(NamedTuple):
    partitions: dict[str, list[AudioFile]]
    folds: tuple[str, ...]  # a fold-style table's
    labels: list[str]  # the label files read, relative to the corpus folder
    # What the cached scan is checked against (medusa.corpus.scan_cache): the folders holding the
    # audio with their states, and every audio file's (path, state; None: absent).
    folders: list[tuple[str, scan_cache.State]]
    files: list[tuple[str, FileState | None]]


def _scan(root: Path, layout: str, table: str | None) -> _Scan:
    if layout == TABLE:
        return _table_partitions(root, table)
    if layout != MSP_PODCAST:
        raise PartitionError(f"data.layout: {layout!r} is not one of {', '.join(LAYOUTS)}")
    folders = scan_cache.watch([str(root / AUDIO_DIR)])  # before listing it
    splits = labelled_split_sets(root / "Labels" / "labels_consensus.csv")
    partitions: dict[str, list[AudioFile]] = defaultdict(list)
    listing = list_audio(root / AUDIO_DIR)
    for audio in listing:
        partitions[splits.get(audio.name, UNLABELLED)].append(audio)
    labels = [name for name in LABEL_FILES if (root / name).is_file()]
    files = [(audio.path, audio.state) for audio in listing]
    return _Scan(dict(partitions), (), labels, folders, files)


def _in_corpus(prefix: str, path: str) -> str:
    """A table's audio path (relative to the corpus folder, `prefix`, or absolute) as a path
    to open; strings, not os.path.join: it runs for every clip at every parse."""
    return path if os.path.isabs(path) else prefix + path


def _audio_state(path: str) -> FileState | None:
    """A table's audio file's state; None when it is missing (the data report names it) or
    not a file."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return FileState.of(stat) if S_ISREG(stat.st_mode) else None


def _table_partitions(root: Path, table: str | None) -> _Scan:
    """A table's partitions: every clip whose audio file exists, in table order."""
    checked = read_table(root, table)
    partitions: dict[str, list[AudioFile]] = defaultdict(list)
    prefix = f"{root}{os.sep}"
    paths = [_in_corpus(prefix, clip.path) for clip in checked.clips]
    folders = scan_cache.watch(sorted({os.path.dirname(path) for path in paths}))
    files = []
    for clip, path in zip(checked.clips, paths, strict=True):
        state = _audio_state(path)
        files.append((clip.path, state))
        if state is not None:
            audio = AudioFile(clip.id, clip.path, state)
            partitions[clip.audio_partition(checked.style)].append(audio)
    return _Scan(dict(partitions), checked.folds, [str(table)], folders, files)


def _files_digest(root: Path, layout: str, paths: list[str]) -> str:
    """The digest of every audio file's state now (scan_cache check 3), as _Scan.files gives
    it: MSP-Podcast's folder listed again, a table's clip `paths` (as stored) stat'ed again.
    No AudioFile objects: this is what a warm parse costs."""
    if layout == TABLE:
        prefix = f"{root}{os.sep}"
        line = scan_cache.state_line
        lines = [line(path, _audio_state(_in_corpus(prefix, path))) for path in paths]
    else:  # scan_cache.state_line of (path, FileState), spelled out: 120k calls fewer
        lines = [
            f"{AUDIO_DIR}/{name}\t{s.st_ino} {s.st_size} {s.st_mtime_ns} {s.st_ctime_ns}\n"
            for name, s in _audio_entries(root / AUDIO_DIR)
        ]
    return scan_cache.files_digest(lines)


def fingerprint(files: list[tuple[str, str]]) -> str:
    """A digest of a partition's ``(path relative to the corpus folder, content digest)``
    pairs: what its files are called and hold, not where the corpus is or when it was copied."""
    lines = "".join(f"{relative_path}\t{content}\n" for relative_path, content in files)
    return hashlib.sha256(lines.encode()).hexdigest()


@dataclass(frozen=True)
class CorpusFingerprints:
    partitions: dict[str, str]  # partition -> fingerprint (the unlabelled one always there)
    labels: dict[str, str]  # label file (the table), relative to the corpus folder -> digest
    folds: tuple[str, ...] = ()  # a fold-style table's folds in natural order ("1", "2", ...)


def corpus_fingerprints(
    root: str | os.PathLike,
    cache_path: str | os.PathLike,
    *,
    layout: str = MSP_PODCAST,
    table: str | None = None,
    check_files: bool = True,
) -> CorpusFingerprints:
    """The fingerprint of every audio partition, the digest of each label file and a
    table's folds, with file digests cached in `cache_path` (``medusa.core.content_hash``; read once
    per file version) and the whole result next to it (``medusa.corpus.scan_cache``: reused while
    the audio folders and label files are unchanged and, with `check_files`, every audio file's
    state too; without it, a file rewritten in place is not seen)."""
    with _without_cyclic_gc():
        return _cached_fingerprints(Path(root), cache_path, layout, table, check_files)


@contextlib.contextmanager
def _without_cyclic_gc():
    """The scan makes a few objects per file and frees none: the cyclic garbage collector
    would walk all of them again and again (half of a warm parse at 120k files)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _label_files(root: Path, layout: str, table: str | None) -> list[str]:
    """Every label file a scan may read (the table), present or not."""
    if layout == TABLE:
        return [os.path.join(root, table)] if table else []
    return [os.path.join(root, name) for name in LABEL_FILES]


def _cached_fingerprints(
    root: Path, cache_path: str | os.PathLike, layout: str, table: str | None, check_files: bool
) -> CorpusFingerprints:
    """The cached scan while it is valid (medusa.corpus.scan_cache), else a scan, cached when
    settled."""
    cache = scan_cache.scan_cache_path(cache_path)
    key = {"root": os.path.abspath(root), "layout": layout, "table": table, "code": _code()}
    entry = scan_cache.load(cache, key)
    if entry is not None and (
        not check_files or _files_digest(root, layout, entry["paths"]) == entry["files"]
    ):
        result = entry["result"]
        return CorpusFingerprints(result["partitions"], result["labels"], tuple(result["folds"]))
    started = time.time_ns()
    watched = scan_cache.watch(_label_files(root, layout, table))  # before reading them
    scan = _scan(root, layout, table)
    fingerprints = _fingerprints(root, cache_path, layout, scan)
    watched += scan.folders
    if scan_cache.settled([s for _, s in watched] + [s for _, s in scan.files], started):
        lines = [scan_cache.state_line(path, state) for path, state in scan.files]
        result = {
            "partitions": fingerprints.partitions,
            "labels": fingerprints.labels,
            "folds": list(fingerprints.folds),
        }
        # A table's clip paths, to stat again (MSP-Podcast's folder is listed again instead).
        paths = [path for path, _ in scan.files] if layout == TABLE else []
        entry = {"key": key, "watched": watched, "files": scan_cache.files_digest(lines)}
        scan_cache.store(cache, {**entry, "paths": paths, "result": result})
    return fingerprints


def _code() -> str:
    """The digest of the modules that compute a scan (a cached scan of older code is stale)."""
    modules = (sys.modules[__name__], table_layout, content_hash, scan_cache)
    return scan_cache.code_digest(modules)


def _fingerprints(
    root: Path, cache_path: str | os.PathLike, layout: str, scan: _Scan
) -> CorpusFingerprints:
    partitions, folds, labels = scan.partitions, scan.folds, scan.labels
    partitions.setdefault(UNLABELLED, [])
    audio = [(p, f) for p in sorted(partitions) for f in partitions[p]]
    # Strings, not Path objects: 120k of them at every parse. A table's clip ids are its own
    # (MSP-Podcast's are the file names), so they are part of what its partitions hold.
    prefix = f"{root}{os.sep}"
    if layout == TABLE:
        names = [f"{f.path}\t{f.id}" for _, f in audio]
        full = [_in_corpus(prefix, f.path) for _, f in audio]
    else:
        names = [f.path for _, f in audio]
        full = [prefix + name for name in names]
    files = [(path, f.state) for path, (_, f) in zip(full, audio, strict=True)]
    label_paths = [os.path.join(root, name) for name in labels]
    files += [(path, FileState.of(os.stat(path))) for path in label_paths]
    digests = file_digests(files, cache_path)
    members: dict[str, list[tuple[str, str]]] = {p: [] for p in partitions}
    for (partition, _), name, digest in zip(audio, names, digests, strict=False):
        members[partition].append((name, digest))
    return CorpusFingerprints(
        partitions={p: fingerprint(found) for p, found in members.items()},
        labels=dict(zip(labels, digests[len(audio) :], strict=True)),
        folds=folds,
    )
