"""Demo corpus: exact MSP-Podcast layout, parseable labels, determinism, audible prosody."""

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from medusa.core.emotions import ALL_CONSENSUS_LETTERS, CLASS_LETTERS, CLASS_NAMES, NAME_TO_LETTER
from medusa.demo import corpus
from medusa.demo.corpus import Synthesizer, format_emo_detail, generate_corpus
from medusa.demo.sentences import SENTENCES, load_sentences

N_LABELLED, N_TEST = 60, 5
EMO_DETAIL = re.compile(r"^WORKER(\d+); ([^;]+); ([^;]*); A:(\d); V:(\d); D:(\d);$")
_SMALL: dict = {}


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _parse_detail(text):
    """EmoDetail -> (worker, primary, secondaries, (A, V, D)), independent of the generator."""
    match = EMO_DETAIL.match(text)
    assert match, f"malformed EmoDetail {text!r}"
    worker, primary, secondary, act, val, dom = match.groups()
    secondaries = secondary.split(",") if secondary else []
    return worker, primary, secondaries, (int(act), int(val), int(dom))


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "corpus"
    summary = generate_corpus(root, n_labelled=N_LABELLED, n_test=N_TEST, seed=0)
    return root, summary


def _small(tmp_path_factory, seed, inject_problems=False):
    """A 20-clip corpus, generated once per (seed, problems) for the whole module."""
    key = (seed, inject_problems)
    if key not in _SMALL:
        root = tmp_path_factory.mktemp("small") / f"s{seed}{'p' if inject_problems else ''}"
        summary = generate_corpus(
            root, n_labelled=20, n_test=2, seed=seed, inject_problems=inject_problems
        )
        _SMALL[key] = root, summary
    return _SMALL[key]


def test_same_seed_gives_same_bytes_and_another_seed_differs(tmp_path_factory):
    a, _ = _small(tmp_path_factory, 3)
    b = tmp_path_factory.mktemp("again") / "corpus"
    generate_corpus(b, n_labelled=20, n_test=2, seed=3)
    files_a, files_b = _files(a), _files(b)
    assert files_a.keys() == files_b.keys()
    assert [k for k in files_a if files_a[k] != files_b[k]] == []

    c, _ = _small(tmp_path_factory, 4)
    files_c = _files(c)
    assert files_c["Labels/labels_consensus.csv"] != files_a["Labels/labels_consensus.csv"]
    assert files_c["demo_truth.csv"] != files_a["demo_truth.csv"]


def test_layout_and_consensus_columns(demo):
    root, summary = demo
    assert sorted(p.name for p in root.iterdir()) == ["Audios", "Labels", "demo_truth.csv"]
    assert sorted(p.name for p in (root / "Labels").iterdir()) == [
        "labels_consensus.csv",
        "labels_detailed.csv",
    ]
    with open(root / "Labels" / "labels_consensus.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == [
        "FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set",
    ]  # fmt: skip
    rows = _read_csv(root / "Labels" / "labels_consensus.csv")
    assert len(rows) == N_LABELLED == summary["n_labelled"]
    assert len({r["FileName"] for r in rows}) == N_LABELLED
    for r in rows:
        assert re.fullmatch(r"MSP-PODCAST_\d{4}_\d{4}(_\d{4})?\.wav", r["FileName"]), r
        assert r["EmoClass"] in ALL_CONSENSUS_LETTERS, r
        for column in ("EmoAct", "EmoVal", "EmoDom"):
            assert 1.0 <= float(r[column]) <= 7.0, r
        assert r["SpkrID"] == "Unknown" or r["SpkrID"].isdigit(), r
        assert r["Gender"] in ("Male", "Female"), r
        assert r["Split_Set"] in ("Train", "Development"), r
        assert (root / "Audios" / r["FileName"]).is_file()
    splits = Counter(r["Split_Set"] for r in rows)
    assert splits == {
        "Train": summary["splits"]["Train"],
        "Development": summary["splits"]["Development"],
    }
    assert any(r["SpkrID"] == "Unknown" for r in rows)
    for split in ("Train", "Development"):
        counts = Counter(r["EmoClass"] for r in rows if r["Split_Set"] == split)
        assert counts == summary["consensus"][split]


