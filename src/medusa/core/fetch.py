"""Backbones and the ASR checkpoint, fetched once where the network is, pinned to a revision.

GPU jobs never download: on most clusters compute nodes have no internet access, and where
they have, parallel jobs would download the same checkpoint into one cache at once. The
`fetch_models` stage (a local rule: it runs where Snakemake runs, e.g. the login node) puts
every remote model of the config under the model store (config `model_store`):

- a Hugging Face hub backbone (a feature set's ``backbone: org/name``) at
  ``<store>/hub/<org>--<name>@<revision>/``: the files transformers needs, one weight format
  (safetensors when the repository has it), and ``medusa-fetch.json`` recording the commit the
  revision resolved to and each file's size and sha256. Files are checked against the hub's
  metadata (sha256 of LFS files, git blob id of the others).
- an openai-whisper ASR checkpoint (``asr.model: large-v3`` or a URL) at
  ``<store>/whisper/<name>-<sha256>.pt``, checked against its sha256 (openai's download URLs
  carry it).

Both are built under a temporary name and renamed when complete and checked, so an interrupted
fetch leaves nothing a later job would take as complete. Jobs then load the local copy after
``verified_hub_copy`` checks it again (sizes and hashes); a folder that fails is refused.
Local paths (the demo's backbones, a user's own folder or checkpoint) are used as they are.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from medusa.core.atomic import atomic_directory, atomic_write, atomic_write_json

MANIFEST = "medusa-fetch.json"
DEFAULT_REVISION = "main"
FETCH_COMMAND = "snakemake fetch_models"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Files of a hub repository a backbone needs besides its weights (configs, tokenizers).
SUPPORT_FILE = re.compile(
    r"^[^/]+\.(json|txt|model|tiktoken)$|^(vocab|merges|spiece|sentencepiece)[^/]*$"
)
# One weight format, in order of preference: a single file, or the shards of one.
WEIGHT_FORMATS = (
    re.compile(r"^model\.safetensors$"),
    re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$"),
    re.compile(r"^pytorch_model\.bin$"),
    re.compile(r"^pytorch_model-\d{5}-of-\d{5}\.bin$"),
)
# Index files that belong to a weight format (kept only with it).
WEIGHT_INDEX = re.compile(r"^(model\.safetensors|pytorch_model\.bin)\.index(\.[\w-]+)?\.json$")


class FetchError(RuntimeError):
    """A model could not be fetched, or a fetched copy is missing or fails its check."""


# ---------------------------------------------------------------- what is remote, and where it goes


def is_local_path(value: str) -> bool:
    """Whether a backbone / checkpoint setting names a local path rather than a remote model.

    Local: anything that exists, absolute or explicitly relative paths, and paths under
    ``resources/`` (built by the workflow itself, e.g. the demo's backbones).
    """
    return (
        os.path.exists(os.path.expanduser(value))
        or value.startswith(("/", "./", "../", "~", "resources/"))
        or value.endswith((".pt", ".pth"))
    )


@dataclass(frozen=True)
class HubModel:
    """A backbone on the Hugging Face hub at a revision (branch, tag or commit)."""

    repo_id: str
    revision: str = DEFAULT_REVISION

    def folder(self, store: str | os.PathLike) -> Path:
        """Where fetch_models puts it: one folder per (repository, requested revision)."""
        slug = self.repo_id.replace("/", "--")
        return Path(store) / "hub" / f"{slug}@{self.revision.replace('/', '--')}"


def hub_model(feature_set: dict, key: str) -> HubModel | None:
    """The hub model a feature-set config names, or None for a local folder.

    `key` names the setting in errors (``feature_sets.<name>``).
    """
    backbone = str(feature_set["backbone"])
    if is_local_path(backbone):
        return None
    if not HUB_ID.match(backbone):
        raise ValueError(
            f"{key}.backbone {backbone!r} is neither an existing local folder nor a hub id "
            "(org/name)"
        )
    return HubModel(backbone, str(feature_set.get("revision") or DEFAULT_REVISION))


@dataclass(frozen=True)
class WhisperCheckpoint:
    """An openai-whisper checkpoint to download: its URL and the sha256 it must have."""

    name: str
    url: str
    sha256: str

    def path(self, store: str | os.PathLike) -> Path:
        return Path(store) / "whisper" / f"{self.name}-{self.sha256}.pt"


@functools.cache
def whisper_releases() -> dict[str, str]:
    """openai-whisper's release table (name -> URL), read from the installed package's source.

    Every parse of the workflow asks for it (``whisper_checkpoint``): importing openai-whisper
    would import torch, about 3 s of each parse and of each cluster job's. The table is a
    literal in ``whisper/__init__.py``; if that ever changes, the import is the fallback.
    """
    table = _literal_release_table(importlib.util.find_spec("whisper").origin)
    if table is not None:
        return table
    import whisper  # the source no longer holds a literal table: ask the package

    return dict(whisper._MODELS)


def _literal_release_table(source: str) -> dict[str, str] | None:
    """The `_MODELS = {...}` literal of openai-whisper's `__init__.py`; None without one."""
    try:
        tree = ast.parse(Path(source).read_text(encoding="utf-8"))
        for node in tree.body:
            targets = [getattr(t, "id", None) for t in getattr(node, "targets", [])]
            if isinstance(node, ast.Assign) and "_MODELS" in targets:
                return dict(ast.literal_eval(node.value))
    except (OSError, SyntaxError, ValueError, TypeError):
        return None
    return None


def whisper_checkpoint(asr: dict) -> WhisperCheckpoint | None:
    """The checkpoint to fetch for the ASR config, or None for a local checkpoint file.

    ``asr.model`` is an openai-whisper release name (URL and sha256 from the installed
    openai-whisper's release table) or an http(s) URL (a mirror); ``asr.revision``, the
    checkpoint's sha256, pins it. A URL without the sha256 in its path needs ``asr.revision``.
    """
    model, revision = str(asr["model"]), asr.get("revision")
    if model.startswith(("http://", "https://")):
        url = model
    elif is_local_path(model):
        return None
    else:
        releases = whisper_releases()
        if model not in releases:
            raise ValueError(
                f"asr.model {model!r} is neither a local checkpoint file, a URL, nor one of "
                f"openai-whisper's models {sorted(releases)}"
            )
        url = releases[model]
    in_url = [part for part in url.split("/") if SHA256.match(part)]
    sha256 = revision or (in_url[-1] if in_url else None)
    if not sha256 or not SHA256.match(sha256):
        raise ValueError(
            f"asr.revision: the sha256 of {url} is needed (64 hex digits; the URL carries none)"
            if not sha256
            else f"asr.revision {sha256!r} is not a sha256 (64 hex digits)"
        )
    name = Path(url.split("?")[0]).stem
    return WhisperCheckpoint(name, url, sha256)


# ---------------------------------------------------------------- fetching


def fetch_hub_model(model: HubModel, out_dir: str | os.PathLike) -> dict:
    """Download `model` into `out_dir` (atomically), check every file, write the manifest.

    The endpoint is huggingface_hub's (``HF_ENDPOINT``, default https://huggingface.co).
    Returns the manifest.
    """
    offline = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if _truthy(os.environ.get(v))]
    if offline:
        raise FetchError(
            f"{model.repo_id}: {' and '.join(offline)} set, but fetching needs the hub; unset "
            f"it for `{FETCH_COMMAND}`"
        )
    from huggingface_hub import HfApi, constants, hf_hub_download

    endpoint = constants.ENDPOINT
    info = _hub_call(model, out_dir, endpoint, lambda: _model_info(HfApi(), model))
    files = files_to_fetch(info.siblings or [], model)
    with atomic_directory(out_dir) as staging:
        for sibling in files:
            _hub_call(
                model,
                out_dir,
                endpoint,
                lambda name=sibling.rfilename: hf_hub_download(
                    model.repo_id, name, revision=info.sha, local_dir=staging
                ),
            )
        shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
        manifest = {
            "repo_id": model.repo_id,
            "revision": model.revision,
            "commit": info.sha,
            "endpoint": endpoint,
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": {s.rfilename: _checked_file(staging, s, model) for s in files},
        }
        atomic_write_json(staging / MANIFEST, manifest)
    return manifest


