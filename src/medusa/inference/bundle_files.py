"""The bundle's files: checkpoints as safetensors plus JSON, and the checksums that guard them."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from medusa.core.integrity import torch_bytes_sealed

BUNDLE_FORMAT = 1
MANIFEST = "bundle.json"
CHECKSUMS = "checksums.sha256"
HEAD_STEM = "head"
MODELS_DIR = "models"
METRICS_DIR = "metrics"
# bundle.json's `segmentation`: what `medusa predict` reads from a bundle. The other settings of
# its default, VAD speech turns, are medusa.inference.segments' own
# (MSP-Podcast segments run 3-11 s).
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
