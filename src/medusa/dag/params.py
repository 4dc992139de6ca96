"""What each workflow job gets as params: only the part of the config (and of the corpus) its
output depends on, as canonical JSON (``medusa.core.config.canonical_json``).

Snakemake reruns a job whose params changed, so a job's params are exactly its own sub-config:
editing one model, feature set or condition reruns only its jobs, and never the expensive
stages upstream (ASR, features) that do not read it. Reordering YAML keys reruns nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from medusa.core.config import canonical_json
from medusa.core.fetch import HubModel, WhisperCheckpoint


def prepare_params(data: Mapping, labels: Mapping[str, str], classes: list) -> str:
    """The data sub-config without ``data.root`` (editing models never re-prepares the data),
    the label files' content digests and the class set (``ClassSet.to_config``): the labels are
    not inputs (their path changes with data.root, their times with a copy), so only new
    content reruns ``prepare``."""
    data = {k: v for k, v in data.items() if k != "root"}
    return canonical_json({"data": data, "labels": labels, "classes": classes})


def corpus_params(layout: str, table: str | None) -> str:
    """The corpus layout (and a table's path) the table layout's audio_index jobs read."""
    return canonical_json({"layout": layout, "table": table})


def asr_params(asr: Mapping, whisper: WhisperCheckpoint | None) -> str:
    """Only the ASR sub-config: changing a model or a feature set never reruns ASR. The
    revision (sha256) of a fetched checkpoint is always in it, given or resolved."""
    asr = dict(asr)
    if whisper:
        asr["revision"] = whisper.sha256
    return canonical_json(asr)


def feature_set_params(feature_set: Mapping, hub: HubModel | None) -> str:
    """Only this feature set's sub-config, so editing it re-extracts only it; a hub backbone's
    revision is always in it (default main)."""
    feature_set = dict(feature_set)
    if hub is not None:
        feature_set["revision"] = hub.revision
    return canonical_json(feature_set)


def fetch_hub_params(model: HubModel) -> str:
    """The repository and revision a fetched folder holds (only its own: one folder per pair)."""
    return canonical_json({"repo_id": model.repo_id, "revision": model.revision})


def fetch_whisper_params(checkpoint: WhisperCheckpoint) -> str:
    return canonical_json({"url": checkpoint.url, "sha256": checkpoint.sha256})


def meta_params(meta: Mapping, models: Sequence[str]) -> str:
    """Meta-classifier settings without the seeds and top_k (the seed is the job's wildcard,
    so adding a seed runs only that seed), plus the model order (the head's input layout)."""
    meta = {k: v for k, v in meta.items() if k not in ("seeds", "top_k")}
    return canonical_json({"meta": meta, "models": list(models)})


def model_features(models_config: Mapping, models: Iterable[str]) -> str:
    """Which feature sets each model fuses (for the report's Table 1)."""
    return canonical_json({m: models_config[m]["features"] for m in models})


def bundle_feature_sets(config: Mapping, models: Sequence[str]) -> list[str]:
    """The feature sets the models read, in config order (the bundle records them)."""
    return [
        fs
        for fs in config["feature_sets"]
        if any(fs in config["models"][model]["features"] for model in models)
    ]


def audio_params(fingerprints: Mapping[str, str], partitions: Iterable[str | None]) -> str:
    """The content (fingerprints) of the audio partitions a job reads, None skipped: replaced
    audio reruns the job even when an earlier invocation already rebuilt an index that reads
    the same."""
    return canonical_json({p: fingerprints[p] for p in partitions if p})
