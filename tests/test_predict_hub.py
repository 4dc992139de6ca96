"""`medusa predict` with a bundle whose backbone came from the hub, and on clips of 9-11 s.

One copy of the completed CI-sized run, changed as a user would change theirs: the `whisper`
feature set's backbone becomes the hub id ``medusa-test/whisper-tiny-en-5s-encoder`` served on
127.0.0.1 (tests/hub_server.py) from the run's own local encoder, `snakemake fetch_models`
fetches it into the model store, and three clips of 9-11 s (demo sentences joined) are added
to the unlabelled audio. With the hub gone, the workflow reruns what that changes up to `soup`
and `bundle`; `medusa predict` (the console script, hub unreachable but not declared offline)
then loads the fetched, checked copy and must give the workflow's posteriors on every
unlabelled clip, each scored whole. `medusa verify` checks the copy and refuses it once altered.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from medusa.core.emotions import CLASS_LETTERS
from medusa.core.fetch import verified_hub_copy
from medusa.inference.bundle import asr_record
from medusa.inference.bundle_files import BundleError
from medusa.inference.bundle_load import fetched_asr

from hub_server import FakeHub
from workflow_runner import CI_CONFIGS, fetch_models_online, online_env, run_snakemake

MEDUSA = str(Path(sys.executable).parent / "medusa")
SR = 16000
REPO_ID = "medusa-test/whisper-tiny-en-5s-encoder"
FOLDER = "resources/models/hub/medusa-test--whisper-tiny-en-5s-encoder@main"
HUB_CONFIG = {"feature_sets": {"whisper": {"backbone": REPO_ID}}}
AUDIOS = "resources/demo/msp-podcast/Audios"
LONG_CLIPS = {"MSP-PODCAST_test3_0101.wav": 9.2, "MSP-PODCAST_test3_0102.wav": 10.1}
LONG_CLIPS["MSP-PODCAST_test3_0103.wav"] = 10.9
# The hub and the network as a compute node without access sees them: nothing answers there.
NO_HUB = {"HF_ENDPOINT": "http://127.0.0.1:9"}


def add_long_clips(workdir: Path) -> None:
    """Unlabelled clips of 9-11 s: labelled demo sentences joined by 0.3 s pauses."""
    sentences = sorted(p for p in (workdir / AUDIOS).glob("*.wav") if "_test3_" not in p.name)
    pause = np.zeros(int(0.3 * SR), dtype=np.float32)
    used = 0
    for name, seconds in LONG_CLIPS.items():
        pieces: list[np.ndarray] = []
        while sum(map(len, pieces)) < seconds * SR:
            audio, rate = sf.read(sentences[used], dtype="float32")
            assert rate == SR
            pieces += [audio, pause]
            used += 1
        sf.write(workdir / AUDIOS / name, np.concatenate(pieces)[: int(seconds * SR)], SR)


def medusa(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MEDUSA, *args], capture_output=True, text=True, env=online_env(**NO_HUB), timeout=900
    )


def test_a_bundle_of_a_fetched_hub_backbone_predicts_offline_as_the_workflow(run_copy, tmp_path):
    fetch_hub_backbone_and_add_long_clips(run_copy)
    run = run_snakemake(
        run_copy,
        "soup",
        "bundle",
        "--cores",
        "2",
        "--resources",
        "gpu=2",
        configfiles=CI_CONFIGS,
        config=HUB_CONFIG,
        offline=False,
        env=NO_HUB,
        timeout=2400,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    check_bundle_records_and_predicts_as_the_workflow(run_copy, tmp_path)
    check_verify_refuses_an_altered_copy(run_copy, tmp_path)


def fetch_hub_backbone_and_add_long_clips(workdir: Path) -> None:
    """`snakemake fetch_models` from a hub serving the run's own Whisper encoder, then the
    hub is stopped (the network is off from here on); three long unlabelled clips added."""
    hub = FakeHub().start()
    try:
        commit = hub.add_folder(REPO_ID, workdir / "resources/backbones/whisper-tiny-en-5s-encoder")
        fetched = fetch_models_online(workdir, HUB_CONFIG, hub.url)
        assert fetched.returncode == 0, fetched.stderr[-4000:]
    finally:
        hub.stop()
    assert verified_hub_copy(workdir / FOLDER)["commit"] == commit
    add_long_clips(workdir)


def check_bundle_records_and_predicts_as_the_workflow(workdir: Path, tmp_path: Path) -> None:
    bundle = workdir / "results/bundle"
    commit = verified_hub_copy(workdir / FOLDER)["commit"]
    # The bundle records the hub id with the fetched commit and weights, and the store.
    manifest = json.loads((bundle / "bundle.json").read_text())
    record = manifest["feature_sets"]["whisper"]
    assert (record["backbone"], record["hub"], record["local"]) == (REPO_ID, True, False)
    assert record["commit"] == commit
    assert record["fetched"] == FOLDER.removeprefix("resources/models/")
    assert manifest["model_store"] == str(workdir / "resources/models")
    card = (bundle / "README.md").read_text()
    assert f"hub id at commit {commit}, fetched into the model store" in card

    # Predicted from the fetched copy, with the hub unreachable: the workflow's posteriors,
    # every clip (the long ones too) scored whole.
    unlabelled = sorted((workdir / AUDIOS).glob("*_test3_*.wav"))
    out = tmp_path / "predictions.csv"
    args = ["--bundle", str(bundle), "--backbone-root", str(workdir), "--threads", "1"]
    # --uncalibrated: the soup's raw posteriors, which the workflow writes.
    args.append("--uncalibrated")
    predicted = medusa("predict", *args, "--no-progress", "-o", str(out), *map(str, unlabelled))
    assert predicted.returncode == 0, predicted.stderr[-4000:]
    segments = pd.read_csv(out)
    segments["FileName"] = [Path(f).name for f in segments["file"]]
    durations = {p.name: sf.info(p).duration for p in unlabelled}
    assert sorted(segments["FileName"]) == sorted(durations)  # one segment per clip
    assert (segments["start_s"] == 0).all()
    np.testing.assert_allclose(segments["end_s"], segments["FileName"].map(durations), atol=1e-3)
    expected = pd.read_csv(workdir / "results/predictions/test_posteriors.csv")
    merged = expected.merge(segments, on="FileName", suffixes=("_workflow", ""))
    assert sorted(merged["FileName"]) == sorted(durations)
    for letter in CLASS_LETTERS:
        np.testing.assert_allclose(merged[letter], merged[f"{letter}_workflow"], atol=1e-4)


def check_verify_refuses_an_altered_copy(workdir: Path, tmp_path: Path) -> None:
    """verify checks the store's copy; an altered copy is refused by verify and by predict."""
    bundle = workdir / "results/bundle"
    commit = verified_hub_copy(workdir / FOLDER)["commit"]
    verified = medusa("verify", str(bundle))
    assert verified.returncode == 0, verified.stderr
    assert f"whisper: {REPO_ID}@{commit} matches {workdir / FOLDER}" in verified.stdout
    empty_store = medusa("verify", "--model-store", str(tmp_path / "empty"), str(bundle))
    assert empty_store.returncode == 2 and "no fetched copy at" in empty_store.stderr
    weights = workdir / FOLDER / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    refused = medusa("verify", str(bundle))
    assert refused.returncode == 2
    assert "model.safetensors differs from what was fetched" in refused.stderr
    clip = sorted((workdir / AUDIOS).glob("*_test3_*.wav"))[0]
    out = str(tmp_path / "refused.csv")
    args = ["--bundle", str(bundle), "--backbone-root", str(workdir), "--no-progress", "-o", out]
    predicted = medusa("predict", *args, str(clip))
    assert predicted.returncode == 2
    assert "model.safetensors differs from what was fetched" in predicted.stderr


