"""The logic behind workflow/rules/common.smk: artifact paths (medusa.dag.layout), the corpus
as the parse sees it (medusa.dag.corpus_state), each job's params and inputs (medusa.dag.params,
medusa.dag.inputs, medusa.dag.evaluation_inputs), without Snakemake.

The configs are the real ones (config/config.yaml with the demo and CI-sized files on top), so a
path that drifts from what the rules write fails here before a workflow run does.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medusa.core.config import ablation_variants, deep_merge, enabled_models
from medusa.core.fetch import HubModel, WhisperCheckpoint
from medusa.dag import corpus_state as state
from medusa.dag import evaluation_inputs, layout
from medusa.dag import inputs as job_inputs
from medusa.dag import params as job_params
from medusa.dag.layout import Layout, LayoutError

REPO = Path(__file__).resolve().parents[1]
SHA = "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def config():
    """The CI-sized demo's config: m05_wavlm_roberta (wavlm + roberta) and m13_whisper_wavlm."""
    merged = {}
    for path in ("config/config.yaml", "config/demo.yaml", "tests/config/ci.yaml"):
        merged = deep_merge(merged, yaml.safe_load((REPO / path).read_text()))
    return merged


# ---------------------------------------------------------------- medusa.dag.layout


def test_the_split_dependent_folders_follow_the_fold():
    assert layout.fold_of({"fold": None}) is None
    # YAML gives an int, `--config 'data={fold: 2}'` a string: one folder either way.
    assert layout.fold_of({"fold": 2}) == layout.fold_of({"fold": "2"}) == "2"
    plain, fold = Layout(), Layout(fold="2")
    assert plain.run_path("data/manifest.tsv") == "results/data/manifest.tsv"
    assert fold.run_path("data/manifest.tsv") == "results/fold2/data/manifest.tsv"
    assert plain.log_path("prepare.log") == "logs/prepare.log"
    assert fold.log_path("prepare.log") == "logs/fold2/prepare.log"
    assert fold.manifest == "results/fold2/data/manifest.tsv"
    # Labels never reach the audio index, ASR or features: shared by every fold.
    assert layout.audio_index("labelled") == "results/audio/labelled.tsv"
    assert layout.transcripts("labelled") == "results/asr/labelled.jsonl"
    assert layout.feature_files(["wavlm", "roberta"], "labelled") == [
        "results/features/wavlm/labelled.h5",
        "results/features/roberta/labelled.h5",
    ]
    assert layout.fold_report("3") == "results/fold3/report"


def test_shards_are_a_wildcard_in_outputs_and_listed_for_the_merge():
    one, three = Layout(shards=1), Layout(shards=3)
    assert not one.sharded and three.sharded
    assert one.sharded_path("results/asr/train", ".jsonl") == "results/asr/train.jsonl"
    assert (
        three.sharded_path("results/asr/train", ".jsonl") == "results/asr/train/shard{shard}.jsonl"
    )
    assert three.shard_files("results/asr/train", ".jsonl") == [
        f"results/asr/train/shard{i}.jsonl" for i in range(3)
    ]


def test_model_and_ensemble_paths():
    run = Layout(fold="1")
    assert run.checkpoint("m05", "stage2") == "results/fold1/models/m05/stage2/checkpoint.pt"
    assert run.posteriors(["a", "b"], "unlabelled") == [
        "results/fold1/posteriors/a/unlabelled.h5",
        "results/fold1/posteriors/b/unlabelled.h5",
    ]
    # Top-k outer, seeds inner: the order Snakemake's expand(k=..., seed=...) gave.
    assert run.meta_metrics([0, 1], [3, 1]) == [
        "results/fold1/meta/top3/seed0/metrics.json",
        "results/fold1/meta/top3/seed1/metrics.json",
        "results/fold1/meta/top1/seed0/metrics.json",
        "results/fold1/meta/top1/seed1/metrics.json",
    ]
    assert run.meta_metrics([0]) == ["results/fold1/meta/seed0/metrics.json"]
    assert run.meta_heads([0, 1], "2") == [
        "results/fold1/meta/top2/seed0/head.pt",
        "results/fold1/meta/top2/seed1/head.pt",
    ]
    assert run.cross_corpus_results(["x"], "metrics.tsv") == [
        "results/fold1/cross_corpus/x/metrics.tsv"
    ]


