"""HDF5 feature store: exact round trip, validation, atomic writes, shards, worker safety."""

import multiprocessing as mp
import os
import pickle
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from medusa.core.atomic import (
    atomic_directory,
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
)
from medusa.core.integrity import seal_hdf5
from medusa.core.store import FeatureReader, FeatureWriter, merge_feature_files, shard_ids

DIM = 6
ATTRS = {"backbone": "tiny", "revision": "abc", "layer": "last", "frame_rate": 50.0}


def _utterances(n=7, seed=0):
    rng = np.random.default_rng(seed)
    return {f"utt{i:02d}": rng.normal(size=(int(rng.integers(1, 40)), DIM)) for i in range(n)}


def _write(path, utts, attrs=ATTRS):
    with FeatureWriter(path, DIM, attrs) as w:
        for utt_id, frames in utts.items():
            w.add(utt_id, frames)


def test_reader_returns_exactly_the_frames_written(tmp_path):
    utts = _utterances()
    path = tmp_path / "f.h5"
    _write(path, utts)
    with FeatureReader(path) as r:
        assert r.ids == list(utts)
        assert len(r) == len(utts) and r.dim == DIM
        assert r.attrs["backbone"] == "tiny" and r.attrs["frame_rate"] == 50.0
        assert r.attrs["dim"] == DIM and r.attrs["n_utterances"] == len(utts)
        np.testing.assert_array_equal(r.lengths, [len(f) for f in utts.values()])
        for i, (utt_id, frames) in enumerate(utts.items()):
            got = r[utt_id]
            assert got.dtype == np.float16 and got.shape == frames.shape
            np.testing.assert_array_equal(got, frames.astype(np.float16))
            np.testing.assert_array_equal(r.get_by_index(i), got)
            assert r.index(utt_id) == i and utt_id in r
        r.verify()
        with pytest.raises(KeyError, match="nope"):
            r["nope"]
    frames_bytes = sum(len(f) for f in utts.values()) * DIM * 2
    assert path.stat().st_size < frames_bytes + 16384  # no mostly-empty chunk in a small file
    with h5py.File(path) as f:  # the documented layout
        assert f["frames"].dtype == np.float16 and f["frames"].chunks is not None
        assert f["offsets"].dtype == np.int64 and f["lengths"].dtype == np.int64
        assert f["frames"].maxshape == (None, DIM)


def test_reader_in_memory_serves_the_same_frames_without_the_file(tmp_path):
    utts = _utterances()
    path = tmp_path / "f.h5"
    _write(path, utts)
    reader = FeatureReader(path)
    assert reader.nbytes == sum(len(f) for f in utts.values()) * DIM * 2
    reader.load_into_memory()
    reader.close()
    path.unlink()  # every read below comes from memory
    for utt_id, frames in utts.items():
        got = reader[utt_id]
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, frames.astype(np.float16))
    clone = pickle.loads(pickle.dumps(reader))  # as a spawn-started DataLoader worker gets it
    np.testing.assert_array_equal(clone.get_by_index(0), reader.get_by_index(0))


