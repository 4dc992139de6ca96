"""Cross-corpus evaluation: label mapping, the figures, and the bundle scored through Snakemake
(`snakemake cross_corpus`) and by hand on the workflow's own dev clips."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from medusa import cli
from medusa.cross_corpus import (
    EvaluationError,
    mapped_truth,
    parse_mapping,
    unweighted_average_recall,
)
from medusa.emotions import MSP_PODCAST_CLASSES
from medusa.manifest import consensus_labels, read_manifest
from medusa.table_layout import read_table

from workflow_runner import CI_CONFIGS, REPO, run_snakemake

TABLE_CONFIGS = [
    REPO / "config/demo.yaml",
    REPO / "config/demo_table.yaml",
    REPO / "tests/config/ci.yaml",
    REPO / "tests/config/ci_table.yaml",
]


def write_table(path, rows, columns=("path", "partition", "speaker", "gender", "votes")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)


def test_labels_map_into_the_bundle_classes_and_the_rest_is_counted(tmp_path):
    write_table(
        tmp_path / "clips.csv",
        [
            ("a.wav", "test", "s1", "F", "exc;exc;neu"),  # excited -> happy by the map
            ("b.wav", "test", "s1", "F", "Sad;sad;fru"),  # frustrated: no class, counted
            ("c.wav", "test", "s2", "M", "fru;oth"),  # nothing maps: left out
            ("d.wav", "test", "s2", "M", "ang;neu"),  # a tie after mapping: left out
            ("e.wav", "test", "s2", "M", ""),  # unlabelled: not evaluated
        ],
    )
    table = read_table(tmp_path, "clips.csv")
    mapping = parse_mapping(["exc=H", "neu=Neutral", "ang=A"], MSP_PODCAST_CLASSES)
    scored = mapped_truth(table.clips, mapping, MSP_PODCAST_CLASSES)
    assert [c.id for c in scored.clips] == ["a", "b"]
    assert [MSP_PODCAST_CLASSES.letters[i] for i in scored.y] == ["H", "S"]
    assert scored.unmapped == Counter({"fru": 2, "oth": 1})
    reasons = dict(scored.excluded)
    assert "no label maps" in reasons["c"] and "tie" in reasons["d"]
    for bad in (["exc"], ["exc=Excited"], ["=H"]):
        with pytest.raises(EvaluationError, match="--map"):
            parse_mapping(bad, MSP_PODCAST_CLASSES)


def test_unweighted_average_recall_is_the_mean_recall_of_the_classes_present():
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 2, 0])
    assert unweighted_average_recall(y, pred) == pytest.approx((3 / 4 + 1 / 2 + 1 / 2) / 3)


@pytest.fixture(scope="module")
def evaluation_run(completed_ci_run, tmp_path_factory):
    """A copy of the CI run with its bundle and the CI-sized demo table corpus."""
    import shutil

    workdir = tmp_path_factory.mktemp("cross-corpus") / "run"
    shutil.copytree(completed_ci_run, workdir, symlinks=True)
    table = run_snakemake(workdir, "demo_table_corpus", "--cores", "1", configfiles=TABLE_CONFIGS)
    assert table.returncode == 0, table.stderr[-3000:]
    bundle = run_snakemake(workdir, "bundle", "--cores", "2", configfiles=CI_CONFIGS)
    assert bundle.returncode == 0, bundle.stdout[-3000:] + bundle.stderr[-3000:]
    return workdir


def test_snakemake_cross_corpus_scores_the_bundle_on_the_table_corpus(evaluation_run):
    run = run_snakemake(
        evaluation_run, "cross_corpus", "--cores", "2", "--resources", "gpu=1",
        configfiles=CI_CONFIGS,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    out = evaluation_run / "results/cross_corpus/crema_like"
    metrics = pd.read_csv(out / "metrics.tsv", sep="\t").set_index("figure")
    table = pd.read_csv(evaluation_run / "resources/demo/table-corpus/clips.csv")
    labelled = table["label"].notna().sum()
    assert metrics.loc["macro_f1", "clips"] == labelled  # the six codes are MSP-Podcast's
    assert {"unweighted_average_recall", "accuracy", "ccc_act"} <= set(metrics.index)
    assert (metrics["low"] <= metrics["value"] + 1e-9).all()
    assert (metrics["value"] <= metrics["high"] + 1e-9).all()
    confusion = pd.read_csv(out / "confusion.tsv", sep="\t", index_col=0)
    assert list(confusion.columns) == list(MSP_PODCAST_CLASSES.letters)
    assert confusion.to_numpy().sum() == labelled
    assert set(pd.read_csv(out / "per_gender.tsv", sep="\t")["gender"]) == {"Female", "Male"}


def test_evaluate_reproduces_the_workflow_dev_metrics_on_the_dev_clips(evaluation_run, tmp_path):
    """The dev clips written as a table and scored with the bundle give the report's figure."""
    manifest = read_manifest(evaluation_run / "results/data/manifest.tsv")
    dev = manifest[manifest["subset"] == "dev"]
    scored, _ = consensus_labels(dev["emo_class"])
    dev = dev[scored]
    corpus = evaluation_run / "resources/demo/msp-podcast"
    rows = [
        (str(corpus / r.path), "development", r.speaker, r.gender, r.emo_class)
        for r in dev.itertuples()
    ]
    write_table(tmp_path / "dev.csv", rows, ("path", "partition", "speaker", "gender", "label"))
    bundle = str(evaluation_run / "results/bundle")
    args = ["--bundle", bundle, "--backbone-root", str(evaluation_run), "--resamples", "200"]
    assert (
        cli.main(["evaluate", *args, "-o", str(tmp_path / "out"), str(tmp_path / "dev.csv")]) == 0
    )
    metrics = pd.read_csv(tmp_path / "out/metrics.tsv", sep="\t").set_index("figure")
    table1 = pd.read_csv(evaluation_run / "results/report/table1.tsv", sep="\t")
    soup = table1.set_index("model").loc["MEDUSA (soup)"]
    assert metrics.loc["macro_f1", "clips"] == len(dev)
    assert metrics.loc["macro_f1", "value"] == pytest.approx(soup["dev_macro_f1"], abs=1e-3)
    assert metrics.loc["accuracy", "value"] == pytest.approx(soup["dev_accuracy"], abs=1e-3)
