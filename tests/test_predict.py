"""`medusa predict` on new recordings, with a bundle the workflow builds from the CI-sized demo.

The bundle comes from `snakemake bundle` in the session's completed CI run (`completed_ci_run`):
2 models trained for a few epochs on 100 synthetic clips. What is checked: the bundle's files
and checksums, the workflow's own numbers on the Test3 clips, segmentation of a long recording,
any rate and channel count, bad files reported while the rest go on, an altered bundle refused,
the console script's outputs and exit status, and freshly synthesised sentences.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio

from medusa.bundle import (
    CHECKSUMS,
    BundleError,
    load_bundle,
    map_path,
    resolve_source,
    verify_checksums,
)
from medusa.emotions import ATTRIBUTES, CLASS_LETTERS
from medusa.partitions import clip_paths
from medusa.recognize import (
    SEGMENT_COLUMNS,
    SKIPPED_COLUMNS,
    SUMMARY_COLUMNS,
    Recognizer,
    segment_bounds,
)
from medusa.transcripts import transcript_texts

from workflow_runner import CI_CONFIGS, run_snakemake

MEDUSA = str(Path(sys.executable).parent / "medusa")
SR = 16000


@pytest.fixture(scope="module")
def demo_bundle(completed_ci_run) -> Path:
    """results/bundle of the completed CI run, built through the workflow."""
    run = run_snakemake(completed_ci_run, "bundle", "--cores", "2", configfiles=CI_CONFIGS)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return completed_ci_run / "results/bundle"


@pytest.fixture(scope="module")
def recognizer(demo_bundle, completed_ci_run, torch_single_thread):
    # One thread, as the workflow's jobs in the demo (threads_per_gpu_job: 1).
    with Recognizer(demo_bundle, backbone_root=completed_ci_run, progress=False) as recognizer:
        yield recognizer


@pytest.fixture(scope="module")
def test3_clips(completed_ci_run) -> list[Path]:
    index = completed_ci_run / "results/audio/unlabelled.tsv"
    corpus = completed_ci_run / "resources/demo/msp-podcast"
    return [Path(path) for _, path in clip_paths(index, corpus)]


def labelled_clips(workdir: Path) -> list[Path]:
    audios = workdir / "resources/demo/msp-podcast/Audios"
    return sorted(p for p in audios.glob("*.wav") if "_test3_" not in p.name)


def check_columns(predictions) -> None:
    assert list(predictions.segments.columns) == SEGMENT_COLUMNS
    assert list(predictions.summary.columns) == SUMMARY_COLUMNS
    assert list(predictions.skipped.columns) == SKIPPED_COLUMNS
    probs = predictions.segments[list(CLASS_LETTERS)].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    attributes = predictions.segments[list(ATTRIBUTES)].to_numpy()
    assert ((attributes >= 1.0) & (attributes <= 7.0)).all()
    letters = np.asarray(CLASS_LETTERS)[probs.argmax(axis=1)]
    assert (predictions.segments["emotion"].to_numpy() == letters).all()


# --------------------------------------------------------------------------------------------
# Pure functions


def test_segment_bounds():
    second = SR
    assert segment_bounds(3 * second, 8, 8, 1) == [(0, 3 * second)]
    assert segment_bounds(8 * second, 8, 8, 1) == [(0, 8 * second)]
    # 60 s: seven full windows and a 4 s tail.
    bounds = segment_bounds(60 * second, 8, 8, 1)
    assert bounds == [(i * 8 * second, min((i + 1) * 8, 60) * second) for i in range(8)]
    # A tail under min_segment_s is dropped; overlapping windows with a hop.
    assert segment_bounds(int(16.5 * second), 8, 8, 1) == [
        (0, 8 * second),
        (8 * second, 16 * second),
    ]
    assert segment_bounds(12 * second, 8, 4, 1) == [(0, 8 * second), (4 * second, 12 * second)]
    # A clip up to max_segment_s is scored whole, as the workflow scores it; a longer one is cut.
    assert segment_bounds(int(9.16 * second), 8, 8, 1, 12) == [(0, int(9.16 * second))]
    assert segment_bounds(12 * second, 8, 8, 1, 12) == [(0, 12 * second)]
    assert segment_bounds(13 * second, 8, 8, 1, 12) == [(0, 8 * second), (8 * second, 13 * second)]


def test_backbone_sources_are_found_through_the_path_map_and_the_root(tmp_path):
    (tmp_path / "models/wavlm").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    mapping = {"resources/backbones": str(tmp_path / "models"), "org/name": str(tmp_path)}
    assert map_path("resources/backbones/wavlm", mapping) == str(tmp_path / "models/wavlm")
    assert map_path("resources/backbones-x/wavlm", mapping) is None  # whole components only
    # A hub id stays a hub id unless mapped to a local copy.
    assert resolve_source("org/model", local=False) == "org/model"
    assert resolve_source("org/name", local=False, path_map=mapping) == str(tmp_path)
    # A relative local path: under the root; mapped; missing -> an error naming the way out.
    assert resolve_source("models/wavlm", True, backbone_root=tmp_path) == str(
        tmp_path / "models/wavlm"
    )
    assert resolve_source("resources/backbones/wavlm", True, path_map=mapping) == str(
        tmp_path / "models/wavlm"
    )
    with pytest.raises(BundleError, match="--backbone-root"):
        resolve_source("resources/backbones/wavlm", True, backbone_root=tmp_path / "elsewhere")


# --------------------------------------------------------------------------------------------
# The bundle


def test_bundle_holds_what_prediction_needs_and_no_pickle(demo_bundle):
    files = sorted(p.relative_to(demo_bundle).as_posix() for p in demo_bundle.rglob("*"))
    assert not [f for f in files if f.endswith((".pt", ".pth", ".pkl", ".pickle", ".bin"))]
    manifest = json.loads((demo_bundle / "bundle.json").read_text())
    assert manifest["models"] == ["m05_wavlm_roberta", "m13_whisper_wavlm"]
    assert manifest["classes"] == list(CLASS_LETTERS)
    for model in manifest["models"]:
        assert f"models/{model}.safetensors" in files and f"models/{model}.json" in files
    for name in ("head.safetensors", "head.json", "README.md", CHECKSUMS):
        assert name in files
    assert {"metrics/soup_metrics.json", "metrics/table1.tsv", "metrics/table3.tsv"} <= set(files)
    assert set(manifest["feature_sets"]) == {"wavlm", "whisper", "roberta"}
    for record in manifest["feature_sets"].values():
        assert record["local"] and len(record["weights_sha256"]) == 64 and record["dim"] > 0
    assert manifest["asr"]["local"] and len(manifest["asr"]["sha256"]) == 64
    assert manifest["demo"] is True
    # Every file is listed (Snakemake adds a hidden .snakemake_timestamp to folder outputs).
    listed = verify_checksums(demo_bundle)
    visible = [f for f in files if (demo_bundle / f).is_file() and not f.startswith(".")]
    assert sorted(listed) == sorted(f for f in visible if f != CHECKSUMS)
    # The input statistics travel inside each model's state dict.
    bundle = load_bundle(demo_bundle)
    state = bundle.checkpoints["m05_wavlm_roberta"]["model_state"]
    assert any(key.endswith(".mean") for key in state) and any(
        key.endswith(".std") for key in state
    )
    card = (demo_bundle / "README.md").read_text()
    assert "synthetic demo" in card and "English only" in card and "clinical" in card


def test_a_model_without_stage_2_is_bundled_from_its_stage_1_checkpoint(completed_ci_run):
    config = {"models": {"m13_whisper_wavlm": {"stage2": {"enabled": False}}}}
    run = run_snakemake(completed_ci_run, "bundle", "-n", configfiles=CI_CONFIGS, config=config)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    out = run.stdout + run.stderr
    job = out[out.index("rule bundle:") :]
    inputs = job[: job.index("output:")]
    assert "results/models/m13_whisper_wavlm/stage1/checkpoint.pt" in inputs
    assert "results/models/m13_whisper_wavlm/stage2/" not in inputs
    assert "results/models/m05_wavlm_roberta/stage2/checkpoint.pt" in inputs


def test_an_altered_or_missing_bundle_file_is_refused(demo_bundle, tmp_path):
    altered = tmp_path / "altered"
    shutil.copytree(demo_bundle, altered)
    weights = altered / "models/m13_whisper_wavlm.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="m13_whisper_wavlm.safetensors: altered"):
        load_bundle(altered)
    run = subprocess.run([MEDUSA, "verify", str(altered)], capture_output=True, text=True)
    assert run.returncode == 2 and "m13_whisper_wavlm.safetensors: altered" in run.stderr
    assert subprocess.run([MEDUSA, "verify", str(demo_bundle)]).returncode == 0

    missing = tmp_path / "missing"
    shutil.copytree(demo_bundle, missing)
    (missing / "head.json").unlink()
    with pytest.raises(BundleError, match="head.json: missing"):
        Recognizer(missing, device="cpu")
    run = subprocess.run(
        [MEDUSA, "predict", "--bundle", str(missing), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 2 and "head.json: missing" in run.stderr


# --------------------------------------------------------------------------------------------
# The same numbers as the workflow


def test_test3_clips_reproduce_the_workflow_predictions(recognizer, test3_clips, completed_ci_run):
    predictions = recognizer.predict(test3_clips)
    check_columns(predictions)
    segments = predictions.segments
    assert len(segments) == len(test3_clips) == 6  # every Test3 clip is shorter than a window
    assert predictions.skipped.empty
    segments = segments.assign(FileName=[Path(f).name for f in segments["file"]])
    expected = pd.read_csv(completed_ci_run / "results/predictions/test_posteriors.csv")
    merged = expected.merge(segments, on="FileName", suffixes=("_workflow", ""))
    assert len(merged) == 6
    for letter in CLASS_LETTERS:
        np.testing.assert_allclose(merged[letter], merged[f"{letter}_workflow"], atol=1e-4)
    letters = pd.read_csv(completed_ci_run / "results/predictions/test.csv")
    merged = letters.merge(segments, on="FileName")
    assert (merged["EmoClass"] == merged["emotion"]).all()
    # The transcripts are the workflow's ASR output.
    transcripts = transcript_texts(completed_ci_run / "results/asr/unlabelled.jsonl")
    asr = {utt_id + ".wav": text for utt_id, text in transcripts.items()}
    assert dict(zip(segments["FileName"], segments["transcript"], strict=True)) == asr
    # A clip's summary is its single segment.
    summary = predictions.summary.set_index("file")
    for row in predictions.segments.itertuples():
        assert summary.loc[row.file, "emotion"] == row.emotion


def test_a_long_recording_is_cut_into_segments(recognizer, completed_ci_run, tmp_path):
    pieces, total = [], 0
    for path in labelled_clips(completed_ci_run):
        audio, rate = sf.read(path, dtype="float32")
        assert rate == SR
        pieces.append(audio)
        total += len(audio)
        if total >= 60 * SR:
            break
    long = np.concatenate(pieces)[: 60 * SR]
    path = tmp_path / "podcast.wav"
    sf.write(path, long, SR)
    predictions = recognizer.predict([path])
    check_columns(predictions)
    segments = predictions.segments
    assert list(segments["start_s"]) == [8.0 * i for i in range(8)]
    assert list(segments["end_s"]) == [8.0 * (i + 1) for i in range(7)] + [60.0]
    assert (segments["file"] == str(path)).all()
    summary = predictions.summary
    assert len(summary) == 1 and summary.loc[0, "segments"] == 8
    assert summary.loc[0, "duration_s"] == pytest.approx(60.0)
    weights = (segments["end_s"] - segments["start_s"]).to_numpy()
    expected = np.average(segments[list(CLASS_LETTERS)].to_numpy(), axis=0, weights=weights)
    np.testing.assert_allclose(summary.loc[0, list(CLASS_LETTERS)].to_numpy(float), expected)
    assert summary.loc[0, "emotion"] == CLASS_LETTERS[int(expected.argmax())]


def test_any_rate_and_channel_count_give_the_same_emotion(recognizer, test3_clips, tmp_path):
    audio, _ = sf.read(test3_clips[0], dtype="float32")
    mono = tmp_path / "clip_mono16k.wav"
    sf.write(mono, audio, SR)
    resampled = torchaudio.functional.resample(torch.from_numpy(audio), SR, 44100).numpy()
    stereo = tmp_path / "clip_stereo44k.flac"
    sf.write(stereo, np.stack([resampled, resampled], axis=1), 44100, subtype="PCM_24")
    predictions = recognizer.predict([mono, stereo])
    check_columns(predictions)
    by_file = predictions.segments.set_index("file")
    assert by_file.loc[str(mono), "emotion"] == by_file.loc[str(stereo), "emotion"]
    np.testing.assert_allclose(
        by_file.loc[str(mono), list(CLASS_LETTERS)].to_numpy(float),
        by_file.loc[str(stereo), list(CLASS_LETTERS)].to_numpy(float),
        atol=0.05,
    )


def bad_files(folder: Path) -> dict[str, str]:
    """Broken recordings and the reason each must be skipped with."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage" + bytes(200))
    sf.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), SR)
    sf.write(folder / "silent.flac", np.zeros(3 * SR, dtype=np.float32), SR)
    return {"corrupt.wav": "unreadable audio", "empty.wav": "empty audio", "silent.flac": "silent"}


