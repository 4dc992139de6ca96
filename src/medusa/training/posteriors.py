"""A trained DeepSER checkpoint run over every subset of the manifest: the posteriors the
ensemble learns from (docs/method.md, 6).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from medusa.core.atomic import atomic_write
from medusa.core.emotions import ATTRIBUTES
from medusa.core.integrity import USERBLOCK_BYTES, seal_hdf5
from medusa.core.manifest import read_manifest
from medusa.training.checkpoints import checkpoint_classes, load_checkpoint, settings_of
from medusa.training.data import (
    BatchPlan,
    ClipDataset,
    Corpus,
    _check_paths,
    make_loader,
    sorted_batches,
)
from medusa.training.model import DeepSER
from medusa.training.settings import ModelSettings
from medusa.training.steps import predict

log = logging.getLogger(__name__)


def predict_clips(
    model: DeepSER,
    ids: list[str],
    feature_paths: list[Path],
    settings: ModelSettings,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """`predict` over the clips `ids` (in that order), read from `feature_paths` in one pass."""
    dataset = ClipDataset(ids, feature_paths, settings.max_frames)
    plan = BatchPlan(sorted_batches(dataset.lengths, 2 * settings.stage1.batch_size))
    loader = make_loader(dataset, plan, settings.num_workers, device, persistent=False)
    return predict(model, loader, len(dataset), device, settings.amp)


def write_posteriors(
    checkpoint_path: str | os.PathLike,
    manifest: str | os.PathLike | pd.DataFrame,
    feature_paths: Mapping[str, list[str | os.PathLike]],
    out_path: str | os.PathLike,
    device: str | torch.device = "cpu",
) -> None:
    """Softmax posteriors and attributes of every manifest row with features, per subset.

    `manifest`: the manifest (a path, or a table such as the unlabelled partition's clips as
    `test` rows, ``medusa.corpus.audio_index.unlabelled_manifest``); `feature_paths` maps each
    subset to write to the model's feature files of the audio partition that holds it.

    HDF5 layout: one group per subset with `ids` (utf-8, sorted), `probs` float32 [N, C]
    (class order: the file's `classes` attribute, codes joined by commas, e.g. A,S,H,U,F,D,C,N)
    and `attributes` float32 [N, 3] (act, val, dom).
    """
    device = torch.device(device)
    model, checkpoint = load_checkpoint(checkpoint_path, device)
    settings, _ = settings_of(checkpoint)
    features = list(checkpoint["features"])
    dims = _check_paths(feature_paths, [], features)
    if dims != checkpoint["input_dims"]:
        raise ValueError(
            f"{checkpoint_path}: trained on dims {checkpoint['input_dims']}, features have {dims}"
        )
    if not isinstance(manifest, pd.DataFrame):
        manifest = read_manifest(manifest)
    corpus = Corpus(manifest, manifest.attrs.get("path", "manifest"), feature_paths, features)
    results = {}
    for name in sorted(feature_paths):
        subset = corpus.subset(name)
        ids = sorted(subset.ids)
        probs = np.zeros((0, len(checkpoint_classes(checkpoint))), dtype=np.float32)
        attrs = np.zeros((0, len(ATTRIBUTES)), dtype=np.float32)
        if ids:
            probs, attrs = predict_clips(model, ids, subset.feature_paths, settings, device)
        results[name] = (ids, probs, attrs)
        log.info(f"posteriors: {name}: {len(ids)} files")
    classes = checkpoint_classes(checkpoint)
    _write_posterior_file(Path(out_path), settings.name, checkpoint_path, classes, results)


def _write_posterior_file(
    out_path: Path, model: str, checkpoint_path, classes: Sequence[str], results: dict
) -> None:
    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w", userblock_size=USERBLOCK_BYTES) as f:
            f.attrs["model"] = model
            f.attrs["classes"] = ",".join(classes)
            f.attrs["attributes"] = ",".join(ATTRIBUTES)
            f.attrs["checkpoint"] = str(checkpoint_path)
            for name, (ids, probs, attrs) in results.items():
                group = f.create_group(name)
                group.create_dataset("ids", data=ids, dtype=h5py.string_dtype("utf-8"))
                group.create_dataset("probs", data=probs.astype(np.float32))
                group.create_dataset("attributes", data=attrs.astype(np.float32))
        seal_hdf5(tmp)  # readers (medusa.ensemble) check the file against this digest

    atomic_write(out_path, write)