def test_only_backbones_the_workflow_builds_are_inputs():
    local = "resources/backbones/whisper-tiny-en-15s-asr/model.pt"
    assert layout.local_backbone_input(local) == ["resources/backbones/whisper-tiny-en-15s-asr"]
    assert layout.local_backbone_input("resources/backbones/wavlm-tiny") == [
        "resources/backbones/wavlm-tiny"
    ]
    assert layout.local_backbone_input("microsoft/wavlm-large") == []
    assert layout.local_backbone_input("/data/models/wavlm") == []


def test_a_fetched_folder_is_where_the_hub_model_puts_it():
    model = HubModel("org/name", "v2")
    store = os.path.normpath("resources/models")
    folder = layout.fetched_hub_folder(store, "org--name", "v2")
    assert folder == str(model.folder(store))


# ---------------------------------------------------------------- medusa.dag.corpus_state


def test_labelled_partitions_and_their_subsets():
    split = {"unlabelled": "u", "train": "t", "development": "d", "test_labelled": "x"}
    assert state.labelled_partitions(split) == ["development", "test_labelled", "train"]
    assert state.labelled_subsets(split) == ["dev", "test_labelled", "train", "holdout", "meta"]
    folds = {"labelled": "l", "unlabelled": "u"}
    assert state.labelled_subsets(folds) == ["train", "holdout", "meta", "dev"]


def test_a_partition_not_in_the_corpus_is_named():
    assert state.partition_fingerprint({"train": "abc"}, "train", "/corpus") == "abc"
    with pytest.raises(
        LayoutError, match=r"no audio partition 'dev' in /corpus \(partitions: a, train\)"
    ):
        state.partition_fingerprint({"train": "abc", "a": "b"}, "dev", "/corpus")


def test_data_fold_must_name_a_fold_of_a_fold_style_table():
    state.check_fold((), None, None)
    state.check_fold(("1", "2"), "2", "c/clips.csv")
    with pytest.raises(LayoutError, match=r"data.fold: c/clips.csv has folds 1, 2; set data.fold"):
        state.check_fold(("1", "2"), None, "c/clips.csv")
    with pytest.raises(LayoutError, match=r"data.fold: 7 is not a fold .*its folds are 1, 2"):
        state.check_fold(("1", "2"), "7", "c/clips.csv")
    with pytest.raises(LayoutError, match="it has no numbered folds"):
        state.check_fold((), "1", None)


def test_every_folds_report_must_exist_but_the_held_out_ones():
    done = {"results/fold1/report", "results/fold3/report"}
    inputs = state.fold_report_inputs(("1", "2", "3"), "2", exists=done.__contains__)
    assert inputs == {
        "table1": [f"results/fold{f}/report/table1.tsv" for f in "123"],
        "table3": [f"results/fold{f}/report/table3.tsv" for f in "123"],
    }
    with pytest.raises(LayoutError, match=r"no report yet for fold\(s\) 2, 3: .*fold: 3}"):
        state.fold_report_inputs(("1", "2", "3"), "1", exists=lambda path: False)
    with pytest.raises(LayoutError, match="no numbered folds"):
        state.fold_report_inputs((), None)


def test_a_missing_corpus_says_what_to_do(tmp_path):
    assert not state.corpus_present(str(tmp_path), "msp_podcast", None)
    (tmp_path / "Audios").mkdir()
    (tmp_path / "Labels").mkdir()
    (tmp_path / "Labels/labels_consensus.csv").write_text("FileName\n")
    assert state.corpus_present(str(tmp_path), "msp_podcast", None)
    assert not state.corpus_present(str(tmp_path), "table", "clips.csv")
    (tmp_path / "clips.csv").write_text("path\n")
    assert state.corpus_present(str(tmp_path), "table", "clips.csv")
    with pytest.raises(LayoutError, match=r"data.root: no table 'other.csv'"):
        state.load_corpus_state(
            str(tmp_path),
            str(tmp_path / "cache.tsv"),
            layout="table",
            table="other.csv",
            fold=None,
            demo_home=False,
            check_files=True,
        )


