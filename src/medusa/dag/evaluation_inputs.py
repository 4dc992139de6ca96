"""What the evaluation jobs read (the report, Table 2, Table R and its perturbed audio, the
evidence document): their Snakemake input dicts, from plain values (the run's
``medusa.dag.layout.Layout``, model and seed lists, the config's ``robustness`` section and
wildcard strings), for the input functions of workflow/rules/common.smk.

Perturbed audio, its transcripts and features never read labels: they are keyed by the audio
partition alone, so a new split reruns none of them and every fold of a table shares them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from medusa.core.config import resolved_model
from medusa.corpus.partitions import partition_of_subset
from medusa.dag.inputs import final_checkpoint
from medusa.dag.layout import (
    Layout,
    LayoutError,
    audio_index,
    perturbed_clips,
    perturbed_features,
    perturbed_transcripts,
)
from medusa.evaluation.conditions import condition_spec


def report_inputs(
    layout: Layout, models: Sequence[str], seeds: Sequence[int], top_k: Sequence[int]
) -> dict:
    """Everything the report scores: every model's posteriors, the meta seeds and soup of
    the whole ensemble and of each top-k ensemble (Table 3), the soup's temperature
    (Table C)."""
    return {
        "manifest": layout.manifest,
        "posteriors": layout.posteriors(models),
        "meta": layout.meta_metrics(seeds),
        "soup": layout.run_path("soup/head.pt"),
        "temperature": layout.run_path("soup/temperature.json"),
        "top_meta": layout.meta_metrics(seeds, top_k),
        "top_soups": [layout.run_path(f"soup/top{k}/head.pt") for k in top_k],
    }


def table2_inputs(layout: Layout, ablations: Mapping[str, tuple[str, str]]) -> dict:
    """The labelled posteriors of every ablated model and of each of its ablations
    (``medusa.core.config.ablation_variants``), sorted by name."""
    models = sorted({base for base, _ in ablations.values()} | set(ablations))
    return {"manifest": layout.manifest, "posteriors": layout.posteriors(models)}


def robustness_partition(folds: bool) -> str:
    """The audio partition holding the dev clips. It is perturbed whole, so that ASR and
    features stay keyed by audio alone (no manifest: a new split reruns none of them, and a
    fold-style table's `labelled` partition serves every fold); only its dev clips are scored.
    """
    return partition_of_subset("dev", folds=folds)


def babble_partition(robustness: Mapping, condition: str, folds: bool) -> str | None:
    """The training partition, whose clips a babble condition mixes; None for other kinds."""
    if condition_spec(robustness, condition)["kind"] != "babble":
        return None
    return partition_of_subset("train", folds=folds)


def perturb_inputs(partition: str, babble: str | None) -> dict:
    """The partition's clip table, and the training partition's (`babble`) for babble."""
    inputs = {"index": audio_index(partition)}
    if babble:
        inputs["babble"] = audio_index(babble)
    return inputs


def perturbed_feature_inputs(clean_inputs: dict, condition: str, partition: str) -> dict:
    """A feature job's inputs on a condition's perturbed clips: `clean_inputs` (rule features')
    with the perturbed clip table and folder, and the condition's own transcripts for text."""
    inputs = {**clean_inputs, **perturbed_clips(condition, partition)}
    if "transcripts" in inputs:
        inputs["transcripts"] = perturbed_transcripts(condition, partition)
    return inputs


def robustness_posterior_inputs(
    layout: Layout,
    config: Mapping,
    model: str,
    condition: str,
    stage2_models: Sequence[str],
    folds: bool,
) -> dict:
    """The model's final checkpoint, the manifest (which clips are dev) and the model's
    features of the condition's perturbed partition."""
    return {
        "checkpoint": final_checkpoint(layout, model, stage2_models),
        "manifest": layout.manifest,
        "dev": perturbed_features(
            condition, resolved_model(config, model)["features"], robustness_partition(folds)
        ),
    }


def robustness_table_inputs(
    layout: Layout, conditions: Sequence[str], models: Sequence[str]
) -> dict:
    """Clean posteriors and soup (the report's), and every condition's posteriors."""
    if not conditions:
        raise LayoutError(
            "robustness.conditions: no enabled condition (config/config.yaml lists them)"
        )
    return {
        "manifest": layout.manifest,
        "clean": layout.posteriors(models),
        "soup": layout.run_path("soup/head.pt"),
        "perturbed": [
            layout.run_path(f"robustness/{c}/posteriors/{m}.h5") for c in conditions for m in models
        ],
    }


def evidence_inputs(layout: Layout, corpora: Sequence[str]) -> dict:
    """Table R (robustness), the report's Table C and Table 1 (its best single model and the
    soup's dev macro-F1), and the cross-corpus results of every configured corpus (none: the
    document says so)."""
    return {
        "robustness_table": layout.run_path("report/robustness.tsv"),
        "robustness_markdown": layout.run_path("report/robustness.md"),
        "calibration": layout.run_path("report/calibration.tsv"),
        "table1": layout.run_path("report/table1.tsv"),
        "cross_corpus": layout.cross_corpus_results(corpora, "metrics.tsv"),
        "cross_corpus_excluded": layout.cross_corpus_results(corpora, "excluded.tsv"),
        "cross_corpus_unmapped": layout.cross_corpus_results(corpora, "unmapped.tsv"),
    }
