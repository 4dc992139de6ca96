"""The parse-time corpus scan cached by the state of what it read (medusa.corpus.scan_cache): the
same result as a scan, reused while the corpus is unchanged (no label file read, no digest looked
up), scanned again when a folder or a label file changes, and a clip rewritten in place seen by
the file check (the main `snakemake` process) but not by the folders' states alone (cluster
jobs), as documented; then the workflow's own parse."""

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import soundfile as sf

import medusa.core.content_hash
import medusa.corpus.partitions as partitions
from medusa.corpus.partitions import corpus_fingerprints
from medusa.corpus.scan_cache import SCAN_CACHE_NAME
from medusa.corpus.table_layout import UNLABELLED

from workflow_runner import dry_run_jobs

HEADER = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n"
LABELS = [("a", "Train"), ("b", "Train"), ("c", "Development")]


def _wav(path, seed=0, seconds=0.2):
    samples = np.random.default_rng(seed).normal(0, 0.1, int(seconds * 16000))
    sf.write(path, samples, 16000, subtype="PCM_16")


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    # The corpus is made just now: cache scans of files younger than the racy margin.
    monkeypatch.setattr(medusa.core.content_hash, "RACY_MARGIN_NS", 0)
    root = tmp_path / "corpus"
    (root / "Audios").mkdir(parents=True)
    (root / "Labels").mkdir()
    for name, _ in LABELS:
        _wav(root / "Audios" / f"{name}.wav")
    _wav(root / "Audios" / "MSP-PODCAST_test3_0001.wav")
    rows = [f"{name}.wav,N,4,4,4,1,Male,{split}\n" for name, split in LABELS]
    (root / "Labels" / "labels_consensus.csv").write_text(HEADER + "".join(rows))
    return root


@pytest.fixture
def calls(monkeypatch):
    """How often scans read label files, look up file digests and list the audio folder."""
    counts = {"labels": 0, "digests": 0, "listings": 0}
    for name, kind in [("labelled_split_sets", "labels"), ("read_table", "labels"),
                       ("file_digests", "digests"), ("_audio_entries", "listings")]:  # fmt: skip
        real = getattr(partitions, name)

        def counted(*args, _real=real, _kind=kind, **kwargs):
            counts[_kind] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(partitions, name, counted)
    return counts


def _uncached(root, tmp_path, **kwargs):
    """A scan with no cache of any kind (a fresh folder for both)."""
    fresh = tmp_path / f"fresh-{time.time_ns()}" / "digests.tsv"
    return corpus_fingerprints(root, fresh, **kwargs)


def _same(found, expected):
    """Equal, partitions and label files in the same order too (the rules expand them)."""
    return (
        found == expected
        and list(found.partitions) == list(expected.partitions)
        and list(found.labels) == list(expected.labels)
    )


def _identity(path):
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def test_an_unchanged_corpus_is_not_scanned_again(corpus, tmp_path, calls):
    cache = tmp_path / "cache" / "digests.tsv"
    first = corpus_fingerprints(corpus, cache)
    assert calls == {"labels": 1, "digests": 1, "listings": 1}
    assert _same(first, _uncached(corpus, tmp_path))
    scan = cache.with_name(SCAN_CACHE_NAME)
    written = _identity(scan)
    for check_files, listings in [(True, 1), (False, 0)]:
        calls.update(labels=0, digests=0, listings=0)
        assert _same(corpus_fingerprints(corpus, cache, check_files=check_files), first)
        # No label file read, no digest looked up; the file check lists the folder once.
        assert calls == {"labels": 0, "digests": 0, "listings": listings}
    assert _identity(scan) == written  # read only


def test_an_added_removed_or_renamed_clip_invalidates_the_cached_scan(corpus, tmp_path, calls):
    cache = tmp_path / "digests.tsv"
    audios = corpus / "Audios"
    before = corpus_fingerprints(corpus, cache)
    changes = [
        lambda: _wav(audios / "MSP-PODCAST_test3_0002.wav", seed=1),  # added
        lambda: (audios / "a.wav").rename(audios / "MSP-PODCAST_test3_0003.wav"),  # renamed
        lambda: (audios / "b.wav").unlink(),  # removed
    ]
    for change in changes:
        change()
        calls["labels"] = 0
        # The folders' states alone (what a cluster job checks) see it.
        after = corpus_fingerprints(corpus, cache, check_files=False)
        assert calls["labels"] == 1 and after != before
        assert _same(after, _uncached(corpus, tmp_path))
        before = after