def _model_info(api, model: HubModel):
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return api.model_info(model.repo_id, revision=model.revision, files_metadata=True)
    except RevisionNotFoundError as err:
        raise FetchError(f"{model.repo_id}: no revision {model.revision!r} on the hub") from err
    except RepositoryNotFoundError as err:
        raise FetchError(f"{model.repo_id}: no such model on the hub (or it is gated)") from err


def _hub_call(model: HubModel, out_dir, endpoint: str, call):
    """`call()`, with a network failure turned into an error that says what to do."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return call()
    except FetchError:
        raise
    except (OSError, HfHubHTTPError, _httpx_error()) as err:
        raise FetchError(
            f"cannot fetch {model.repo_id}@{model.revision} from {endpoint} into {out_dir}: "
            f"{type(err).__name__}: {err}. If this node has no network access, run "
            f"`{FETCH_COMMAND}` on one that has (a login node), then run the workflow again"
        ) from err


def _httpx_error() -> type[BaseException]:
    """The HTTP client's transport error base class (huggingface_hub uses httpx2)."""
    try:
        import httpx2

        return httpx2.TransportError
    except ImportError:  # another huggingface_hub release: its errors are OSErrors or HTTP errors
        return OSError


def files_to_fetch(siblings: Iterable, model: HubModel) -> list:
    """Configs and tokenizer files at the top level, plus one weight format (safetensors first).

    Other formats (TensorFlow, Flax, ONNX) and subfolders are left on the hub.
    """
    siblings = list(siblings)
    names = [s.rfilename for s in siblings]
    for pattern in WEIGHT_FORMATS:
        weights = {n for n in names if pattern.match(n)}
        if weights:
            break
    else:
        raise FetchError(
            f"{model.repo_id}@{model.revision}: no safetensors or PyTorch weights among {names}"
        )
    stem = "model.safetensors" if next(iter(weights)).endswith(".safetensors") else "pytorch_model"
    keep = {
        n
        for n in names
        if n in weights
        or (WEIGHT_INDEX.match(n) and n.startswith(stem) and len(weights) > 1)
        or (SUPPORT_FILE.match(n) and not WEIGHT_INDEX.match(n))
    }
    return [s for s in siblings if s.rfilename in keep]


