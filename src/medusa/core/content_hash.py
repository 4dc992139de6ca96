"""Content digests of corpus files, cached by file identity so that an unchanged corpus is not
read again at every parse of the workflow.

What decides which jobs rerun must be what the files hold, not where they are or when they
were last touched: a clip replaced by one of the same size is new content, while a corpus
copied without its times (``cp -r``, a restored backup) or moved elsewhere is the same corpus.
So every file's SHA-256 (hashlib's, which runs at disk speed on CPUs with SHA extensions and
releases the GIL, so files are hashed on several threads) is computed once and kept in a cache
file keyed by the file's identity:

- key: inode number, size, modification time and status-change time (ns). ``ctime`` cannot be
  set by a user and changes with every write, so a file rewritten with the same size and its
  old modification time restored is still seen as changed; ``touch`` or ``cp -r`` only cost a
  re-read (the digest, and so every job, stays the same).
- a file changed less than ``RACY_MARGIN_NS`` before it was hashed is not cached (its time
  stamp could repeat on a second change within the file system's time resolution, as git's
  "racily clean" entries): it is hashed again at the next parse, until it is older.
- the cache is one TSV, replaced atomically (``medusa.core.atomic``), and written only when it
  changes: parses running at once (cluster jobs each parse the workflow) read a complete file
  and, at worst, both hash the same new files; the last one to write wins, and nothing it
  holds is ever wrong, only possibly incomplete.

``file_digests(files, cache_path)`` is the API; ``FileState.of(stat)`` the key of one file.
A parse of an unchanged corpus does not even get here: the scan's whole result is cached by
the state of the folders and label files it read (``medusa.corpus.scan_cache``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from medusa.core.atomic import atomic_write_text

log = logging.getLogger(__name__)

ALGORITHM = "sha256"
CACHE_HEADER = f"# medusa content digests v1 {ALGORITHM}: inode size mtime_ns ctime_ns digest"
# Two seconds: the coarsest time stamps in use (FAT, some network file systems) included.
RACY_MARGIN_NS = 2_000_000_000
# Hashing threads: reading and hashing overlap; more than a few gain nothing on one disk.
HASH_THREADS = min(8, os.cpu_count() or 1)
UNREADABLE = "unreadable: "


class FileState(NamedTuple):
    """What identifies one version of a file (the cache key; a tuple: 120k of them are made
    at every parse)."""

    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileState:
        return cls(stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex); ``unreadable: <reason>`` for a file that cannot be
    read (never cached: the audio index reports it, and it is read again at the next parse)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, ALGORITHM).hexdigest()
    except OSError as err:
        return f"{UNREADABLE}{err.strerror or err}"


def state_key(state: FileState) -> str:
    """A file state as the cache stores it (strings: faster to read back than 120k tuples)."""
    return f"{state.inode}\t{state.size}\t{state.mtime_ns}\t{state.ctime_ns}"


def read_cache(cache_path: str | os.PathLike) -> dict[str, str]:
    """``state_key -> digest``; an absent, foreign or damaged cache is empty (it is only a
    cache, and a damaged line only costs a re-read of its file)."""
    try:
        lines = Path(cache_path).read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return {}
    if not lines or lines[0] != CACHE_HEADER:
        return {}
    return dict(line.rsplit("\t", 1) for line in lines[1:] if line.count("\t") == 4)


def write_cache(cache_path: str | os.PathLike, cache: dict[str, str]) -> None:
    rows = [f"{key}\t{digest}" for key, digest in cache.items()]
    Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache_path, "\n".join([CACHE_HEADER, *rows]) + "\n")


def file_digests(
    files: Sequence[tuple[str | os.PathLike, FileState]], cache_path: str | os.PathLike
) -> list[str]:
    """The digest of every ``(path, state)`` in `files` (same order), from the cache where the
    state matches, else by reading the file.

    The cache is rewritten to hold exactly these files (so a corpus that changed does not
    leave stale entries behind), when that differs from what it held.
    """
    cached = read_cache(cache_path)
    started = time.time_ns()
    keys = [state_key(state) for _, state in files]
    missing = [path for (path, _), key in zip(files, keys, strict=True) if key not in cached]
    fresh = {}
    if missing:
        log.info("hashing %d file(s) not in %s", len(missing), cache_path)
        with ThreadPoolExecutor(HASH_THREADS) as pool:
            fresh = dict(zip(missing, pool.map(file_digest, missing), strict=True))
    digests = [cached.get(key) or fresh[path] for (path, _), key in zip(files, keys, strict=True)]
    settled = started - RACY_MARGIN_NS
    keep = {
        key: digest
        for (_, state), key, digest in zip(files, keys, digests, strict=True)
        if max(state.mtime_ns, state.ctime_ns) < settled and not digest.startswith(UNREADABLE)
    }
    if keep != cached:
        write_cache(cache_path, keep)
    return digests