# ---------------------------------------------------------------- medusa.dag.params


def test_params_hold_only_what_the_job_depends_on(config):
    data = {**config["data"], "root": "/elsewhere"}
    prepared = json.loads(job_params.prepare_params(data, {"a.csv": "1"}, ["x"]))
    assert "root" not in prepared["data"] and prepared["labels"] == {"a.csv": "1"}
    # Moving the corpus or reordering keys reruns nothing.
    moved = {**dict(reversed(list(config["data"].items()))), "root": "/moved"}
    assert job_params.prepare_params(moved, {"a.csv": "1"}, ["x"]) == job_params.prepare_params(
        data, {"a.csv": "1"}, ["x"]
    )
    meta = json.loads(job_params.meta_params(config["meta"], ["m1", "m2"]))
    assert "seeds" not in meta["meta"] and "top_k" not in meta["meta"]
    assert meta["models"] == ["m1", "m2"]
    fingerprints = {"train": "t", "development": "d"}
    assert job_params.audio_params(fingerprints, ["development", None]) == '{"development":"d"}'
    assert json.loads(job_params.corpus_params("table", "clips.csv")) == {
        "layout": "table",
        "table": "clips.csv",
    }


def test_a_fetched_models_revision_is_always_in_its_params():
    whisper = WhisperCheckpoint("tiny", "https://x/tiny.pt", SHA)
    assert json.loads(job_params.asr_params({"model": "tiny"}, whisper))["revision"] == SHA
    assert "revision" not in json.loads(job_params.asr_params({"model": "m.pt"}, None))
    hub = HubModel("org/name")
    backbone = {"backbone": "org/name", "kind": "audio"}
    assert json.loads(job_params.feature_set_params(backbone, hub))["revision"] == "main"
    assert json.loads(job_params.fetch_hub_params(hub)) == {
        "repo_id": "org/name",
        "revision": "main",
    }
    assert json.loads(job_params.fetch_whisper_params(whisper)) == {
        "url": "https://x/tiny.pt",
        "sha256": SHA,
    }


def test_the_bundle_records_the_feature_sets_the_models_read_in_config_order(config):
    models = enabled_models(config)
    assert models == ["m05_wavlm_roberta", "m13_whisper_wavlm"]
    assert job_params.bundle_feature_sets(config, models) == ["wavlm", "whisper", "roberta"]
    features = json.loads(job_params.model_features(config["models"], models))
    assert features == {
        "m05_wavlm_roberta": ["wavlm", "roberta"],
        "m13_whisper_wavlm": ["whisper", "wavlm"],
    }


# ---------------------------------------------------------------- medusa.dag.inputs


def test_asr_and_features_read_audio_never_labels(config):
    whisper = WhisperCheckpoint("tiny", "https://x/tiny.pt", SHA)
    assert job_inputs.asr_inputs("train", "tiny", whisper, "store") == {
        "index": "results/audio/train.tsv",
        "model": [],
        "fetched": f"store/whisper/tiny-{SHA}.pt",
    }
    text = job_inputs.feature_inputs(config["feature_sets"]["roberta"], "train", None, "store")
    assert text == {
        "index": "results/audio/train.tsv",
        "backbone": ["resources/backbones/minilm-l6"],
        "transcripts": "results/asr/train.jsonl",
    }
    hub = HubModel("org/name")
    audio = job_inputs.feature_inputs({"backbone": "org/name", "kind": "audio"}, "dev", hub, "s")
    assert audio == {
        "index": "results/audio/dev.tsv",
        "backbone": [],
        "fetched": "s/hub/org--name@main",
    }
    assert job_inputs.fetched_models(["s/hub/a@main"], whisper, "s") == [
        "s/hub/a@main",
        f"s/whisper/tiny-{SHA}.pt",
    ]
    assert job_inputs.fetched_models([], None, "s") == []