def test_small_files_waste_no_chunk_space(tmp_path, monkeypatch):
    monkeypatch.setattr("medusa.core.store._CHUNK_BYTES", 2 * DIM * 50)  # chunks of <= 50 rows
    utts = _utterances(12, seed=2)
    _write(tmp_path / "f.h5", utts)
    frames = sum(len(f) for f in utts.values())
    with h5py.File(tmp_path / "f.h5") as f:
        chunk_rows = f["frames"].chunks[0]
        assert chunk_rows <= 50
        assert -(-frames // chunk_rows) * chunk_rows - frames < -(-frames // 50)  # < 1 row/chunk


def test_large_write_crosses_flush_boundary(tmp_path, monkeypatch):
    monkeypatch.setattr("medusa.core.store._FLUSH_BYTES", 200)  # force many partial flushes
    utts = _utterances(30, seed=1)
    _write(tmp_path / "f.h5", utts)
    with FeatureReader(tmp_path / "f.h5") as r:
        r.verify()
        for utt_id, frames in utts.items():
            np.testing.assert_array_equal(r[utt_id], frames.astype(np.float16))


@pytest.mark.parametrize(
    "utt_id, frames, message",
    [
        ("a", np.zeros((3, DIM + 1)), "'a' has shape"),
        ("b", np.zeros((0, DIM)), "'b' has zero frames"),
        ("c", np.full((2, DIM), np.nan), "'c' contains NaN"),
        ("d", np.full((2, DIM), np.inf), "'d' contains NaN or inf"),
        ("e", np.full((2, DIM), 1e6), "'e' has values beyond the float16 range"),
        ("f", np.zeros(DIM), "'f' has shape"),
    ],
)
def test_bad_frames_are_rejected_naming_the_id(tmp_path, utt_id, frames, message):
    path = tmp_path / "f.h5"
    with pytest.raises(ValueError, match=message), FeatureWriter(path, DIM, ATTRS) as w:
        w.add(utt_id, frames)
    assert not path.exists()


def test_duplicate_id_rejected(tmp_path):
    with pytest.raises(ValueError, match="duplicate utterance id 'x'"):
        with FeatureWriter(tmp_path / "f.h5", DIM) as w:
            w.add("x", np.ones((2, DIM)))
            w.add("x", np.ones((2, DIM)))


def test_unsupported_attribute_rejected(tmp_path):
    with pytest.raises(TypeError, match="'revision'"):
        FeatureWriter(tmp_path / "f.h5", DIM, {"revision": None})


def test_exception_leaves_no_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "f.h5"
    _write(path, {"old": np.ones((2, DIM))})
    with pytest.raises(RuntimeError), FeatureWriter(path, DIM, ATTRS) as w:
        w.add("new", np.ones((3, DIM)))
        raise RuntimeError("extraction failed")
    with FeatureReader(path) as r:  # the previous complete file is untouched
        assert r.ids == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5"]  # no temp file left


def test_killed_writer_leaves_nothing_at_the_path(tmp_path):
    path = tmp_path / "f.h5"
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        from medusa.core.store import FeatureWriter
        with FeatureWriter({str(path)!r}, {DIM}, {{}}) as w:
            for i in range(50):
                w.add(f"u{{i}}", np.ones((10, {DIM})))
            w._flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -9
    assert not path.exists()
    # Whatever is left is a hidden temporary name that no rule would take for the output,
    assert all(p.name.startswith(".f.h5.") and p.suffix == ".tmp" for p in tmp_path.iterdir())
    # and the next writer of the path (the rerun) deletes it.
    _write(path, _utterances())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5"]


def test_empty_file_is_valid(tmp_path):
    with FeatureWriter(tmp_path / "f.h5", DIM, ATTRS):
        pass
    with FeatureReader(tmp_path / "f.h5") as r:
        assert len(r) == 0 and r.dim == DIM and r.lengths.shape == (0,)
        r.verify()


def test_verify_detects_inconsistent_offsets(tmp_path):
    path = tmp_path / "f.h5"
    _write(path, _utterances())
    with h5py.File(path, "r+") as f:
        f["offsets"][1] += 1
    seal_hdf5(path)  # a file written inconsistent, not damaged later: its digest matches
    with FeatureReader(path) as r, pytest.raises(ValueError, match="not contiguous"):
        r.verify()


def test_not_a_feature_file(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="x.h5"):
        FeatureReader(tmp_path / "x.h5")


def _read_in_worker(args):
    reader, utt_id = args
    return reader[utt_id].tolist()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_reader_works_in_worker_processes(tmp_path, method):
    utts = _utterances()
    _write(tmp_path / "f.h5", utts)
    reader = FeatureReader(tmp_path / "f.h5")
    reader["utt00"]  # the parent has an open handle before the workers start
    with mp.get_context(method).Pool(2) as pool:
        got = pool.map(_read_in_worker, [(reader, u) for u in utts])
    for frames, (_, want) in zip(got, utts.items(), strict=True):
        np.testing.assert_array_equal(np.asarray(frames, np.float16), want.astype(np.float16))
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone["utt03"], reader["utt03"])
    reader.close()


def _same_file(a, b):
    with FeatureReader(a) as ra, FeatureReader(b) as rb:
        assert ra.ids == rb.ids and ra.attrs == rb.attrs
        np.testing.assert_array_equal(ra.lengths, rb.lengths)
        np.testing.assert_array_equal(ra.offsets, rb.offsets)
        np.testing.assert_array_equal(ra._frames()[()], rb._frames()[()])


