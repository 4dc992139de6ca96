"""The whole DAG on the CI-sized demo, to `soup`, and what a rerun schedules after it.

One completed local run (session fixture `completed_ci_run`) is followed by dry runs with edited
configs: each must schedule exactly the jobs whose own inputs or sub-config changed.
"""

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import soundfile as sf

from medusa.core.emotions import CLASS_LETTERS
from medusa.core.manifest import read_manifest
from medusa.corpus.audio_index import clip_paths

from workflow_runner import CI_CONFIGS, dry_run_jobs, run_snakemake

ENSEMBLE = [
    ("meta_select", ""),
    ("meta_select_top", "k=1"),
    ("meta", "seed=0"),
    ("meta", "seed=1"),
    ("meta_top", "k=1, seed=0"),
    ("meta_top", "k=1, seed=1"),
    ("model_soup", ""),
    ("model_soup_top", "k=1"),
    ("predict", ""),
    ("report", ""),
    ("temperature", ""),
]
PARTITIONS = ("development", "train", "unlabelled")
MODELS = ("m05_wavlm_roberta", "m13_whisper_wavlm")
FEATURE_SETS = ("hubert", "roberta", "wavlm", "whisper")
AUDIO_JOBS = ("audio_index", "asr", "features")
JOB_LISTS = Path(os.environ.get("MEDUSA_JOB_LISTS", "/tmp/medusa-rerun-job-lists.txt"))


def posteriors(model, *sets):
    return [("posteriors", f"model={model}, posterior_set={s}") for s in sets]


def model_chain(model):
    wildcards = f"model={model}"
    chain = [("stage1", wildcards), ("stage2", wildcards)]
    return chain + posteriors(model, "labelled", "unlabelled")


def features(feature_set, partitions=PARTITIONS):
    return [("features", f"feature_set={feature_set}, partition={p}") for p in partitions]


def unlabelled_chain():
    """What new or removed unlabelled audio must run: its own partition, nothing labelled."""
    audio = [("audio_index", "partition=unlabelled"), ("asr", "partition=unlabelled")]
    feats = [job for fs in ("roberta", "wavlm", "whisper") for job in features(fs, ["unlabelled"])]
    posts = [job for m in MODELS for job in posteriors(m, "unlabelled")]
    return sorted(audio + feats + posts + [("predict", "")])


def record(case, jobs):
    """Keep the job lists for the closing note / CI log."""
    with open(JOB_LISTS, "a") as handle:
        handle.write(f"## {case}\n" + "\n".join(f"{r} {w}".strip() for r, w in jobs) + "\n\n")


def test_demo_dag_produces_every_output(completed_ci_run):
    results = completed_ci_run / "results"
    manifest = read_manifest(results / "data/manifest.tsv")
    assert set(manifest["subset"]) == {"train", "holdout", "meta", "dev"}
    test_clips = clip_paths(results / "audio/unlabelled.tsv", corpus(completed_ci_run))
    test_ids = [clip for clip, _ in test_clips]
    assert len(test_ids) == 6 and all("_test3_" in clip for clip in test_ids)

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
    assert len(table3) == 10  # 5 techniques x (all models, top 1)
    # The CI meta subset has one speaker: the rule says it cannot cross-validate, keeps the
    # vote, and the choice reaches the soup's metrics and the report.
    selection = json.loads((results / "meta/select.json").read_text())
    assert (
        selection["choice"] == "vote" and "fewer than meta.selection.folds" in selection["reason"]
    )
    assert "no cross-validation possible" in (completed_ci_run / "logs/meta/select.log").read_text()
    assert soup["selection"] == selection
    chosen = pd.read_csv(results / "report/meta_selection.tsv", sep="\t").query("chosen")
    assert list(chosen["setting"]) == ["vote", "vote"]
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
    jobs = dry_run_jobs(completed_ci_run, "soup", config={"meta": {"steps": 51}})
    record("meta.steps 50 -> 51", jobs)
    assert jobs == sorted(ENSEMBLE)


def test_changing_the_meta_selection_reruns_only_the_ensemble(completed_ci_run):
    jobs = dry_run_jobs(completed_ci_run, "soup", config={"meta": {"selection": {"folds": 3}}})
    record("meta.selection.folds 5 -> 3", jobs)
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
    asr = [("asr", f"partition={p}") for p in PARTITIONS]
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


# ---------------------------------------------------------------------------------------------
# The expensive stages are keyed by audio: label, split and ensemble changes re-extract nothing.


def test_changing_the_split_retrains_but_extracts_nothing(completed_ci_run):
    expected = sorted(
        [("prepare", "")] + model_chain(MODELS[0]) + model_chain(MODELS[1]) + ENSEMBLE
    )
    for change in ({"holdout_fraction": 0.25}, {"split_seed": 7}):
        jobs = dry_run_jobs(completed_ci_run, "soup", config={"data": change})
        record(f"data: {change}", jobs)
        assert jobs == expected, change
        assert not [job for job in jobs if job[0] in AUDIO_JOBS]