def test_training_reads_the_labelled_partitions_features(config):
    model = "m05_wavlm_roberta"
    stage1 = job_inputs.stage_inputs(Layout(), config, model, folds=False)
    assert stage1 == {
        "manifest": "results/data/manifest.tsv",
        "train": ["results/features/wavlm/train.h5", "results/features/roberta/train.h5"],
        "holdout": ["results/features/wavlm/train.h5", "results/features/roberta/train.h5"],
        "dev": [
            "results/features/wavlm/development.h5",
            "results/features/roberta/development.h5",
        ],
    }
    stage2 = job_inputs.stage_inputs(Layout(fold="1"), config, model, folds=True, stage="stage2")
    assert stage2["init"] == "results/fold1/models/m05_wavlm_roberta/stage1/checkpoint.pt"
    assert stage2["dev"] == [
        "results/features/wavlm/labelled.h5",
        "results/features/roberta/labelled.h5",
    ]


def test_posteriors_come_from_the_last_stage_that_runs(config):
    run = Layout()
    assert job_inputs.final_checkpoint(run, "m", ["m"]).endswith("m/stage2/checkpoint.pt")
    assert job_inputs.final_checkpoint(run, "m", []).endswith("m/stage1/checkpoint.pt")
    subsets = ["train", "holdout", "meta", "dev"]
    assert job_inputs.posterior_subsets("labelled", subsets) == subsets
    assert job_inputs.posterior_subsets("unlabelled", subsets) == ["test"]
    model = "m13_whisper_wavlm"
    unlabelled = job_inputs.posterior_inputs(run, config, model, "unlabelled", subsets, [], False)
    assert unlabelled == {
        "checkpoint": "results/models/m13_whisper_wavlm/stage1/checkpoint.pt",
        "index": "results/audio/unlabelled.tsv",
        "test": ["results/features/whisper/unlabelled.h5", "results/features/wavlm/unlabelled.h5"],
    }
    labelled = job_inputs.posterior_inputs(run, config, model, "labelled", subsets, [model], False)
    assert list(labelled) == ["checkpoint", "manifest", *subsets]
    assert labelled["meta"] == [
        "results/features/whisper/train.h5",
        "results/features/wavlm/train.h5",
    ]


# ---------------------------------------------------------------- medusa.dag.evaluation_inputs


def test_the_report_scores_every_model_seed_and_top_k_ensemble():
    inputs = evaluation_inputs.report_inputs(Layout(), ["a", "b"], [0, 1], [2, 1])
    assert inputs == {
        "manifest": "results/data/manifest.tsv",
        "posteriors": ["results/posteriors/a/labelled.h5", "results/posteriors/b/labelled.h5"],
        "meta": ["results/meta/seed0/metrics.json", "results/meta/seed1/metrics.json"],
        "soup": "results/soup/head.pt",
        "temperature": "results/soup/temperature.json",
        "top_meta": [
            "results/meta/top2/seed0/metrics.json",
            "results/meta/top2/seed1/metrics.json",
            "results/meta/top1/seed0/metrics.json",
            "results/meta/top1/seed1/metrics.json",
        ],
        "top_soups": ["results/soup/top2/head.pt", "results/soup/top1/head.pt"],
    }


def test_table2_reads_each_ablated_model_and_its_ablations_by_name(config):
    ablations = ablation_variants(
        {**config, "ablations": {**config["ablations"], "models": ["m13_whisper_wavlm"]}}
    )
    posteriors = evaluation_inputs.table2_inputs(Layout(), ablations)["posteriors"]
    names = [path.split("/")[2] for path in posteriors]
    assert names == sorted(["m13_whisper_wavlm", *ablations])
    assert len(names) == len(config["ablations"]["switches"]) + 1


