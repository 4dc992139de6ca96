"""Where the workflow's artifacts live: results/, logs/ and resources/, as relative paths.

The rules' outputs and the input functions of workflow/rules/common.smk both take their paths
from here, so that what one job writes and what the next job reads cannot drift apart.

A fold-style table (``medusa.corpus.table_layout``) runs the recipe once per held-out fold
(``data.fold``): everything that depends on the split (manifest, models, posteriors, ensemble,
report, bundle) goes under ``results/fold<k>/`` and its logs under ``logs/fold<k>/``, while the
audio index, ASR, features and perturbed audio stay shared in ``results/`` (they never read
labels, so every fold reuses them). Paths are strings relative to the workflow's working
directory; Snakemake wildcards (``{model}``) pass through unchanged.

Nothing here imports Snakemake or a model library: every parse of the workflow imports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

RESULTS = "results"
LOGS = "logs"
# Perturbed audio, its transcripts and features never read labels: shared by every fold, like
# results/asr and results/features (the posteriors and Table R depend on the split).
ROBUSTNESS = f"{RESULTS}/robustness"
# Content digests of the corpus files, by file identity (medusa.core.content_hash): outside
# data.root (never written) and outside .snakemake/ (kept by --cleanup-metadata and friends).
CONTENT_DIGEST_CACHE = f"{RESULTS}/cache/content-digests.tsv"
# Local backbones the workflow builds (rule demo_backbone); a model path under it is an input.
LOCAL_BACKBONE_DIR = "resources/backbones/"


class LayoutError(ValueError):
    """The config and the corpus do not fit together (data.fold, a partition, a target's
    inputs); the message names the config key or the file."""


def fold_of(data: dict) -> str | None:
    """``data.fold`` as a number's text, or None: ``"2"`` whether it came from YAML (an int)
    or from ``--config 'data={fold: 2}'``, so that the folder name is the same either way."""
    fold = data["fold"]
    return None if fold is None else str(int(fold))


def local_backbone_input(model_path: str) -> list[str]:
    """The ``resources/backbones/<name>`` folder a model path lives in, when the workflow builds
    it; nothing for a hub id or a user's folder elsewhere (nothing to build)."""
    if not model_path.startswith(LOCAL_BACKBONE_DIR):
        return []
    name = model_path[len(LOCAL_BACKBONE_DIR) :].split("/")[0]
    return [LOCAL_BACKBONE_DIR + name]


def fold_report(fold: str) -> str:
    """One fold's report folder, whichever fold this run holds out (``snakemake folds``)."""
    return f"{RESULTS}/fold{fold}/report"


def audio_index(partition: str) -> str:
    """An audio partition's clip table (no labels: shared by every fold)."""
    return f"{RESULTS}/audio/{partition}.tsv"


def audio_indexes(partitions: Iterable[str]) -> list[str]:
    return [audio_index(p) for p in partitions]


def transcripts(partition: str) -> str:
    """An audio partition's ASR transcripts."""
    return f"{RESULTS}/asr/{partition}.jsonl"


def feature_files(feature_sets: Iterable[str], partition: str) -> list[str]:
    """One feature file per feature set (in the order given) of an audio partition."""
    return [f"{RESULTS}/features/{fs}/{partition}.h5" for fs in feature_sets]


def perturbed_clips(condition: str, partition: str) -> dict[str, str]:
    """A robustness condition's perturbed partition: its clip table (paths relative to the
    folder) and the folder."""
    stem = f"{ROBUSTNESS}/{condition}/audio/{partition}"
    return {"index": f"{stem}.tsv", "audio": stem}


def perturbed_transcripts(condition: str, partition: str) -> str:
    return f"{ROBUSTNESS}/{condition}/asr/{partition}.jsonl"


def perturbed_features(condition: str, feature_sets: Iterable[str], partition: str) -> list[str]:
    """A condition's feature files of a partition, one per feature set (in the order given)."""
    return [f"{ROBUSTNESS}/{condition}/features/{fs}/{partition}.h5" for fs in feature_sets]


@dataclass(frozen=True)
class Layout:
    """The paths of one run: `fold` is the held-out fold (None: no folds), `shards` the number
    of shards ASR and feature jobs split each partition into (config ``shards``)."""

    fold: str | None = None
    shards: int = 1

    @property
    def run(self) -> str:
        """The split-dependent results folder: ``results`` or ``results/fold<k>``."""
        return RESULTS if self.fold is None else f"{RESULTS}/fold{self.fold}"

    @property
    def logs(self) -> str:
        """The split-dependent logs folder: ``logs`` or ``logs/fold<k>``."""
        return LOGS if self.fold is None else f"{LOGS}/fold{self.fold}"

    def run_path(self, path: str) -> str:
        """`path` under the split-dependent results folder."""
        return f"{self.run}/{path}"

    def log_path(self, path: str) -> str:
        """`path` under the split-dependent logs folder."""
        return f"{self.logs}/{path}"

    @property
    def manifest(self) -> str:
        return self.run_path("data/manifest.tsv")

    @property
    def sharded(self) -> bool:
        """With one shard (the default) ASR and feature jobs write their final files directly
        and no merge job runs."""
        return self.shards > 1

    def sharded_path(self, stem: str, suffix: str) -> str:
        """``stem/shard{shard}suffix`` (a wildcard) when sharded, else ``stem suffix``."""
        return f"{stem}/shard{{shard}}{suffix}" if self.sharded else f"{stem}{suffix}"

    def shard_files(self, stem: str, suffix: str) -> list[str]:
        """Every shard's file of ``stem`` (what the merge job joins)."""
        return [f"{stem}/shard{shard}{suffix}" for shard in range(self.shards)]

    def checkpoint(self, model: str, stage: str) -> str:
        """A model's checkpoint after `stage` (``stage1`` or ``stage2``)."""
        return self.run_path(f"models/{model}/{stage}/checkpoint.pt")

    def posteriors(self, models: Iterable[str], posterior_set: str = "labelled") -> list[str]:
        """Every model's posteriors of the labelled subsets or of the unlabelled clips."""
        return [self.run_path(f"posteriors/{m}/{posterior_set}.h5") for m in models]

    def meta_metrics(self, seeds: Sequence[int], top_k: Sequence[int] = ()) -> list[str]:
        """The meta-classifier's metrics of every seed: of the whole ensemble, or (`top_k`)
        of each top-k ensemble, seeds varying fastest."""
        if not top_k:
            return [self.run_path(f"meta/seed{s}/metrics.json") for s in seeds]
        return [self.run_path(f"meta/top{k}/seed{s}/metrics.json") for k in top_k for s in seeds]

    def meta_heads(self, seeds: Sequence[int], k: str | None = None) -> list[str]:
        """Every seed's meta head, of the whole ensemble or of the top-`k` one (a soup's input)."""
        top = "" if k is None else f"top{k}/"
        return [self.run_path(f"meta/{top}seed{s}/head.pt") for s in seeds]

    def cross_corpus_results(self, corpora: Iterable[str], name: str) -> list[str]:
        """One results file (`name`) of every evaluation corpus, in the order given."""
        return [self.run_path(f"cross_corpus/{corpus}/{name}") for corpus in corpora]


def fetched_hub_folder(store: str, repo: str, revision: str) -> str:
    """The folder rule fetch_hub_model writes for a (repository slug, revision) pair: the
    text of ``medusa.core.fetch.HubModel.folder`` for a normalised `store`."""
    return f"{store}/hub/{repo}@{revision}"
