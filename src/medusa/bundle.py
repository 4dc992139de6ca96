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
  soup's temperature (``calibration``: T and the clips it was fitted on, ``medusa.temperature``;
  ``Bundle.calibrate`` applies it), and the configuration blocks used;
- ``metrics/``: the soup's metrics and the report's Tables 1, 3 and C (calibration);
- ``README.md``: the model card;
- ``checksums.sha256``: the sha256 of every other file (``sha256sum -c`` reads it).

No pickle anywhere. ``load_bundle`` verifies every checksum first: a missing or altered file
stops with a message naming that file. The checkpoints are rebuilt through the training and
ensemble modules' own loaders (``medusa.training.load_checkpoint``, ``medusa.ensemble.load_head``)
so a bundled model computes exactly what the workflow's model computes.

Backbones and the ASR model are not copied (they are large and public, or local folders the
user already has). A hub backbone is recorded as its id with the commit ``fetch_models`` fetched
(``medusa.fetch``) and its weights' checksum, and loads from that checked copy in the model store
(``fetched_backbone``), else by id at the commit from the Hugging Face cache; a fetched ASR
checkpoint is recorded with its sha256 and loads from the store (``fetched_asr``); local paths
are found through a path map and a backbone root (``resolve_source``), and a local folder's
weights are checked against the checksum recorded at training time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import medusa
from medusa.atomic import atomic_directory
from medusa.emotions import ATTRIBUTES, ClassSet
from medusa.fetch import FetchError, hub_model, verified_hub_copy, whisper_checkpoint
from medusa.integrity import load_torch, torch_bytes_sealed
from medusa.segments import DEFAULT_MAX_PAUSE_S, DEFAULT_MIN_TURN_S, NO_SPEECH, VAD_THRESHOLD

BUNDLE_FORMAT = 1
MANIFEST = "bundle.json"
CHECKSUMS = "checksums.sha256"
HEAD_STEM = "head"
MODELS_DIR = "models"
METRICS_DIR = "metrics"
# bundle.json's `segmentation`: what `medusa predict` reads from a bundle. The other settings of
# its default, VAD speech turns, are medusa.segments' own (MSP-Podcast segments run 3-11 s).
DEFAULT_SEGMENTATION = {
    "window_s": 8.0,  # --segments fixed: window length
    "hop_s": 8.0,  # --segments fixed: distance between window starts
    "min_segment_s": 1.0,  # fixed: a shorter last window is dropped (unless it is the whole file)
    # A recording up to this long is one segment, scored whole as the workflow scores a clip
    # (MSP-Podcast clips run to about 11 s); with VAD also the longest turn (--max-turn-s).
    "max_segment_s": 12.0,
    "silence_rms": 1e-5,  # a file whose RMS is below this (about -100 dBFS) is skipped as silent
}
# Placeholder of a tensor in a checkpoint's JSON half.
_TENSOR = "__tensor__"


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(2**24):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Checkpoints as safetensors + JSON


def split_checkpoint(checkpoint: Mapping) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors by path, the rest as JSON-ready data with ``{"__tensor__": path}`` in place of
    each tensor). Paths join nested keys with '/'."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value, path: str):
        if isinstance(value, torch.Tensor):
            tensors[path] = value.detach().to("cpu").contiguous().clone()
            return {_TENSOR: path}
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str) or "/" in key:
                    raise BundleError(f"checkpoint key {path}/{key!r} cannot be stored")
                out[key] = walk(item, f"{path}/{key}" if path else key)
            return out
        if isinstance(value, list | tuple):
            return [walk(item, f"{path}/{i}") for i, item in enumerate(value)]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise BundleError(f"checkpoint value at {path!r} ({type(value).__name__}) cannot be stored")

    return tensors, walk(checkpoint, "")