def test_robustness_inputs(config):
    robustness = config["robustness"]
    assert evaluation_inputs.babble_partition(robustness, "babble_snr20", folds=False) == "train"
    assert evaluation_inputs.babble_partition(robustness, "babble_snr20", folds=True) == "labelled"
    assert evaluation_inputs.babble_partition(robustness, "noise_pink_snr10", folds=False) is None
    assert evaluation_inputs.robustness_partition(folds=False) == "development"
    assert evaluation_inputs.perturb_inputs("development", "train") == {
        "index": "results/audio/development.tsv",
        "babble": "results/audio/train.tsv",
    }
    assert evaluation_inputs.perturb_inputs("development", None) == {
        "index": "results/audio/development.tsv"
    }
    clean = {
        "index": "results/audio/development.tsv",
        "backbone": [],
        "transcripts": "results/asr/development.jsonl",
    }
    perturbed = evaluation_inputs.perturbed_feature_inputs(clean, "fade", "development")
    assert perturbed == {
        "index": "results/robustness/fade/audio/development.tsv",
        "backbone": [],
        "transcripts": "results/robustness/fade/asr/development.jsonl",
        "audio": "results/robustness/fade/audio/development",
    }
    audio_only = evaluation_inputs.perturbed_feature_inputs(
        {"index": "x", "backbone": []}, "fade", "d"
    )
    assert "transcripts" not in audio_only
    posteriors = evaluation_inputs.robustness_posterior_inputs(
        Layout(fold="2"), config, "m05_wavlm_roberta", "fade", ["m05_wavlm_roberta"], folds=True
    )
    assert posteriors == {
        "checkpoint": "results/fold2/models/m05_wavlm_roberta/stage2/checkpoint.pt",
        "manifest": "results/fold2/data/manifest.tsv",
        "dev": [
            "results/robustness/fade/features/wavlm/labelled.h5",
            "results/robustness/fade/features/roberta/labelled.h5",
        ],
    }


def test_table_r_needs_an_enabled_condition():
    table = evaluation_inputs.robustness_table_inputs(Layout(), ["fade", "mp3"], ["a", "b"])
    assert table["perturbed"] == [
        "results/robustness/fade/posteriors/a.h5",
        "results/robustness/fade/posteriors/b.h5",
        "results/robustness/mp3/posteriors/a.h5",
        "results/robustness/mp3/posteriors/b.h5",
    ]
    with pytest.raises(LayoutError, match="robustness.conditions: no enabled condition"):
        evaluation_inputs.robustness_table_inputs(Layout(), [], ["a"])


def test_evidence_reads_every_cross_corpus_result():
    inputs = evaluation_inputs.evidence_inputs(Layout(), ["x", "y"])
    assert inputs["cross_corpus_unmapped"] == [
        "results/cross_corpus/x/unmapped.tsv",
        "results/cross_corpus/y/unmapped.tsv",
    ]
    assert evaluation_inputs.evidence_inputs(Layout(), [])["cross_corpus"] == []


# ---------------------------------------------------------------- the parse stays light


def test_every_module_common_smk_imports_loads_no_model_library():
    """Each medusa module common.smk names, submodules of `from medusa.x import y` included
    (tests/test_job_imports.py reads only the `from medusa.x.y` form)."""
    common = (REPO / "workflow/rules/common.smk").read_text()
    modules = set()
    for package, names in re.findall(r"^from (medusa[\w.]*) import (\([^)]*\)|.*)$", common, re.M):
        for name in re.findall(r"(\w+)(?: as \w+)?", names):
            submodule = REPO / "src" / package.replace(".", "/") / f"{name}.py"
            modules.add(f"{package}.{name}" if submodule.exists() else package)
    expected = {"medusa.dag.layout", "medusa.dag.corpus_state", "medusa.dag.evaluation_inputs"}
    assert expected | {"medusa.core.config", "medusa.corpus.guard"} <= modules
    probe = (
        f"import {', '.join(sorted(modules))}, sys\n"
        "print([m for m in ('torch', 'transformers', 'whisper', 'sklearn', 'matplotlib') "
        "if m in sys.modules])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]"
