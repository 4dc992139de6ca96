"""A bundle loaded for use: its checksums verified, its backbones and ASR model found in the
local model store or fetched, its classes and temperature read.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medusa.core.emotions import ClassSet, ClassSetError
from medusa.core.fetch import FetchError, verified_hub_copy
from medusa.inference.bundle_files import (
    BUNDLE_FORMAT,
    HEAD_STEM,
    MANIFEST,
    BundleError,
    _torch_file,
    read_checkpoint,
    sha256_file,
    verify_checksums,
)

# --------------------------------------------------------------------------------------------
# Loading


def map_path(source: str, path_map: Mapping[str, str] | None) -> str | None:
    """`source` with the longest matching `path_map` prefix replaced (whole path components),
    or None when no entry matches."""
    best = None
    for old, new in (path_map or {}).items():
        old_s = old.rstrip("/")
        if source == old_s or source.startswith(old_s + "/"):
            if best is None or len(old_s) > len(best[0]):
                best = (old_s, new)
    if best is None:
        return None
    return str(Path(best[1]) / source[len(best[0]) :].lstrip("/")) if source != best[0] else best[1]


def resolve_source(
    source: str,
    local: bool,
    backbone_root: str | os.PathLike | None = None,
    path_map: Mapping[str, str] | None = None,
    what: str = "backbone",
) -> str:
    """Where a recorded backbone or ASR model is on this machine.

    A hub id (not local at training time) is returned unchanged unless `path_map` maps it (to
    a local copy). A local path is mapped by `path_map` when an entry matches, else a relative
    one is taken under `backbone_root` (default: the working directory); it must exist.
    """
    mapped = map_path(source, path_map)
    if not local and mapped is None:
        return source
    path = Path(mapped if mapped is not None else source)
    if not path.is_absolute():
        path = Path(backbone_root or os.getcwd()) / path
    if not path.exists():
        raise BundleError(
            f"{what} {source!r} (a local path when the bundle was built) not found at {path}: "
            "pass --backbone-root DIR (the folder relative paths start from, e.g. the training "
            "run's working directory) or --path-map OLD=NEW"
        )
    return str(path)


def model_store_of(manifest: Mapping, model_store: str | os.PathLike | None) -> tuple[Path, bool]:
    """(the model store fetched models are taken from, whether it was named explicitly):
    `model_store` when given, else the workflow's ``model_store`` the bundle recorded."""
    if model_store is not None:
        return Path(model_store), True
    return Path(manifest.get("model_store") or "resources/models"), False


def fetched_backbone(record: Mapping, store: Path, explicit: bool) -> Path | None:
    """The fetched copy of a hub backbone in `store`, checked (every file against its fetch
    manifest, and the commit the bundle's features were extracted with); None when the store
    has no copy and was not named explicitly (the backbone is then loaded by id at that commit
    from the Hugging Face cache)."""
    folder = store / record["fetched"]
    if not folder.is_dir():
        if explicit:
            raise BundleError(
                f"hub backbone {record['backbone']!r}: no fetched copy at {folder} (run "
                "`snakemake fetch_models` with the bundle's config, or leave out --model-store "
                "to load it from the Hugging Face cache)"
            )
        return None
    try:
        fetched = verified_hub_copy(folder)
    except FetchError as err:
        raise BundleError(str(err)) from err
    if fetched["repo_id"] != record["backbone"] or (
        record.get("commit") and fetched["commit"] != record["commit"]
    ):
        raise BundleError(
            f"{folder}: holds {fetched['repo_id']} at commit {fetched['commit']}, the bundle's "
            f"models were trained on {record['backbone']} at commit {record.get('commit')}"
        )
    return folder


def fetched_asr(record: Mapping, store: Path, explicit: bool) -> Path | None:
    """The fetched ASR checkpoint in `store`, checked against the bundle's sha256; None when
    the store has none and was not named explicitly."""
    path = store / record["fetched"]
    if not path.is_file():
        if explicit:
            raise BundleError(
                f"ASR model {record['model']!r}: no fetched checkpoint at {path} (run "
                "`snakemake fetch_models` with the bundle's config)"
            )
        return None
    if sha256_file(path) != record["sha256"]:
        raise BundleError(
            f"{path}: its sha256 differs from the one the bundle was trained with "
            f"({record['sha256'][:12]}...); delete it and run `snakemake fetch_models` again"
        )
    return path


def verify_fetched_models(manifest: Mapping, model_store=None) -> list[str]:
    """Check the hub backbones and the ASR checkpoint a bundle records against the model
    store (files, commit, weights' sha256); one line per model saying what was found. A copy
    that differs raises BundleError; a missing one is an error only for an explicit store."""
    store, explicit = model_store_of(manifest, model_store)
    lines = []
    for name, record in manifest["feature_sets"].items():
        if not record.get("hub"):
            continue
        folder = fetched_backbone(record, store, explicit)
        if folder is None:
            lines.append(f"{name}: {record['backbone']} not in {store}: the Hugging Face cache")
            continue
        from medusa.features.backbone import weights_sha256

        if record["weights_sha256"] and weights_sha256(folder) != record["weights_sha256"]:
            raise BundleError(f"{folder}: weights differ from the ones the models were trained on")
        lines.append(f"{name}: {record['backbone']}@{record['commit']} matches {folder}")
    asr = manifest["asr"]
    if asr.get("fetched"):
        path = fetched_asr(asr, store, explicit)
        lines.append(
            f"asr: {asr['model']} matches {path}"
            if path
            else f"asr: {asr['model']} not in {store}: openai-whisper's own cache"
        )
    return lines