def test_train_and_development_share_no_speaker(demo):
    root, _ = demo
    rows = _read_csv(root / "Labels" / "labels_consensus.csv")
    truth = {r["FileName"]: r for r in _read_csv(root / "demo_truth.csv")}
    for key in ("labelled", "true"):
        speakers = {"Train": set(), "Development": set()}
        for r in rows:
            spkr = r["SpkrID"] if key == "labelled" else truth[r["FileName"]]["Speaker"]
            speakers[r["Split_Set"]].add(spkr)
        assert not speakers["Train"] & speakers["Development"], key
        assert len(speakers["Train"]) >= 3  # room for a speaker-disjoint holdout


def test_emo_detail_parses_with_the_csv_module(demo):
    root, _ = demo
    rows = _read_csv(root / "Labels" / "labels_detailed.csv")
    with open(root / "Labels" / "labels_detailed.csv", newline="") as f:
        assert next(csv.reader(f)) == ["FileName", "EmoDetail"]
    per_file = Counter(r["FileName"] for r in rows)
    labelled = {r["FileName"] for r in _read_csv(root / "Labels" / "labels_consensus.csv")}
    assert set(per_file) == labelled
    assert all(5 <= n <= 7 for n in per_file.values())
    parsed = [_parse_detail(r["EmoDetail"]) for r in rows]
    for _, primary, secondaries, ratings in parsed:
        assert primary in CLASS_NAMES or primary.startswith("Other-"), primary
        assert all(s and s == s.strip() for s in secondaries)
        assert all(1 <= x <= 7 for x in ratings)
    # The awkward cases the data step must handle are all present.
    assert any(not s for _, _, s, _ in parsed), "no empty secondary list"
    assert any(len(s) >= 2 for _, _, s, _ in parsed), "no secondary list with commas"
    assert any(p.startswith("Other-") for _, p, _, _ in parsed), "no Other-<text> primary"
    by_file: dict[str, list[str]] = {}
    for r, (_, primary, _, _) in zip(rows, parsed, strict=True):
        by_file.setdefault(r["FileName"], []).append(primary)
    assert any(all(p.startswith("Other-") for p in ps) for ps in by_file.values())


def test_format_emo_detail_round_trips():
    for secondaries in ([], ["Amused"], ["Amused", "Excited", "Other-very tired"]):
        text = format_emo_detail(42, "Other-Disapointed", secondaries, (1, 7, 4))
        assert _parse_detail(text) == ("00000042", "Other-Disapointed", secondaries, (1, 7, 4))
    assert format_emo_detail(12345, "Happy", ["Amused", "Excited"], (5, 6, 4)) == (
        "WORKER00012345; Happy; Amused,Excited; A:5; V:6; D:4;"
    )


def test_consensus_is_plurality_and_mean_of_the_detailed_votes(demo):
    root, _ = demo
    votes: dict[str, list] = {}
    for r in _read_csv(root / "Labels" / "labels_detailed.csv"):
        votes.setdefault(r["FileName"], []).append(_parse_detail(r["EmoDetail"]))
    seen = Counter()
    for r in _read_csv(root / "Labels" / "labels_consensus.csv"):
        counts = Counter(
            "O" if primary.startswith("Other-") else NAME_TO_LETTER[primary]
            for _, primary, _, _ in votes[r["FileName"]]
        )
        top = max(counts.values())
        winners = [c for c, n in counts.items() if n == top]
        expected = winners[0] if len(winners) == 1 else "X"
        assert r["EmoClass"] == expected, (r, counts)
        means = np.mean([ratings for *_, ratings in votes[r["FileName"]]], axis=0)
        got = [float(r["EmoAct"]), float(r["EmoVal"]), float(r["EmoDom"])]
        np.testing.assert_allclose(got, means, atol=1e-5)
        seen[r["EmoClass"]] += 1
    assert seen["X"] > 0 and seen["O"] > 0
    assert seen.most_common(1)[0][0] == "N"


def test_wavs_are_16k_mono_pcm16_between_0_8_and_4_seconds(demo):
    root, summary = demo
    wavs = sorted((root / "Audios").iterdir())
    assert len(wavs) == N_LABELLED + N_TEST == summary["n_files"]
    total = 0.0
    for path in wavs:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (
            16000, 1, "PCM_16", "WAV",
        ), path  # fmt: skip
        assert 0.8 <= info.duration <= 4.0, (path, info.duration)
        total += info.duration
    assert total == pytest.approx(summary["seconds_of_audio"], abs=0.05)


