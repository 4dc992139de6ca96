"""A trained MEDUSA as a portable folder: what `medusa predict` needs, and nothing more.

``build_bundle`` (rule ``bundle``, ``results/bundle/``) writes, atomically (a temporary sibling
folder renamed into place):

- ``models/<model>.safetensors`` + ``models/<model>.json``: each enabled DeepSER model's final
  checkpoint (stage 2, or stage 1 when its stage 2 is disabled). The tensors (weights and the
  input statistics, which are buffers of the state dict) go to safetensors, everything else of
  the checkpoint (resolved settings, input dims, feature sets, stage, epoch) to JSON;
- ``head.safetensors`` + ``head.json``: the soup meta-classifier, stored the same way;
- ``bundle.json``: format, class order, attributes, the model order the head expects, the ASR
  and feature-set definitions (backbone id or local path, revision, weights checksum, layer
  view, dims, batch sizes), the segmentation settings predict reads (``segmentation``), the
  soup's temperature (``calibration``: T and the clips it was fitted on,
  ``medusa.evaluation.temperature``; ``Bundle.calibrate`` applies it), and the configuration blocks
  used;
- ``metrics/``: the soup's metrics and the report's Tables 1, 3 and C (calibration);
- ``README.md``: the model card;
- ``checksums.sha256``: the sha256 of every other file (``sha256sum -c`` reads it).

No pickle anywhere. ``load_bundle`` verifies every checksum first: a missing or altered file
stops with a message naming that file. The checkpoints are rebuilt through the training and
ensemble modules' own loaders (``medusa.training.checkpoints.load_checkpoint``,
``medusa.ensemble.meta.load_head``) so a bundled model computes exactly what the workflow's model
computes.

Backbones and the ASR model are not copied (they are large and public, or local folders the
user already has). A hub backbone is recorded as its id with the commit ``fetch_models`` fetched
(``medusa.core.fetch``) and its weights' checksum, and loads from that checked copy in the model
store (``fetched_backbone``), else by id at the commit from the Hugging Face cache; a fetched ASR
checkpoint is recorded with its sha256 and loads from the store (``fetched_asr``); local paths
are found through a path map and a backbone root (``resolve_source``), and a local folder's
weights are checked against the checksum recorded at training time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import medusa
from medusa.core.atomic import atomic_directory
from medusa.core.emotions import ATTRIBUTES, ClassSet
from medusa.core.fetch import hub_model, whisper_checkpoint
from medusa.core.integrity import load_torch
from medusa.inference.bundle_files import (
    BUNDLE_FORMAT,
    DEFAULT_SEGMENTATION,
    HEAD_STEM,
    MANIFEST,
    METRICS_DIR,
    MODELS_DIR,
    BundleError,
    BundleSources,
    save_checkpoint,
    sha256_file,
    write_checksums,
)
from medusa.inference.model_card import model_card

# --------------------------------------------------------------------------------------------
# Building


def backbone_record(feature_set: str, cfg: Mapping, feature_attrs: Mapping) -> dict:
    """What prediction needs to rebuild a feature set: the config's definition and the facts
    the feature file recorded at extraction (backbone, commit, weights checksum, dim)."""
    if str(feature_attrs.get("backbone", cfg["backbone"])) != str(cfg["backbone"]):
        raise BundleError(
            f"feature set {feature_set!r}: features were extracted with "
            f"{feature_attrs.get('backbone')!r}, the config names {cfg['backbone']!r}"
        )
    if str(feature_attrs.get("layer", cfg["layer"])) != str(cfg["layer"]):
        raise BundleError(
            f"feature set {feature_set!r}: features were extracted with layer "
            f"{feature_attrs.get('layer')!r}, the config says {cfg['layer']!r}"
        )
    sha = str(feature_attrs.get("weights_sha256", ""))
    hub = hub_model(dict(cfg), f"feature_sets.{feature_set}")
    if hub is not None:
        # Extracted from the copy fetch_models made (medusa.core.fetch): the commit it holds and its
        # weights' checksum; prediction loads that copy from the model store, or the commit
        # from the Hugging Face cache.
        source = {
            "local": False,
            "hub": True,
            "revision": hub.revision,
            "commit": str(feature_attrs.get("revision", "")) or None,
            "fetched": hub.folder("").as_posix(),
        }
    else:
        source = {
            "local": bool(sha),  # a local folder (checksummed) rather than a hub id
            # The configured revision, else the hub commit the features were extracted with.
            "revision": cfg.get("revision") or str(feature_attrs.get("revision", "")) or None,
        }
    return {
        "backbone": str(cfg["backbone"]),
        **source,
        "weights_sha256": sha,
        "kind": cfg["kind"],
        "layer": cfg["layer"],
        "batch_size": int(cfg["batch_size"]),
        "dim": int(feature_attrs["dim"]),
        "frame_rate": float(feature_attrs.get("frame_rate", 0.0)),
        "model_type": str(feature_attrs.get("model_type", "")),
        "layer_convention": str(feature_attrs.get("layer_convention", "")),
    }


def asr_record(asr: Mapping) -> dict:
    """The ASR definition: a local checkpoint file with its sha256, or the openai-whisper
    release name or URL that fetch_models fetched, with the sha256 that pins it and where the
    copy lies in the model store."""
    model = str(asr["model"])
    local = os.path.isfile(model)
    remote = None if local else whisper_checkpoint(dict(asr))
    return {
        "model": model,
        "local": local,
        "sha256": sha256_file(model) if local else remote.sha256 if remote else "",
        "revision": asr.get("revision"),
        "fetched": remote.path("").as_posix() if remote else None,
        "batch_size": int(asr["batch_size"]),
        "language": asr["language"],
        "no_speech_threshold": float(asr["no_speech_threshold"]),
    }


def build_bundle(sources: BundleSources, out_dir: str | os.PathLike) -> Path:
    """Write the bundle folder `out_dir` (atomically); returns it."""
    from medusa.ensemble.meta import load_head

    # What goes in: the head, the models it combines, the feature sets they read.
    _, head_info = load_head(sources.head)
    head_models = list(head_info["models"])
    if sorted(head_models) != sorted(sources.checkpoints):
        raise BundleError(
            f"{sources.head}: the head combines {head_models}, the bundle was given checkpoints "
            f"of {sorted(sources.checkpoints)}"
        )
    feature_sets = _feature_set_records(sources)
    _check_classes(sources, head_info)
    calibration = calibration_record(sources.temperature, head_models)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        # Weights as safetensors + JSON, the metrics, the manifest, the card, the checksums.
        model_files = {
            model: _write_model(sources, model, feature_sets, tmp) for model in head_models
        }
        head_checkpoint = load_torch(sources.head)
        save_checkpoint(head_checkpoint, tmp / HEAD_STEM)
        _copy_metrics(sources, tmp / METRICS_DIR)
        manifest = _manifest(sources, head_info, model_files, feature_sets, calibration)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(model_card(manifest, sources), encoding="utf-8")
        write_checksums(tmp)
    return out_dir


def bundle_classes(config: Mapping) -> ClassSet:
    """The class set a bundle records: the workflow config's `classes` (MSP-Podcast's when the
    config predates class sets)."""
    return ClassSet.from_config(config.get("classes"))


def _check_classes(sources: BundleSources, head_info: Mapping) -> None:
    """The config's classes are the head's and every model's (they were trained on them)."""
    from medusa.ensemble.meta import head_classes
    from medusa.training.checkpoints import checkpoint_classes

    classes = bundle_classes(sources.config).letters
    trained = {"the head": head_classes(head_info)} | {
        model: checkpoint_classes(load_torch(path)) for model, path in sources.checkpoints.items()
    }
    for what, codes in trained.items():
        if tuple(codes) != classes:
            raise BundleError(
                f"{what} predicts classes {list(codes)}, the config's classes are "
                f"{list(classes)}: rebuild the models with this config first"
            )


