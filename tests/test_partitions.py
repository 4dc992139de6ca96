"""Audio partitions: membership from the audio folder and Split_Set only, fingerprints that
change exactly when a partition's audio changes, and the clip tables ASR and features read."""

import os

import numpy as np
import pytest
import soundfile as sf

from medusa.manifest import MANIFEST_COLUMNS
from medusa.partitions import (
    UNLABELLED,
    PartitionError,
    audio_partitions,
    clip_paths,
    fingerprint,
    partition_name,
    partition_of_subset,
    unlabelled_manifest,
    write_audio_index,
)

HEADER = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n"


def _wav(path, seconds=0.5, rate=16000, channels=1):
    samples = np.random.default_rng(0).normal(0, 0.1, (int(seconds * rate), channels))
    sf.write(path, samples, rate, subtype="PCM_16")


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    (root / "Audios").mkdir(parents=True)
    (root / "Labels").mkdir()
    rows = [("a", "Train"), ("b", "Train"), ("c", "Development"), ("d", "Test 1")]
    for name, _ in rows:
        _wav(root / "Audios" / f"{name}.wav")
    _wav(root / "Audios" / "MSP-PODCAST_test3_0001.wav", rate=44100, channels=2)
    (root / "Audios" / "MSP-PODCAST_test3_0002.wav").write_bytes(b"RIFF not audio")
    (root / "Audios" / "notes.txt").write_text("not audio")
    lines = [f"{n}.wav,N,4,4,4,1,Male,{split}\n" for n, split in rows]
    (root / "Labels" / "labels_consensus.csv").write_text(HEADER + "".join(lines))
    return root


def _names(partitions):
    return {p: [f.name for f in files] for p, files in partitions.items()}


def test_partitions_follow_split_set_and_put_every_other_file_in_unlabelled(corpus):
    assert _names(audio_partitions(corpus)) == {
        "train": ["a.wav", "b.wav"],
        "development": ["c.wav"],
        "test_1": ["d.wav"],
        UNLABELLED: ["MSP-PODCAST_test3_0001.wav", "MSP-PODCAST_test3_0002.wav"],
    }
    assert partition_name(" Train ") == "train" and partition_name("") == "unknown"
    assert [partition_of_subset(s) for s in ("train", "holdout", "dev", "test", "test1")] == [
        "train", "train", "development", UNLABELLED, "test1",
    ]  # fmt: skip


def test_only_the_changed_partition_gets_a_new_fingerprint(corpus):
    def fingerprints():
        return {p: fingerprint(files) for p, files in audio_partitions(corpus).items()}

    before = fingerprints()
    assert fingerprints() == before  # stable
    _wav(corpus / "Audios" / "MSP-PODCAST_test3_0003.wav")  # new unlabelled clip
    added = fingerprints()
    assert {p for p in before if added[p] != before[p]} == {UNLABELLED}
    # Label values change nothing; a rewritten labelled file changes its partition only.
    consensus = corpus / "Labels" / "labels_consensus.csv"
    consensus.write_text(consensus.read_text().replace(",N,", ",A,"))
    assert fingerprints() == added
    stat = (corpus / "Audios" / "c.wav").stat()
    os.utime(corpus / "Audios" / "c.wav", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = fingerprints()
    assert {p for p in added if touched[p] != added[p]} == {"development"}
    (corpus / "Audios" / "a.wav").unlink()  # a removed clip
    assert {p for p in touched if fingerprints()[p] != touched[p]} == {"train"}


def test_audio_index_keeps_unusable_files_with_their_problem(corpus, tmp_path):
    index = write_audio_index(corpus, UNLABELLED, tmp_path / "u.tsv", tmp_path / "u.md")
    assert list(index["id"]) == ["MSP-PODCAST_test3_0001", "MSP-PODCAST_test3_0002"]
    assert index["problem"].iloc[1].startswith("unreadable audio")
    assert (index["sample_rate"].iloc[0], index["channels"].iloc[0]) == (44100, 2)
    assert clip_paths(tmp_path / "u.tsv") == [
        ("MSP-PODCAST_test3_0001", str(corpus / "Audios" / "MSP-PODCAST_test3_0001.wav"))
    ]
    report = (tmp_path / "u.md").read_text()
    for note in ("unreadable audio (left out) | 1", "resampled on read | 1", "downmixed on read"):
        assert note in report
    manifest = unlabelled_manifest(tmp_path / "u.tsv")
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert list(manifest["subset"]) == ["test"] and manifest["A"].isna().all()


def test_a_consensus_file_without_split_set_is_named(corpus):
    (corpus / "Labels" / "labels_consensus.csv").write_text("FileName,EmoClass\na.wav,N\n")
    with pytest.raises(PartitionError, match=r"labels_consensus.csv: no Split_Set column"):
        audio_partitions(corpus)