def test_test3_clips_are_in_no_label_file(demo):
    root, _ = demo
    test3 = sorted(p.name for p in (root / "Audios").glob("MSP-PODCAST_test3_*.wav"))
    assert test3 == [f"MSP-PODCAST_test3_{i:04d}.wav" for i in range(1, N_TEST + 1)]
    for name in ("labels_consensus.csv", "labels_detailed.csv"):
        assert "test3" not in (root / "Labels" / name).read_text()


def test_truth_lists_every_clip_with_its_words(demo):
    root, _ = demo
    truth = _read_csv(root / "demo_truth.csv")
    assert list(truth[0]) == list(corpus.TRUTH_COLUMNS)
    assert {r["FileName"] for r in truth} == {p.name for p in (root / "Audios").iterdir()}
    for r in truth:
        assert r["Text"].strip() and not re.search(r"\d", r["Text"]), r
        assert r["IntendedClass"] in "ASHUFDCN" and r["TextClass"] in "ASHUFDCN", r
        assert r["Split"] in ("Train", "Development", "Test3")
    # Words and prosody disagree on purpose now and then.
    assert any(r["IntendedClass"] != r["TextClass"] for r in truth)


def _rms_db(x):
    return 20 * np.log10(np.sqrt(np.mean(np.square(x))) + 1e-12)


