"""Checksums on the files the workflow learns from: feature files, posteriors, checkpoints.

A disk error, a half-synced copy or an interrupted rsync can change bytes of a finished file
without changing its name, size or time; read as it is, it trains a model on garbage (NaN
losses, a model at chance) and the job still succeeds. Every such file therefore carries the
SHA-256 of its own bytes, written when the file is complete, and readers check it before they
use a byte of it. A whole-file digest catches a change anywhere, also in the HDF5 metadata
(attributes, dataset layout, the variable-length ids) that per-chunk checksums such as HDF5's
fletcher32 filter leave uncovered.

- HDF5 (features, posteriors): the file is created with a 512-byte user block, which the HDF5
  library reserves for the application and never reads; ``seal_hdf5(path)`` writes
  ``MEDUSA-SHA256 <hex>`` there, the digest of every byte after the block.
- torch checkpoints: ``torch_bytes_sealed(data)`` puts ``medusa-sha256:<hex>`` into the zip
  archive's comment (the last bytes of the file, which zip readers, torch.load among them,
  skip), the digest of every byte before the hex digits.

``verify_hdf5(path)`` and ``load_torch(path)`` raise ``CorruptFileError`` naming the file and
how to rebuild it. A file is verified once per process for a given (size, mtime, inode):
training opens the same feature file many times.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

USERBLOCK_BYTES = 512
_HDF5_MAGIC = b"MEDUSA-SHA256 "
_TORCH_MAGIC = b"medusa-sha256:"
_HEX_DIGITS = 64
_ZIP_END = b"PK\x05\x06"  # end-of-central-directory record: 22 bytes, then the comment
_ZIP_END_BYTES = 22
_READ_BYTES = 8 * 2**20
_verified: set[tuple] = set()


class CorruptFileError(ValueError):
    """A file's bytes do not match the checksum written with it."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        super().__init__(
            f"{path}: {problem}. The file changed after it was written (disk or copy error) "
            f"and nothing was used from it. Rebuild it: delete it (rm {path}) and run snakemake "
            f"again (that file alone: snakemake {path} with your usual --configfile options)."
        )


def _identity(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def _sha256(handle, start: int, stop: int | None = None) -> str:
    """SHA-256 of bytes [start, stop) of an open binary file (to the end when stop is None)."""
    digest = hashlib.sha256()
    handle.seek(start)
    left = None if stop is None else stop - start
    while left is None or left > 0:
        block = handle.read(_READ_BYTES if left is None else min(_READ_BYTES, left))
        if not block:
            break
        digest.update(block)
        if left is not None:
            left -= len(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# HDF5: the digest in the user block


def seal_hdf5(path: str | os.PathLike) -> None:
    """Write the digest of `path`'s bytes after the user block into the user block.

    The file must be closed and created with ``userblock_size=USERBLOCK_BYTES``.
    """
    with open(path, "r+b") as handle:
        header = _hdf5_header(_sha256(handle, USERBLOCK_BYTES))
        handle.seek(0)
        handle.write(header)
        handle.flush()
        os.fsync(handle.fileno())


def _hdf5_header(hexdigest: str) -> bytes:
    return (_HDF5_MAGIC + hexdigest.encode("ascii") + b"\n").ljust(USERBLOCK_BYTES, b"\0")


def verify_hdf5(path: str | os.PathLike) -> None:
    """Raise CorruptFileError unless `path` carries the digest of its bytes (see module)."""
    path = Path(path)
    key = _identity(path)
    if key in _verified:
        return
    with open(path, "rb") as handle:
        header = handle.read(USERBLOCK_BYTES)
        if not header.startswith(_HDF5_MAGIC):
            raise CorruptFileError(path, "no checksum in its HDF5 user block")
        stored = header[len(_HDF5_MAGIC) : len(_HDF5_MAGIC) + _HEX_DIGITS].decode(
            "ascii", "replace"
        )
        if header != _hdf5_header(stored):
            raise CorruptFileError(path, "its checksum header is damaged")
        actual = _sha256(handle, USERBLOCK_BYTES)
    if actual != stored:
        raise CorruptFileError(path, f"SHA-256 {actual} differs from the recorded {stored}")
    _verified.add(key)


# --------------------------------------------------------------------------------------------
# torch checkpoints: the digest in the zip comment


def torch_bytes_sealed(data: bytes) -> bytes:
    """A torch.save archive (`data`, no comment) with its digest as the zip comment."""
    if len(data) < _ZIP_END_BYTES or data[-_ZIP_END_BYTES:-18] != _ZIP_END or data[-2:] != b"\0\0":
        raise ValueError("not a torch.save zip archive without comment")
    comment_length = struct.pack("<H", len(_TORCH_MAGIC) + _HEX_DIGITS)
    signed = data[:-2] + comment_length + _TORCH_MAGIC
    return signed + hashlib.sha256(signed).hexdigest().encode("ascii")


def verify_torch(path: str | os.PathLike) -> None:
    """Raise CorruptFileError unless the checkpoint `path` carries the digest of its bytes."""
    path = Path(path)
    key = _identity(path)
    if key in _verified:
        return
    size = key[1]
    with open(path, "rb") as handle:
        if size < _ZIP_END_BYTES + len(_TORCH_MAGIC) + _HEX_DIGITS:
            raise CorruptFileError(path, f"only {size} bytes, too short for a checkpoint")
        handle.seek(size - _HEX_DIGITS - len(_TORCH_MAGIC))
        magic = handle.read(len(_TORCH_MAGIC))
        stored = handle.read(_HEX_DIGITS).decode("ascii", "replace")
        if magic != _TORCH_MAGIC:
            raise CorruptFileError(path, "no checksum in its zip comment")
        actual = _sha256(handle, 0, size - _HEX_DIGITS)
    if actual != stored:
        raise CorruptFileError(path, f"SHA-256 {actual} differs from the recorded {stored}")
    _verified.add(key)


def load_torch(path: str | os.PathLike, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` after checking the file's digest."""
    import torch  # here: modules that only check HDF5 files need not import torch

    verify_torch(path)
    return torch.load(path, map_location=map_location, weights_only=True)
