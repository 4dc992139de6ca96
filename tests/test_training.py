"""Stages 1 and 2 (docs/method.md, section 5) and posteriors on a tiny synthetic corpus."""

import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from medusa.core.atomic import atomic_torch_save
from medusa.core.emotions import CLASS_LETTERS
from medusa.core.integrity import load_torch
from medusa.core.manifest import MANIFEST_COLUMNS, read_manifest
from medusa.core.store import FeatureWriter
from medusa.training import steps
from medusa.training.checkpoints import load_checkpoint
from medusa.training.data import BatchPlan, ClipDataset, collate, epoch_batches
from medusa.training.loop import train_stage
from medusa.training.model import class_weights_from_targets, total_loss
from medusa.training.posteriors import write_posteriors
from medusa.training.settings import ModelSettings
from medusa.training.steps import NonFiniteTrainingError

torch.set_num_threads(1)

FEATURE_SETS = {"speech": 6, "text": 4}
# Files per class in train: imbalanced, as in MSP-Podcast.
TRAIN_COUNTS = [10, 6, 12, 5, 4, 4, 5, 20]


def model_cfg(**overrides):
    cfg = {
        "name": "tiny",
        "features": list(FEATURE_SETS),
        "hidden_size": 16,
        "num_heads": 2,
        "ff_size": 32,
        "dropout": 0.1,
        "encoder_layers": 2,
        "fusion": "deep",
        "targets": "soft",
        "multitask": True,
        "loss_weights": {"classes": 1.5, "attributes": 0.4},
        "mixup": {"enabled": True, "p": 0.3, "alpha": 0.4},
        "stage1": {
            "lr": 3e-3,
            "batch_size": 8,
            "max_epochs": 4,
            "patience": 4,
            "weight_decay": 0.01,
        },
        "stage2": {
            "enabled": True,
            "lr": 1e-3,
            "batch_size": 8,
            "max_epochs": 2,
            "patience": 5,
            "weight_decay": 0.01,
        },
        "max_frames": 10,
        "num_workers": 0,
        "attention_dropout": None,
        "amp": True,
        "frame_pooling": 1,
        "standardise_inputs": False,
        "seed": 7,
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    return cfg


def settings(**overrides) -> ModelSettings:
    return ModelSettings.from_params(model_cfg(**overrides))


@pytest.fixture
def training_log(caplog):
    """What training logs, as the job log would show it."""
    caplog.set_level(logging.INFO, logger="medusa.training")
    return caplog


def make_corpus(root):
    """Manifest + one HDF5 per (feature set, subset). Classes are separable in both modalities:
    frames are a class-specific mean plus noise. Returns (manifest path, feature_paths)."""
    rng = np.random.default_rng(0)
    means = {name: rng.normal(0, 1.5, size=(8, dim)) for name, dim in FEATURE_SETS.items()}
    manifest = synthetic_manifest(rng)
    feature_paths = write_features(root, manifest, means, rng)
    manifest_path = root / "manifest.tsv"
    manifest.drop(columns="_class").to_csv(manifest_path, sep="\t", index=False, na_rep="")
    return manifest_path, feature_paths


def synthetic_manifest(rng):
    """Imbalanced train, 4 holdout and 3 dev files per class, an X/O pool, unlabelled test."""
    rows = []

    def add(subset, cls, letter=None, labelled=True):
        soft = np.full(8, np.nan)
        if labelled:
            soft = np.zeros(8)
            soft[cls] = 0.8
            soft[(cls + 1) % 8] += 0.2
        # Attributes follow the class (as activation/valence do), plus noise.
        attrs = np.clip(1 + 6 * (cls + rng.random(3)) / 8, 1, 7) if labelled else np.full(3, np.nan)
        rows.append(
            {
                "id": f"{subset}_{len(rows):04d}",
                "path": "unused.wav",
                "subset": subset,
                "speaker": "1",
                "gender": "Female",
                "duration_s": 1.0,
                "sample_rate": 16000,
                "channels": 1,
                "emo_class": letter
                if letter is not None
                else (CLASS_LETTERS[cls] if labelled else ""),
                **dict(zip(CLASS_LETTERS, soft, strict=True)),
                "act": attrs[0],
                "val": attrs[1],
                "dom": attrs[2] if len(rows) % 7 else np.nan,  # some attributes missing
                "_class": cls,
            }
        )

    for cls, count in enumerate(TRAIN_COUNTS):
        for _ in range(count):
            add("train", cls)
    for cls in range(8):
        for _ in range(4):
            add("holdout", cls)
        for _ in range(3):
            add("dev", cls)
    for cls in (0, 2, 7):  # the ambiguous pool: consensus X/O, but with a soft target
        add("train", cls, letter="X")
        add("train", cls, letter="O")
        add("holdout", cls, letter="X")
        add("dev", cls, letter="O")
    add("train", 3, letter="X", labelled=False)  # no 8-class vote: not trained on
    for _ in range(5):
        add("test", int(rng.integers(8)), labelled=False)
    return pd.DataFrame(rows)


def write_features(root, manifest, means, rng):
    """One HDF5 per (feature set, subset): each frame is its class's mean plus noise."""
    feature_paths = {}
    for subset, group in manifest.groupby("subset"):
        feature_paths[subset] = []
        for name, dim in FEATURE_SETS.items():
            path = root / "features" / name / f"{subset}.h5"
            with FeatureWriter(path, dim, {"feature_set": name}) as writer:
                for k, (utt, cls) in enumerate(zip(group["id"], group["_class"], strict=True)):
                    if name == "text" and subset == "train" and k == 0:
                        continue  # one train file without text features: must be skipped
                    length = int(rng.integers(1, 6) if name == "text" else rng.integers(2, 14))
                    frames = means[name][cls] + 0.3 * rng.normal(size=(length, dim))
                    writer.add(utt, frames)
            feature_paths[subset].append(str(path))
    return feature_paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def stage1(corpus, tmp_path_factory):
    """One stage-1 run shared by several tests: (out_dir, metrics)."""
    manifest, features = corpus
    base = tmp_path_factory.mktemp("stage1")
    metrics = train_stage(1, settings(), manifest, features, base / "out", base / "resume")
    return base / "out", metrics


def state_dict(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model_state"]


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_stage1_outputs(corpus, stage1):
    out, metrics = stage1
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "metrics.json", "history.tsv"}
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["best_epoch"] == metrics["best_epoch"] and 1 <= saved["best_epoch"] <= 4
    assert saved["train_files"] == sum(TRAIN_COUNTS) + 6 - 1  # + ambiguous pool - no text
    for part in ("balanced_holdout", "holdout", "dev"):
        assert 0 <= saved[part]["macro_f1"] <= 1
        assert {"micro_f1", "accuracy", "per_class_f1", "confusion"} <= set(saved[part])
    assert saved["balanced_holdout"]["n"] == 32  # 4 per class; X excluded
    assert saved["dev"]["n"] == 24  # O excluded
    history = pd.read_csv(out / "history.tsv", sep="\t")
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    best = history.loc[history["epoch"] == saved["best_epoch"], "balanced_holdout_macro_f1"]
    assert best.item() == pytest.approx(saved["balanced_holdout"]["macro_f1"], abs=1e-5)
    assert not (out.parent / "resume").exists()  # deleted after success
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["input_dims"] == list(FEATURE_SETS.values())
    assert checkpoint["model_cfg"]["features"] == list(FEATURE_SETS)
    # standardise_inputs is off by default: the input statistics stay the identity.
    for m, dim in enumerate(FEATURE_SETS.values()):
        assert torch.equal(checkpoint["model_state"][f"standardisers.{m}.mean"], torch.zeros(dim))
        assert torch.equal(checkpoint["model_state"][f"standardisers.{m}.std"], torch.ones(dim))


def test_standardise_inputs_uses_the_training_frames_statistics(corpus, tmp_path):
    manifest, features = corpus
    cfg = settings(standardise_inputs=True, stage1={"max_epochs": 1}, stage2={"max_epochs": 1})
    train_stage(1, cfg, manifest, features, tmp_path / "s1", tmp_path / "r1")
    train_stage(
        2,
        cfg,
        manifest,
        features,
        tmp_path / "s2",
        tmp_path / "r2",
        init_checkpoint=tmp_path / "s1" / "checkpoint.pt",
    )
    # The files stage 1 trains on: a soft target, and features in both sets ("train_0000" has
    # no text features). Frames cropped to max_frames, as training crops them.
    table = read_manifest(manifest)
    trained = table[(table["subset"] == "train") & table["A"].notna()]["id"]
    trained = [i for i in trained if i != "train_0000"]
    for m, path in enumerate(features["train"]):
        with h5py.File(path, "r") as f:
            ids = f["ids"].asstr()[()].tolist()
            frames = np.concatenate(
                [
                    f["frames"][f["offsets"][k] : f["offsets"][k] + f["lengths"][k]][:10]
                    for k in (ids.index(i) for i in trained)
                ]
            ).astype(np.float64)
        for stage in ("s1", "s2"):  # stage 2 keeps the statistics of its stage-1 checkpoint
            state = state_dict(tmp_path / stage / "checkpoint.pt")
            np.testing.assert_allclose(state[f"standardisers.{m}.mean"], frames.mean(0), atol=1e-5)
            np.testing.assert_allclose(state[f"standardisers.{m}.std"], frames.std(0), rtol=1e-4)


def test_seeded_runs_repeat_exactly_and_stale_resume_state_is_ignored(
    corpus, stage1, tmp_path, training_log
):
    manifest, features = corpus
    out, metrics = stage1
    # A resume state left by another configuration must not be continued from.
    (tmp_path / "resume").mkdir()
    stale = {"fingerprint": "another config", "epoch": 2}
    atomic_torch_save(tmp_path / "resume" / "state.pt", stale, checksum=True)
    again = train_stage(1, settings(), manifest, features, tmp_path / "out", tmp_path / "resume")
    messages = training_log.messages
    assert any("stale" in m for m in messages)
    assert again == metrics
    # Identical bytes, not only equal tensors.
    assert (out / "checkpoint.pt").read_bytes() == (tmp_path / "out" / "checkpoint.pt").read_bytes()
    assert (out / "history.tsv").read_text() == (tmp_path / "out" / "history.tsv").read_text()


def test_stage1_training_beats_chance(stage1):
    # Chance macro-F1 over 8 classes is ~0.125; the synthetic classes are separable.
    _, metrics = stage1
    assert metrics["balanced_holdout"]["macro_f1"] > 0.35
    assert metrics["dev"]["macro_f1"] > 0.35


CHILD = textwrap.dedent(
    """
    import logging, os, sys, time, json, torch
    torch.set_num_threads(1)
    from medusa.training.loop import train_stage
    from test_training import settings

    args = json.loads(sys.argv[1])
    class StopAfterEpoch2(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("stage 1 epoch 2/"):
                print("EPOCH2", flush=True)  # the resume state of epoch 2 is on disk now
                time.sleep(600)
    logging.getLogger("medusa.training").addHandler(StopAfterEpoch2())
    logging.getLogger("medusa.training").setLevel(logging.INFO)
    train_stage(1, settings(), args["manifest"], args["features"], args["out"], args["resume"])
    """
)


def test_killed_run_resumes_to_the_same_result(corpus, stage1, tmp_path, training_log):
    """A real interruption: SIGKILL right after epoch 2's resume state is saved, then resume."""
    manifest, features = corpus
    args = {
        "manifest": str(manifest),
        "features": features,
        "out": str(tmp_path / "out"),
        "resume": str(tmp_path / "resume"),
    }
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline().strip() == "EPOCH2"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    saved = torch.load(tmp_path / "resume" / "state.pt", weights_only=True)
    assert saved["epoch"] == 2 and len(saved["history"]) == 2
    assert not (tmp_path / "out" / "checkpoint.pt").exists()

    metrics = train_stage(1, settings(), manifest, features, args["out"], args["resume"])
    messages = training_log.messages
    assert any("resuming after epoch 2" in m for m in messages)
    assert sum(m.startswith("stage 1 epoch") for m in messages) == 2  # only epochs 3 and 4 ran
    out, uninterrupted = stage1
    assert metrics == uninterrupted
    assert_same_state(
        state_dict(out / "checkpoint.pt"), state_dict(tmp_path / "out" / "checkpoint.pt")
    )
    assert (out / "history.tsv").read_text() == (tmp_path / "out" / "history.tsv").read_text()
    assert not (tmp_path / "resume").exists()


@pytest.mark.usefixtures("nan_at_epoch_3")
def test_damaged_resume_state_is_not_continued_from(corpus, stage1, tmp_path, training_log):
    """A resume state with a changed byte is a cache miss: the stage starts over, same result."""
    manifest, features = corpus
    resume = tmp_path / "resume"
    with pytest.raises(NonFiniteTrainingError):  # leaves the state of epoch 2 behind
        train_stage(1, settings(), manifest, features, tmp_path / "o1", resume)
    data = bytearray((resume / "state.pt").read_bytes())
    data[len(data) // 2] ^= 0x40
    (resume / "state.pt").write_bytes(bytes(data))
    metrics = train_stage(1, settings(), manifest, features, tmp_path / "out", resume)
    assert any("ignoring damaged resume state" in m for m in training_log.messages)
    assert metrics == stage1[1]


@pytest.fixture
def nan_at_epoch_3(monkeypatch):
    """The loss turns NaN at the first batch of epoch 3 (stage 1: 9 batches per epoch), once."""
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, ce, mse = total_loss(*args, **kwargs)
        calls["n"] += 1
        return (loss * math.nan, ce, mse) if calls["n"] == 2 * 9 + 1 else (loss, ce, mse)

    monkeypatch.setattr(steps, "total_loss", poisoned)


@pytest.mark.usefixtures("nan_at_epoch_3")
def test_non_finite_loss_stops_training_and_keeps_the_last_good_state(corpus, tmp_path):
    manifest, features = corpus
    resume = tmp_path / "resume"
    with pytest.raises(
        NonFiniteTrainingError,
        match=r"model tiny, stage 1 \(lr 0\.003\), epoch 3, batch 1 of 9: non-finite loss nan",
    ):
        train_stage(1, settings(), manifest, features, tmp_path / "out", resume)
    assert not (tmp_path / "out" / "checkpoint.pt").exists()
    saved = load_torch(resume / "state.pt")
    assert saved["epoch"] == 2
    assert all(v.isfinite().all() for v in saved["model"].values() if v.is_floating_point())


def test_non_finite_weights_are_never_written(tmp_path):
    state = {"w": torch.tensor([1.0, math.inf]), "steps": torch.tensor([3])}
    with pytest.raises(NonFiniteTrainingError, match=r"checkpoint\.pt: not written.*'w'"):
        steps.require_finite_weights(state, tmp_path / "checkpoint.pt")


def test_stage2_balanced_epochs(corpus):
    """Each stage-2 epoch is a fresh class-balanced subset plus as many ambiguous files."""
    hard = np.repeat(np.arange(8), TRAIN_COUNTS)
    hard = np.concatenate([hard, np.full(6, -1)])
    ambiguous = np.concatenate([np.zeros(len(hard) - 6, bool), np.ones(6, bool)])
    lengths = np.random.default_rng(0).integers(1, 30, len(hard))
    epochs = []
    for epoch in (1, 2):
        batches = epoch_batches(True, hard, ambiguous, lengths, 8, np.random.default_rng(epoch))
        chosen = np.concatenate(batches)
        assert len(set(chosen)) == len(chosen)
        counts = np.bincount(hard[chosen][~ambiguous[chosen]], minlength=8)
        assert (counts == min(TRAIN_COUNTS)).all()
        assert ambiguous[chosen].sum() == min(TRAIN_COUNTS)
        assert all(len(b) <= 8 for b in batches)
        epochs.append(set(chosen.tolist()))
    assert epochs[0] != epochs[1]
    # Stage 1 visits every file exactly once.
    rng = np.random.default_rng(0)
    full = np.concatenate(epoch_batches(False, hard, ambiguous, lengths, 8, rng))
    assert sorted(full.tolist()) == list(range(len(hard)))


def test_stage2_from_stage1(corpus, stage1, tmp_path):
    manifest, features = corpus
    checkpoint = stage1[0] / "checkpoint.pt"
    metrics = train_stage(
        2,
        settings(),
        manifest,
        features,
        tmp_path / "s2",
        tmp_path / "r2",
        init_checkpoint=checkpoint,
    )
    assert metrics["stage2_enabled"] is True
    assert all(w == 1.0 for w in metrics["class_weights"].values())
    history = pd.read_csv(tmp_path / "s2" / "history.tsv", sep="\t")
    assert history["epoch"].tolist() == [0, 1, 2]  # epoch 0: the stage-1 model itself
    # Balanced epochs: 8 classes x the rarest count (4) + 4 ambiguous files.
    assert history["train_files"].tolist()[1:] == [36, 36]
    if metrics["best_epoch"] == 0:
        assert_same_state(state_dict(checkpoint), state_dict(tmp_path / "s2" / "checkpoint.pt"))
    with pytest.raises(ValueError, match="init_checkpoint"):
        train_stage(2, settings(), manifest, features, tmp_path / "o", tmp_path / "r")


def test_stage2_requires_matching_checkpoint(corpus, stage1, tmp_path):
    manifest, features = corpus
    swapped = {s: list(reversed(p)) for s, p in features.items()}
    with pytest.raises(ValueError, match="holds feature set"):
        train_stage(
            2,
            settings(),
            manifest,
            swapped,
            tmp_path / "o",
            tmp_path / "r",
            stage1[0] / "checkpoint.pt",
        )


def test_worker_processes_do_not_change_results(corpus, tmp_path):
    manifest, features = corpus
    states = []
    for workers in (0, 2):
        cfg = settings(num_workers=workers, stage1={"max_epochs": 1})
        out = tmp_path / f"w{workers}"
        train_stage(1, cfg, manifest, features, out, tmp_path / f"r{workers}")
        states.append(state_dict(out / "checkpoint.pt"))
    assert_same_state(*states)


def test_onehot_and_late_fusion_ablations_train(corpus, tmp_path):
    manifest, features = corpus
    cfg = settings(targets="onehot", fusion="late", multitask=False, stage1={"max_epochs": 1})
    metrics = train_stage(1, cfg, manifest, features, tmp_path / "out", tmp_path / "resume")
    # One-hot targets: only files with one of the 8 consensus classes (X/O excluded).
    assert metrics["train_files"] == sum(TRAIN_COUNTS) - 1
    model, _ = load_checkpoint(tmp_path / "out" / "checkpoint.pt")
    assert model.fusion is None


def test_posteriors_one_row_per_clip(corpus, stage1, tmp_path):
    manifest, features = corpus
    out = tmp_path / "posteriors" / "tiny.h5"
    write_posteriors(stage1[0] / "checkpoint.pt", manifest, features, out)
    table = read_manifest(manifest)
    with h5py.File(out, "r") as f:
        assert f.attrs["model"] == "tiny"
        assert set(f) == {"train", "holdout", "dev", "test"}
        for subset in f:
            ids = f[subset]["ids"].asstr()[()].tolist()
            expected = sorted(table.loc[table["subset"] == subset, "id"])
            if subset == "train":
                expected = expected[1:]  # the file without text features
            assert ids == expected
            probs = f[subset]["probs"][()]
            attrs = f[subset]["attributes"][()]
            assert probs.dtype == np.float32 and probs.shape == (len(ids), 8)
            assert attrs.dtype == np.float32 and attrs.shape == (len(ids), 3)
            np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
            assert ((attrs >= 1) & (attrs <= 7)).all()
    assert [p.name for p in out.parent.iterdir()] == ["tiny.h5"]  # no temporary left behind


def test_dataset_crops_and_collate_pads(corpus):
    _, features = corpus
    from medusa.core.store import FeatureReader

    ids = FeatureReader(features["dev"][0]).ids[:4]
    dataset = ClipDataset(ids, features["dev"], max_frames=3)
    items = [dataset[i] for i in range(4)]
    assert all(len(frames[0]) <= 3 for _, frames in items)
    batch = collate(items)
    for x, mask, m in zip(batch["features"], batch["masks"], range(2), strict=True):
        assert x.dtype == torch.float16 and x.shape[0] == 4
        assert mask.sum(dim=1).tolist() == [len(frames[m]) for _, frames in items]
        assert (x[~mask] == 0).all()
    assert len(BatchPlan([np.arange(3), np.arange(2)])) == 2


def test_bad_manifest_is_reported_with_its_path_and_row(corpus, tmp_path):
    manifest, features = corpus
    table = pd.read_csv(manifest, sep="\t", dtype=str, keep_default_na=False)
    table.drop(columns="N").to_csv(tmp_path / "no_n.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match=r"no_n\.tsv.*\['N'\]"):
        read_manifest(tmp_path / "no_n.tsv", required=MANIFEST_COLUMNS)
    # Read as a manifest of 7 classes, its soft targets no longer sum to 1: named by id.
    with pytest.raises(ValueError, match=r"no_n\.tsv: soft targets of"):
        train_stage(1, settings(), tmp_path / "no_n.tsv", features, tmp_path / "o", tmp_path / "r")
    row = table.index[table["subset"] == "train"][3]
    table.loc[row, "A"] = "0.9"  # soft target no longer sums to 1
    table.to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match=table.loc[row, "id"]):
        train_stage(1, settings(), tmp_path / "bad.tsv", features, tmp_path / "o", tmp_path / "r")


def test_stage1_loss_applies_the_class_weights_of_the_training_targets(
    corpus, stage1, tmp_path, monkeypatch
):
    """The weights that reach the loss, not only those reported: stage 1 weights each class by
    (N / (C f_c))^0.5 of the train targets, stage 2 uniformly."""
    import medusa.training.steps

    seen = []
    original = medusa.training.steps.total_loss

    def recording_total_loss(logits, attrs, y_class, y_attr, class_weights, *weights):
        seen.append(class_weights.detach().cpu().clone())
        return original(logits, attrs, y_class, y_attr, class_weights, *weights)

    monkeypatch.setattr(medusa.training.steps, "total_loss", recording_total_loss)
    manifest, features = corpus
    quick = {"stage1": {**model_cfg()["stage1"], "max_epochs": 1}}
    train_stage(1, settings(**quick), manifest, features, tmp_path / "s1", tmp_path / "r1")
    # Independently: the soft targets of the train files that have features in every store.
    table = read_manifest(manifest)
    train = table[(table["subset"] == "train") & table["A"].notna()]
    with_features = set.intersection(
        *(set(h5py.File(p, "r")["ids"].asstr()[()]) for p in features["train"])
    )
    train = train[train["id"].isin(with_features)]
    expected = class_weights_from_targets(train[list(CLASS_LETTERS)].to_numpy())
    assert seen and not torch.allclose(expected, torch.ones(8))
    for weights in seen:
        torch.testing.assert_close(weights, expected)

    seen.clear()
    quick2 = {"stage2": {**model_cfg()["stage2"], "max_epochs": 1}}
    train_stage(
        2, settings(**quick2), manifest, features, tmp_path / "s2", tmp_path / "r2",
        init_checkpoint=stage1[0] / "checkpoint.pt",
    )  # fmt: skip
    assert seen and all(torch.equal(w, torch.ones(8)) for w in seen)
