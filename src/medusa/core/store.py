"""Per-utterance frame sequences in one HDF5 file (docs/method.md, section 3).

Layout of a feature file::

    frames   [total_frames, dim] float16   chunked, resizable; utterance i is one slice
    offsets  [N] int64                      first row of utterance i in `frames`
    lengths  [N] int64                      number of rows of utterance i (>= 1)
    ids      [N] utf-8 strings              utterance ids, unique
    attrs                                    backbone, revision/checksum, layer, dim,
                                             frame_rate, feature_set, kind, ... (caller's)
    user block (512 bytes)                   SHA-256 of the rest of the file (medusa.core.integrity)

API:

- ``FeatureWriter(path, dim, attrs)``: context manager. ``.add(utt_id, frames[T, dim])``
  appends one utterance (cast to float16). Everything is written under a temporary name in the
  destination folder and renamed onto ``path`` with ``os.replace`` only when the ``with`` block
  exits without an exception, so a crash or kill never leaves a file at ``path``. Duplicate
  ids, a wrong dim, zero-length or non-finite frames raise ``ValueError`` naming the id; a
  failed write (full disk) raises ``OSError`` naming ``path``. The finished file's SHA-256 is
  recorded in its user block before the rename.
- ``FeatureReader(path)``: ``.ids``, ``.dim``, ``.attrs``, ``.lengths``, ``len(r)``,
  ``utt_id in r``, ``r[utt_id]`` / ``r.get_by_index(i)`` -> ``np.ndarray[T, dim] float16``
  (one slice read), ``r.index(utt_id)``, ``r.verify()``, ``r.close()``; a context manager.
  Safe in DataLoader workers: the HDF5 handle is opened lazily and reopened in a new process.
  Opening checks the file's SHA-256 (once per process and file) and raises
  ``medusa.core.integrity.CorruptFileError`` naming the file when a byte changed.
- ``merge_feature_files(shard_paths, out_path)``: one file holding every shard's
  utterances, sorted by id (the order ``extract`` writes in, so a sharded run and an
  unsharded one give the same datasets), atomically.
- ``shard_ids(ids, shard, n_shards, block=1)``: the deterministic share of ``ids`` a shard
  processes (contiguous whole blocks of the sorted ids).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np

from medusa.core.atomic import temporary_sibling
from medusa.core.integrity import USERBLOCK_BYTES, seal_hdf5, verify_hdf5

FORMAT_VERSION = 1
# Rows are buffered in memory and flushed in blocks: resizing an HDF5 dataset per utterance
# is slow, and the buffer bounds memory whatever the subset size.
_FLUSH_BYTES = 64 * 2**20
# About 256 KiB per chunk: big enough for fast sequential writes, small enough that reading
# one utterance touches few bytes beyond it.
_CHUNK_BYTES = 2**18
_F16_MAX = float(np.finfo(np.float16).max)


def _check_attr(key: str, value) -> object:
    """Attributes must be scalars HDF5 stores natively; None has no HDF5 form."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"attribute {key!r} must be str, int, float or bool, got {value!r}")


