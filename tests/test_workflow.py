"""The whole DAG on the CI-sized demo, to `soup`, and what a rerun schedules after it.

One completed local run (session fixture `completed_ci_run`) is followed by dry runs with edited
configs: each must schedule exactly the jobs whose own inputs or sub-config changed.
"""

import json
import os
from pathlib import Path

import pandas as pd

from medusa.emotions import CLASS_LETTERS
from medusa.manifest import read_manifest

from workflow_runner import CI_CONFIGS, dry_run_jobs

ENSEMBLE = [
    ("meta", "seed=0"),
    ("meta", "seed=1"),
    ("model_soup", ""),
    ("predict", ""),
    ("report", ""),
]
SUBSETS = ("dev", "holdout", "test", "train")
JOB_LISTS = Path(os.environ.get("MEDUSA_JOB_LISTS", "/tmp/medusa-rerun-job-lists.txt"))


def model_chain(model):
    wildcards = f"model={model}"
    return [("posteriors", wildcards), ("stage1", wildcards), ("stage2", wildcards)]


def features(feature_set):
    return [("features", f"feature_set={feature_set}, subset={s}") for s in SUBSETS]


def record(case, jobs):
    """Keep the job lists for the closing note / CI log."""
    with open(JOB_LISTS, "a") as handle:
        handle.write(f"## {case}\n" + "\n".join(f"{r} {w}".strip() for r, w in jobs) + "\n\n")


def test_demo_dag_produces_every_output(completed_ci_run):
    results = completed_ci_run / "results"
    manifest = read_manifest(results / "data/manifest.tsv")
    test_ids = sorted(manifest.loc[manifest["subset"] == "test", "id"])

    predictions = pd.read_csv(results / "predictions/test.csv")
    assert list(predictions.columns) == ["FileName", "EmoClass"]
    assert sorted(predictions["FileName"].str.removesuffix(".wav")) == test_ids
    assert list(predictions["FileName"]) == sorted(predictions["FileName"])
    assert set(predictions["EmoClass"]) <= set(CLASS_LETTERS)
    posteriors = pd.read_csv(results / "predictions/test_posteriors.csv")
    assert list(posteriors.columns) == ["FileName", *CLASS_LETTERS]
    assert (posteriors[list(CLASS_LETTERS)].sum(axis=1) - 1).abs().max() < 1e-4

    soup = json.loads((results / "soup/metrics.json").read_text())
    assert 0.0 <= soup["dev"]["macro_f1"] <= 1.0
    table1 = pd.read_csv(results / "report/table1.tsv", sep="\t")
    assert {"m05_wavlm_roberta", "m13_whisper_wavlm"} <= set(table1["model"])
    table3 = pd.read_csv(results / "report/table3.tsv", sep="\t")
    assert len(table3) == 4
    for figure in ("confusion.png", "models.png"):
        assert (results / "report" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for stage in ("stage1", "stage2"):
        metrics = json.loads(
            (results / f"models/m05_wavlm_roberta/{stage}/metrics.json").read_text()
        )
        assert metrics
    # Resume state is removed once a training job completes.
    assert not list((results / "models").glob("*/*.resume"))


def test_nothing_to_do_after_a_completed_run(completed_ci_run):
    assert dry_run_jobs(completed_ci_run, "soup") == []


def test_touching_config_files_without_changes_schedules_nothing(completed_ci_run):
    for config_file in CI_CONFIGS:
        os.utime(config_file)  # a new mtime, the same content
    # An extra config file that restates a value already in force changes nothing either.
    assert dry_run_jobs(completed_ci_run, "soup", config={"demo": {"n_labelled": 100}}) == []


def test_changing_one_model_reruns_only_its_chain_and_the_ensemble(completed_ci_run):
    jobs = dry_run_jobs(
        completed_ci_run, "soup", config={"models": {"m05_wavlm_roberta": {"dropout": 0.2}}}
    )
    record("model m05_wavlm_roberta: dropout 0.1 -> 0.2", jobs)
    assert jobs == sorted(model_chain("m05_wavlm_roberta") + ENSEMBLE)


def test_changing_the_meta_classifier_reruns_only_the_ensemble(completed_ci_run):
    jobs = dry_run_jobs(completed_ci_run, "soup", config={"meta": {"epochs": 21}})
    record("meta.epochs 20 -> 21", jobs)
    assert jobs == sorted(ENSEMBLE)


def test_changing_a_layer_view_reextracts_only_that_feature_set(completed_ci_run):
    jobs = dry_run_jobs(
        completed_ci_run, "soup", config={"feature_sets": {"whisper": {"layer": 2}}}
    )
    record("feature_sets.whisper.layer last -> 2", jobs)
    assert jobs == sorted(features("whisper") + model_chain("m13_whisper_wavlm") + ENSEMBLE)


def test_adding_a_model_schedules_its_chain_and_the_ensemble(completed_ci_run):
    jobs = dry_run_jobs(
        completed_ci_run,
        "soup",
        config={"models": {"m15_wavlm_roberta": {"features": ["wavlm", "roberta"], "seed": 15}}},
    )
    assert jobs == sorted(model_chain("m15_wavlm_roberta") + ENSEMBLE)


def test_removing_a_model_schedules_only_the_ensemble(completed_ci_run):
    jobs = dry_run_jobs(
        completed_ci_run, "soup", config={"models": {"m13_whisper_wavlm": {"enabled": False}}}
    )
    assert jobs == sorted(ENSEMBLE)


def test_changing_the_asr_model_reruns_text_features_not_audio(completed_ci_run):
    jobs = dry_run_jobs(
        completed_ci_run,
        "soup",
        config={"asr": {"model": "resources/backbones/whisper-random-asr/model.pt"}},
    )
    asr = [("asr", f"subset={s}") for s in SUBSETS]
    backbone = [("demo_backbone", "backbone=whisper-random-asr")]
    assert jobs == sorted(
        backbone + asr + features("roberta") + model_chain("m05_wavlm_roberta") + ENSEMBLE
    )


def test_the_corpus_folder_holds_only_what_the_generator_wrote(completed_ci_run):
    corpus = completed_ci_run / "resources/demo/msp-podcast"
    assert sorted(p.name for p in corpus.iterdir()) == ["Audios", "Labels", "demo_truth.csv"]
    assert sorted(p.name for p in (corpus / "Labels").iterdir()) == [
        "labels_consensus.csv",
        "labels_detailed.csv",
    ]
