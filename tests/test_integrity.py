"""Checksums of feature files, posteriors and checkpoints (medusa.core.integrity): any changed byte,
in the data or in the metadata, is caught before the file is used."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medusa.core import integrity
from medusa.core.atomic import atomic_torch_save
from medusa.core.integrity import CorruptFileError, load_torch, verify_hdf5
from medusa.core.store import FeatureReader, FeatureWriter
from medusa.training.data import ClipDataset, feature_statistics


def _every_flip_is_caught(path, check) -> list[int]:
    """Positions where flipping one bit goes unnoticed by `check(path)` (should be none)."""
    data = path.read_bytes()
    missed = []
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x01
        path.write_bytes(bytes(damaged))
        integrity._verified.clear()  # the cache keys on (size, mtime): a test writes fast
        try:
            check(path)
            missed.append(i)
        except CorruptFileError as err:
            assert str(path) in str(err) and f"rm {path}" in str(err)
    path.write_bytes(data)
    integrity._verified.clear()
    return missed


def test_a_flipped_bit_anywhere_in_a_feature_file_is_caught(tmp_path):
    """Frames, offsets, ids (in HDF5's global heap), attributes, superblock: every byte."""
    path = tmp_path / "f.h5"
    with FeatureWriter(path, 3, {"backbone": "b", "feature_set": "wavlm"}) as writer:
        for i in range(4):
            writer.add(f"clip{i}", np.full((2 + i, 3), i, dtype=np.float32))
    with FeatureReader(path) as reader:  # intact: opens
        assert reader.ids == [f"clip{i}" for i in range(4)]
    assert _every_flip_is_caught(path, lambda p: FeatureReader(p).close()) == []


def test_a_flipped_bit_anywhere_in_a_checkpoint_is_caught(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save(path, {"w": torch.arange(6.0), "cfg": {"name": "m"}}, checksum=True)
    assert load_torch(path)["cfg"] == {"name": "m"}
    assert _every_flip_is_caught(path, load_torch) == []


def test_files_without_a_checksum_are_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(2)}, plain)
    with pytest.raises(CorruptFileError, match="no checksum"):
        load_torch(plain)
    import h5py

    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(CorruptFileError, match="no checksum"):
        verify_hdf5(tmp_path / "plain.h5")


def test_non_finite_frames_name_the_file_and_clip_in_the_statistics(tmp_path):
    """Only a file written by other means can hold inf (FeatureWriter refuses it): the
    standardisation statistics name the file and the clip rather than "must be finite"."""
    import h5py

    from medusa.core.integrity import seal_hdf5

    path = tmp_path / "f.h5"
    with FeatureWriter(path, 2, {}) as writer:
        writer.add("a", np.ones((3, 2)))
        writer.add("b", np.ones((2, 2)))
    with h5py.File(path, "r+") as f:
        f["frames"][4, 1] = np.inf  # second frame of clip "b"
    seal_hdf5(path)
    dataset = ClipDataset(["a", "b"], [path], max_frames=10)
    with pytest.raises(ValueError, match=rf"{path}: clip 'b' has NaN or inf frames"):
        feature_statistics(dataset)
