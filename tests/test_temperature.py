"""Temperature scaling of the soup and Table C: fitted on the meta clips (never dev), applied
in the report and recorded in the bundle.

Synthetic data (``test_ensemble.make_world``) for the fit and the report's Table C; the
session's completed CI-sized run (``completed_ci_run``) for the rule, the report and the bundle.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from test_ensemble import FAST_META, make_world

from medusa.core.emotions import CLASS_LETTERS
from medusa.ensemble.inputs import EnsembleError
from medusa.ensemble.meta import load_head, predict_probs
from medusa.ensemble.meta_training import train_meta
from medusa.ensemble.soup import make_soup
from medusa.evaluation.calibration import temperature_scale
from medusa.evaluation.report import SOUP_SCALED, build_report
from medusa.evaluation.temperature import fit_soup_temperature, read_temperature
from medusa.inference.bundle_files import BundleError
from medusa.inference.bundle_load import bundle_temperature, load_bundle

from workflow_runner import CI_CONFIGS, run_snakemake

EVALUATION = {"bootstrap": {"resamples": 100, "seed": 0, "confidence": 0.95}}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Two models, a soup of two meta seeds, its temperature and a report."""
    root = tmp_path_factory.mktemp("temperature")
    world = make_world(root, n_models=2)
    seeds = [root / f"seed{seed}" for seed in (0, 1)]
    for seed, out in enumerate(seeds):
        train_meta(world["paths"], world["manifest"], {**FAST_META, "steps": 30}, seed, out)
    make_soup(seeds, world["paths"], world["manifest"], {"method": "uniform"}, root / "soup")
    temperature = root / "soup/temperature.json"
    record = fit_soup_temperature(root / "soup", world["paths"], world["manifest"], temperature)
    out = root / "report"
    paths = {p.stem: p for p in world["paths"]}
    build_report(
        paths, seeds, root / "soup", world["manifest"], EVALUATION, out, temperature=temperature
    )
    return {**world, "root": root, "seeds": seeds, "record": record, "out": out}


def _consensus_ids(manifest_path, subset: str) -> list[str]:
    """Independently of medusa: the clips of `subset` whose consensus is a class letter."""
    manifest = pd.read_csv(manifest_path, sep="\t", dtype=str, keep_default_na=False)
    rows = manifest[(manifest["subset"] == subset) & manifest["emo_class"].isin(CLASS_LETTERS)]
    return sorted(rows["id"])


