"""What the workflow's data, ASR, feature, model and ensemble jobs read: their Snakemake input
lists and dicts, computed from plain values (the config, the run's ``Layout``, wildcard
strings), for the input functions of workflow/rules/common.smk.

The choices here decide what reruns: ASR and features read an audio partition's clip table and
never the manifest (they do not depend on labels); training reads only the labelled
partitions' features, so new unlabelled audio never retrains a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from medusa.core.config import resolved_model
from medusa.core.fetch import HubModel, WhisperCheckpoint
from medusa.corpus.partitions import partition_of_subset
from medusa.corpus.table_layout import UNLABELLED
from medusa.dag.layout import (
    Layout,
    audio_index,
    feature_files,
    local_backbone_input,
    transcripts,
)

# Subsets a training job reads: train, holdout (model selection) and dev (reported evaluation).
TRAINING_SUBSETS = ("train", "holdout", "dev")


def fetched_models(
    hub_folders: Sequence[str], whisper: WhisperCheckpoint | None, store: str
) -> list[str]:
    """Every remote model of the config, as the local copies fetch_models makes."""
    asr_file = [str(whisper.path(store))] if whisper else []
    return [*hub_folders, *asr_file]


def asr_inputs(
    partition: str, asr_model: str, whisper: WhisperCheckpoint | None, store: str
) -> dict:
    """The partition's clip table and the checkpoint: built by the workflow (demo), fetched
    (a release name or URL), or a user's own file (not an input)."""
    inputs = {"index": audio_index(partition), "model": local_backbone_input(asr_model)}
    if whisper:
        inputs["fetched"] = str(whisper.path(store))
    return inputs


def feature_inputs(feature_set: Mapping, partition: str, hub: HubModel | None, store: str) -> dict:
    """The partition's clip table, the backbone when the workflow builds it (or its fetched
    copy, for a hub id), and the partition's transcripts for text (never the manifest:
    features do not depend on labels)."""
    inputs = {
        "index": audio_index(partition),
        "backbone": local_backbone_input(feature_set["backbone"]),
    }
    if hub is not None:
        inputs["fetched"] = str(hub.folder(store))
    if feature_set["kind"] == "text":
        inputs["transcripts"] = transcripts(partition)
    return inputs


def subset_feature_files(feature_sets: Sequence[str], subset: str, folds: bool) -> list[str]:
    """The feature files (in the order given) of the audio partition holding `subset`
    (`folds`: a fold-style table, whose labelled subsets all live in one partition)."""
    return feature_files(feature_sets, partition_of_subset(subset, folds=folds))


def model_feature_files(config: Mapping, model: str, subset: str, folds: bool) -> list[str]:
    """The model's feature files (model order) of the audio partition holding `subset`."""
    return subset_feature_files(resolved_model(config, model)["features"], subset, folds)


def stage_inputs(
    layout: Layout, config: Mapping, model: str, folds: bool, stage: str = "stage1"
) -> dict:
    """Manifest and the features of train, holdout and dev (nothing of the unlabelled
    partition, so new unlabelled audio never retrains a model); stage 2 starts from the
    stage-1 checkpoint."""
    inputs = {"manifest": layout.manifest}
    for subset in TRAINING_SUBSETS:
        inputs[subset] = model_feature_files(config, model, subset, folds)
    if stage == "stage2":
        inputs["init"] = layout.checkpoint(model, "stage1")
    return inputs


def final_checkpoint(layout: Layout, model: str, stage2_models: Sequence[str]) -> str:
    """The checkpoint a model's posteriors come from: stage 2's, or stage 1's when the model's
    stage 2 does not run (``stage2.enabled: false``, an ablation)."""
    return layout.checkpoint(model, "stage2" if model in stage2_models else "stage1")


def posterior_subsets(posterior_set: str, labelled_subsets: Sequence[str]) -> list[str]:
    """Subsets a posteriors file holds: every labelled subset, or the unlabelled `test`."""
    return ["test"] if posterior_set == "unlabelled" else list(labelled_subsets)


def posterior_inputs(
    layout: Layout,
    config: Mapping,
    model: str,
    posterior_set: str,
    labelled_subsets: Sequence[str],
    stage2_models: Sequence[str],
    folds: bool,
) -> dict:
    """The model's final checkpoint, the clips to score (the manifest, or the unlabelled
    partition's index) and the model's features of each subset the posteriors file holds."""
    inputs = {"checkpoint": final_checkpoint(layout, model, stage2_models)}
    if posterior_set == "unlabelled":
        inputs["index"] = audio_index(UNLABELLED)
    else:
        inputs["manifest"] = layout.manifest
    for subset in posterior_subsets(posterior_set, labelled_subsets):
        inputs[subset] = model_feature_files(config, model, subset, folds)
    return inputs