def test_adding_a_meta_seed_runs_only_that_seed_and_what_follows(completed_ci_run):
    jobs = dry_run_jobs(completed_ci_run, "soup", config={"meta": {"seeds": [0, 1, 2]}})
    record("meta.seeds [0, 1] -> [0, 1, 2]", jobs)
    assert jobs == sorted(
        [
            ("meta", "seed=2"),
            ("meta_top", "k=1, seed=2"),
            ("model_soup", ""),
            ("model_soup_top", "k=1"),
            ("predict", ""),
            ("report", ""),
            ("temperature", ""),
        ]
    )


def test_changing_the_asr_language_reruns_asr_and_text_features(completed_ci_run):
    jobs = dry_run_jobs(completed_ci_run, "soup", config={"asr": {"language": "de"}})
    record("asr.language en -> de", jobs)
    asr = [("asr", f"partition={p}") for p in PARTITIONS]
    assert jobs == sorted(asr + features("roberta") + model_chain(MODELS[0]) + ENSEMBLE)


def corpus(workdir):
    return workdir / "resources/demo/msp-podcast"


def test_a_changed_label_file_retrains_but_extracts_nothing(run_copy):
    consensus = corpus(run_copy) / "Labels/labels_consensus.csv"
    table = pd.read_csv(consensus, dtype=str, keep_default_na=False)
    table.loc[table["EmoClass"] == "A", "EmoClass"] = "X"  # relabel every Angry file
    table.to_csv(consensus, index=False)
    jobs = dry_run_jobs(run_copy, "soup")
    record("labels_consensus.csv: every A relabelled X", jobs)
    assert jobs == sorted(
        [("prepare", "")] + model_chain(MODELS[0]) + model_chain(MODELS[1]) + ENSEMBLE
    )


def test_a_removed_unlabelled_clip_reruns_only_the_unlabelled_chain(run_copy):
    victim = sorted((corpus(run_copy) / "Audios").glob("*_test3_*.wav"))[0]
    victim.unlink()
    jobs = dry_run_jobs(run_copy, "soup")
    record(f"removed unlabelled clip {victim.name}", jobs)
    assert jobs == unlabelled_chain()


def test_a_same_size_replaced_clip_reruns_its_chain_also_after_its_index_was_rebuilt(run_copy):
    victim = sorted((corpus(run_copy) / "Audios").glob("*_test3_*.wav"))[0]
    size = victim.stat().st_size
    wave, rate = sf.read(victim, dtype="int16")
    sf.write(victim, wave[::-1], rate, subtype="PCM_16")  # other samples, the same bytes count
    assert victim.stat().st_size == size
    jobs = dry_run_jobs(run_copy, "soup")
    record(f"same-size replaced unlabelled clip {victim.name}", jobs)
    assert jobs == unlabelled_chain()
    # An earlier invocation rebuilt the index (a partial target, an interrupted run): it reads
    # exactly as before, yet the transcripts, features and predictions are still stale.
    index = run_copy / "results/audio/unlabelled.tsv"
    before = index.read_bytes()
    run = run_snakemake(run_copy, str(index.relative_to(run_copy)), "--cores", "1",
                        configfiles=CI_CONFIGS)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert index.read_bytes() == before
    stale = [job for job in unlabelled_chain() if job[0] != "audio_index"]
    assert dry_run_jobs(run_copy, "soup") == stale


def test_new_times_on_every_corpus_file_rerun_nothing(run_copy):
    for path in corpus(run_copy).rglob("*"):
        os.utime(path)  # `touch`: new times, the same content
    assert dry_run_jobs(run_copy, "soup") == []


def test_a_corpus_copied_elsewhere_without_times_reruns_nothing(run_copy, tmp_path):
    old = corpus(run_copy)
    new = tmp_path / "elsewhere" / "MSP-Podcast"
    shutil.copytree(old, new, copy_function=shutil.copyfile)  # `cp -r`: new inodes and times
    shutil.rmtree(old)  # nothing may still read the old place
    moved = {"data": {"root": str(new)}}
    assert dry_run_jobs(run_copy, "soup", config=moved) == []
    # The jobs find the audio in its new place (index paths are relative to data.root).
    asr = run_copy / "results/asr/unlabelled.jsonl"
    before = asr.read_text()
    run = run_snakemake(run_copy, "results/asr/unlabelled.jsonl", "--forcerun", "asr",
                        "--cores", "1", configfiles=CI_CONFIGS, config=moved)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert asr.read_text() == before
    assert dry_run_jobs(run_copy, "soup", config=moved) == []


def test_a_new_unlabelled_clip_is_predicted_and_retrains_nothing(run_copy):
    audios = corpus(run_copy) / "Audios"
    source = sorted(audios.glob("*_test3_*.wav"))[0]
    new = audios / "MSP-PODCAST_test3_9001.wav"
    wave, rate = sf.read(source)
    sf.write(new, wave[: len(wave) * 3 // 4], rate, subtype="PCM_16")  # a new, shorter clip
    jobs = dry_run_jobs(run_copy, "soup")
    record(f"new unlabelled clip {new.name}", jobs)
    assert jobs == unlabelled_chain()

    run = run_snakemake(run_copy, "soup", "--cores", "2", "--resources", "gpu=2",
                        configfiles=CI_CONFIGS)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    predictions = pd.read_csv(run_copy / "results/predictions/test.csv")
    assert new.name in set(predictions["FileName"]) and len(predictions) == 7
    assert dry_run_jobs(run_copy, "soup") == []
