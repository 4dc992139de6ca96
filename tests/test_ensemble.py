"""Stages 3 and 4: ensemble inputs, vote baselines, meta-classifier seeds, soup, predictions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from medusa.core.atomic import atomic_torch_save
from medusa.core.emotions import ATTRIBUTES, CLASS_LETTERS, NUM_CLASSES
from medusa.core.integrity import USERBLOCK_BYTES, seal_hdf5
from medusa.core.manifest import read_manifest
from medusa.ensemble.inputs import (
    EnsembleError,
    evaluation_data,
    load_ensemble_inputs,
    posterior_model_name,
    selection_scores,
    split_inputs,
    top_models,
)
from medusa.ensemble.meta import (
    MetaClassifier,
    MetaConfig,
    build_head,
    head_outputs,
    load_head,
    predict_probs,
    score_head,
)
from medusa.ensemble.meta_training import fit_head, train_meta
from medusa.ensemble.soup import make_soup, predict_test, soup_of
from medusa.ensemble.synthetic import make_models, sample_clips, training_arrays
from medusa.ensemble.votes import majority_vote, soft_vote

REPO = Path(__file__).resolve().parents[1]
# A quick recipe for tests: the recipe's head, start and loss, fewer steps.
FAST_META = {
    "head": "linear",
    "mlp_hidden": 16,
    "init": "votes",
    "init_seed": 0,
    "train_on": "meta",
    "lr": 5e-2,
    "steps": 60,
    "prior_strength": 100.0,
    "loss_weights": {"classes": 1.5, "attributes": 0.4},
}
SIZES = {"train": 150, "holdout": 300, "meta": 300, "dev": 400, "test": 25}
# Imbalanced like MSP-Podcast (Neutral and Happy dominate).
PRIOR = np.array([0.10, 0.10, 0.22, 0.07, 0.05, 0.05, 0.06, 0.35])


def make_world(root: Path, n_models: int = 4, seed: int = 0, strength: float = 1.2) -> dict:
    """A synthetic manifest plus informative posteriors of `n_models` DeepSER models.

    Each clip has a hidden class; five annotators vote for it with probability 0.7 (soft
    target, consensus = plurality or X on a tie); every model's posterior is a softmax of
    `strength` on the hidden class plus noise and a model-specific class bias.
    """
    rng = np.random.default_rng(seed)
    rows, hidden = [], {}
    for subset, n in SIZES.items():
        for i in range(n):
            clip = (
                f"MSP-PODCAST_test3_{i:04d}"
                if subset == "test"
                else f"MSP-PODCAST_{subset}_{i:04d}"
            )
            c = int(rng.choice(NUM_CLASSES, p=PRIOR))
            hidden[clip] = c
            row = {
                "id": clip,
                "path": f"/corpus/Audios/{clip}.wav",
                "subset": subset,
                "speaker": str(i % 20) if subset != "test" else "Unknown",
                "gender": "Female",
                "duration_s": 3.0,
                "sample_rate": 16000,
                "channels": 1,
                "emo_class": "",
                **dict.fromkeys(CLASS_LETTERS, np.nan),
                **dict.fromkeys(ATTRIBUTES, np.nan),
            }
            if subset != "test":
                votes = np.where(rng.random(5) < 0.7, c, rng.integers(0, NUM_CLASSES, 5))
                counts = np.bincount(votes, minlength=NUM_CLASSES)
                top = np.flatnonzero(counts == counts.max())
                row["emo_class"] = CLASS_LETTERS[top[0]] if len(top) == 1 else "X"
                if rng.random() < 0.03:  # only Other-* votes: no soft target
                    row["emo_class"] = "O"
                else:
                    row.update(zip(CLASS_LETTERS, counts / counts.sum(), strict=True))
                row.update(zip(ATTRIBUTES, np.clip(rng.normal(4, 1, 3), 1, 7), strict=True))
                if rng.random() < 0.05:
                    row["dom"] = np.nan
            rows.append(row)
    manifest = pd.DataFrame(rows)
    manifest_path = root / "manifest.tsv"
    manifest.to_csv(manifest_path, sep="\t", index=False, na_rep="")

    paths = []
    for k in range(n_models):
        name = f"m{k + 1:02d}_synthetic"
        path = root / "posteriors" / f"{name}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        bias = rng.normal(0, 0.5, NUM_CLASSES)
        with h5py.File(path, "w", userblock_size=USERBLOCK_BYTES) as f:
            f.attrs["model"] = name
            for subset in SIZES:
                ids = sorted(manifest.loc[manifest["subset"] == subset, "id"])
                onehot = np.eye(NUM_CLASSES)[[hidden[i] for i in ids]]
                logits = strength * onehot + rng.normal(0, 1.0, onehot.shape) + bias
                probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
                g = f.create_group(subset)
                g.create_dataset("ids", data=ids, dtype=h5py.string_dtype("utf-8"))
                g.create_dataset("probs", data=probs.astype(np.float32))
                attrs = np.clip(rng.normal(4, 1, (len(ids), 3)), 1, 7)
                g.create_dataset("attributes", data=attrs.astype(np.float32))
        seal_hdf5(path)  # as the posteriors rule writes them: readers check the digest
        paths.append(path)
    return {"paths": paths, "manifest": manifest_path, "root": root}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def seeds(world) -> list[Path]:
    """Three trained linear seeds, shared by the soup tests."""
    dirs = []
    for seed in range(3):
        out = world["root"] / "meta" / f"seed{seed}"
        train_meta(world["paths"], world["manifest"], FAST_META, seed, out)
        dirs.append(out)
    return dirs


# --- inputs ---------------------------------------------------------------------------------


def test_ensemble_inputs_concatenate_models_in_order(world):
    ids, X = load_ensemble_inputs(world["paths"], "dev")
    assert X.shape == (SIZES["dev"], 4 * 11) and X.dtype == np.float32
    assert list(ids) == sorted(ids)
    with h5py.File(world["paths"][2], "r") as f:
        np.testing.assert_array_equal(X[:, 22:30], f["dev/probs"][()])
        np.testing.assert_array_equal(X[:, 30:33], f["dev/attributes"][()])
    probs, attrs = split_inputs(X)
    assert probs.shape == (4, SIZES["dev"], 8) and attrs.shape == (4, SIZES["dev"], 3)
    _, X_rev = load_ensemble_inputs(world["paths"][::-1], "dev")
    np.testing.assert_array_equal(X_rev[:, :11], X[:, 33:44])


def test_mismatched_ids_raise_naming_file_and_subset(world, tmp_path):
    broken = tmp_path / "m99_broken.h5"
    shutil.copy(world["paths"][1], broken)
    with h5py.File(broken, "r+") as f:
        f.attrs["model"] = "m99_broken"
        g = f["dev"]
        keep = {k: g[k][()][1:] for k in ("ids", "probs", "attributes")}
        for k, v in keep.items():
            del g[k]
            g.create_dataset(k, data=v)
    seal_hdf5(broken)
    with pytest.raises(EnsembleError, match=r"m99_broken\.h5 \[dev\].*1 missing"):
        load_ensemble_inputs([world["paths"][0], broken], "dev")
    with pytest.raises(EnsembleError, match="no group 'train'"):
        load_ensemble_inputs([_without_group(world["paths"][0], tmp_path, "train")], "train")


def _without_group(src: Path, tmp_path: Path, group: str) -> Path:
    dst = tmp_path / f"no_{group}.h5"
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        del f[group]
    seal_hdf5(dst)
    return dst


# --- vote baselines -------------------------------------------------------------------------


def _p(*pairs: tuple[int, float]) -> np.ndarray:
    """A posterior with the given (class, probability) pairs, the rest spread evenly."""
    p = np.zeros(NUM_CLASSES)
    for c, v in pairs:
        p[c] = v
    rest = [c for c in range(NUM_CLASSES) if p[c] == 0]
    p[rest] = (1 - p.sum()) / len(rest)
    return p


def test_majority_vote_plurality_and_tie_break():
    # clip 0: votes H, H, A -> H even though A is confident.
    # clip 1: votes A, S (tie) -> S, the larger summed probability (0.3+0.7 vs 0.6+0.2).
    model1 = np.stack([_p((2, 0.5)), _p((0, 0.6), (1, 0.3))])
    model2 = np.stack([_p((2, 0.4)), _p((1, 0.7), (0, 0.2))])
    model3 = np.stack([_p((0, 0.99)), _p((7, 0.5), (1, 0.1), (0, 0.1))])  # clip 1: N
    np.testing.assert_array_equal(majority_vote([model1, model2]), [2, 1])
    # clip 1 with model 3: a three-way tie A, S, N; S has the largest summed probability
    # (1.1 vs 0.9 and 0.53).
    np.testing.assert_array_equal(majority_vote([model1, model2, model3]), [2, 1])


def test_soft_vote_is_the_mean_posterior():
    a = np.stack([_p((0, 0.9)), _p((3, 0.4))])
    b = np.stack([_p((1, 0.5)), _p((3, 0.6))])
    mean = soft_vote([a, b])
    np.testing.assert_allclose(mean, (a + b) / 2)
    np.testing.assert_allclose(mean.sum(axis=1), 1.0)
    # The soft vote can disagree with the majority: A is confident, S is not.
    assert mean[0].argmax() == 0 and mean[1].argmax() == 3


# --- the head ---------------------------------------------------------------------------------


def test_meta_classifier_shapes_and_attribute_range():
    x = torch.rand(5, 33) * 6
    for head in ("linear", "mlp"):
        logits, attrs = MetaClassifier(33, head, 16)(x)
        assert logits.shape == (5, 8) and attrs.shape == (5, 3)
        assert ((attrs >= 1) & (attrs <= 7)).all()
    with pytest.raises(ValueError, match="multiple of 11"):
        MetaClassifier(32)
    with pytest.raises(ValueError, match="'linear' or 'mlp'"):
        MetaClassifier(33, head="rnn")


def test_meta_config_checks_keys_and_values():
    cfg = MetaConfig.from_dict({**FAST_META, "seeds": [0, 1]})
    assert cfg.class_weight == 1.5 and cfg.attribute_weight == 0.4 and cfg.steps == 60
    # The recipe's block is complete: every key is required, none has a default.
    recipe = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["meta"]
    assert MetaConfig.from_dict(recipe).init == "votes"
    assert MetaConfig.from_dict({**FAST_META, "lr": "1e-2", "steps": 5.0}).lr == 0.01
    with pytest.raises(EnsembleError, match="unknown key.*mixup"):
        MetaConfig.from_dict({**FAST_META, "mixup": True})
    with pytest.raises(EnsembleError, match="missing.*steps"):
        MetaConfig.from_dict({k: v for k, v in FAST_META.items() if k != "steps"})
    with pytest.raises(EnsembleError, match="train_on"):
        MetaConfig.from_dict({**FAST_META, "train_on": "dev"})
    with pytest.raises(EnsembleError, match="votes needs meta.head: linear"):
        MetaConfig.from_dict({**FAST_META, "head": "mlp"})


def test_train_meta_is_seed_deterministic_and_beats_chance(world, seeds, tmp_path):
    again = tmp_path / "again"
    metrics = train_meta(world["paths"], world["manifest"], FAST_META, 0, again)
    first = torch.load(seeds[0] / "head.pt", weights_only=True)["state_dict"]
    second = torch.load(again / "head.pt", weights_only=True)["state_dict"]
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert json.loads((seeds[0] / "metrics.json").read_text()) == metrics
    other = torch.load(seeds[1] / "head.pt", weights_only=True)["state_dict"]
    assert not torch.equal(first["classes.weight"], other["classes.weight"])
    # Informative posteriors: far above the 1/8 chance level on both scored sets.
    assert metrics["dev"]["macro_f1"] > 0.5
    assert metrics["balanced_holdout"]["macro_f1"] > 0.5
    assert metrics["n_train_clips"] < SIZES["holdout"]  # clips without a soft target left out
    assert metrics["loss_history"][-1] < metrics["loss_history"][0]


def test_train_meta_on_train_posteriors(world, tmp_path):
    cfg = {**FAST_META, "train_on": "train", "steps": 2}
    metrics = train_meta(world["paths"], world["manifest"], cfg, 0, tmp_path / "t")
    assert metrics["train_on"] == "train" and metrics["n_train_clips"] <= SIZES["train"]
    assert load_head(tmp_path / "t")[1]["train_on"] == "train"
    no_train = [_without_group(p, tmp_path, "train") for p in world["paths"][:1]]
    with pytest.raises(EnsembleError, match=r"no_train\.h5: no group 'train'"):
        train_meta(no_train, world["manifest"], cfg, 0, tmp_path / "u")


def test_seeds_share_their_initialisation(world, tmp_path):
    cfg = {**FAST_META, "head": "mlp", "init": "random", "steps": 1, "lr": 1e-12}
    for seed in (3, 4):
        train_meta(world["paths"], world["manifest"], cfg, seed, tmp_path / f"s{seed}")
    a = load_head(tmp_path / "s3")[0].state_dict()
    b = load_head(tmp_path / "s4")[0].state_dict()
    for key in a:  # an lr of 1e-12 leaves the shared initial weights in place
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-9)


def test_metrics_match_scikit_learn(world, seeds):
    model, _ = load_head(seeds[0])
    data = evaluation_data(world["paths"], read_manifest(world["manifest"]))
    X, y = data["dev"]
    pred = predict_probs(model, X).argmax(axis=1)
    got = score_head(model, X, y, balanced=False)
    assert got["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert got["micro_f1"] == pytest.approx(f1_score(y, pred, average="micro"))
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    per_class = f1_score(y, pred, labels=range(8), average=None, zero_division=0)
    assert list(got["per_class_f1"].values()) == pytest.approx(list(per_class))
    # dev scores only the 8 consensus classes: X/O rows are not in y.
    manifest = read_manifest(world["manifest"])
    dev = manifest[manifest["subset"] == "dev"]
    assert len(y) == dev["emo_class"].isin(CLASS_LETTERS).sum() < len(dev)
    # The class-balanced view weights every clip by 1 / its class's count.
    X, y = data["holdout"]
    pred = predict_probs(model, X).argmax(axis=1)
    weights = 1.0 / np.bincount(y, minlength=8)[y]
    balanced = score_head(model, X, y, balanced=True)
    assert balanced["macro_f1"] == pytest.approx(
        f1_score(y, pred, average="macro", sample_weight=weights)
    )
    assert balanced["accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))


# --- soup -----------------------------------------------------------------------------------


def test_soup_of_identical_models_equals_each_of_them(world, seeds, tmp_path):
    copies = []
    for i in range(3):
        d = tmp_path / f"copy{i}"
        d.mkdir()
        shutil.copy(seeds[0] / "head.pt", d / "head.pt")
        copies.append(d)
    soup_dir = tmp_path / "soup"
    metrics = make_soup(copies, world["paths"], world["manifest"], {"method": "uniform"}, soup_dir)
    original, _ = load_head(seeds[0])
    soup, info = load_head(soup_dir)
    for key, value in original.state_dict().items():
        assert torch.equal(soup.state_dict()[key], value), key
    seed_metrics = json.loads((seeds[0] / "metrics.json").read_text())
    assert metrics["dev"] == seed_metrics["dev"]
    assert info["seeds"] == [0, 0, 0]


def test_linear_soup_averages_weights_and_logits(world, seeds, tmp_path):
    soup_dir = tmp_path / "soup"
    metrics = make_soup(seeds, world["paths"], world["manifest"], {"method": "uniform"}, soup_dir)
    heads = [load_head(d)[0] for d in seeds]
    soup, info = load_head(soup_dir)
    for key in soup.state_dict():
        mean = torch.stack([h.state_dict()[key] for h in heads]).mean(dim=0)
        torch.testing.assert_close(soup.state_dict()[key], mean)
    x = torch.from_numpy(load_ensemble_inputs(world["paths"], "dev")[1])
    with torch.no_grad():
        mean_logits = torch.stack([h(x)[0] for h in heads]).mean(dim=0)
        torch.testing.assert_close(soup(x)[0], mean_logits, rtol=1e-5, atol=1e-5)
    assert info["seeds"] == [0, 1, 2] and metrics["seeds"] == [0, 1, 2]
    assert all(i["in_soup"] for i in metrics["ingredients"])
    assert set(metrics) >= {"dev", "balanced_holdout", "holdout", "method", "ingredients"}
    assert set(metrics["dev"]) >= {"macro_f1", "micro_f1", "accuracy", "per_class_f1", "confusion"}


def test_greedy_soup_never_lowers_heldout_f1(world, seeds, tmp_path):
    # A sabotaged seed (weights negated and amplified, so that it would dominate any average)
    # must be left out by the greedy recipe.
    bad = tmp_path / "bad"
    bad.mkdir()
    ckpt = torch.load(seeds[1] / "head.pt", weights_only=True)
    ckpt["state_dict"] = {k: -10 * v for k, v in ckpt["state_dict"].items()}
    ckpt["seeds"] = [99]
    atomic_torch_save(bad / "head.pt", ckpt, checksum=True)
    dirs = [bad, *seeds]
    metrics = make_soup(
        dirs, world["paths"], world["manifest"], {"method": "greedy"}, tmp_path / "g"
    )
    scores = {i["dir"]: i["balanced_holdout_macro_f1"] for i in metrics["ingredients"]}
    first = max(scores.values())
    assert metrics["balanced_holdout"]["macro_f1"] >= first
    assert not metrics["ingredients"][0]["in_soup"] and 99 not in metrics["seeds"]
    with pytest.raises(EnsembleError, match="method"):
        make_soup(dirs, world["paths"], world["manifest"], {"method": "best"}, tmp_path / "x")


def test_soup_rejects_heads_over_different_models(world, seeds, tmp_path):
    odd = tmp_path / "odd"
    odd.mkdir()
    ckpt = torch.load(seeds[0] / "head.pt", weights_only=True)
    ckpt["models"] = ckpt["models"][::-1]
    atomic_torch_save(odd / "head.pt", ckpt, checksum=True)
    with pytest.raises(EnsembleError, match="models .* differs"):
        make_soup([seeds[0], odd], world["paths"], world["manifest"], {}, tmp_path / "s")


# --- predictions ----------------------------------------------------------------------------


def test_predict_test_writes_one_sorted_row_per_unlabelled_clip(world, seeds, tmp_path):
    out_csv, post_csv = tmp_path / "pred" / "test.csv", tmp_path / "pred" / "test_posteriors.csv"
    # Posteriors files in another order than the head's: matched by model name.
    predict_test(seeds[0], world["paths"][::-1], world["manifest"], out_csv, post_csv)
    pred = pd.read_csv(out_csv, dtype=str, keep_default_na=False)
    assert list(pred.columns) == ["FileName", "EmoClass"]
    manifest = read_manifest(world["manifest"])
    test_ids = manifest.loc[manifest["subset"] == "test", "id"]
    assert sorted(pred["FileName"]) == sorted(f"{i}.wav" for i in test_ids)
    assert list(pred["FileName"]) == sorted(pred["FileName"])
    assert pred["EmoClass"].isin(CLASS_LETTERS).all()
    post = pd.read_csv(post_csv)
    assert list(post.columns) == ["FileName", *CLASS_LETTERS]
    assert list(post["FileName"]) == list(pred["FileName"])
    np.testing.assert_allclose(post[list(CLASS_LETTERS)].sum(axis=1), 1.0, atol=1e-4)
    letters = np.asarray(CLASS_LETTERS)[post[list(CLASS_LETTERS)].to_numpy().argmax(axis=1)]
    assert list(letters) == list(pred["EmoClass"])


def test_predict_test_fails_when_a_test_clip_has_no_posterior(world, seeds, tmp_path):
    manifest = pd.read_csv(world["manifest"], sep="\t", dtype=str, keep_default_na=False)
    extra = manifest[manifest["subset"] == "test"].iloc[:1].copy()
    extra["id"] = "MSP-PODCAST_test3_9999"
    pd.concat([manifest, extra]).to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
    with pytest.raises(EnsembleError, match=r"1 'test' clip.*no posteriors.*test3_9999"):
        predict_test(
            seeds[0], world["paths"], tmp_path / "manifest.tsv", tmp_path / "a", tmp_path / "b"
        )
    assert not (tmp_path / "a").exists()


# --- the meta-classifier against the votes, on synthetic ensembles (medusa.ensemble.synthetic) ------


def _synthetic_soup(X, y, meta, seeds=(0, 1, 2)):
    cfg = MetaConfig.from_dict(meta)
    heads = [fit_head(training_arrays(X, y), cfg, seed)[0] for seed in seeds]
    return soup_of(heads, {"n_inputs": X.shape[1], "head": cfg.head, "mlp_hidden": cfg.mlp_hidden})


def _recipe_meta():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())["meta"]


def test_a_head_at_the_votes_predicts_the_product_of_experts():
    X, _ = sample_clips(make_models(n_models=5, useless=1), 200, seed=0)
    head = build_head(X.shape[1], MetaConfig.from_dict(_recipe_meta()))
    probs, _ = split_inputs(X)
    product = np.log(np.clip(probs, 1e-4, 1)).sum(axis=0).argmax(axis=1)
    np.testing.assert_array_equal(predict_probs(head, X).argmax(axis=1), product)
    random = build_head(X.shape[1], MetaConfig.from_dict({**_recipe_meta(), "init": "random"}))
    assert (predict_probs(random, X).argmax(axis=1) != product).any()


def test_small_holdouts_never_fall_below_the_soft_vote_and_large_ones_learn():
    """Biased models, per-class reliability, two useless models: with 100 clips the soup is
    at least the soft vote (the start it leaves only with evidence); with 2,000 it comes
    within 10% of a class-balanced logistic regression on log-posteriors."""
    from sklearn.linear_model import LogisticRegression

    for world in (0, 1):
        models = make_models(seed=world)
        X, y = sample_clips(models, 100, seed=10 + world)
        X_dev, y_dev = sample_clips(models, 2000, seed=20 + world)
        vote = f1_score(y_dev, soft_vote(list(split_inputs(X_dev)[0])).argmax(1), average="macro")
        soup = _synthetic_soup(X, y, _recipe_meta())
        assert f1_score(y_dev, predict_probs(soup, X_dev).argmax(1), average="macro") >= vote - 0.02
    X, y = sample_clips(models, 2000, seed=30)

    def logs(inputs):
        return (
            np.log(np.clip(split_inputs(inputs)[0], 1e-4, 1))
            .transpose(1, 0, 2)
            .reshape(len(inputs), -1)
        )

    lr = LogisticRegression(class_weight="balanced", max_iter=2000).fit(logs(X), y)
    reference = f1_score(y_dev, lr.predict(logs(X_dev)), average="macro")
    soup = _synthetic_soup(X, y, _recipe_meta())
    assert f1_score(y_dev, predict_probs(soup, X_dev).argmax(1), average="macro") >= 0.9 * reference


def test_top_k_ensembles_take_the_models_the_selection_score_ranks_first(world, tmp_path):
    manifest = read_manifest(world["manifest"])
    scores = selection_scores(world["paths"], manifest)
    ranked = sorted(scores, key=lambda m: -scores[m])
    chosen = [posterior_model_name(p) for p in top_models(world["paths"], manifest, 2)]
    assert sorted(chosen) == sorted(ranked[:2])
    assert chosen == [m for m in scores if m in chosen]  # kept in config order
    train_meta(world["paths"], world["manifest"], FAST_META, 0, tmp_path / "t", top_k=2)
    assert load_head(tmp_path / "t")[1]["models"] == chosen


def test_the_attribute_head_does_not_saturate():
    """Attributes stay inside (1, 7) with confident models (log-posteriors near log 1e-4): the
    prior keeps the attribute layer off those large inputs (without it the sigmoid saturated
    and every demo clip got 1 or 7)."""
    X, y = sample_clips(make_models(seed=0), 300, seed=5)
    blocks = X.reshape(len(X), -1, 11)
    sharp = blocks[:, :, :8] ** 6
    blocks[:, :, :8] = sharp / sharp.sum(axis=2, keepdims=True)
    train = training_arrays(blocks.reshape(len(X), -1), y)
    rng = np.random.default_rng(0)
    train["attributes"] = rng.uniform(2, 6, train["attributes"].shape).astype(np.float32)
    head, _ = fit_head(train, MetaConfig.from_dict(_recipe_meta()), seed=0)
    _, attributes = head_outputs(head, train["X"])
    inside = (attributes > 1.05) & (attributes < 6.95)
    assert inside.mean() > 0.95 and attributes.std(axis=0).min() > 1e-3