def test_an_edited_label_file_invalidates_the_cached_scan(corpus, tmp_path):
    cache = tmp_path / "digests.tsv"
    consensus = corpus / "Labels" / "labels_consensus.csv"
    before = corpus_fingerprints(corpus, cache)
    consensus.write_text(consensus.read_text().replace(",N,", ",A,"))  # in place, same size
    relabelled = corpus_fingerprints(corpus, cache, check_files=False)
    assert relabelled.partitions == before.partitions and relabelled.labels != before.labels
    assert _same(relabelled, _uncached(corpus, tmp_path))
    rows = consensus.read_text().splitlines(keepends=True)
    rows[2] = rows[2].replace("Train", "Development")  # b.wav moves to another partition
    consensus.write_text("".join(rows))
    moved = corpus_fingerprints(corpus, cache, check_files=False)
    assert {p for p in moved.partitions if moved.partitions[p] != before.partitions[p]} == {
        "train", "development"
    }  # fmt: skip
    assert _same(moved, _uncached(corpus, tmp_path))
    (corpus / "Labels" / "labels_detailed.csv").write_text("FileName\n")  # a new label file
    detailed = corpus_fingerprints(corpus, cache, check_files=False)
    assert list(detailed.labels) == ["Labels/labels_consensus.csv", "Labels/labels_detailed.csv"]


def _rewrite_in_place(clip, seed):
    """Other samples, the same size and modification time, the same inode and folder state."""
    stat, folder = clip.stat(), clip.parent.stat()
    _wav(clip, seed=seed)
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert clip.stat().st_size == stat.st_size and clip.stat().st_ino == stat.st_ino
    assert clip.parent.stat().st_mtime_ns == folder.st_mtime_ns


def test_a_clip_rewritten_in_place_is_seen_by_the_file_check_only(corpus, tmp_path):
    cache = tmp_path / "digests.tsv"
    before = corpus_fingerprints(corpus, cache)
    clip = corpus / "Audios" / "c.wav"
    _rewrite_in_place(clip, seed=1)
    # Documented limit: the folders' and label files' states alone (cluster jobs) do not see it.
    assert corpus_fingerprints(corpus, cache, check_files=False) == before
    # The file check (the main process, and the default) does: the clip's ctime changed.
    rewritten = corpus_fingerprints(corpus, cache)
    assert {p for p in before.partitions if rewritten.partitions[p] != before.partitions[p]} == {
        "development"
    }  # fmt: skip
    assert _same(rewritten, _uncached(corpus, tmp_path))
    assert corpus_fingerprints(corpus, cache, check_files=False) == rewritten  # cached anew
    # The documented ways to make a job's parse see such a change: touch the folder, or
    # delete the cache.
    _rewrite_in_place(clip, seed=2)
    os.utime(corpus / "Audios")
    touched = corpus_fingerprints(corpus, cache, check_files=False)
    assert touched != rewritten and _same(touched, _uncached(corpus, tmp_path))
    _rewrite_in_place(clip, seed=3)
    cache.with_name(SCAN_CACHE_NAME).unlink()
    assert corpus_fingerprints(corpus, cache, check_files=False) != touched


def _table_corpus(root):
    """A table in lists/ whose audio is in two folders, one clip's file not there yet."""
    (root / "lists").mkdir(parents=True)
    for folder in ("wav", "more"):
        (root / folder).mkdir()
    _wav(root / "wav" / "x.wav")
    _wav(root / "more" / "y.wav", seed=1)
    (root / "lists" / "clips.csv").write_text(
        "path,partition,speaker,label\n"
        "../wav/x.wav,train,s1,A\n../more/y.wav,development,s2,N\n../more/z.wav,,,\n"
    )
    return "lists/clips.csv"


