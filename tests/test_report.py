"""The evaluation report: paper-shaped tables, figures and headline from synthetic results."""

from __future__ import annotations

import json
import re
import shutil
from io import BytesIO
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from sklearn.metrics import accuracy_score, f1_score
from test_ensemble import FAST_META, make_world

from medusa.core.emotions import CLASS_LETTERS
from medusa.ensemble.inputs import EnsembleError
from medusa.ensemble.meta_training import train_meta
from medusa.ensemble.soup import make_soup
from medusa.evaluation.figures import DevSet, fairness_table
from medusa.evaluation.headline import format_headline
from medusa.evaluation.report import Ensemble, build_report
from medusa.evaluation.report_figures import _models_figure
from medusa.evaluation.stats import bootstrap_interval, per_group_macro_f1

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
        "Product of experts",
        "Meta-classifier (single)",
        "Meta-classifier (soup)",
    ]
    assert list(table["runs"]) == [1, 1, 1, 2, 1]
    for s in ("dev", "balanced_holdout"):
        for m in ("macro_f1", "micro_f1", "accuracy"):
            assert {f"{s}_{m}", f"{s}_{m}_std"} <= set(table.columns)
    truth, probs = _dev_truth_and_probs(report)
    soft = np.mean(probs, axis=0).argmax(1)
    assert table.loc[1, "dev_macro_f1"] == pytest.approx(
        f1_score(truth, soft, average="macro"), abs=1e-4
    )
    assert table.loc[1, "dev_accuracy"] == pytest.approx(accuracy_score(truth, soft), abs=1e-4)
    # The meta-classifier's start: the normalised geometric mean of the posteriors.
    product = np.log(np.clip(probs, 1e-4, None)).sum(axis=0).argmax(1)
    assert table.loc[2, "dev_macro_f1"] == pytest.approx(
        f1_score(truth, product, average="macro"), abs=1e-4
    )
    seeds = [
        json.loads((d / "metrics.json").read_text())["dev"]["macro_f1"] for d in report["seed_dirs"]
    ]
    single = table.loc[3]
    assert single["dev_macro_f1"] == pytest.approx(np.mean(seeds), abs=1e-4)
    assert single["dev_macro_f1_std"] == pytest.approx(np.std(seeds), abs=1e-4)
    assert table["dev_macro_f1_std"].isna().tolist() == [True, True, True, False, True]
    # Micro-F1 equals accuracy for single-label predictions over all classes.
    np.testing.assert_allclose(table["dev_micro_f1"], table["dev_accuracy"])
    # Informative synthetic posteriors: every technique far above chance.
    assert (table["dev_macro_f1"] > 0.3).all()


def test_per_class_table_covers_every_system_and_class(report):
    table = pd.read_csv(report["out"] / "per_class_f1.tsv", sep="\t")
    figures = [*CLASS_LETTERS, "macro_f1"]
    bounds = [f"{c}_{end}" for c in figures for end in ("low", "high")]
    assert list(table.columns) == ["system", "subset", *figures, *bounds, "unreliable_intervals"]
    # The models, each vote and the two meta-classifier rows (Table 3's techniques), twice.
    techniques = pd.read_csv(report["out"] / "table3.tsv", sep="\t")["technique"].unique()
    assert len(table) == 2 * (N_MODELS + len(techniques))
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
    table3 = pd.read_csv(report["out"] / "table3.tsv", sep="\t")
    soup = table3[table3["technique"] == "Meta-classifier (soup)"].iloc[0]
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