class FeatureWriter:
    """Write utterances' frame sequences to `path` atomically (see module docstring)."""

    def __init__(self, path: str | os.PathLike, dim: int, attrs: dict | None = None):
        self.path = Path(path)
        self.dim = int(dim)
        if self.dim < 1:
            raise ValueError(f"{self.path}: dim must be >= 1, got {dim}")
        self.attrs = {k: _check_attr(k, v) for k, v in (attrs or {}).items()}
        if "dim" in self.attrs and int(self.attrs["dim"]) != self.dim:
            raise ValueError(f"{self.path}: attrs dim {self.attrs['dim']} != dim {self.dim}")
        self._ids: list[str] = []
        self._seen: set[str] = set()
        self._lengths: list[int] = []
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._total = 0
        self._file: h5py.File | None = None
        self._frames: h5py.Dataset | None = None
        self._tmp: Path | None = None

    def __enter__(self) -> FeatureWriter:
        # A feature file is the output of exactly one job: leftovers of a killed run go.
        self._tmp = temporary_sibling(self.path, sole_writer=True)
        try:
            self._file = h5py.File(self._tmp, "w", userblock_size=USERBLOCK_BYTES)
        except OSError as err:
            self._tmp.unlink()
            raise OSError(err.errno, f"cannot write {self.path}: {err}") from err
        self._frames = None  # created by the first flush, once the data's size is known
        return self

    def _create_frames(self, first_rows: int) -> h5py.Dataset:
        # HDF5 allocates whole chunks: split the first block evenly into chunks of at most the
        # standard size, so that a small file (written in one block) wastes no chunk space.
        standard = max(1, _CHUNK_BYTES // (2 * self.dim))
        n_chunks = max(1, -(-first_rows // standard))
        chunk_rows = max(1, -(-first_rows // n_chunks))
        return self._file.create_dataset(
            "frames",
            shape=(0, self.dim),
            maxshape=(None, self.dim),
            dtype=np.float16,
            chunks=(chunk_rows, self.dim),
        )

    def add(self, utt_id: str, frames: np.ndarray) -> None:
        """Append one utterance's frames `[T, dim]` (stored as float16)."""
        if self._file is None:
            raise RuntimeError("FeatureWriter.add() outside its `with` block")
        if not isinstance(utt_id, str) or not utt_id:
            raise ValueError(f"{self.path}: utterance id must be a non-empty str, got {utt_id!r}")
        if utt_id in self._seen:
            raise ValueError(f"{self.path}: duplicate utterance id {utt_id!r}")
        frames = np.asarray(frames)
        if frames.ndim != 2 or frames.shape[1] != self.dim:
            raise ValueError(
                f"{self.path}: {utt_id!r} has shape {frames.shape}, expected [T, {self.dim}]"
            )
        if frames.shape[0] == 0:
            raise ValueError(f"{self.path}: {utt_id!r} has zero frames")
        if not np.isfinite(frames).all():
            raise ValueError(f"{self.path}: {utt_id!r} contains NaN or inf")
        with np.errstate(over="ignore"):  # overflow is reported just below, naming the id
            half = frames.astype(np.float16)
        if not np.isfinite(half).all():
            raise ValueError(
                f"{self.path}: {utt_id!r} has values beyond the float16 range (+-{_F16_MAX:g})"
            )
        self._seen.add(utt_id)
        self._ids.append(utt_id)
        self._lengths.append(half.shape[0])
        self._buffer.append(half)
        self._buffered += half.nbytes
        if self._buffered >= _FLUSH_BYTES:
            self._flush()

    def __len__(self) -> int:
        return len(self._ids)

    def _flush(self) -> None:
        if not self._buffer:
            return
        block = np.concatenate(self._buffer)
        try:
            if self._frames is None:
                self._frames = self._create_frames(len(block))
            start = self._total
            self._frames.resize(start + len(block), axis=0)
            self._frames[start:] = block
        except OSError as err:  # h5py's message does not name the file
            raise OSError(err.errno, f"cannot write {self.path}: {err}") from err
        self._total += len(block)
        self._buffer, self._buffered = [], 0

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None and self._tmp is not None
        try:
            if exc_type is None:
                self._flush()
                if self._frames is None:  # no utterance at all: an empty, valid store
                    self._frames = self._create_frames(1)
                lengths = np.asarray(self._lengths, dtype=np.int64)
                offsets = np.zeros(len(lengths), dtype=np.int64)
                np.cumsum(lengths[:-1], out=offsets[1:])
                f = self._file
                f.create_dataset("offsets", data=offsets)
                f.create_dataset("lengths", data=lengths)
                f.create_dataset("ids", data=self._ids, dtype=h5py.string_dtype("utf-8"))
                f.attrs.update(self.attrs)
                f.attrs["dim"] = self.dim
                f.attrs["n_utterances"] = len(self._ids)
                f.attrs["format_version"] = FORMAT_VERSION
            self._file.close()
            self._file = None
            if exc_type is None:
                seal_hdf5(self._tmp)
                os.replace(self._tmp, self.path)
        except OSError as err:
            raise OSError(err.errno, f"cannot write {self.path}: {err}") from err
        finally:
            if self._file is not None:  # closing failed half-way (a full disk): let go of it
                with contextlib.suppress(Exception):  # the first error is the one to report
                    self._file.close()
                self._file = None
            self._tmp.unlink(missing_ok=True)


class FeatureReader:
    """Random access to a feature file written by FeatureWriter (see module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"feature file not found: {self.path}")
        verify_hdf5(self.path)
        try:
            with h5py.File(self.path, "r") as f:
                missing = {"frames", "offsets", "lengths", "ids"} - set(f.keys())
                if missing:
                    raise ValueError(f"{self.path}: not a feature file (missing {sorted(missing)})")
                self.ids: list[str] = list(f["ids"].asstr()[()])
                self.offsets: np.ndarray = f["offsets"][()]
                self.lengths: np.ndarray = f["lengths"][()]
                self.dim: int = int(f["frames"].shape[1])
                self.total_frames: int = int(f["frames"].shape[0])
                self.attrs: dict = {k: _plain(v) for k, v in f.attrs.items()}
        except OSError as err:
            raise ValueError(f"{self.path}: cannot read feature file ({err})") from err
        self._index = {utt_id: i for i, utt_id in enumerate(self.ids)}
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._in_memory: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Size of all frames in memory (float16)."""
        return self.total_frames * self.dim * 2

    def load_into_memory(self) -> None:
        """Read every frame once and serve slices from RAM from now on.

        For files that fit easily (the demo's, a small corpus'): each HDF5 slice read costs
        ~0.5 ms of library overhead, a sixth of a small model's training step.
        """
        if self._in_memory is None:
            self._in_memory = self._frames()[()]

    def _frames(self) -> h5py.Dataset:
        # An HDF5 handle must not be shared across processes (DataLoader workers fork or
        # spawn): open lazily, and again whenever we find ourselves in a new process.
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file["frames"]

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._index

    def index(self, utt_id: str) -> int:
        """Position of `utt_id` in `.ids`."""
        try:
            return self._index[utt_id]
        except KeyError:
            raise KeyError(f"{self.path}: no utterance {utt_id!r}") from None

    def get_by_index(self, i: int) -> np.ndarray:
        """Frames `[T, dim]` float16 of the i-th utterance (one slice read)."""
        start = int(self.offsets[i])
        frames = self._in_memory if self._in_memory is not None else self._frames()
        return frames[start : start + int(self.lengths[i])]

    def __getitem__(self, utt_id: str) -> np.ndarray:
        return self.get_by_index(self.index(utt_id))

    def verify(self) -> None:
        """Check the layout is consistent and every frame finite; raise ValueError if not."""
        n = len(self.ids)
        if len(self._index) != n:
            raise ValueError(f"{self.path}: duplicate ids")
        if len(self.offsets) != n or len(self.lengths) != n:
            raise ValueError(f"{self.path}: ids, offsets and lengths differ in length")
        if n and (self.lengths < 1).any():
            raise ValueError(f"{self.path}: an utterance has no frames")
        ends = self.offsets + self.lengths
        if n and (self.offsets[0] != 0 or (self.offsets[1:] != ends[:-1]).any()):
            raise ValueError(f"{self.path}: offsets are not contiguous")
        if (ends[-1] if n else 0) != self.total_frames:
            raise ValueError(
                f"{self.path}: lengths sum to {ends[-1] if n else 0} frames, "
                f"file holds {self.total_frames}"
            )
        frames = self._frames()
        step = max(1, _FLUSH_BYTES // (2 * self.dim))
        for start in range(0, self.total_frames, step):
            if not np.isfinite(frames[start : start + step]).all():
                raise ValueError(f"{self.path}: non-finite values in rows >= {start}")

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None

    def __enter__(self) -> FeatureReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # Picklable for spawn-started workers: the open handle stays behind.
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: h5py may already be gone
            pass


def _plain(value):
    """HDF5 attribute values as plain Python (numpy scalars and bytes are awkward in JSON)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def merge_feature_files(
    shard_paths: Sequence[str | os.PathLike], out_path: str | os.PathLike
) -> None:
    """Merge shard files into `out_path`: all utterances sorted by id, the shards' attributes.

    Every shard must hold the same dim and the same attributes (apart from the count of
    utterances); ids must be unique across shards.
    """
    if not shard_paths:
        raise ValueError("merge_feature_files: no shard files given")
    readers = [FeatureReader(p) for p in shard_paths]
    try:
        first = readers[0]
        attrs = {k: v for k, v in first.attrs.items() if k not in ("n_utterances", "dim")}
        for r in readers[1:]:
            if r.dim != first.dim:
                raise ValueError(f"{r.path}: dim {r.dim} differs from {first.path} ({first.dim})")
            other = {k: v for k, v in r.attrs.items() if k not in ("n_utterances", "dim")}
            if other != attrs:
                raise ValueError(
                    f"{r.path}: attributes differ from {first.path}: {other} vs {attrs}"
                )
        owner: dict[str, tuple[int, int]] = {}
        for s, r in enumerate(readers):
            for i, utt_id in enumerate(r.ids):
                if utt_id in owner:
                    other_path = readers[owner[utt_id][0]].path
                    raise ValueError(f"id {utt_id!r} appears in both {other_path} and {r.path}")
                owner[utt_id] = (s, i)
        order = [owner[utt_id] for utt_id in sorted(owner)]
        with FeatureWriter(out_path, first.dim, attrs) as writer:
            for s, start, stop in _runs(order, readers, max_rows=_FLUSH_BYTES // (2 * first.dim)):
                reader = readers[s]
                # One read per run of consecutive utterances of the same shard (whole shards
                # when shards are contiguous id ranges), then split into utterances.
                lo = int(reader.offsets[start])
                hi = int(reader.offsets[stop - 1] + reader.lengths[stop - 1])
                block = reader._frames()[lo:hi]
                for i in range(start, stop):
                    a = int(reader.offsets[i]) - lo
                    writer.add(reader.ids[i], block[a : a + int(reader.lengths[i])])
    finally:
        for r in readers:
            r.close()


def _runs(
    order: list[tuple[int, int]], readers: list[FeatureReader], max_rows: int
) -> Iterable[tuple[int, int, int]]:
    """Group (shard, index) pairs into runs (shard, start, stop) of consecutive indices,
    each run at most `max_rows` frames (or one utterance) to bound memory."""
    pos = 0
    while pos < len(order):
        s, first = order[pos]
        rows = int(readers[s].lengths[first])
        stop = first + 1
        pos += 1
        while pos < len(order) and order[pos] == (s, stop):
            more = int(readers[s].lengths[stop])
            if rows + more > max_rows:
                break
            rows += more
            stop += 1
            pos += 1
        yield s, first, stop


def shard_ids(ids: Iterable[str], shard: int, n_shards: int, block: int = 1) -> list[str]:
    """The ids shard `shard` of `n_shards` processes: contiguous whole blocks of the sorted ids.

    The sorted ids are cut into blocks of `block` ids (the last may be shorter) and each shard
    takes a contiguous run of whole blocks. A stage that batches within such blocks then sees
    exactly the same batches whatever the number of shards, so a sharded run reproduces the
    unsharded one bit for bit; contiguous runs keep every shard sorted, so merging is a
    concatenation in shard order.
    """
    if n_shards < 1 or not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} out of range for n_shards={n_shards}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    ordered = sorted(ids)
    n_blocks = -(-len(ordered) // block)
    first, last = shard * n_blocks // n_shards, (shard + 1) * n_blocks // n_shards
    return ordered[first * block : last * block]