def test_a_table_corpus_is_cached_by_its_table_and_audio_folders(tmp_path, monkeypatch, calls):
    monkeypatch.setattr(medusa.core.content_hash, "RACY_MARGIN_NS", 0)
    root = tmp_path / "table-corpus"
    table = _table_corpus(root)
    cache = tmp_path / "digests.tsv"
    args = {"layout": "table", "table": table}
    first = corpus_fingerprints(root, cache, **args)
    assert _same(first, _uncached(root, tmp_path, **args))
    calls["labels"] = 0
    assert corpus_fingerprints(root, cache, check_files=False, **args) == first
    assert corpus_fingerprints(root, cache, **args) == first and calls["labels"] == 0
    _wav(root / "more" / "z.wav", seed=2)  # the missing clip's file appears
    appeared = corpus_fingerprints(root, cache, check_files=False, **args)
    assert calls["labels"] == 1 and appeared.partitions[UNLABELLED] != first.partitions[UNLABELLED]
    assert _same(appeared, _uncached(root, tmp_path, **args))
    _rewrite_in_place(root / "wav" / "x.wav", seed=3)  # in place: the file check sees it
    assert corpus_fingerprints(root, cache, check_files=False, **args) == appeared
    rewritten = corpus_fingerprints(root, cache, **args)
    assert rewritten.partitions["train"] != appeared.partitions["train"]
    path = root / table
    path.write_text(path.read_text().replace(",A\n", ",H\n"))  # the table edited
    relabelled = corpus_fingerprints(root, cache, check_files=False, **args)
    assert relabelled.labels != rewritten.labels
    assert _same(relabelled, _uncached(root, tmp_path, **args))


def test_the_cache_is_keyed_by_corpus_folder_and_code_and_survives_damage(
    corpus, tmp_path, calls, monkeypatch
):
    cache = tmp_path / "digests.tsv"
    first = corpus_fingerprints(corpus, cache)
    moved = tmp_path / "moved"
    corpus.rename(moved)  # same inodes and times, another data.root: scanned again
    calls["labels"] = 0
    assert corpus_fingerprints(moved, cache, check_files=False) == first and calls["labels"] == 1
    with monkeypatch.context() as patch:  # other code: scanned again
        patch.setattr(partitions, "_code", lambda: "other code")
        assert corpus_fingerprints(moved, cache, check_files=False) == first
        assert calls["labels"] == 2
    cache.with_name(SCAN_CACHE_NAME).write_text('{"format": "medusa corpus scan v1", "key"')
    assert corpus_fingerprints(moved, cache, check_files=False) == first  # damaged: a miss
    assert calls["labels"] == 3


def test_a_scan_of_files_changed_within_the_racy_margin_is_not_cached(
    corpus, tmp_path, calls, monkeypatch
):
    cache = tmp_path / "digests.tsv"
    monkeypatch.setattr(medusa.core.content_hash, "RACY_MARGIN_NS", 3_600 * 10**9)
    first = corpus_fingerprints(corpus, cache)
    assert not cache.with_name(SCAN_CACHE_NAME).exists()
    assert corpus_fingerprints(corpus, cache, check_files=False) == first
    assert calls["labels"] == 2


def _parse(root, cache):
    return corpus_fingerprints(root, cache)


def test_parses_running_at_once_agree_and_leave_a_valid_cache(corpus, tmp_path, calls):
    """Cluster jobs parse at once: after a change, each scans and replaces the cache whole."""
    cache = tmp_path / "digests.tsv"
    corpus_fingerprints(corpus, cache)
    _wav(corpus / "Audios" / "MSP-PODCAST_test3_0002.wav", seed=1)
    fork = multiprocessing.get_context("fork")  # the children inherit the racy margin of 0
    with ProcessPoolExecutor(4, mp_context=fork) as pool:
        parsed = list(pool.map(_parse, [corpus] * 8, [cache] * 8))
    expected = _uncached(corpus, tmp_path)
    assert all(_same(found, expected) for found in parsed)
    calls["labels"] = 0
    assert corpus_fingerprints(corpus, cache, check_files=False) == expected
    assert calls["labels"] == 0  # what the last of them wrote is complete and valid


def test_the_workflow_reads_its_cached_scan_and_checks_every_clip(run_copy):
    """Through the real parse (main process: check_files): a second dry run reads the cached
    scan without rewriting it; a clip rewritten in place is still seen."""
    time.sleep(2.1)  # the copy's files have new status-change times: let them settle
    before = set(dry_run_jobs(run_copy, "soup"))
    scan = run_copy / "results/cache" / SCAN_CACHE_NAME
    written = _identity(scan)
    assert set(dry_run_jobs(run_copy, "soup")) == before
    assert _identity(scan) == written
    audios = run_copy / "resources/demo/msp-podcast/Audios"
    victim = sorted(audios.glob("*_test3_*.wav"))[0]
    stat = victim.stat()
    wave, rate = sf.read(victim, dtype="int16")
    sf.write(victim, wave[::-1], rate, subtype="PCM_16")
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    new = set(dry_run_jobs(run_copy, "soup")) - before
    assert {job for job in new if job[0] in ("audio_index", "prepare")} == {
        ("audio_index", "partition=unlabelled")
    }  # fmt: skip
