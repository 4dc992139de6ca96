"""Atomic file and folder writes: build under a temporary name in the same folder, then rename.

A reader (or a Snakemake rerun after a crash) sees the old content or the new one, never half
a file: the temporary name is a hidden sibling (``.<name>.<random>.tmp``), so ``os.replace``
stays on one file system and is atomic, and it is removed if writing fails.

- ``temporary_sibling(path)``: a fresh empty file next to `path` (for writers that keep the
  file open across calls, e.g. ``medusa.core.store.FeatureWriter``).
- ``atomic_write(path, write)``: ``write(tmp)`` fills the temporary file, which then replaces
  `path`; ``atomic_write_text``, ``atomic_write_json`` and ``atomic_torch_save`` build on it.
  A failed write (a full disk) raises OSError naming `path`, and leaves nothing behind.
- ``atomic_directory(out_dir)``: a context manager yielding a temporary sibling folder that
  replaces `out_dir` as a whole when the block succeeds.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from medusa.core.integrity import torch_bytes_sealed


def temporary_sibling(path: str | os.PathLike, sole_writer: bool = False) -> Path:
    """A fresh, unique, empty file next to `path` (parent folders are created).

    `sole_writer`: the caller is the only process that ever writes `path` at a time (the one
    job whose output it is), so temporary files of `path` found now were left by a killed
    writer (SIGKILL, a SLURM time limit) and are deleted: a partial feature file can be as
    large as the finished one. Not for files that several processes may write at once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if sole_writer:
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            if stale.is_file():
                stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp makes owner-only files; results on a shared cluster get the usual umask mode.
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of `path`, then rename it onto `path`."""
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        # The writer's own message (h5py's, torch's) rarely says which file.
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    finally:
        tmp.unlink(missing_ok=True)  # only still there when writing or renaming failed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, value: object, sort_keys: bool = False) -> None:
    """Write `value` as indented JSON plus a final newline to `path` atomically."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=sort_keys) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: object, checksum: bool = False) -> None:
    """``torch.save(obj)`` to `path` atomically; equal objects give byte-identical files.

    `checksum`: record the file's SHA-256 in it (``medusa.core.integrity``; read it back with
    ``medusa.core.integrity.load_torch``).
    """
    import torch  # here, so that modules writing only text do not pay for importing torch

    # Through a file object: given a path, torch.save names the archive's root folder after
    # its stem, which (random temporary names) would make identical checkpoints differ.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = torch_bytes_sealed(buffer.getvalue()) if checksum else buffer.getvalue()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write(path, write)


@contextlib.contextmanager
def atomic_directory(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling folder that replaces `out_dir` when the block succeeds.

    On success an existing `out_dir` is renamed aside, the new folder renamed into place and
    the old one deleted (``os.replace`` cannot overwrite a non-empty folder), so `out_dir` is
    missing only between two renames, never incomplete. On failure the temporary folder is
    deleted and `out_dir` is left untouched.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # mkdir rather than mkdtemp: the folder gets the usual (umask) mode, not owner-only.
    tmp = out_dir.with_name(f".{out_dir.name}.{secrets.token_hex(6)}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.{secrets.token_hex(6)}.old")
            os.replace(out_dir, old)
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(old, out_dir)  # put the old folder back rather than leave none
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only still there when the block failed
