"""The whole recipe on a second corpus: the table layout, 6 classes, 2 speaker folds.

One CI-sized run per fold through Snakemake (the path a user takes), shared by every test of
this module: the demo table corpus (CREMA-D-like, config/demo_table.yaml), fold 1 to `soup` and
`bundle`, then fold 2 and the `folds` aggregate.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from medusa import cli
from medusa.core.manifest import manifest_classes, read_manifest

from workflow_runner import REPO, run_snakemake

TABLE_CONFIGS = [
    REPO / "config/demo.yaml",
    REPO / "config/demo_table.yaml",
    REPO / "tests/config/ci.yaml",
    REPO / "tests/config/ci_table.yaml",
]
SIX = ["A", "D", "F", "H", "N", "S"]
RUN = ("--cores", "2", "--resources", "gpu=1")


def run(workdir, *args, fold=None):
    extra = {"data": {"fold": fold}} if fold is not None else None
    return run_snakemake(workdir, *args, configfiles=TABLE_CONFIGS, config=extra, timeout=1800)


@pytest.fixture(scope="module")
def table_run(completed_ci_run, tmp_path_factory):
    """A working directory where the table demo ran fold 1 to `soup` and `bundle` (the demo
    backbones copied from the shared CI run: built the same way, from the same config)."""
    workdir = tmp_path_factory.mktemp("table-run")
    shutil.copytree(completed_ci_run / "resources/backbones", workdir / "resources/backbones")
    corpus = run(workdir, "demo_table_corpus", "--cores", "1")
    assert corpus.returncode == 0, corpus.stderr[-3000:]
    soup = run(workdir, "soup", "bundle", *RUN)
    assert soup.returncode == 0, soup.stdout[-3000:] + soup.stderr[-5000:]
    return workdir


def test_six_classes_flow_from_the_table_to_every_output(table_run):
    fold = table_run / "results/fold1"
    manifest = read_manifest(fold / "data/manifest.tsv")
    assert manifest_classes(manifest) == tuple(SIX)
    assert set(manifest["subset"]) == {"train", "holdout", "meta", "dev"}
    # The held-out fold is dev, and no speaker crosses subsets.
    speakers = manifest.groupby("speaker")["subset"].nunique()
    assert (speakers == 1).all()
    posteriors = pd.read_csv(fold / "predictions/test_posteriors.csv")
    assert list(posteriors.columns) == ["FileName", *SIX]
    assert len(posteriors) == 6  # the unlabelled rows, predicted like Test3
    per_class = pd.read_csv(fold / "report/per_class_f1.tsv", sep="\t")
    assert [c for c in per_class.columns if c in SIX + ["U", "C"]] == SIX
    assert "(1/6" in (fold / "report/headline.md").read_text()
    report = (fold / "data/report.md").read_text()
    assert "A (Anger)" in report and "held out (data.fold): 1" in report
    # Features were extracted once, in the shared results/, for every fold.
    assert (table_run / "results/features/wavlm/labelled.h5").is_file()
    assert not (fold / "features").exists()


def test_medusa_predict_on_the_six_class_bundle_writes_six_posteriors(table_run, tmp_path):
    clips = sorted((table_run / "resources/demo/table-corpus/audio").glob("*.wav"))[:2]
    out = tmp_path / "predictions.csv"
    bundle = str(table_run / "results/fold1/bundle")
    args = ["predict", "--bundle", bundle, "--backbone-root", str(table_run), "-o", str(out)]
    assert cli.main([*args, *map(str, clips)]) == 0
    table = pd.read_csv(out)
    assert [c for c in table.columns if c in SIX + ["U", "C"]] == SIX
    assert set(table["emotion"]) <= set(SIX)


def test_a_fold_change_reruns_training_not_asr_or_features(table_run):
    dry = run(table_run, "-n", "soup", *RUN, fold=2)
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = dry.stdout
    for rule in ("prepare", "stage1", "stage2", "posteriors", "meta", "model_soup", "report"):
        assert f"rule {rule}:" in jobs, rule
    for rule in ("audio_index", "asr", "features", "demo_backbone"):
        assert f"rule {rule}:" not in jobs, rule
    assert "results/fold2/models/" in jobs and "results/fold1/models/" not in jobs


def test_folds_aggregates_every_fold_and_names_the_missing_ones(table_run):
    missing = run(table_run, "-n", "folds", *RUN)
    assert missing.returncode != 0
    assert "no report yet for fold(s) 2" in missing.stdout + missing.stderr
    second = run(table_run, "soup", *RUN, fold=2)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    done = run(table_run, "folds", *RUN)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    summary = pd.read_csv(table_run / "results/folds/summary.tsv", sep="\t")
    assert (summary["folds"] == 2).all()
    assert {"MEDUSA (soup)", "Top DeepSER", "ensemble: Soft voting"} <= set(summary["system"])
    soup = summary.set_index("system").loc["MEDUSA (soup)"]
    per_fold = [soup[f"dev_macro_f1_fold{k}"] for k in (1, 2)]
    # The fold values are those of each fold's own report.
    for k, value in zip((1, 2), per_fold, strict=True):
        table1 = pd.read_csv(table_run / f"results/fold{k}/report/table1.tsv", sep="\t")
        expected = table1.set_index("model").loc["MEDUSA (soup)", "dev_macro_f1"]
        assert value == pytest.approx(expected, abs=1e-4)
    assert soup["dev_macro_f1_mean"] == pytest.approx(sum(per_fold) / 2, abs=1e-4)
    assert "2-fold cross-validation" in (table_run / "results/folds/summary.md").read_text()