def _feature_set_records(sources: BundleSources) -> dict[str, dict]:
    """Each feature set's definition, with the backbone checksum its stored features carry."""
    from medusa.core.store import FeatureReader

    records = {}
    for name, path in sources.feature_files.items():
        with FeatureReader(path) as reader:
            attrs = dict(reader.attrs)
        records[name] = backbone_record(name, sources.config["feature_sets"][name], attrs)
    return records


def _write_model(sources: BundleSources, model: str, feature_sets: dict, tmp: Path) -> dict:
    """Check one model's checkpoint against the feature sets, write it; its manifest entry."""
    path = sources.checkpoints[model]
    checkpoint = load_torch(path)
    name = checkpoint.get("model_cfg", {}).get("name", model)
    if name != model:
        raise BundleError(f"{path}: a checkpoint of {name!r}, not {model!r}")
    missing = [fs for fs in checkpoint["features"] if fs not in feature_sets]
    if missing:
        raise BundleError(f"{path}: no feature set {missing}")
    for fs, dim in zip(checkpoint["features"], checkpoint["input_dims"], strict=True):
        if feature_sets[fs]["dim"] != int(dim):
            raise BundleError(
                f"{path}: trained on {fs} features of dim {dim}, "
                f"{sources.feature_files[fs]} has dim {feature_sets[fs]['dim']}"
            )
    save_checkpoint(checkpoint, tmp / MODELS_DIR / model)
    return {
        "weights": f"{MODELS_DIR}/{model}.safetensors",
        "metadata": f"{MODELS_DIR}/{model}.json",
        "features": list(checkpoint["features"]),
        "stage": checkpoint.get("stage"),
        "epoch": checkpoint.get("epoch"),
    }


