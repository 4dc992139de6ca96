"""The corpus scan of a parse (``medusa.corpus.partitions.corpus_fingerprints``), cached by the
state of what it read: an unchanged corpus is not scanned again at every parse, and a cluster job's
parse does not even list the audio folder.

A scan reads the audio folder(s), every audio file's state (and, through the digest cache of
``medusa.core.content_hash``, its content digest) and the label files. Its result (fingerprints,
label digests, folds) is kept in one JSON file next to the digest cache, with what it was
computed from, and trusted while all of this is unchanged:

1. key: the corpus folder (absolute path), the layout, the table, and a digest of the code
   that scans (an upgrade rescans).
2. watched: the state (inode, size, modification and status-change times) of every folder
   that holds the corpus's audio and of every label file (the table), absent ones included.
   Adding, removing or renaming a file changes its folder's times; editing a label file (in
   place or by a rename) changes its own.
3. files (`check_files`, the default): a digest of every audio file's path and state. A
   folder's times do not see a file whose content is rewritten in place (``cp`` over it,
   ``soundfile.write`` to the same name): the file's own status-change time does, and no
   user can set it. This check lists the folder and stats every file (the cost of the
   listing), but reads no label file, no digest cache and no file content.

``check_files=False`` trusts 1 and 2 alone: a few stat calls instead of one per file (120k on
a cluster's network file system take seconds to minutes). The workflow uses it only in the
processes of cluster jobs, whose main ``snakemake`` process checked every file when the run
started: a clip rewritten in place during a run is seen by the next run, not by the jobs of
this one (which keep the fingerprints their run was scheduled with). Deleting the cache file
forces a full scan.

Like the digest cache, a scan is not cached when anything it read changed less than
``RACY_MARGIN_NS`` before it started (a second change within the file system's time
resolution could leave the same state); it is written atomically and only when it changes, so
parses running at once only read it while it is valid, and otherwise each replaces it whole.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from medusa.core import content_hash
from medusa.core.atomic import atomic_write_text

SCAN_CACHE_NAME = "corpus-scan.json"
FORMAT = "medusa corpus scan v1"
ENTRY_FIELDS = {"key", "watched", "files", "paths", "result"}

# A path's state: [inode, size, mtime_ns, ctime_ns], or None when it does not exist.
State = list[int] | None


def scan_cache_path(digest_cache: str | os.PathLike) -> Path:
    """Where the scan of a corpus is cached: next to its digest cache (outside data.root)."""
    return Path(digest_cache).with_name(SCAN_CACHE_NAME)


def path_state(path: str) -> State:
    """A folder's or file's state; None when it cannot be stat'ed (absent: a scan reports
    what is wrong with it)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def watch(paths: Iterable[str]) -> list[tuple[str, State]]:
    """The current state of each path (a folder or a label file), to store with a scan."""
    return [(path, path_state(path)) for path in paths]


def state_line(path: str, state: Sequence[int] | None) -> str:
    """One audio file's path and state (None: absent), as check 3 digests them."""
    return f"{path}\t{' '.join(map(str, state)) if state else '-'}\n"


def files_digest(lines: list[str]) -> str:
    """A digest of every audio file's `state_line`, whatever order they were listed in."""
    lines.sort()
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def code_digest(modules: Iterable[object]) -> str:
    """A digest of the source of the modules that compute the scan."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def load(cache: str | os.PathLike, key: dict) -> dict | None:
    """The cached scan for `key` whose watched paths are all unchanged, else None (absent,
    foreign, damaged or stale: it is only a cache)."""
    try:
        entry = json.loads(Path(cache).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("key") != key:
        return None
    if not ENTRY_FIELDS <= entry.keys():
        return None
    try:
        unchanged = all(path_state(path) == state for path, state in entry["watched"])
    except (TypeError, ValueError):
        return None
    return entry if unchanged else None


def settled(states: Iterable[State], started_ns: int) -> bool:
    """Whether every state is older than the racy margin before the scan started."""
    limit = started_ns - content_hash.RACY_MARGIN_NS
    return all(state is None or max(state[2], state[3]) < limit for state in states)


def store(cache: str | os.PathLike, entry: dict) -> None:
    """Replace the cached scan with `entry` (atomically)."""
    Path(cache).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, json.dumps({"format": FORMAT, **entry}, separators=(",", ":")))