def _checked_file(folder: Path, sibling, model: HubModel) -> dict:
    """Size and sha256 of a downloaded file, checked against the hub's metadata."""
    path = folder / sibling.rfilename
    size, sha256, git_blob = _hashes(path)
    expected_sha256 = sibling.lfs.sha256 if sibling.lfs else None
    problems = []
    if sibling.size is not None and size != sibling.size:
        problems.append(f"{size} bytes, the hub says {sibling.size}")
    if expected_sha256 and sha256 != expected_sha256:
        problems.append(f"sha256 {sha256}, the hub says {expected_sha256}")
    if not sibling.lfs and sibling.blob_id and git_blob != sibling.blob_id:
        problems.append(f"git blob {git_blob}, the hub says {sibling.blob_id}")
    if problems:
        raise FetchError(
            f"{model.repo_id}: downloaded {sibling.rfilename} has {'; '.join(problems)}"
        )
    return {"size": size, "sha256": sha256}


def _hashes(path: Path) -> tuple[int, str, str]:
    """(size, sha256, git blob sha1) of a file, read once."""
    size = path.stat().st_size
    sha256, git_blob = hashlib.sha256(), hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(2**24):
            sha256.update(block)
            git_blob.update(block)
    return size, sha256.hexdigest(), git_blob.hexdigest()


def fetch_whisper_checkpoint(checkpoint: WhisperCheckpoint, out_path: str | os.PathLike) -> None:
    """Download the checkpoint to `out_path` atomically, refusing it unless its sha256 matches."""

    def download(tmp: Path) -> None:
        digest, received = hashlib.sha256(), 0
        try:
            with (
                urllib.request.urlopen(checkpoint.url, timeout=60) as response,
                open(tmp, "wb") as f,
            ):
                announced = response.headers.get("Content-Length")
                while block := response.read(2**20):
                    f.write(block)
                    digest.update(block)
                    received += len(block)
            if announced is not None and received != int(announced):
                raise OSError(f"the connection closed after {received} of {announced} bytes")
        except (urllib.error.URLError, OSError) as err:
            raise FetchError(
                f"cannot download whisper checkpoint {checkpoint.name} from {checkpoint.url} "
                f"into {out_path}: {err}. If this node has no network access, run "
                f"`{FETCH_COMMAND}` on one that has (a login node), then run the workflow again"
            ) from err
        if digest.hexdigest() != checkpoint.sha256:
            raise FetchError(
                f"{checkpoint.url}: downloaded file has sha256 {digest.hexdigest()}, expected "
                f"{checkpoint.sha256} (asr.revision or the URL); refusing it"
            )

    atomic_write(out_path, download)


# ---------------------------------------------------------------- using a fetched copy


def verified_hub_copy(folder: str | os.PathLike) -> dict:
    """The manifest of a fetched folder after checking every file's size and sha256.

    A folder without a manifest (never fetched, or an interrupted fetch) or with a file that
    differs from it is refused with an error naming the folder and the way out.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise FetchError(
            f"{folder}: no fetched model here (no {MANIFEST}); run `{FETCH_COMMAND}` on a node "
            "with network access first"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise FetchError(f"{folder}: {name} is missing; {_refetch(folder)}")
        size, sha256, _ = _hashes(path)
        if (size, sha256) != (expected["size"], expected["sha256"]):
            raise FetchError(
                f"{folder}: {name} differs from what was fetched (size {size} vs "
                f"{expected['size']}, sha256 {sha256[:12]}... vs {expected['sha256'][:12]}...); "
                f"{_refetch(folder)}"
            )
    return manifest


def checkpoint_sha256(path: str | os.PathLike) -> str:
    return _hashes(Path(path))[1]


def _refetch(folder: Path) -> str:
    return f"refusing it: delete {folder} and run `{FETCH_COMMAND}` again"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")