def join_checkpoint(tensors: Mapping[str, torch.Tensor], data) -> object:
    """Inverse of `split_checkpoint`."""
    if isinstance(data, dict):
        if set(data) == {_TENSOR}:
            return tensors[data[_TENSOR]]
        return {key: join_checkpoint(tensors, item) for key, item in data.items()}
    if isinstance(data, list):
        return [join_checkpoint(tensors, item) for item in data]
    return data


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a.cpu(), b.cpu())
        )
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def save_checkpoint(checkpoint: Mapping, stem: Path) -> list[Path]:
    """Write `stem`.safetensors and `stem`.json; refuse a checkpoint that would not come back
    identical (the check reads the files back)."""
    tensors, data = split_checkpoint(checkpoint)
    stem.parent.mkdir(parents=True, exist_ok=True)
    weights, metadata = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    save_file(tensors, str(weights), metadata={"format": "pt"})
    weights.chmod(0o666 & ~_umask())  # safetensors creates owner-only files
    metadata.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    if not _same(read_checkpoint(stem), dict(checkpoint)):
        raise BundleError(f"{stem}: the checkpoint does not survive safetensors + JSON")
    return [weights, metadata]


def read_checkpoint(stem: Path) -> dict:
    data = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    return join_checkpoint(load_file(str(stem.with_suffix(".safetensors"))), data)


def _torch_file(checkpoint: Mapping, folder: Path, name: str) -> Path:
    """The checkpoint as the torch file the library's loaders read (weights_only-loadable)."""
    path = folder / name
    buffer = io.BytesIO()
    torch.save(dict(checkpoint), buffer)
    # The bundle's checksums were checked on opening; the loaders also check this digest.
    path.write_bytes(torch_bytes_sealed(buffer.getvalue()))
    return path


# --------------------------------------------------------------------------------------------
# Checksums


def write_checksums(folder: Path) -> Path:
    """`checksums.sha256` over every file under `folder` (sorted, ``sha256sum`` format)."""
    files = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != CHECKSUMS
    )
    lines = [f"{sha256_file(folder / name)}  {name}\n" for name in files]
    path = folder / CHECKSUMS
    path.write_text("".join(lines), encoding="utf-8")
    return path


