"""The models upstream of a bundle's DeepSER models: the ASR model and the feature backbones
they were trained on, found (a fetched copy in the model store, a local path, or the hub cache at
the recorded commit), checked against the bundle's records, and kept loaded between recordings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medusa.inference.bundle_files import BundleError, sha256_file
from medusa.inference.bundle_load import (
    Bundle,
    fetched_asr,
    fetched_backbone,
    map_path,
    resolve_source,
)


@dataclass
class UpstreamModels:
    """`backbone_root`, `path_map`: where local models recorded with relative (or moved) paths
    are; `model_store` (`model_store_explicit`: given by the user): where fetch_models put the
    hub backbones and the ASR checkpoint. `keep`: keep them loaded; `verify`: check their
    checksums against the bundle's."""

    bundle: Bundle
    device: torch.device
    backbone_root: str | os.PathLike | None
    path_map: dict[str, str]
    model_store: Path
    model_store_explicit: bool
    keep: bool = True
    verify: bool = True
    _cache: dict[str, object] = field(default_factory=dict)

    def clear(self) -> None:
        self._cache.clear()

    def asr(self):
        """The ASR model (loaded once when `keep`)."""
        from medusa.asr.transcribe import load_asr_model

        if "asr" in self._cache:
            return self._cache["asr"]
        asr = self.bundle.manifest["asr"]
        fetched = None
        if asr.get("fetched") and map_path(asr["model"], self.path_map) is None:
            fetched = fetched_asr(asr, self.model_store, self.model_store_explicit)
            if fetched is None and asr["model"].startswith(("http://", "https://")):
                raise BundleError(
                    f"ASR model {asr['model']}: no fetched checkpoint at "
                    f"{self.model_store / asr['fetched']}; pass --model-store DIR (the "
                    "workflow's model_store) or --path-map URL=CHECKPOINT"
                )
        # Else a release name: openai-whisper loads it from its cache and checks its sha256.
        source = (
            str(fetched)
            if fetched
            else resolve_source(
                asr["model"], asr["local"], self.backbone_root, self.path_map, what="ASR model"
            )
        )
        if self.verify and asr["local"] and asr["sha256"]:
            if sha256_file(source) != asr["sha256"]:
                raise BundleError(
                    f"ASR model {source}: its sha256 differs from the one the bundle was "
                    f"trained with ({asr['sha256'][:12]}...); wrong file for {asr['model']!r}"
                )
        model = load_asr_model(source, self.device)
        if self.keep:
            self._cache["asr"] = model
        return model

    def _backbone_source(self, name: str, record: Mapping) -> tuple[dict, Path | None, str]:
        """(the feature-set config to load, the checked fetched copy or None, what it is).

        A hub backbone comes from its fetched copy in the model store, else by id at the
        recorded commit from the Hugging Face cache, unless --path-map maps its id; a local
        folder from --path-map or under --backbone-root."""
        cfg = {"kind": record["kind"], "layer": record["layer"], "batch_size": record["batch_size"]}
        if record.get("hub") and map_path(record["backbone"], self.path_map) is None:
            copy = fetched_backbone(record, self.model_store, self.model_store_explicit)
            revision = record["revision"] if copy else record.get("commit") or record["revision"]
            cfg.update(backbone=record["backbone"], revision=revision)
            return cfg, copy, str(copy or record["backbone"])
        source = resolve_source(
            record["backbone"],
            record["local"],
            self.backbone_root,
            self.path_map,
            what=f"backbone of feature set {name!r}",
        )
        cfg["backbone"] = source
        if record.get("revision") and not record["local"]:
            cfg["revision"] = record["revision"]
        return cfg, None, source

    def backbone(self, name: str):
        """Feature set `name`'s backbone, checked against the bundle (loaded once when `keep`)."""
        from medusa.features.backbone import load_backbone

        key = f"features:{name}"
        if key in self._cache:
            return self._cache[key]
        record = self.bundle.feature_sets[name]
        cfg, copy, source = self._backbone_source(name, record)
        backbone = load_backbone(cfg, self.device, local_copy=copy)
        # A hub backbone loaded from the cache at the recorded commit: the commit pins the
        # weights (the cache's files are not a folder whose checksum could be taken).
        from_cache = bool(record.get("hub")) and copy is None
        if backbone.dim != record["dim"]:
            raise BundleError(
                f"backbone {source} of feature set {name!r} gives dim {backbone.dim}, the "
                f"models were trained on dim {record['dim']}"
            )
        found = backbone.attrs.get("weights_sha256", "")
        expected = "" if from_cache else record["weights_sha256"]
        if self.verify and expected and found != expected:
            raise BundleError(
                f"backbone {source} of feature set {name!r}: its weights differ from the ones "
                f"the models were trained on (sha256 {found[:12]}... vs "
                f"{record['weights_sha256'][:12]}...)"
            )
        if self.keep:
            self._cache[key] = backbone
        return backbone
