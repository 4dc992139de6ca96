"""Demo table corpus: CREMA-D-like table layout, speaker folds, unlabelled rows, determinism."""

import csv
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from medusa.demo import table_corpus
from medusa.demo.table_corpus import TABLE_DEMO_CLASSES, assign_folds, generate_table_corpus

# The CI's size.
N_LABELLED, N_TEST, FOLDS = 96, 6, 3
HEADER = ["id", "path", "partition", "speaker", "gender", "label", "act", "val", "dom"]


def _read_table(root):
    with open(root / "clips.csv", newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, row, strict=True)) for row in reader]


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("table") / "corpus"
    summary = generate_table_corpus(root, n_labelled=N_LABELLED, n_test=N_TEST, folds=FOLDS, seed=0)
    header, rows = _read_table(root)
    return root, summary, header, rows


def test_same_seed_gives_same_bytes_and_another_seed_differs(demo, tmp_path):
    root, *_ = demo
    generate_table_corpus(tmp_path / "a", n_labelled=N_LABELLED, n_test=N_TEST, folds=FOLDS, seed=0)
    first, again = _files(root), _files(tmp_path / "a")
    assert first.keys() == again.keys()
    assert [k for k in first if first[k] != again[k]] == []

    generate_table_corpus(tmp_path / "b", n_labelled=N_LABELLED, n_test=N_TEST, folds=FOLDS, seed=1)
    assert _files(tmp_path / "b")["clips.csv"] != first["clips.csv"]


def test_layout_and_columns(demo):
    root, summary, header, rows = demo
    assert sorted(p.name for p in root.iterdir()) == ["audio", "clips.csv"]
    assert Path(summary["out_dir"]) == root
    assert header == HEADER
    assert len(rows) == N_LABELLED + N_TEST
    assert len({r["id"] for r in rows}) == len(rows)
    assert {r["path"] for r in rows} == {f"audio/{r['id']}.wav" for r in rows}
    assert {p.name for p in (root / "audio").iterdir()} == {f"{r['id']}.wav" for r in rows}
    assert {r["gender"] for r in rows} == {"Female", "Male"}
    for r in rows:
        assert r["speaker"] and r["gender"] in ("Female", "Male"), r
    assert summary["classes"] == TABLE_DEMO_CLASSES
    assert list(TABLE_DEMO_CLASSES) == ["A", "D", "F", "H", "N", "S"]


def test_labels_and_attributes(demo):
    _, summary, _, rows = demo
    labelled = [r for r in rows if r["partition"]]
    assert {r["label"] for r in labelled} == set(TABLE_DEMO_CLASSES)
    with_attributes = [r for r in labelled if r["act"]]
    for r in with_attributes:
        assert all(1.0 <= float(r[a]) <= 7.0 for a in ("act", "val", "dom")), r
    # A few labelled rows have no attributes at all (the table allows it), never only some.
    missing = [r for r in labelled if not r["act"]]
    assert 0 < len(missing) == summary["missing_attributes"] < 0.1 * len(labelled)
    assert all(not r["val"] and not r["dom"] for r in missing)
    # The attributes follow the acted class, as the MSP demo's ratings do.
    mean = defaultdict(list)
    for r in with_attributes:
        mean[r["label"]].append([float(r[a]) for a in ("act", "val", "dom")])
    mean = {c: np.mean(v, axis=0) for c, v in mean.items()}
    assert mean["A"][0] > mean["S"][0] + 1  # arousal
    assert mean["H"][1] > mean["S"][1] + 1  # valence


def test_speaker_folds_are_disjoint_balanced_and_have_every_class(demo):
    _, summary, _, rows = demo
    labelled = [r for r in rows if r["partition"]]
    assert {r["partition"] for r in labelled} == {str(f) for f in range(1, FOLDS + 1)}
    folds_of_speaker = defaultdict(set)
    for r in labelled:
        folds_of_speaker[r["speaker"]].add(r["partition"])
    assert all(len(folds) == 1 for folds in folds_of_speaker.values()), folds_of_speaker
    per_fold = Counter(r["partition"] for r in labelled)
    per_speaker = Counter(r["speaker"] for r in labelled)
    assert max(per_fold.values()) - min(per_fold.values()) <= max(per_speaker.values())
    for fold in range(1, FOLDS + 1):
        classes = Counter(r["label"] for r in labelled if r["partition"] == str(fold))
        assert set(classes) == set(TABLE_DEMO_CLASSES), (fold, classes)
        assert summary["classes_per_fold"][fold] == dict(sorted(classes.items()))
        assert summary["clips_per_fold"][fold] == per_fold[str(fold)]
        speakers = sorted(s for s, f in folds_of_speaker.items() if f == {str(fold)})
        assert summary["speakers_per_fold"][fold] == speakers
        assert len(speakers) >= 2