def verify_checksums(folder: str | os.PathLike) -> list[str]:
    """Check every file `checksums.sha256` lists; the files checked. A missing or altered file,
    or a missing or malformed manifest, raises BundleError naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"{folder}: bundle folder not found")
    manifest = folder / CHECKSUMS
    if not manifest.is_file():
        raise BundleError(f"{manifest}: missing (every bundle lists its files' checksums there)")
    expected: dict[str, str] = {}
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or name.startswith("/") or ".." in name:
            raise BundleError(f"{manifest}:{number}: not a `<sha256>  <file>` line: {line!r}")
        expected[name] = digest
    for needed in (MANIFEST,):
        if needed not in expected:
            raise BundleError(f"{manifest}: does not list {needed}")
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle (listed in {CHECKSUMS})")
        if sha256_file(path) != digest:
            raise BundleError(
                f"{path}: altered (its sha256 differs from {CHECKSUMS}); rebuild or copy the "
                "bundle again"
            )
    return sorted(expected)


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
        # Extracted from the copy fetch_models made (medusa.fetch): the commit it holds and its
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


@dataclass
class BundleSources:
    """The workflow outputs a bundle is made of (rule `bundle`'s inputs)."""

    checkpoints: dict[str, str]  # model -> final checkpoint.pt
    head: str  # results/soup/head.pt
    feature_files: dict[str, str]  # feature set -> any of its feature files (for the attrs)
    soup_metrics: str
    table1: str
    table3: str
    data_report: str
    config: dict  # models (order), model_settings, asr, feature_sets, meta, soup, ...
    demo: bool = False
    temperature: str | None = None  # results/soup/temperature.json (rule temperature)
    calibration: str | None = None  # results/report/calibration.tsv (Table C)
    extra: dict = field(default_factory=dict)


def build_bundle(sources: BundleSources, out_dir: str | os.PathLike) -> Path:
    """Write the bundle folder `out_dir` (atomically); returns it."""
    from medusa.ensemble import load_head

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
    from medusa.ensemble import head_classes
    from medusa.training import checkpoint_classes

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
    from medusa.store import FeatureReader

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
    from medusa.ensemble import EnsembleError
    from medusa.temperature import read_temperature

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


# --------------------------------------------------------------------------------------------
# The model card


def _tsv_to_markdown(path: str | os.PathLike) -> str:
    lines = [line.split("\t") for line in Path(path).read_text(encoding="utf-8").splitlines()]
    if not lines:
        return "(empty)\n"
    width = len(lines[0])
    rows = ["| " + " | ".join(cells + [""] * (width - len(cells))) + " |" for cells in lines]
    return "\n".join([rows[0], "|" + "---|" * width, *rows[1:]]) + "\n"


def _report_section(path: str | os.PathLike, heading: str) -> str:
    """One `## heading` section of a markdown report (without the heading)."""
    text = Path(path).read_text(encoding="utf-8").splitlines()
    out, inside = [], False
    for line in text:
        if line.startswith("## "):
            inside = line[3:].strip() == heading
            continue
        if inside:
            out.append(line)
    return "\n".join(out).strip() + "\n"


def meta_selection_section(record: Mapping | None) -> str:
    """The model card's account of the meta-classifier's cross-validated regularisation
    (``medusa.meta_cv``): the grid with each point's score and spread, and the choice."""
    if not record:
        return "The soup's metrics hold no record of a cross-validated meta-classifier choice.\n"
    lines = [
        f"Meta-classifier regularisation (speaker-grouped {record.get('folds')}-fold "
        f"cross-validation on {record.get('n_clips')} clips of {record.get('n_speakers')} "
        f"speakers; choice: **{record.get('choice')}**; {record.get('reason')}):",
        "",
    ]
    if record.get("grid"):
        lines += ["| setting | CV macro-F1 | sd | se | chosen |", "|---|---|---|---|---|"]
        for point in record["grid"]:
            figures = [_figure(point.get(k)) for k in ("cv_macro_f1", "sd", "se")]
            chosen = "yes" if point.get("prior_strength") == record.get("choice") else ""
            lines.append(f"| {point.get('setting')} | " + " | ".join(figures) + f" | {chosen} |")
    return "\n".join(lines) + "\n"


def calibration_section(record: Mapping | None, table: str | None) -> str:
    """The model card's account of the soup's temperature scaling and of Table C."""
    if not record:
        return "## Calibration\n\nThis bundle records no temperature: posteriors are the soup's.\n"
    fitted = record["fitted_on"]
    lines = [
        "## Calibration",
        "",
        f"The soup's posteriors p are temperature-scaled: softmax(ln p / T) with T = "
        f"{record['temperature']:.4f} (`calibration` in `bundle.json`, `Bundle.calibrate`), "
        f"{record['note']}: {fitted['clips']} clips of {fitted['speakers']} speaker(s), their "
        f"negative log-likelihood {record['nll_before']:.4f} before, {record['nll_after']:.4f} "
        "after. T > 1 softens over-confident posteriors, T < 1 sharpens them; the predicted "
        "class never changes.",
        "",
    ]
    if table:
        lines += [
            "Table C (on dev: expected calibration error over equal-mass bins, Brier score, "
            "negative log-likelihood, with speaker-bootstrap intervals; lower is better):",
            "",
            _tsv_to_markdown(table),
        ]
    return "\n".join(lines)


def _figure(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _backbone_where(record: Mapping) -> str:
    """The model card's 'where' of a feature set's backbone."""
    if record.get("hub"):
        return (
            f"hub id at commit {record.get('commit')}, fetched into the model store "
            f"(`{record['fetched']}`), weights sha256 {record['weights_sha256'][:12]}..."
        )
    if record["local"]:
        return f"local folder, sha256 {record['weights_sha256'][:12]}..."
    return "hub id" + (f", revision {record['revision']}" if record["revision"] else "")


def _asr_where(asr: Mapping) -> str:
    if asr["local"]:
        return f"local checkpoint, sha256 {asr['sha256'][:12]}..."
    if asr.get("fetched"):
        return f"fetched into the model store (`{asr['fetched']}`), sha256 {asr['sha256'][:12]}..."
    return "official model name"


def use_section(manifest: Mapping) -> str:
    """The model card's "Use": the commands, how predict segments, calibrates and what it
    writes. The settings are the bundle's (``segmentation``) and medusa.segments' own."""
    seg = manifest["segmentation"]
    classes = ClassSet(tuple(manifest["classes"]), tuple(manifest["class_names"]))
    return f"""## Use

```bash
medusa predict --bundle path/to/bundle --output predictions.csv recordings/ talk.flac
# local backbones recorded as relative paths (the demo's resources/backbones/...):
medusa predict --bundle path/to/bundle --backbone-root path/to/training/run recordings/
# also one HTML page for the run; fixed windows instead of speech turns:
medusa predict --bundle path/to/bundle --html --segments fixed -o windows.csv talk.flac
```

Segments (`--segments vad`, the default): voice-activity detection with Silero VAD (the
`silero-vad` package, MIT licence; its model ships inside the package and runs on the CPU,
speech probability threshold {VAD_THRESHOLD:g}) finds the speech. Speech separated by pauses
shorter than {DEFAULT_MAX_PAUSE_S:g} s (`--max-pause-s`) is one turn; a turn longer than
{seg["max_segment_s"]:g} s (`--max-turn-s`, default `--max-segment-s`) is split at the pause
nearest its middle (continuous speech: in its middle); one shorter than {DEFAULT_MIN_TURN_S:g} s
(`--min-turn-s`) is widened with the audio around it, never over a neighbouring turn. What no
turn covers (silence, music, noise) is a gap: listed, not scored. A recording in which no speech
is found is skipped ("{NO_SPEECH}"). A recording up to {seg["max_segment_s"]:g} s
(`--max-segment-s`) that holds speech is one segment, scored whole as the workflow scores a
clip. `--segments fixed` cuts every recording, silence included, into windows of
{seg["window_s"]:g} s every {seg["hop_s"]:g} s (`--window-s`, `--hop-s`; a last piece shorter
than {seg["min_segment_s"]:g} s is dropped; a recording up to {seg["max_segment_s"]:g} s is one
segment). Either way a file that cannot be read, is empty or whose RMS is below
{seg["silence_rms"]:g} (`--silence-rms`) is skipped. Window, hop, whole-clip length and silence
threshold are this bundle's (`segmentation` in `bundle.json`); the turn settings are those of
the installed medusa (`medusa.segments`), not recorded in the bundle.

Each segment gets the {len(classes.letters)} class posteriors (`{" ".join(classes.letters)}` =
{", ".join(classes.names)}), the predicted class and the three attributes (`act`, `val`, `dom`,
on the 1-7 scale of MSP-Podcast). {_posteriors_text(manifest.get("calibration"))}

{_outputs_text(classes)}"""


def _posteriors_text(record: Mapping | None) -> str:
    """Which posteriors predict writes with this bundle."""
    if not record:
        return (
            "This bundle records no temperature: the posteriors are the soup's, uncalibrated "
            "(`--uncalibrated` changes nothing)."
        )
    return (
        f"The posteriors are calibrated by default: temperature-scaled with T = "
        f"{record['temperature']:.4f} (see Calibration), the predicted class unchanged; "
        "`--uncalibrated` writes the soup's raw posteriors, exactly as the workflow writes them. "
        "The run's summary line (on stderr) and the HTML page name the calibration applied."
    )


def _outputs_text(classes: ClassSet) -> str:
    """predict's output files and their columns, from the functions that write them."""
    # medusa.recognize imports this module: imported here, when the card is written.
    from medusa.recognize import (
        GAP_COLUMNS,
        MIN_GAP_S,
        SKIPPED_COLUMNS,
        output_paths,
        segment_columns,
        summary_columns,
    )

    paths = {k: p.name for k, p in output_paths("predictions.csv").items()}

    def columns(names: Sequence[str]) -> str:
        return "`" + ", ".join(names) + "`"

    return f"""Outputs of `--output predictions.csv` (`--format jsonl`: JSON lines; the other files are
named after its stem):

- `{paths["segments"]}`: one row per segment: {columns(segment_columns(classes))}; `emotion`
  is the class of the highest posterior, the posteriors of a row sum to 1;
- `{paths["summary"]}`: one row per predicted file: {columns(summary_columns(classes))};
  posteriors and attributes averaged over its segments weighted by their duration (gaps count
  for nothing), `emotion` the class of those posteriors;
- `{paths["gaps"]}`: {columns(GAP_COLUMNS)} of what no segment covers (with VAD: no speech
  found there); gaps shorter than {MIN_GAP_S:g} s are not listed;
- `{paths["skipped"]}`: {columns(SKIPPED_COLUMNS)} of each file that could not be used (not
  found, unreadable, empty, silent, {NO_SPEECH}); also printed on stderr;
- `{paths["timelines"]}/NNNN_<name>.png` (not with `--no-timelines`): one per predicted file,
  numbered in the summary's order: the class posteriors over time as a stacked band, arousal
  and valence as curves, the gaps shaded;
- with `--html`, `{paths["html"]}`: one self-contained page for the run (the summary, the
  skipped files, and per file its timeline, its segments with transcript and emotion, and its
  gaps); it loads nothing from anywhere.
"""


def limits_section(manifest: Mapping) -> str:
    """The model card's "Limits": where the bundle's predictions must not be trusted."""
    seg = manifest["segmentation"]
    calibrated = (
        "- Calibration: one temperature for all classes, fitted on clips of the training "
        "corpus; on other recordings, conditions or languages the calibrated confidences can "
        "still be off. The attributes are not calibrated.\n"
        if manifest.get("calibration")
        else ""
    )
    corpus = (
        "Synthetic demo: not a model of real emotional speech."
        if manifest["demo"]
        else "MSP-Podcast only: podcast audio, mostly American English, perceived (not felt) "
        "emotion."
    )
    return f"""## Limits

- {corpus}
- English only: the ASR and the text backbones were run in English; other languages get
  meaningless transcripts and text features.
- Trained on MSP-Podcast-like segments (a few seconds of one speaker). Speech turns come from
  voice-activity detection, not speaker diarisation: a turn can hold two speakers who overlap
  or follow each other with a pause under {DEFAULT_MAX_PAUSE_S:g} s, and a turn widened to
  {DEFAULT_MIN_TURN_S:g} s takes in the audio around it. A recording up to
  {seg["max_segment_s"]:g} s is scored whole, silences included.
- VAD errors: Silero VAD can take singing, music with vocals, laughter or noise for speech
  (then scored as speech) and miss quiet, distant, whispered or noisy speech (then a gap, not
  scored, or the file skipped as without speech). Continuous speech longer than
  {seg["max_segment_s"]:g} s without a pause is cut in its middle, perhaps mid-word.
- `--segments fixed` cuts windows blindly: they may mix speakers, silence or music.
{calibrated}- Class imbalance of the training data (Neutral and Happy dominate) shows in the posteriors.
- Not for clinical, forensic, hiring or any decision about a person without a validation on
  the target population and setting.
"""


def model_card(manifest: Mapping, sources: BundleSources) -> str:
    """README.md of the bundle: what it is, how it was trained and scored, how to use it, and
    where it must not be trusted."""
    soup = json.loads(Path(sources.soup_metrics).read_text(encoding="utf-8"))
    dev = soup.get("dev", {})
    report_head = Path(sources.data_report).read_text(encoding="utf-8").splitlines()
    corpus_lines = [line for line in report_head[:6] if line.startswith(("Corpus", "Audio"))]
    fs = manifest["feature_sets"]
    models = manifest["model_files"]
    demo = manifest["demo"]
    model_rows = "\n".join(
        f"| {m} | {' + '.join(info['features'])} | {info['stage']} | {info['epoch']} |"
        for m, info in models.items()
    )
    fs_rows = "\n".join(
        f"| {name} | `{r['backbone']}` | {r['kind']} | {r['layer']} | {r['dim']} | "
        f"{_backbone_where(r)} |"
        for name, r in fs.items()
    )
    asr = manifest["asr"]
    what = (
        "**This bundle was trained on the embedded synthetic demo corpus** (espeak-ng speech, "
        "simulated annotators, random or tiny backbones). It shows that the pipeline works end "
        "to end; its predictions on real speech mean nothing."
        if demo
        else "Trained on the MSP-Podcast corpus (the challenge release's Train split; "
        "Development used for reporting)."
    )
    return f"""# MEDUSA speech emotion recognition: model bundle

{what}

MEDUSA (Interspeech 2025 SER challenge, Task 1): Whisper ASR, layer embeddings of
self-supervised backbones, {len(models)} DeepSER fusion model(s), a meta-classifier over their
posteriors trained over several seeds and averaged into one model soup. This folder is
everything `medusa predict` needs apart from the backbones (see below); it was written by the
workflow's `bundle` rule (medusa {manifest["medusa_version"]}, {manifest["created"]}).

{use_section(manifest)}
## Contents

| file | what |
|---|---|
| `bundle.json` | class order, model order, ASR and feature-set definitions, the window, whole-clip and silence settings of `medusa predict` (`segmentation`), the soup's temperature (`calibration`), the configuration used |
| `models/<model>.safetensors`, `.json` | each DeepSER model's final checkpoint (weights and input statistics; settings) |
| `head.safetensors`, `head.json` | the soup meta-classifier |
| `metrics/` | `soup_metrics.json`, Tables 1, 3 and C (calibration) of the report |
| `checksums.sha256` | sha256 of every file; checked on every load (`sha256sum -c checksums.sha256` works too) |

Models (the meta-classifier reads them in this order):

| model | features | stage | epoch |
|---|---|---|---|
{model_rows}

Feature sets (backbones are not copied into the bundle):

| feature set | backbone | kind | layer | dim | where |
|---|---|---|---|---|---|
{fs_rows}

ASR: openai-whisper `{asr["model"]}` ({_asr_where(asr)}), language `{asr["language"]}`,
greedy decoding.

Hub backbones and a fetched ASR checkpoint are loaded from the copies `snakemake fetch_models`
made in the model store (`--model-store DIR`; default: the training run's
`{manifest.get("model_store")}`), after checking every file, the commit and the weights'
sha256, without contacting the hub; a hub backbone with no copy there is loaded from the
Hugging Face cache at the recorded commit (`HF_HUB_OFFLINE=1` works once it is cached).
`medusa verify --model-store DIR path/to/bundle` checks the store's copies. Local paths are
looked up through `--path-map OLD=NEW`, then, when relative, under `--backbone-root`
(default: the working directory); a local folder's weights must match the recorded checksum.

## Training data

{chr(10).join(corpus_lines)}

{_report_section(sources.data_report, "Subsets")}
## Results

Soup on `dev`: macro-F1 {dev.get("macro_f1", float("nan")):.4f}, accuracy
{dev.get("accuracy", float("nan")):.4f}.

Table 1 (each model and the ensemble):

{_tsv_to_markdown(sources.table1)}
Table 3 (ensemble techniques; the holdout columns are selection-biased, compare on dev):

{_tsv_to_markdown(sources.table3)}
{meta_selection_section(soup.get("selection"))}
{calibration_section(manifest.get("calibration"), sources.calibration)}
## Intended use

Research on categorical speech emotion recognition of English podcast-style speech, and
reproduction of MEDUSA. Predictions are estimates of how annotators of MSP-Podcast would label
a segment's perceived emotion, not of what the speaker felt.

{limits_section(manifest)}"""


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
        from medusa.features import weights_sha256  # torch and transformers: only when needed

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
        (``medusa.calibration.temperature_scale``); unchanged for a bundle without T."""
        from medusa.calibration import temperature_scale

        return (
            temperature_scale(probs, self.temperature) if "calibration" in self.manifest else probs
        )

    def used_feature_sets(self) -> list[str]:
        """The feature sets the models read, in manifest order."""
        used = {fs for c in self.checkpoints.values() for fs in c["features"]}
        return [fs for fs in self.feature_sets if fs in used]

    def load_models(self, device: torch.device | str) -> dict[str, tuple[torch.nn.Module, dict]]:
        """model -> (DeepSER in eval mode on `device`, checkpoint), via load_checkpoint."""
        from medusa.training import load_checkpoint

        loaded = {}
        with tempfile.TemporaryDirectory(prefix="medusa-bundle-") as tmp:
            for model, checkpoint in self.checkpoints.items():
                path = _torch_file(checkpoint, Path(tmp), f"{model}.pt")
                loaded[model] = load_checkpoint(path, device)
        return loaded

    def load_head(self):
        """(head in eval mode, its info), via medusa.ensemble.load_head."""
        from medusa.ensemble import load_head

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
    from medusa.ensemble import head_classes
    from medusa.training import checkpoint_classes

    trained = {"head": head_classes(head)} | {
        m: checkpoint_classes(c) for m, c in checkpoints.items()
    }
    for what, codes in trained.items():
        if list(codes) != list(classes):
            raise BundleError(
                f"{path / MANIFEST}: class order {classes}, but {what} predicts {list(codes)}"
            )


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