def test_models_figure_draws_an_interval_that_misses_its_point_estimate():
    """A speaker-resampled percentile interval need not contain the full-data figure (an
    8-speaker set: 0.801 with [0.493, 0.781]); the figure draws it as it is instead of failing."""
    table1 = pd.DataFrame(
        {
            "id": ["1", "2", ""],
            "model": ["m01", "m02", "MEDUSA (soup)"],
            "dev_macro_f1": [0.801, 0.40, 0.50],
            "dev_macro_f1_low": [0.493, 0.45, 0.42],
            "dev_macro_f1_high": [0.781, 0.60, 0.58],
        }
    )
    main = {"vote_scores": {"Soft voting": {"dev": {"macro_f1": 0.45}}}}
    fig = _models_figure(table1, main, CLASS_LETTERS)
    fig.savefig(BytesIO(), format="png")
    (bars,) = [c for c in fig.axes[0].collections if c.get_label().startswith("95% interval")]
    drawn = [sorted(segment[:, 1]) for segment in bars.get_segments()]
    np.testing.assert_allclose(drawn, [[0.493, 0.781], [0.45, 0.60]])


def test_fairness_groups_genders_with_the_same_unknown_rule_as_per_group_macro_f1():
    """Genders "", "Unknown", "unknown" and "nan" are one pooled group, in fairness.tsv as in
    per_group_macro_f1 (medusa.core.manifest.is_unknown decides for the whole library)."""
    genders = np.array(["Female", "Male", "", "Unknown", "unknown", "nan"] * 10)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, len(genders))
    pred = np.where(rng.random(len(y)) < 0.7, y, rng.integers(0, 3, len(y)))
    dev = DevSet(y, np.array([str(i % 12) for i in range(len(y))]), genders, np.zeros((len(y), 3)))
    table = fairness_table(dev, {"system": pred}, {"n_resamples": 50, "seed": 0})
    groups = table.set_index("group").drop("per-speaker accuracy")
    expected = per_group_macro_f1(y, pred, genders)
    assert list(groups.index) == [f"gender {g}" for g in expected]
    assert list(groups["clips"]) == [clips for clips, _ in expected.values()] == [10, 10, 40]
    np.testing.assert_allclose(groups["macro_f1"], [f1 for _, f1 in expected.values()])


@pytest.fixture(scope="module")
def sparse_report(report, tmp_path_factory) -> dict:
    """The report again on a dev set where, among the scored clips, no model predicts F or D,
    no clip is F and exactly one clip is D: dev clips a model predicts as F or D, and true F
    and D clips, get consensus X (not scored), then one other clip is relabelled D. The
    heads are those of `report`."""
    manifest = pd.read_csv(report["manifest"], sep="\t", dtype=str, keep_default_na=False)
    predicted: dict[str, set] = {}
    for path in report["paths"]:
        with h5py.File(path, "r") as f:
            ids, probs = f["dev/ids"].asstr()[()], f["dev/probs"][()]
        for clip, c in zip(ids, probs.argmax(1), strict=True):
            predicted.setdefault(clip, set()).add(CLASS_LETTERS[c])
    dev = manifest["subset"] == "dev"
    f_or_d = manifest["id"].map(lambda clip: bool(predicted.get(clip, set()) & {"F", "D"}))
    manifest.loc[dev & (f_or_d | manifest["emo_class"].isin(["F", "D"])), "emo_class"] = "X"
    only_d = manifest.index[dev & manifest["emo_class"].isin(CLASS_LETTERS)][0]
    manifest.loc[only_d, "emo_class"] = "D"
    root = tmp_path_factory.mktemp("sparse")
    manifest.to_csv(root / "manifest.tsv", sep="\t", index=False)
    paths = {p.stem: p for p in report["paths"]}
    build_report(paths, report["seed_dirs"], report["soup"], root / "manifest.tsv", EVALUATION,
                 root / "out")  # fmt: skip
    return {"out": root / "out"}