def test_a_fetched_asr_checkpoint_is_recorded_and_checked_against_the_store(tmp_path):
    checkpoint = b"a whisper checkpoint"
    sha256 = hashlib.sha256(checkpoint).hexdigest()
    asr = {
        "model": f"http://mirror.example/models/{sha256}/tiny-en.pt",
        "revision": None,
        "batch_size": 4,
        "language": "en",
        "no_speech_threshold": 0.6,
    }
    record = asr_record(asr)
    assert (record["model"], record["local"], record["sha256"]) == (asr["model"], False, sha256)
    assert record["fetched"] == f"whisper/tiny-en-{sha256}.pt"
    store = tmp_path / "store"
    assert fetched_asr(record, store, explicit=False) is None  # openai-whisper's cache, or error
    with pytest.raises(BundleError, match="no fetched checkpoint at"):
        fetched_asr(record, store, explicit=True)
    path = store / record["fetched"]
    path.parent.mkdir(parents=True)
    path.write_bytes(checkpoint)
    assert fetched_asr(record, store, explicit=True) == path
    path.write_bytes(b"another checkpoint")
    with pytest.raises(BundleError, match="sha256 differs"):
        fetched_asr(record, store, explicit=False)


def test_a_hub_backbone_without_a_fetched_copy_loads_by_id_at_the_recorded_commit(tmp_path):
    """The fallback (no copy in the default store): the Hugging Face cache at the commit the
    features were extracted with; an explicit store without the copy is an error instead."""
    from types import SimpleNamespace

    from medusa.inference.upstream import UpstreamModels

    record = {
        "backbone": REPO_ID,
        "hub": True,
        "local": False,
        "revision": "main",
        "commit": "a" * 40,
        "fetched": FOLDER.removeprefix("resources/models/"),
        "kind": "whisper",
        "layer": "last",
        "batch_size": 2,
    }
    where = SimpleNamespace(path_map={}, model_store=tmp_path, model_store_explicit=False)
    cfg, copy, source = UpstreamModels._backbone_source(where, "whisper", record)
    assert (cfg["backbone"], cfg["revision"], copy, source) == (REPO_ID, "a" * 40, None, REPO_ID)
    where.model_store_explicit = True
    with pytest.raises(BundleError, match="no fetched copy at"):
        UpstreamModels._backbone_source(where, "whisper", record)
