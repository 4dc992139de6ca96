"""`prepare` on the generated demo corpus finds exactly the problems the generator planted."""

import pytest

from medusa.corpus.partitions import audio_partitions
from medusa.corpus.prepare import build_manifest, labelled_audio_indexes
from medusa.corpus.table_layout import UNLABELLED
from medusa.demo.corpus import generate_corpus

# Generator's planted problem -> the data report's problem kind.
EXPECTED_REPORT = {
    "stereo": "downmixed on read",
    "wrong_rate": "resampled on read",
    "too_short": "short audio",
    "empty": "empty audio",
    "unreadable": "unreadable audio",
    "missing_audio": "missing audio",
    "bad_label": "unknown consensus class",
}
# Files whose annotators all voted Other-*: planted on purpose, reported, never trained on.
ALWAYS_ALLOWED = {"no 8-class vote"}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    clean = generate_corpus(base / "clean", n_labelled=60, n_test=4, seed=3)
    broken = generate_corpus(base / "broken", n_labelled=60, n_test=4, seed=3, inject_problems=True)
    return base, clean, broken


def test_clean_demo_corpus_has_no_unplanned_problems(corpora):
    base, clean, _ = corpora
    root = base / "clean"
    manifest, problems, _ = build_manifest(
        root, labelled_audio_indexes(root), holdout_fraction=0.15, split_seed=0
    )
    assert set(problems.items) <= ALWAYS_ALLOWED, dict(problems.items)
    # The 4 unlabelled Test3 clips are their own audio partition, not manifest rows.
    assert len(manifest) == clean["n_files"] - 4
    assert set(manifest["subset"]) == {"train", "holdout", "dev"}
    assert sorted(audio_partitions(root)) == ["development", "train", UNLABELLED]
    assert len(audio_partitions(root)[UNLABELLED]) == 4


def test_planted_problems_are_each_reported(corpora):
    base, _, broken = corpora
    root = base / "broken"
    _, problems, _ = build_manifest(
        root, labelled_audio_indexes(root), holdout_fraction=0.15, split_seed=0
    )
    planted = broken["problems"]
    assert set(planted.values()) == set(EXPECTED_REPORT)
    for file_name, kind in planted.items():
        reported = problems.items.get(EXPECTED_REPORT[kind], [])
        assert any(file_name in example for example in reported), (kind, file_name, reported)
    assert set(problems.items) <= set(EXPECTED_REPORT.values()) | ALWAYS_ALLOWED
