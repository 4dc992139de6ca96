"""Audio partitions: membership from the audio folder and Split_Set only, fingerprints that
change exactly when a partition's audio content changes (not its times or the corpus's place),
the digest cache behind them, and the clip tables ASR and features read."""

import os
import shutil
import time

import numpy as np
import pytest
import soundfile as sf

import medusa.core.content_hash
from medusa.core.content_hash import CACHE_HEADER, read_cache
from medusa.core.manifest import MANIFEST_COLUMNS, manifest_columns
from medusa.corpus.audio_index import clip_paths, unlabelled_manifest, write_audio_index
from medusa.corpus.partitions import (
    PartitionError,
    audio_partitions,
    corpus_fingerprints,
    partition_name,
    partition_of_subset,
)
from medusa.corpus.scan_cache import SCAN_CACHE_NAME
from medusa.corpus.table_layout import UNLABELLED

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


def _changed(before, after):
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def _age(path, seconds=60):
    """Set a file's times `seconds` into the past (older than the cache's racy margin)."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - seconds * 10**9))


def test_only_the_partition_whose_content_changed_gets_a_new_fingerprint(corpus, tmp_path):
    cache = tmp_path / "cache" / "digests.tsv"

    def fingerprints():
        return corpus_fingerprints(corpus, cache).partitions

    before = fingerprints()
    assert fingerprints() == before  # stable
    _wav(corpus / "Audios" / "MSP-PODCAST_test3_0003.wav")  # new unlabelled clip
    added = fingerprints()
    assert _changed(before, added) == {UNLABELLED}
    # Label values change no partition, only the label file's digest (prepare's param).
    labels_before = corpus_fingerprints(corpus, cache).labels
    consensus = corpus / "Labels" / "labels_consensus.csv"
    consensus.write_text(consensus.read_text().replace(",N,", ",A,"))
    assert fingerprints() == added
    labels_after = corpus_fingerprints(corpus, cache).labels
    assert _changed(labels_before, labels_after) == {"Labels/labels_consensus.csv"}
    # New times alone change nothing.
    for clip in (corpus / "Audios").glob("*.wav"):
        _age(clip)
    assert fingerprints() == added
    # The same number of bytes, other samples, and even the old modification time restored:
    # that partition only.
    clip = corpus / "Audios" / "c.wav"
    stat = clip.stat()
    wave, rate = sf.read(clip)
    sf.write(clip, wave[::-1], rate, subtype="PCM_16")
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert clip.stat().st_size == stat.st_size
    replaced = fingerprints()
    assert _changed(added, replaced) == {"development"}
    (corpus / "Audios" / "a.wav").unlink()  # a removed clip
    assert _changed(replaced, fingerprints()) == {"train"}


def test_a_moved_or_copied_corpus_has_the_same_fingerprints(corpus, tmp_path):
    cache = tmp_path / "digests.tsv"
    original = corpus_fingerprints(corpus, cache)
    copy = tmp_path / "elsewhere" / "msp"  # like cp -r: new inodes, new times
    shutil.copytree(corpus, copy, copy_function=shutil.copyfile)
    assert corpus_fingerprints(copy, cache) == original
    moved = tmp_path / "moved"
    corpus.rename(moved)
    assert corpus_fingerprints(moved, cache) == original


def test_digests_are_read_from_the_cache_until_a_file_changes(corpus, tmp_path, monkeypatch):
    cache = tmp_path / "digests.tsv"
    # Files changed within the racy margin are not cached; the corpus was made just now.
    monkeypatch.setattr(medusa.core.content_hash, "RACY_MARGIN_NS", 0)
    first = corpus_fingerprints(corpus, cache)
    assert cache.read_text().startswith(CACHE_HEADER + "\n")
    assert len(read_cache(cache)) == 7  # the 6 .wav files and the consensus file
    written = cache.stat().st_mtime_ns
    read = []
    real_digest = medusa.core.content_hash.file_digest
    monkeypatch.setattr(
        medusa.core.content_hash, "file_digest", lambda path: read.append(path) or real_digest(path)
    )
    cache.with_name(SCAN_CACHE_NAME).unlink()  # the digest cache alone, not the cached scan
    assert corpus_fingerprints(corpus, cache) == first and read == []  # warm: no file read
    assert cache.stat().st_mtime_ns == written  # and not rewritten
    time.sleep(0.3)
    _wav(corpus / "Audios" / "b.wav", seconds=0.6)  # changed just now: read, not cached
    changed = (corpus / "Audios" / "b.wav").stat().st_ctime_ns
    monkeypatch.setattr(
        medusa.core.content_hash, "RACY_MARGIN_NS", time.time_ns() - changed + 10**8
    )
    corpus_fingerprints(corpus, cache)
    corpus_fingerprints(corpus, cache)
    assert read == [str(corpus / "Audios" / "b.wav")] * 2
    cache.write_text("damaged\x00")  # a damaged cache is only a cold one
    assert corpus_fingerprints(corpus, cache).labels == first.labels


def test_audio_index_keeps_unusable_files_with_their_problem(corpus, tmp_path):
    index = write_audio_index(corpus, UNLABELLED, tmp_path / "u.tsv", tmp_path / "u.md")
    assert list(index["id"]) == ["MSP-PODCAST_test3_0001", "MSP-PODCAST_test3_0002"]
    assert index["problem"].iloc[1].startswith("unreadable audio")
    assert (index["sample_rate"].iloc[0], index["channels"].iloc[0]) == (44100, 2)
    # Paths relative to the corpus folder: the table does not change when the corpus moves.
    assert list(index["path"]) == [f"Audios/{name}.wav" for name in index["id"]]
    assert clip_paths(tmp_path / "u.tsv", corpus) == [
        ("MSP-PODCAST_test3_0001", str(corpus / "Audios" / "MSP-PODCAST_test3_0001.wav"))
    ]
    report = (tmp_path / "u.md").read_text()
    for note in ("unreadable audio (left out) | 1", "resampled on read | 1", "downmixed on read"):
        assert note in report
    manifest = unlabelled_manifest(tmp_path / "u.tsv")
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert list(manifest["subset"]) == ["test"] and manifest["A"].isna().all()
    four = unlabelled_manifest(tmp_path / "u.tsv", classes=("A", "S", "H", "N"))
    assert list(four.columns) == manifest_columns(("A", "S", "H", "N"))


def test_an_unknown_layout_is_named(corpus, tmp_path):
    with pytest.raises(PartitionError, match=r"data\.layout: 'iemocap' is not one of"):
        corpus_fingerprints(corpus, tmp_path / "cache.tsv", layout="iemocap")


def test_a_consensus_file_without_split_set_is_named(corpus):
    (corpus / "Labels" / "labels_consensus.csv").write_text("FileName,EmoClass\na.wav,N\n")
    with pytest.raises(PartitionError, match=r"labels_consensus.csv: no Split_Set column"):
        audio_partitions(corpus)