@dataclass
class Bundle:
    """A verified bundle: its manifest, the DeepSER checkpoints and the head's checkpoint."""

    path: Path
    manifest: dict
    checkpoints: dict[str, dict]  # model -> checkpoint dict (as the workflow wrote it)
    head_checkpoint: dict

    def class_set(self) -> ClassSet:
        """The class set the bundle predicts: its manifest's codes, in order, with their names
        (the codes themselves when the manifest names none)."""
        letters = tuple(str(c) for c in self.manifest.get("classes") or ())
        names = tuple(str(n) for n in self.manifest.get("class_names") or letters)
        try:
            return ClassSet(letters, names)
        except ClassSetError as err:
            raise BundleError(f"{self.path / MANIFEST}: {err}") from err

    @property
    def models(self) -> list[str]:
        return list(self.manifest["models"])

    @property
    def feature_sets(self) -> dict[str, dict]:
        return self.manifest["feature_sets"]

    @property
    def temperature(self) -> float:
        """The soup's temperature T (``bundle_temperature``); 1 for a bundle without one."""
        return bundle_temperature(self.manifest, self.path / MANIFEST)

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        """The soup's posteriors [N, C] temperature-scaled: softmax(ln p / T), the same argmax
        (``medusa.evaluation.calibration.temperature_scale``); unchanged for a bundle without T."""
        from medusa.evaluation.calibration import temperature_scale

        return (
            temperature_scale(probs, self.temperature) if "calibration" in self.manifest else probs
        )

    def used_feature_sets(self) -> list[str]:
        """The feature sets the models read, in manifest order."""
        used = {fs for c in self.checkpoints.values() for fs in c["features"]}
        return [fs for fs in self.feature_sets if fs in used]

    def load_models(self, device: torch.device | str) -> dict[str, tuple[torch.nn.Module, dict]]:
        """model -> (DeepSER in eval mode on `device`, checkpoint), via load_checkpoint."""
        from medusa.training.checkpoints import load_checkpoint

        loaded = {}
        with tempfile.TemporaryDirectory(prefix="medusa-bundle-") as tmp:
            for model, checkpoint in self.checkpoints.items():
                path = _torch_file(checkpoint, Path(tmp), f"{model}.pt")
                loaded[model] = load_checkpoint(path, device)
        return loaded

    def load_head(self):
        """(head in eval mode, its info), via medusa.ensemble.meta.load_head."""
        from medusa.ensemble.meta import load_head

        with tempfile.TemporaryDirectory(prefix="medusa-bundle-") as tmp:
            head, info = load_head(_torch_file(self.head_checkpoint, Path(tmp), "head.pt"))
        if list(info["models"]) != self.models:
            raise BundleError(
                f"{self.path / MANIFEST}: models {self.models} differ from the head's "
                f"{list(info['models'])}"
            )
        return head, info


def bundle_temperature(manifest: Mapping, where: str | os.PathLike = MANIFEST) -> float:
    """T of a bundle manifest's ``calibration`` record, checked (a finite number > 0); 1.0 when
    the bundle has none (built before temperature scaling). `where` names the file in errors."""
    record = manifest.get("calibration")
    if record is None:
        return 1.0
    value = record.get("temperature") if isinstance(record, Mapping) else None
    if (
        not isinstance(record, Mapping)
        or record.get("method") != "temperature"
        or not isinstance(value, int | float)
        or isinstance(value, bool)
        or not np.isfinite(value)
        or value <= 0
    ):
        raise BundleError(
            f"{where}: calibration must be {{method: temperature, temperature: T > 0}}, "
            f"got {record!r}"
        )
    return float(value)


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Verify the checksums, then read the manifest and the checkpoints."""
    path = Path(path)
    verify_checksums(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BundleError(f"{path / MANIFEST}: not JSON ({err})") from err
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{path / MANIFEST}: bundle format {manifest.get('format')!r}, this medusa reads "
            f"{BUNDLE_FORMAT}"
        )
    classes = manifest.get("classes")
    if not isinstance(classes, list) or len(classes) < 2:
        raise BundleError(f"{path / MANIFEST}: no class list (classes: {classes!r})")
    checkpoints = {}
    for model in manifest["models"]:
        files = manifest["model_files"][model]
        checkpoints[model] = read_checkpoint(path / Path(files["weights"]).with_suffix(""))
    head_checkpoint = read_checkpoint(path / HEAD_STEM)
    _check_bundle_classes(path, classes, checkpoints, head_checkpoint)
    bundle_temperature(manifest, path / MANIFEST)
    return Bundle(path, manifest, checkpoints, head_checkpoint)


def _check_bundle_classes(path: Path, classes: list, checkpoints: Mapping, head: Mapping) -> None:
    """The manifest's class order is the one every model and the head were trained on."""
    from medusa.ensemble.meta import head_classes
    from medusa.training.checkpoints import checkpoint_classes

    trained = {"head": head_classes(head)} | {
        m: checkpoint_classes(c) for m, c in checkpoints.items()
    }
    for what, codes in trained.items():
        if list(codes) != list(classes):
            raise BundleError(
                f"{path / MANIFEST}: class order {classes}, but {what} predicts {list(codes)}"
            )
