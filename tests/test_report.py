"""The evaluation report: paper-shaped tables, figures and headline from synthetic results."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from sklearn.metrics import accuracy_score, f1_score
from test_ensemble import FAST_META, make_world

from medusa.emotions import CLASS_LETTERS
from medusa.ensemble import EnsembleError, make_soup, train_meta
from medusa.report import Ensemble, build_report, format_headline

N_MODELS = 4
EVALUATION = {"bootstrap": {"resamples": 200, "seed": 0, "confidence": 0.95}}
FEATURES = {f"m{k + 1:02d}_synthetic": ["wavlm", "roberta"] for k in range(N_MODELS)}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("report")
    world = make_world(root, n_models=N_MODELS)
    cfg = {**FAST_META, "steps": 30}
    seed_dirs = []
    for seed in (0, 1):
        seed_dirs.append(root / f"seed{seed}")
        train_meta(world["paths"], world["manifest"], cfg, seed, seed_dirs[-1])
    soup_dir = root / "soup"
    make_soup(seed_dirs, world["paths"], world["manifest"], {"method": "uniform"}, soup_dir)
    paths = {p.stem: p for p in world["paths"]}
    out = root / "out"
    # A top-2 ensemble: its own seeds and soup over the 2 models with the best selection score.
    top_dirs = [root / "top2" / f"seed{seed}" for seed in (0, 1)]
    for seed, out_dir in enumerate(top_dirs):
        train_meta(world["paths"], world["manifest"], cfg, seed, out_dir, top_k=2)
    make_soup(top_dirs, world["paths"], world["manifest"], {"method": "uniform"}, root / "top2s")
    tables = build_report(
        paths, seed_dirs, soup_dir, world["manifest"], EVALUATION, out, model_features=FEATURES,
        top_ensembles=[Ensemble("top 2 models", top_dirs, root / "top2s")],
    )  # fmt: skip
    return {**world, "seed_dirs": seed_dirs, "soup": soup_dir, "out": out, "tables": tables}


def _dev_truth_and_probs(report: dict) -> tuple[np.ndarray, list[np.ndarray]]:
    """Independent of medusa.ensemble: dev 8-class truth and each model's posteriors."""
    manifest = pd.read_csv(report["manifest"], sep="\t", dtype=str, keep_default_na=False)
    dev = manifest[(manifest["subset"] == "dev") & manifest["emo_class"].isin(CLASS_LETTERS)]
    dev = dev.sort_values("id")
    truth = np.array([CLASS_LETTERS.index(c) for c in dev["emo_class"]])
    probs = []
    for path in report["paths"]:
        with h5py.File(path, "r") as f:
            ids = list(f["dev/ids"].asstr()[()])
            p = f["dev/probs"][()]
        position = {i: n for n, i in enumerate(ids)}
        probs.append(p[[position[i] for i in dev["id"]]])
    return truth, probs


def test_table1_has_paper_shape_and_correct_scores(report):
    table = pd.read_csv(report["out"] / "table1.tsv", sep="\t", dtype={"id": str})
    assert list(table["model"]) == [
        *FEATURES,
        "Average DeepSER",
        "Top DeepSER",
        "MEDUSA (soup)",
    ]
    for column in ("balanced_holdout_macro_f1", "balanced_holdout_accuracy", "dev_macro_f1"):
        assert column in table.columns
    assert (table["features"].iloc[:N_MODELS] == "wavlm + roberta").all()
    truth, probs = _dev_truth_and_probs(report)
    expected = [f1_score(truth, p.argmax(1), average="macro") for p in probs]
    np.testing.assert_allclose(table["dev_macro_f1"].iloc[:N_MODELS], expected, atol=1e-4)
    models = table.iloc[:N_MODELS]
    assert table["dev_macro_f1"].iloc[N_MODELS] == pytest.approx(
        models["dev_macro_f1"].mean(), abs=1e-4
    )
    best = models.loc[models["balanced_holdout_macro_f1"].idxmax()]
    top = table.iloc[N_MODELS + 1]
    assert top["dev_macro_f1"] == best["dev_macro_f1"] and best["model"] in top["note"]
    soup = json.loads((report["soup"] / "metrics.json").read_text())
    assert table["dev_macro_f1"].iloc[-1] == pytest.approx(soup["dev"]["macro_f1"], abs=1e-4)
    assert "trained on the meta clips" in table["note"].iloc[-1]


def test_a_head_trained_on_the_holdout_reports_no_holdout_figure(report, tmp_path):
    """The paper's way (train_on: holdout): its holdout figures are in-sample, so the tables
    leave them out and the headline says why, instead of printing a perfect-looking score."""
    seed = tmp_path / "seed0"
    train_meta(report["paths"], report["manifest"], {**FAST_META, "train_on": "holdout"}, 0, seed)
    metrics = json.loads((seed / "metrics.json").read_text())
    assert metrics["in_sample"] == ["holdout", "balanced_holdout"]
    make_soup([seed], report["paths"], report["manifest"], {"method": "uniform"}, tmp_path / "s")
    paths = {p.stem: p for p in report["paths"]}
    build_report(paths, [seed], tmp_path / "s", report["manifest"], EVALUATION, tmp_path / "o")
    table3 = pd.read_csv(tmp_path / "o" / "table3.tsv", sep="\t").set_index("technique")
    assert np.isnan(table3.loc["Meta-classifier (soup)", "balanced_holdout_macro_f1"])
    assert not np.isnan(table3.loc["Meta-classifier (soup)", "dev_macro_f1"])
    assert not np.isnan(table3.loc["Soft voting", "balanced_holdout_macro_f1"])
    assert "(in-sample)" in (tmp_path / "o" / "headline.md").read_text()