def _copy_metrics(sources: BundleSources, metrics: Path) -> None:
    metrics.mkdir()
    for name, source in _metric_files(sources).items():
        (metrics / name).write_bytes(Path(source).read_bytes())


def _metric_files(sources: BundleSources) -> dict[str, str]:
    """The file name in ``metrics/`` of each metrics file the bundle carries."""
    files = {
        "soup_metrics.json": sources.soup_metrics,
        "table1.tsv": sources.table1,
        "table3.tsv": sources.table3,
    }
    return files | ({"calibration.tsv": sources.calibration} if sources.calibration else {})


def calibration_record(temperature_json: str | None, models: Sequence[str]) -> dict | None:
    """bundle.json's ``calibration``: the soup's temperature and what it was fitted on (the
    clip count, not the ids), from rule temperature's file; None without one."""
    if temperature_json is None:
        return None
    from medusa.ensemble.inputs import EnsembleError
    from medusa.evaluation.temperature import read_temperature

    try:
        record = read_temperature(temperature_json, models)
    except EnsembleError as err:
        raise BundleError(str(err)) from err
    fitted = record["fitted_on"]
    return {
        "method": record["method"],
        "temperature": record["temperature"],
        "fitted_on": {k: fitted[k] for k in ("subset", "clips", "speakers")},
        "nll_before": record["before"]["nll"],
        "nll_after": record["after"]["nll"],
        "note": record["note"],
    }


def _manifest(
    sources: BundleSources,
    head_info: dict,
    model_files: dict,
    feature_sets: dict,
    calibration: dict | None,
):
    """bundle.json: everything prediction needs to know, and where each file is."""
    manifest = {
        "format": BUNDLE_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "medusa_version": medusa.__version__,
        "classes": list(bundle_classes(sources.config).letters),
        "class_names": list(bundle_classes(sources.config).names),
        "attributes": list(ATTRIBUTES),
        "sample_rate": 16000,
        "models": list(head_info["models"]),
        "model_files": model_files,
        "head": {
            "weights": f"{HEAD_STEM}.safetensors",
            "metadata": f"{HEAD_STEM}.json",
            "architecture": head_info.get("architecture"),
            "seeds": head_info.get("seeds"),
        },
        "asr": asr_record(sources.config["asr"]),
        "feature_sets": feature_sets,
        "segmentation": dict(DEFAULT_SEGMENTATION),
        "metrics": {
            Path(name).stem.removesuffix("_metrics"): f"{METRICS_DIR}/{name}"
            for name in _metric_files(sources)
        },
        "demo": bool(sources.demo),
        # Where fetch_models put the hub backbones and the ASR checkpoint (absolute: the
        # bundle is used from elsewhere); `medusa predict --model-store` overrides it.
        "model_store": (
            os.path.abspath(sources.config["model_store"])
            if sources.config.get("model_store")
            else None
        ),
        "config": sources.config,
    }
    return manifest | ({"calibration": calibration} if calibration else {})


def sources_from_snakemake(inputs, config: Mapping, models: Sequence[str]) -> BundleSources:
    """BundleSources of the `bundle` rule (inputs in the rule's order)."""
    # results/models/<model>/<stage>/checkpoint.pt, matched by path rather than by position.
    by_model = {Path(p).parent.parent.name: str(p) for p in inputs.checkpoints}
    if sorted(by_model) != sorted(models):
        raise BundleError(f"checkpoints {sorted(by_model)} do not match the models {models}")
    checkpoints = {model: by_model[model] for model in models}
    feature_files = {Path(p).parent.name: str(p) for p in inputs.features}
    return BundleSources(
        checkpoints=checkpoints,
        head=str(inputs.head),
        feature_files=feature_files,
        soup_metrics=str(inputs.soup_metrics),
        table1=str(inputs.table1),
        table3=str(inputs.table3),
        data_report=str(inputs.data_report),
        config=dict(config),
        demo=bool(config.get("demo")),
        temperature=str(inputs.temperature),
        calibration=str(inputs.calibration),
    )