@pytest.mark.parametrize("n_shards", [1, 2, 3, 10])
def test_merge_of_shards_equals_unsharded_file(tmp_path, n_shards):
    utts = _utterances(9)
    ids = sorted(utts)
    _write(tmp_path / "whole.h5", {u: utts[u] for u in ids})
    shards = []
    for k in range(n_shards):
        shards.append(tmp_path / f"part{k}.h5")
        _write(shards[-1], {u: utts[u] for u in shard_ids(ids, k, n_shards)})
    merge_feature_files(shards, tmp_path / "merged.h5")
    _same_file(tmp_path / "whole.h5", tmp_path / "merged.h5")


def test_merge_interleaved_shards_sorts_by_id(tmp_path, monkeypatch):
    monkeypatch.setattr("medusa.core.store._FLUSH_BYTES", 100)  # small read blocks in the merge
    utts = _utterances(9)
    ids = sorted(utts)
    _write(tmp_path / "whole.h5", {u: utts[u] for u in ids})
    _write(tmp_path / "odd.h5", {u: utts[u] for u in ids[1::2]})
    _write(tmp_path / "even.h5", {u: utts[u] for u in ids[0::2]})
    merge_feature_files([tmp_path / "odd.h5", tmp_path / "even.h5"], tmp_path / "merged.h5")
    _same_file(tmp_path / "whole.h5", tmp_path / "merged.h5")


def test_merge_rejects_inconsistent_shards(tmp_path):
    _write(tmp_path / "a.h5", {"u1": np.ones((2, DIM))})
    _write(tmp_path / "b.h5", {"u2": np.ones((2, DIM))}, attrs={**ATTRS, "layer": "sum_last4"})
    _write(tmp_path / "c.h5", {"u1": np.ones((2, DIM))})
    with pytest.raises(ValueError, match="attributes differ"):
        merge_feature_files([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "m.h5")
    with pytest.raises(ValueError, match="'u1' appears in both"):
        merge_feature_files([tmp_path / "a.h5", tmp_path / "c.h5"], tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()


def test_shard_ids_partition():
    ids = [f"x{i}" for i in range(23)][::-1]
    parts = [shard_ids(ids, k, 4) for k in range(4)]
    assert sum(parts, []) == sorted(ids)  # disjoint, complete, contiguous, in order
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard_ids(ids, 0, 1) == sorted(ids)
    # Block-aligned: every shard starts at a multiple of the block (23 ids = 5 blocks of 5).
    blocks = [shard_ids(ids, k, 3, block=5) for k in range(3)]
    assert sum(blocks, []) == sorted(ids)
    assert [len(b) for b in blocks] == [5, 10, 8]
    assert shard_ids(ids, 0, 10, block=5) == []  # more shards than blocks: some are empty
    with pytest.raises(ValueError):
        shard_ids(ids, 4, 4)


def test_atomic_file_writes(tmp_path):
    import torch

    target = tmp_path / "new" / "x.pt"
    atomic_torch_save(target, {"w": torch.arange(3)})
    first = target.read_bytes()
    atomic_torch_save(target, {"w": torch.arange(3)})
    assert target.read_bytes() == first  # equal objects, identical bytes

    def failing(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_bytes() == first
    atomic_write_json(tmp_path / "new" / "m.json", {"b": 1, "a": [2]}, sort_keys=True)
    assert (tmp_path / "new" / "m.json").read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    atomic_write_text(tmp_path / "new" / "t.txt", "é\n")
    assert (tmp_path / "new" / "t.txt").read_text(encoding="utf-8") == "é\n"
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["m.json", "t.txt", "x.pt"]


def test_atomic_directory_replaces_whole_folders_or_nothing(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(KeyboardInterrupt), atomic_directory(out) as tmp:
        (tmp / "b.txt").write_text("half")
        raise KeyboardInterrupt
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    with atomic_directory(out) as tmp:
        (tmp / "b.txt").write_text("second")
    assert [p.name for p in out.iterdir()] == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary or old folder left


def test_atomic_files_get_the_umask_mode_not_owner_only(tmp_path):
    from medusa.core.atomic import atomic_write_text

    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(previous)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644