def test_unlabelled_rows_come_from_speakers_in_no_fold(demo):
    _, summary, _, rows = demo
    unlabelled = [r for r in rows if not r["partition"]]
    assert len(unlabelled) == N_TEST == summary["n_test"]
    assert all(not r["label"] and not r["act"] for r in unlabelled)
    assert all(r["partition"] for r in rows if r["label"])  # a label always has its fold
    fold_speakers = {r["speaker"] for r in rows if r["partition"]}
    test_speakers = {r["speaker"] for r in unlabelled}
    assert test_speakers and not test_speakers & fold_speakers
    assert sorted(test_speakers) == summary["unlabelled_speakers"]


def _rms_db(x):
    return 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-9)


def test_audio_is_16k_mono_pcm16_with_the_summary_duration(demo):
    root, summary, _, rows = demo
    total, loudness = 0.0, defaultdict(list)
    for r in rows:
        path = root / r["path"]
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), r["id"]
        assert 0.8 <= info.duration <= 4.0, (r["id"], info.duration)
        total += info.duration
        if r["label"]:
            audio, _ = sf.read(path, dtype="float32")
            loudness[r["label"]].append(_rms_db(audio))
    assert total == pytest.approx(summary["seconds_of_audio"], abs=0.01)
    assert 1.5 * len(rows) <= total <= 3.5 * len(rows)  # like the MSP demo's clips
    # The classes are acted with the MSP demo's prosody: angry speech is louder than sad.
    assert np.mean(loudness["A"]) > np.mean(loudness["S"]) + 2


def test_assign_folds_balances_clips_and_fills_every_fold():
    assert assign_folds([5, 5, 5, 5], 2) == [1, 2, 1, 2]
    counts = [20, 3, 3, 3, 3, 3, 3, 2]
    folds = assign_folds(counts, 3)
    assert sorted(set(folds)) == [1, 2, 3]
    load = Counter()
    for count, fold in zip(counts, folds, strict=True):
        load[fold] += count
    assert load[folds[0]] == 20  # the big speaker is alone in its fold
    assert max(load.values()) - min(load.values()) <= max(counts)


def test_every_class_in_every_fold_on_a_small_corpus(tmp_path):
    generate_table_corpus(tmp_path / "c", n_labelled=24, n_test=1, folds=3, seed=5, n_speakers=7)
    _, rows = _read_table(tmp_path / "c")
    for fold in "123":
        assert {r["label"] for r in rows if r["partition"] == fold} == set(TABLE_DEMO_CLASSES)
    assert [r["partition"] for r in rows].count("") == 1


def test_interrupted_run_leaves_the_previous_corpus_untouched(monkeypatch, tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "previous.txt").write_text("old corpus")
    calls = 0
    real_render = table_corpus._render

    def failing_render(clip, synth):
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt
        return real_render(clip, synth)

    monkeypatch.setattr(table_corpus, "_render", failing_render)
    with pytest.raises(KeyboardInterrupt):
        generate_table_corpus(out, n_labelled=16, n_test=0, folds=2, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # no partial folder left
    assert [p.name for p in out.iterdir()] == ["previous.txt"]

    monkeypatch.setattr(table_corpus, "_render", real_render)
    generate_table_corpus(str(out), n_labelled=16, n_test=0, folds=2, seed=1)
    assert sorted(p.name for p in out.iterdir()) == ["audio", "clips.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"folds": 1}, "folds"),
        ({"folds": 13}, "folds"),
        ({"n_labelled": 5}, "n_labelled"),
        ({"n_test": -1}, "n_test"),
        ({"n_speakers": 99}, "n_speakers"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs, message):
    arguments = {"n_labelled": 30, "n_test": 2, "folds": 3, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_table_corpus(tmp_path / "c", **arguments)
    assert not (tmp_path / "c").exists()