def test_per_class_f1_of_a_class_absent_from_truth_and_predictions_is_undefined(sparse_report):
    table = pd.read_csv(sparse_report["out"] / "per_class_f1.tsv", sep="\t")
    dev = table[table["subset"] == "dev"].set_index("system")
    models = dev.loc[[f"m{k + 1:02d}_synthetic" for k in range(N_MODELS)]]
    assert models["F"].isna().all()  # no F in truth or predictions: no F1 at all
    assert (models["D"] == 0).all()  # one true D, never predicted: F1 = 0
    # The macro-F1 (and the seeds' mean row) average the classes present only, as Table 1 does.
    np.testing.assert_allclose(dev["macro_f1"], dev[list(CLASS_LETTERS)].mean(axis=1), atol=2e-4)
    table1 = pd.read_csv(sparse_report["out"] / "table1.tsv", sep="\t").set_index("model")
    np.testing.assert_allclose(models["macro_f1"], table1.loc[models.index, "dev_macro_f1"])


def test_every_figure_of_the_tables_has_an_interval_and_unreliable_ones_are_flagged(
    report, sparse_report, tmp_path
):
    """Average DeepSER, the single-seed meta rows and per_class_f1.tsv's dev rows carry
    intervals; an interval with over 10% undefined resamples is flagged in its row and marked
    in the headline with the explanation."""
    table1 = pd.read_csv(report["out"] / "table1.tsv", sep="\t").set_index("model")
    table3 = pd.read_csv(
        report["out"] / "table3.tsv", sep="\t", dtype={"unreliable_intervals": str}
    )
    # The models' average: on each resample of speakers, the mean of every model's macro-F1.
    truth, probs = _dev_truth_and_probs(report)
    manifest = pd.read_csv(report["manifest"], sep="\t", dtype=str, keep_default_na=False)
    dev_rows = manifest[(manifest["subset"] == "dev") & manifest["emo_class"].isin(CLASS_LETTERS)]
    speakers = dev_rows.sort_values("id")["speaker"].to_numpy()

    def mean_f1(y, *preds):
        return np.mean([f1_score(y, p, average="macro") for p in preds])

    preds = [p.argmax(1) for p in probs]
    expected = bootstrap_interval(mean_f1, (truth, *preds), speakers, n_resamples=200, seed=0)
    average = table1.loc["Average DeepSER"]
    assert average[["dev_macro_f1_low", "dev_macro_f1_high"]].tolist() == pytest.approx(
        [expected.low, expected.high], abs=1e-4
    )
    singles = table3[table3["technique"] == "Meta-classifier (single)"]
    assert len(singles) == 2 and (singles["dev_accuracy_low"] < singles["dev_accuracy_high"]).all()
    per_class = pd.read_csv(report["out"] / "per_class_f1.tsv", sep="\t")
    dev = per_class[per_class["subset"] == "dev"]
    for column in (*CLASS_LETTERS, "macro_f1"):
        assert (dev[f"{column}_low"] < dev[f"{column}_high"]).all(), column
    for name in ("table1", "table3", "per_class_f1", "comparisons", "attributes", "fairness"):
        table = pd.read_csv(report["out"] / f"{name}.tsv", sep="\t", keep_default_na=False)
        assert (table["unreliable_intervals"] == "").all(), name
    # One true D clip, never predicted: D's F1 is undefined whenever its speaker is not drawn.
    sparse = pd.read_csv(sparse_report["out"] / "per_class_f1.tsv", sep="\t", keep_default_na=False)
    flags = sparse.set_index(["system", "subset"]).loc[
        ("m01_synthetic", "dev"), "unreliable_intervals"
    ]
    assert re.fullmatch(r"D \(\d+ of 200 resamples undefined\)", flags)
    # The headline marks such an interval and says what the mark means.
    copy = tmp_path / "out"
    shutil.copytree(report["out"], copy)
    table3.loc[3, "unreliable_intervals"] = "dev_macro_f1 (31 of 200 resamples undefined)"
    table3.to_csv(copy / "table3.tsv", sep="\t", index=False)
    headline = format_headline(copy)
    assert headline.count("†") == 2 and "over 10% of the bootstrap resamples" in headline