def test_bad_files_are_skipped_and_reported_and_the_rest_predicted(
    recognizer, test3_clips, tmp_path
):
    folder = tmp_path / "batch"
    reasons = bad_files(folder / "broken")
    good = folder / "good.wav"
    shutil.copyfile(test3_clips[1], good)
    predictions = recognizer.predict([folder, tmp_path / "does-not-exist.wav"])
    check_columns(predictions)
    assert list(predictions.segments["file"]) == [str(good)]
    skipped = dict(zip(predictions.skipped["file"], predictions.skipped["reason"], strict=True))
    for name, reason in reasons.items():
        assert reason in skipped[str(folder / "broken" / name)]
    assert skipped[str(tmp_path / "does-not-exist.wav")] == "not found"


# --------------------------------------------------------------------------------------------
# The console script


def test_cli_writes_segments_summary_and_skipped_and_sets_the_exit_status(
    demo_bundle, test3_clips, completed_ci_run, tmp_path
):
    reasons = bad_files(tmp_path / "in/broken")
    shutil.copyfile(test3_clips[2], tmp_path / "in/good.wav")
    out = tmp_path / "out/pred.jsonl"
    # A copy of the bundle folder is all it takes (plus where the local backbones are).
    bundle = tmp_path / "copied-bundle"
    shutil.copytree(demo_bundle, bundle)
    command = [MEDUSA, "predict", "--bundle", str(bundle), "--device", "cpu"]
    command += ["--backbone-root", str(completed_ci_run), "--no-progress", "--threads", "1"]
    run = subprocess.run(
        [*command, "--format", "jsonl", "--output", str(out), str(tmp_path / "in")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1 and list(rows[0]) == SEGMENT_COLUMNS
    assert rows[0]["file"] == str(tmp_path / "in/good.wav")
    summary = pd.read_csv(tmp_path / "out/pred.summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS and len(summary) == 1
    skipped = pd.read_csv(tmp_path / "out/pred.skipped.csv")
    assert len(skipped) == len(reasons)
    for name in reasons:
        assert name in run.stderr

    # Nothing predictable: exit status 1, the reasons still written.
    run = subprocess.run(
        [*command, "--output", str(tmp_path / "none.csv"), str(tmp_path / "in/broken")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 1, run.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "none.skipped.csv")) == len(reasons)
    assert pd.read_csv(tmp_path / "none.csv").empty

    # Local backbones recorded with relative paths need the right root.
    run = subprocess.run(
        [*command[:-5], "--no-progress", str(tmp_path / "in/good.wav")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 2
    assert "resources/backbones/whisper-tiny-en-15s-asr/model.pt" in run.stderr
    assert "--backbone-root" in run.stderr


# --------------------------------------------------------------------------------------------
# New speech


# Sentences written for this test (none is in the demo's sentence banks), clearly emotional.
FRESH_SENTENCES = {
    "A": [
        "Get your filthy hands off my desk!",
        "You wrecked my car again and I am furious!",
        "Shut the door and get out of my house!",
    ],
    "S": [
        "I sat alone by the window and cried all night.",
        "Everything reminds me of the friend I lost.",
        "I feel empty, and nothing will ever be the same.",
    ],
    "H": [
        "We won the championship, I am so thrilled!",
        "What a wonderful morning, I love this place!",
        "I got the job, this is the best day ever!",
    ],
    "U": [
        "Wait, you flew here all the way from Paris?",
        "No way, the old bakery is open again?",
        "Really? She painted all of this by herself?",
    ],
    "F": [
        "Please help, someone is trying to open my door.",
        "I am scared, the lights just went out.",
        "Did you hear that noise downstairs? I am terrified.",
    ],
    "D": [
        "This soup smells like rotten eggs, gross.",
        "Ugh, there is mold all over the bread.",
        "That sticky floor is absolutely revolting.",
    ],
    "C": [
        "Oh please, as if you could ever manage that.",
        "Your so called plan is laughable.",
        "I expected nothing better from someone like you.",
    ],
    "N": [
        "The meeting starts after lunch in the main room.",
        "The train leaves from the north platform.",
        "Please send the report by the end of the week.",
    ],
}


def synthesise_fresh(folder: Path) -> list[tuple[Path, str]]:
    """Each fresh sentence spoken with its class's demo prosody, in a short noisy recording."""
    speech = pytest.importorskip("medusa.demo.speech")
    from medusa.demo.plan import NEUTRAL_PROSODY, PROSODY_SHIFT
    from medusa.demo.sentences import SENTENCES

    known = {s for bank in SENTENCES.values() for s in bank}
    synth = speech.Synthesizer()
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for letter, sentences in FRESH_SENTENCES.items():
        for i, text in enumerate(sentences):
            assert text not in known
            prosody = {
                k: float(np.clip(v + PROSODY_SHIFT[letter][k], *speech.PARAM_LIMITS[k]))
                for k, v in NEUTRAL_PROSODY.items()
            }
            voice = ("en-us+f3", "en+m2", "en-us+m3")[i % 3]
            wave = synth.synthesize(text, voice, **prosody, seed=i)
            audio = np.concatenate([np.zeros(SR // 10), 0.7 * wave, np.zeros(SR // 5)])
            audio = audio + rng.standard_normal(len(audio)) * 10 ** (-55 / 20)
            path = folder / f"fresh_{letter}_{i}.wav"
            sf.write(path, audio.astype(np.float32), SR)
            clips.append((path, letter))
    return clips


def test_freshly_synthesised_sentences_are_classified_above_chance(recognizer, tmp_path):
    """Sentences written for this test, spoken with the demo's per-class prosody: every file is
    predicted, transcribed (the real Whisper tiny.en hears the words), and the posteriors rank
    clips of each class above the others more often than chance.

    Above chance is measured by the one-vs-rest ROC AUC of each class's posterior, averaged
    over the 8 classes (chance: 0.5). Accuracy on 24 clips is too coarse a test for the
    CI-sized bundle (2 models, a few epochs on 100 clips): one or two clips more or less move
    it across chance (1/8); it is printed, not asserted.
    """
    from sklearn.metrics import roc_auc_score

    clips = synthesise_fresh(tmp_path / "fresh")
    predictions = recognizer.predict([path for path, _ in clips])
    check_columns(predictions)
    segments = predictions.segments.set_index("file")
    assert len(segments) == len(clips) and predictions.skipped.empty
    truth = np.array([letter for _, letter in clips])
    probs = np.stack([segments.loc[str(p), list(CLASS_LETTERS)].to_numpy(float) for p, _ in clips])
    aucs = [roc_auc_score(truth == c, probs[:, i]) for i, c in enumerate(CLASS_LETTERS)]
    accuracy = float((np.asarray(CLASS_LETTERS)[probs.argmax(axis=1)] == truth).mean())
    print(f"fresh sentences: macro AUC {np.mean(aucs):.3f}, accuracy {accuracy:.3f} (chance 0.125)")
    assert np.mean(aucs) > 0.5
    # Words heard: most transcripts share a word with their sentence.
    heard = 0
    for path, letter in clips:
        said = FRESH_SENTENCES[letter][int(path.stem.rsplit("_", 1)[1])]
        words = {w.strip(",.!?").lower() for w in said.split()}
        text = segments.loc[str(path), "transcript"].lower()
        heard += bool(words & {w.strip(",.!?") for w in text.split()})
    assert heard >= 0.8 * len(clips)
