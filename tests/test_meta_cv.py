"""Stage 3's self-validation (medusa.ensemble.meta_cv) and the head's protection of rare classes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from test_ensemble import FAST_META, make_world

from medusa.core.emotions import NUM_CLASSES
from medusa.ensemble.inputs import EnsembleError, split_inputs
from medusa.ensemble.meta import MetaConfig, balancing_class_weights, predict_probs
from medusa.ensemble.meta_cv import (
    SelectionConfig,
    cross_validate,
    one_standard_error_choice,
    select_meta,
    speaker_folds,
)
from medusa.ensemble.meta_training import VOTE, fit_head, train_meta
from medusa.ensemble.soup import make_soup, soup_of
from medusa.ensemble.synthetic import make_models, sample_clips, training_arrays
from medusa.ensemble.votes import product_of_experts, soft_vote
from medusa.evaluation.report import _selection_table
from medusa.inference.model_card import meta_selection_section

SAD = 1
SELECTION = {"enabled": True, "folds": 4, "prior_strengths": [1000.0, 100.0, 10.0], "seed": 0}
RECIPE = {**FAST_META, "steps": 200}


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    """The heads are tiny: one torch thread (and results independent of the core count)."""


def _arrays(X, y, clips_per_speaker=5):
    train = training_arrays(X, y)
    train["y"] = np.asarray(y, dtype=np.int64)
    train["groups"] = np.array([f"speaker:{i // clips_per_speaker}" for i in range(len(y))])
    return train


def test_a_class_absent_from_the_training_sample_is_still_predicted_where_the_vote_does():
    """Sad is missing from the head's training clips: the head still predicts Sad on most dev
    clips where the product-of-experts vote (its start) does, and keeps Sad's row at the
    start. Without the protection, Sad's bias was driven down and Sad never predicted."""
    models = make_models(seed=0)
    X, y = sample_clips(models, 400, seed=1)
    keep = y != SAD
    X_dev, _ = sample_clips(models, 3000, seed=2)
    vote = product_of_experts(list(split_inputs(X_dev)[0])).argmax(axis=1)
    assert (vote == SAD).sum() >= 20  # the vote does predict Sad on dev
    head, _ = fit_head(training_arrays(X[keep], y[keep]), MetaConfig.from_dict(RECIPE), seed=0)
    pred = predict_probs(head, X_dev).argmax(axis=1)
    assert (pred[vote == SAD] == SAD).mean() >= 0.6
    assert (pred == SAD).sum() >= (vote == SAD).sum()
    assert head.classes.bias[SAD].item() == 0.0
    assert (pred != vote).mean() > 0.1  # the present classes did learn: the head left the vote


def test_a_fraction_of_one_vote_does_not_outweigh_a_whole_class():
    """A third of one annotator's vote for Disgust against 10 Neutral clips: Disgust's total
    weight in the loss stays below Neutral's (it was 9x a clip's weight before the floor)."""
    soft = torch.zeros(11, NUM_CLASSES)
    soft[:10, 7] = 1.0
    soft[10, 7], soft[10, 5] = 2 / 3, 1 / 3
    weights = balancing_class_weights(soft).tolist()
    mass = soft.sum(dim=0).tolist()
    # Unfloored, both totals were equal (N / C each): a third of a vote counted as a class.
    assert weights[5] * mass[5] == pytest.approx(weights[7] * mass[7] / 3, rel=1e-5)
    assert weights[5] <= len(soft) / 2  # bounded: at most N / (classes present)
    assert weights[0] == 0.0  # no mass, no weight


def test_speaker_folds_keep_each_speaker_in_one_fold_and_balance_sizes():
    groups = np.array([f"speaker:{i % 13}" for i in range(200)])
    folds = speaker_folds(groups, 4, seed=0)
    for g in set(groups):
        assert len(set(folds[groups == g])) == 1
    sizes = np.bincount(folds, minlength=4)
    assert sizes.min() > 0 and sizes.max() - sizes.min() <= 16
    assert (folds == speaker_folds(groups, 4, seed=0)).all()
    with pytest.raises(EnsembleError, match="3 speaker group"):
        speaker_folds(np.array(["a", "b", "c"]), 4, seed=0)


def _vote_optimal_clips(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced classes and 4 unbiased models of equal reliability: the product of experts is
    already the best a linear head can do, so training only adds noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, n)
    blocks = []
    for _ in range(4):
        logits = 1.5 * np.eye(NUM_CLASSES)[y] + rng.normal(0, 1.0, (n, NUM_CLASSES))
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        blocks.append(np.concatenate([probs, np.full((n, 3), 4.0)], axis=1))
    return np.concatenate(blocks, axis=1).astype(np.float32), y


def test_cross_validation_stays_at_the_vote_when_the_head_cannot_beat_it():
    """No grid point beats the vote beyond the folds' noise, and the choice is the vote (the
    most regularised point), although a trained head scores highest on these folds."""
    X, y = _vote_optimal_clips(240, seed=4)
    record = cross_validate(
        _arrays(X, y), MetaConfig.from_dict(RECIPE), SelectionConfig.from_dict(SELECTION)
    )
    means = [p["cv_macro_f1"] for p in record["grid"]]
    assert record["grid"][0]["setting"] == VOTE and max(means) > means[0]
    assert record["choice"] == VOTE, record["reason"]
    assert all(len(p["fold_macro_f1"]) == 4 for p in record["grid"])