def _soup_probs(world: dict, subset: str, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(the soup's posteriors on `ids` of `subset`, their consensus indices)."""
    blocks = []
    for path in world["paths"]:
        with h5py.File(path, "r") as f:
            order = {i: n for n, i in enumerate(f[f"{subset}/ids"].asstr()[()])}
            rows = [order[i] for i in ids]
            blocks += [f[f"{subset}/probs"][()][rows], f[f"{subset}/attributes"][()][rows]]
    head, _ = load_head(world["root"] / "soup")
    probs = predict_probs(head, np.concatenate(blocks, axis=1).astype(np.float32))
    manifest = pd.read_csv(world["manifest"], sep="\t", dtype=str).set_index("id")
    labels = np.array([CLASS_LETTERS.index(manifest.loc[i, "emo_class"]) for i in ids])
    return probs.astype(np.float64), labels


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(probs[np.arange(len(labels)), labels]).mean())


def test_the_temperature_is_fitted_on_the_meta_clips_and_minimises_their_nll(world):
    record = world["record"]
    meta_ids = _consensus_ids(world["manifest"], "meta")
    assert record["fitted_on"]["subset"] == "meta"
    assert record["fitted_on"]["ids"] == meta_ids
    assert not set(meta_ids) & set(_consensus_ids(world["manifest"], "dev"))
    assert json.loads((world["root"] / "soup/temperature.json").read_text()) == record

    probs, labels = _soup_probs(world, "meta", meta_ids)
    t = record["temperature"]
    scaled = temperature_scale(probs, t)
    assert record["before"]["nll"] == pytest.approx(_nll(probs, labels), rel=1e-5)
    assert record["after"]["nll"] == pytest.approx(_nll(scaled, labels), rel=1e-5)
    assert record["after"]["nll"] < record["before"]["nll"]
    # T is the minimum: a little more or less raises the NLL on the fitted clips.
    for other in (t * 1.05, t / 1.05):
        assert _nll(temperature_scale(probs, other), labels) > record["after"]["nll"]
    assert (scaled.argmax(axis=1) == probs.argmax(axis=1)).all()


def test_a_head_trained_on_the_holdout_gets_its_temperature_there_and_says_so(world, tmp_path):
    seed = tmp_path / "seed0"
    cfg = {**FAST_META, "steps": 10, "train_on": "holdout"}
    train_meta(world["paths"], world["manifest"], cfg, 0, seed)
    make_soup([seed], world["paths"], world["manifest"], {"method": "uniform"}, tmp_path / "soup")
    record = fit_soup_temperature(
        tmp_path / "soup", world["paths"], world["manifest"], tmp_path / "t.json"
    )
    assert record["fitted_on"]["ids"] == _consensus_ids(world["manifest"], "holdout")
    assert "selection holdout" in record["note"]


def test_table_c_scores_every_system_and_the_scaled_soup_on_dev(world):
    table = pd.read_csv(world["out"] / "calibration.tsv", sep="\t").set_index("system")
    models = [p.stem for p in world["paths"]]
    assert list(table.index) == [
        *models,
        "Soft voting",
        "Product of experts",
        "Meta-classifier (soup)",
        SOUP_SCALED,
    ]
    dev_ids = _consensus_ids(world["manifest"], "dev")
    probs, labels = _soup_probs(world, "dev", dev_ids)
    scaled = temperature_scale(probs, world["record"]["temperature"])
    assert (table["clips"] == len(dev_ids)).all()
    for system, p in (("Meta-classifier (soup)", probs), (SOUP_SCALED, scaled)):
        row = table.loc[system]
        onehot = np.eye(len(CLASS_LETTERS))[labels]
        assert row["nll"] == pytest.approx(_nll(p, labels), abs=1e-4)
        assert row["brier"] == pytest.approx(((p - onehot) ** 2).sum(axis=1).mean(), abs=1e-4)
        for score in ("ece", "brier", "nll"):
            assert row[f"{score}_low"] <= row[f"{score}_high"]
    assert table.loc[SOUP_SCALED, "temperature"] == pytest.approx(
        world["record"]["temperature"], abs=1e-4
    )
    assert table["temperature"].drop(SOUP_SCALED).isna().all()
    assert "never on dev" in table.loc[SOUP_SCALED, "note"]
    headline = (world["out"] / "headline.md").read_text()
    assert "Calibration on dev (Table C" in headline and "after temperature scaling" in headline
    assert (world["out"] / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_temperature_fitted_for_other_models_is_refused(world, tmp_path):
    record = {**world["record"], "models": ["m09_other", "m01_synthetic"]}
    path = tmp_path / "temperature.json"
    path.write_text(json.dumps(record))
    with pytest.raises(EnsembleError, match="temperature.json: fitted for a soup over"):
        read_temperature(path, world["record"]["models"])
    path.write_text(json.dumps({**world["record"], "temperature": -1.0}))
    with pytest.raises(EnsembleError, match="not a temperature record"):
        read_temperature(path)


def test_a_bundle_temperature_must_be_positive():
    assert bundle_temperature({}) == 1.0
    assert bundle_temperature({"calibration": {"method": "temperature", "temperature": 2}}) == 2
    for bad in ({"method": "temperature", "temperature": 0}, {"temperature": 1.5}):
        with pytest.raises(BundleError, match="bundle.json: calibration must be"):
            bundle_temperature({"calibration": bad})


# ---------------------------------------------------------------------------------------------
# The workflow: rule temperature, the report's Table C and the bundle on the CI-sized run.


def test_the_ci_run_fits_the_temperature_on_its_meta_clips_and_reports_table_c(completed_ci_run):
    results = completed_ci_run / "results"
    record = json.loads((results / "soup/temperature.json").read_text())
    assert record["fitted_on"]["subset"] == "meta"
    assert record["fitted_on"]["ids"] == _consensus_ids(results / "data/manifest.tsv", "meta")
    assert record["after"]["nll"] <= record["before"]["nll"]
    table = pd.read_csv(results / "report/calibration.tsv", sep="\t").set_index("system")
    assert list(table.index[-4:]) == [
        "Soft voting",
        "Product of experts",
        "Meta-classifier (soup)",
        SOUP_SCALED,
    ]
    assert {"m05_wavlm_roberta", "m13_whisper_wavlm"} <= set(table.index)
    assert table.loc[SOUP_SCALED, "temperature"] == pytest.approx(record["temperature"], abs=1e-4)
    assert "Calibration on dev" in (results / "report/headline.md").read_text()
    assert (results / "report/calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_bundle_records_and_applies_the_temperature(completed_ci_run):
    run = run_snakemake(completed_ci_run, "bundle", "--cores", "2", configfiles=CI_CONFIGS)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    results = completed_ci_run / "results"
    record = json.loads((results / "soup/temperature.json").read_text())
    bundle = load_bundle(results / "bundle")
    calibration = bundle.manifest["calibration"]
    assert calibration["method"] == "temperature"
    assert bundle.temperature == pytest.approx(record["temperature"])
    assert calibration["fitted_on"] == {
        k: record["fitted_on"][k] for k in ("subset", "clips", "speakers")
    }
    probs = np.array([[0.7, 0.1, 0.05, 0.05, 0.04, 0.03, 0.02, 0.01]])
    calibrated = bundle.calibrate(probs)
    np.testing.assert_allclose(calibrated, temperature_scale(probs, record["temperature"]))
    assert abs(record["temperature"] - 1) < 1e-3 or not np.allclose(calibrated, probs)
    assert calibrated.argmax() == 0
    card = (results / "bundle/README.md").read_text()
    assert f"T = {record['temperature']:.4f}" in card and "Table C" in card
    assert (results / "bundle/metrics/calibration.tsv").is_file()