def test_table3_rows_and_values(report):
    both = pd.read_csv(report["out"] / "table3.tsv", sep="\t")
    assert list(both["ensemble"].unique()) == ["all 4 models", "top 2 models"]
    table = both[both["ensemble"] == "all 4 models"].reset_index(drop=True)
    assert list(table["technique"]) == [
        "Majority voting",
        "Soft voting",
        "Meta-classifier (single)",
        "Meta-classifier (soup)",
    ]
    assert list(table["runs"]) == [1, 1, 2, 1]
    for s in ("dev", "balanced_holdout"):
        for m in ("macro_f1", "micro_f1", "accuracy"):
            assert {f"{s}_{m}", f"{s}_{m}_std"} <= set(table.columns)
    truth, probs = _dev_truth_and_probs(report)
    soft = np.mean(probs, axis=0).argmax(1)
    assert table.loc[1, "dev_macro_f1"] == pytest.approx(
        f1_score(truth, soft, average="macro"), abs=1e-4
    )
    assert table.loc[1, "dev_accuracy"] == pytest.approx(accuracy_score(truth, soft), abs=1e-4)
    seeds = [
        json.loads((d / "metrics.json").read_text())["dev"]["macro_f1"] for d in report["seed_dirs"]
    ]
    single = table.loc[2]
    assert single["dev_macro_f1"] == pytest.approx(np.mean(seeds), abs=1e-4)
    assert single["dev_macro_f1_std"] == pytest.approx(np.std(seeds), abs=1e-4)
    assert table["dev_macro_f1_std"].isna().tolist() == [True, True, False, True]
    # Micro-F1 equals accuracy for single-label predictions over all classes.
    np.testing.assert_allclose(table["dev_micro_f1"], table["dev_accuracy"])
    # Informative synthetic posteriors: every technique far above chance.
    assert (table["dev_macro_f1"] > 0.3).all()


def test_per_class_table_covers_every_system_and_class(report):
    table = pd.read_csv(report["out"] / "per_class_f1.tsv", sep="\t")
    assert list(table.columns) == ["system", "subset", *CLASS_LETTERS, "macro_f1"]
    assert len(table) == 2 * (N_MODELS + 4)
    assert set(table["subset"]) == {"dev", "balanced_holdout"}
    values = table[list(CLASS_LETTERS)].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    # Macro-F1 over 8 present classes is the mean of the per-class F1.
    np.testing.assert_allclose(values.mean(axis=1), table["macro_f1"], atol=2e-4)


def test_figures_are_readable_pngs(report):
    for name in ("confusion.png", "models.png"):
        image = imread(report["out"] / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
        assert image[..., :3].std() > 0.05  # not a blank canvas


def test_headline_summarises_table3(report):
    text = (report["out"] / "headline.md").read_text()
    assert text == format_headline(report["out"])
    for technique in ("Majority voting", "Soft voting", "Meta-classifier (single)", "(soup)"):
        assert technique in text
    assert "0.125" in text and "±" in text
    soup = pd.read_csv(report["out"] / "table3.tsv", sep="\t").iloc[3]
    # Two decimals and the interval: never a bare three-decimal figure.
    interval = f"{soup['dev_macro_f1']:.2f} [{soup['dev_macro_f1_low']:.2f}, "
    assert interval in text and "better in" in text
    assert not any(p.name.endswith(".tmp") for p in Path(report["out"]).iterdir())


def test_report_rejects_a_misnamed_posteriors_file(report, tmp_path):
    paths = {f"wrong{k}": p for k, p in enumerate(report["paths"])}
    with pytest.raises(EnsembleError, match="holds model 'm01_synthetic', not 'wrong0'"):
        build_report(
            paths, report["seed_dirs"], report["soup"], report["manifest"], EVALUATION, tmp_path
        )
    with pytest.raises(FileNotFoundError, match="table1.tsv"):
        format_headline(tmp_path)


def test_every_dev_figure_has_an_interval_around_it(report):
    for name in ("table1.tsv", "table3.tsv"):
        table = pd.read_csv(report["out"] / name, sep="\t")
        rows = table.dropna(subset=["dev_macro_f1_low"])
        assert len(rows) >= (6 if name == "table1.tsv" else 6)
        for m in ("dev_macro_f1", "dev_accuracy"):
            assert (rows[f"{m}_low"] <= rows[m] + 1e-9).all() and (
                rows[m] <= rows[f"{m}_high"] + 1e-9
            ).all()
            assert (rows[f"{m}_high"] - rows[f"{m}_low"] > 0).all()


def test_comparisons_attributes_and_fairness_tables(report):
    out = report["out"]
    comparisons = pd.read_csv(out / "comparisons.tsv", sep="\t")
    assert (
        comparisons["comparison"].str.startswith("MEDUSA soup - ").all() and len(comparisons) == 2
    )
    assert (
        (comparisons["low"] <= comparisons["difference"])
        & (comparisons["difference"] <= comparisons["high"])
    ).all()
    assert comparisons["share_soup_better"].between(0, 1).all()
    attributes = pd.read_csv(out / "attributes.tsv", sep="\t").set_index("system")
    assert {"Mean of the models", "MEDUSA (soup)"} <= set(attributes.index)
    assert attributes[["act_ccc", "val_ccc", "dom_ccc"]].abs().le(1).all().all()
    fairness = pd.read_csv(out / "fairness.tsv", sep="\t")
    assert "gender Female" in set(fairness["group"]) and "per-speaker accuracy" in set(
        fairness["group"]
    )
    image = imread(out / "fairness.png")
    assert image.ndim == 3 and image[..., :3].std() > 0.05