def _median_f0(x, sr=16000):
    """Median pitch (Hz) of the voiced 40 ms frames, by autocorrelation."""
    frame, lags = 640, np.arange(sr // 400, sr // 50)  # 50-400 Hz
    f0 = []
    for start in range(0, len(x) - frame, frame // 2):
        seg = x[start : start + frame] - np.mean(x[start : start + frame])
        if np.sqrt(np.mean(seg**2)) < 0.02:
            continue
        ac = np.correlate(seg, seg, mode="full")[frame - 1 :]
        best = lags[np.argmax(ac[lags])]
        if ac[best] > 0.5 * ac[0]:
            f0.append(sr / best)
    return float(np.median(f0))


def test_sentence_banks_come_from_the_packaged_data_file():
    """Every class has a bank of distinct sentences without digits (ASR writes numbers in
    varied forms), read from medusa/demo/data/sentences.tsv."""
    assert set(SENTENCES) == set(CLASS_LETTERS)
    for letter, bank in SENTENCES.items():
        assert len(bank) >= 16 and len(set(bank)) == len(bank), letter
        assert all(s == s.strip() and not any(c.isdigit() for c in s) for s in bank), letter
    assert load_sentences() == SENTENCES


def test_synthesizer_is_audible_deterministic_and_prosody_matters():
    synth = Synthesizer()
    text = "The weather has been mild this week."
    low_slow = synth.synthesize(text, "en+m2", rate=120, pitch=15, pitch_range=20)
    high_fast = synth.synthesize(text, "en+m2", rate=260, pitch=90, pitch_range=90)
    for audio in (low_slow, high_fast):
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert _rms_db(audio) > -35
    assert len(low_slow) > 1.5 * len(high_fast)
    assert _median_f0(high_fast) > 1.5 * _median_f0(low_slow)
    # espeak keeps state between utterances; ours must not.
    again = synth.synthesize(text, "en+m2", rate=120, pitch=15, pitch_range=20)
    np.testing.assert_array_equal(again, low_slow)
    female = synth.synthesize(text, "en-us+f3")
    np.testing.assert_array_equal(female, synth.synthesize(text, "en-us+f3"))
    with pytest.raises(ValueError, match="variant"):
        synth.synthesize(text, "en-us+nosuchvoice")
    with pytest.raises(ValueError, match="rate"):
        synth.synthesize(text, rate=10)
    with pytest.raises(ValueError, match="empty"):
        synth.synthesize("  ")


def test_every_speaker_voice_exists_and_speaks():
    synth = Synthesizer()
    for voice, _ in corpus.VOICES:
        assert _rms_db(synth.synthesize("Hello there.", voice)) > -35, voice


def test_emotional_prosody_is_audible_in_the_corpus(demo):
    """Angry clips are louder and quicker than sad ones on average."""
    root, _ = demo
    stats: dict[str, list] = {"A": [], "S": []}
    for r in _read_csv(root / "demo_truth.csv"):
        if r["IntendedClass"] in stats:
            audio, sr = sf.read(root / "Audios" / r["FileName"])
            stats[r["IntendedClass"]].append((_rms_db(audio), len(audio) / sr))
    angry, sad = np.mean(stats["A"], axis=0), np.mean(stats["S"], axis=0)
    assert angry[0] > sad[0] + 2  # dB
    assert angry[1] < sad[1]


def test_default_size_class_balance(monkeypatch, tmp_path):
    """300 clips (speech replaced by a tone for speed): MSP-like imbalance, every class
    learnable in Train, and some X and O rows."""

    def tone(self, text, voice="en-us", rate=175, pitch=50, **_):
        t = np.arange(int(16000 * (0.5 + 0.04 * len(text)))) / 16000
        return (0.3 * np.sin(2 * np.pi * (100 + pitch) * t)).astype(np.float32)

    monkeypatch.setattr(Synthesizer, "synthesize", tone)
    summary = generate_corpus(tmp_path / "big", n_labelled=300, n_test=0, seed=0)
    assert summary["splits"] == {"Train": 216, "Development": 84, "Test3": 0}
    train = summary["consensus"]["Train"]
    assert all(train.get(c, 0) >= 8 for c in "ASHUFDC"), train
    labelled = Counter(summary["consensus"]["Train"]) + Counter(summary["consensus"]["Development"])
    assert 0.30 <= labelled["N"] / 300 <= 0.45
    assert labelled.most_common(2)[1][0] == "H"
    assert labelled["F"] <= labelled["A"]
    assert labelled["X"] > 0 and labelled["O"] > 0


def test_problems_appear_only_when_asked(tmp_path_factory):
    clean, clean_summary = _small(tmp_path_factory, 3)
    broken, summary = _small(tmp_path_factory, 3, inject_problems=True)
    assert clean_summary["problems"] == {}
    problems = summary["problems"]
    assert sorted(problems.values()) == sorted(corpus.PROBLEM_KINDS)
    kind_to_file = {kind: name for name, kind in problems.items()}
    audios = broken / "Audios"
    assert sf.info(audios / kind_to_file["stereo"]).channels == 2
    assert sf.info(audios / kind_to_file["wrong_rate"]).samplerate == 44100
    assert sf.info(audios / kind_to_file["too_short"]).duration < 0.5
    assert sf.info(audios / kind_to_file["empty"]).frames == 0
    with pytest.raises(sf.LibsndfileError):
        sf.info(audios / kind_to_file["unreadable"])
    assert not (audios / kind_to_file["missing_audio"]).exists()
    rows = {r["FileName"]: r for r in _read_csv(broken / "Labels" / "labels_consensus.csv")}
    assert rows[kind_to_file["bad_label"]]["EmoClass"] == "Z"
    assert kind_to_file["missing_audio"] in rows  # the row stays, the file is gone
    # Everything else is byte for byte the clean corpus.
    clean_files, broken_files = _files(clean), _files(broken)
    touched = {f"Audios/{name}" for name, kind in problems.items() if kind != "bad_label"}
    touched.add("Labels/labels_consensus.csv")
    assert {k for k in clean_files if clean_files[k] != broken_files.get(k)} == touched
    clean_rows = _read_csv(clean / "Labels" / "labels_consensus.csv")
    differing = [r["FileName"] for r in clean_rows if rows[r["FileName"]] != r]
    assert differing == [kind_to_file["bad_label"]]


def test_interrupted_run_leaves_the_previous_corpus_untouched(monkeypatch, tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "previous.txt").write_text("old corpus")
    calls = 0
    real_render = corpus._render

    def failing_render(clip, synth):
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt
        return real_render(clip, synth)

    monkeypatch.setattr(corpus, "_render", failing_render)
    with pytest.raises(KeyboardInterrupt):
        generate_corpus(out, n_labelled=16, n_test=0, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # no partial folder left
    assert [p.name for p in out.iterdir()] == ["previous.txt"]

    monkeypatch.setattr(corpus, "_render", real_render)
    generate_corpus(out, n_labelled=16, n_test=0, seed=1)
    assert not (out / "previous.txt").exists()  # replaced as a whole, no stale files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_labelled": 10}, "n_labelled"),
        ({"n_test": -1}, "n_test"),
        ({"n_speakers": 4}, "n_speakers"),
        ({"n_speakers": 99}, "n_speakers"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_corpus(tmp_path / "c", **kwargs)
    assert not (tmp_path / "c").exists()


def test_paths_are_accepted_as_strings(tmp_path):
    summary = generate_corpus(str(tmp_path / "c"), n_labelled=16, n_test=1, seed=2)
    assert Path(summary["out_dir"]) == tmp_path / "c"
    assert summary["n_files"] == 17