def test_cross_validation_leaves_the_vote_when_the_head_gains():
    """Majority-biased models (medusa.ensemble.synthetic): the head gains far more than the folds'
    noise, so the choice is a finite prior strength."""
    X, y = sample_clips(make_models(seed=0), 300, seed=1)
    record = cross_validate(
        _arrays(X, y), MetaConfig.from_dict(RECIPE), SelectionConfig.from_dict(SELECTION)
    )
    assert record["choice"] != VOTE and record["choice"] in SELECTION["prior_strengths"]


def test_the_one_standard_error_rule_prefers_the_most_regularised_point():
    def point(setting, mean, se):
        return {"setting": setting, "cv_macro_f1": mean, "se": se}

    points = [point("vote", 0.40, 0.05), point("1000", 0.44, 0.02), point("10", 0.46, 0.03)]
    assert one_standard_error_choice(points)[0] == 1  # 0.44 >= 0.46 - 0.03; 0.40 is not
    points[0]["cv_macro_f1"] = 0.435
    assert one_standard_error_choice(points)[0] == 0
    assert one_standard_error_choice([point("vote", math.nan, math.nan)])[0] == 0


def test_selection_config_checks_its_keys():
    with pytest.raises(EnsembleError, match="missing.*folds"):
        SelectionConfig.from_dict({k: v for k, v in SELECTION.items() if k != "folds"})
    with pytest.raises(EnsembleError, match="folds must be at least 2"):
        SelectionConfig.from_dict({**SELECTION, "folds": 1})
    with pytest.raises(EnsembleError, match="prior_strengths"):
        SelectionConfig.from_dict({**SELECTION, "prior_strengths": []})


def test_too_few_speakers_keep_the_vote_and_the_seeds_and_soup_record_it(tmp_path):
    """The synthetic world's meta clips have 20 speakers: 25 folds cannot be filled, so the
    choice is the vote, with the reason; the seeds then keep the start (the product of
    experts) and the soup's metrics carry the record."""
    world = make_world(tmp_path, n_models=3)
    meta = {**FAST_META, "selection": {**SELECTION, "folds": 25}}
    record = select_meta(world["paths"], world["manifest"], meta, tmp_path / "select.json")
    assert record["choice"] == VOTE and "fewer than meta.selection.folds (25)" in record["reason"]
    assert json.loads((tmp_path / "select.json").read_text()) == record
    seeds = []
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        metrics = train_meta(world["paths"], world["manifest"], meta, seed, out, selection=record)
        assert metrics["selection"] == record and metrics["loss_history"] == []
        seeds.append(out)
    soup = make_soup(
        seeds, world["paths"], world["manifest"], {"method": "uniform"}, tmp_path / "s"
    )
    assert soup["selection"] == record
    with pytest.raises(EnsembleError, match="rerun rule meta_select"):
        train_meta(world["paths"][:2], world["manifest"], meta, 0, tmp_path / "x", selection=record)


def test_the_chosen_prior_reaches_the_seeds(tmp_path):
    world = make_world(tmp_path, n_models=3)
    meta = {**FAST_META, "selection": SELECTION}
    record = select_meta(world["paths"], world["manifest"], meta, tmp_path / "select.json")
    assert len(record["grid"]) == 4 and record["n_speakers"] == 20
    forced = {**record, "choice": 1.0e6}
    stiff = train_meta(world["paths"], world["manifest"], meta, 0, tmp_path / "a", selection=forced)
    loose = train_meta(world["paths"], world["manifest"], meta, 0, tmp_path / "b",
                       selection={**record, "choice": 0.0})  # fmt: skip
    assert stiff["loss_history"] != loose["loss_history"]
    # The record as the report and the model card show it: every grid point, the choice marked.
    table = _selection_table({"all 3 models": {"info": {"selection": record}}})
    assert list(table["setting"]) == [p["setting"] for p in record["grid"]]
    assert table["chosen"].sum() == 1
    card = meta_selection_section(record)
    assert all(p["setting"] in card for p in record["grid"]) and "| yes |" in card


def test_missing_and_single_clip_classes_keep_the_soup_at_least_at_the_soft_vote():
    """The benchmark's hard cases, small: a meta set without Fear and Disgust, and one where
    the rare classes have one clip each; the soup of 3 seeds with the cross-validated choice
    is not below the soft vote on dev."""
    models = make_models(seed=1)
    X, y = sample_clips(models, 300, seed=6)
    X_dev, y_dev = sample_clips(models, 3000, seed=7)
    vote = f1_score(y_dev, soft_vote(list(split_inputs(X_dev)[0])).argmax(1), average="macro")
    first = {c: int(np.flatnonzero(y == c)[0]) for c in range(NUM_CLASSES) if (y == c).any()}
    cases = {
        "missing": ~np.isin(y, [4, 5]),
        "single": np.isin(y, [0, 1, 2, 7]) | np.isin(np.arange(len(y)), list(first.values())),
    }
    cfg = MetaConfig.from_dict(RECIPE)
    for name, keep in cases.items():
        train = _arrays(X[keep], y[keep])
        record = cross_validate(train, cfg, SelectionConfig.from_dict(SELECTION))
        chosen = MetaConfig.from_dict(
            {**RECIPE, "prior_strength": math.inf if record["choice"] == VOTE else record["choice"]}
        )
        heads = [fit_head(train, chosen, seed)[0] for seed in range(3)]
        soup = soup_of(heads, {"n_inputs": X.shape[1], "head": "linear", "mlp_hidden": 16})
        pred = predict_probs(soup, X_dev).argmax(1)
        assert f1_score(y_dev, pred, average="macro") >= vote - 0.01, (name, record["choice"])
