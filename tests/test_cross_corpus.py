"""Cross-corpus evaluation: label mapping and the figures. The bundle scored through Snakemake
(`snakemake cross_corpus`) and by hand on the workflow's own dev clips: tests/test_evidence.py,
on its shared copy of the completed CI-sized run."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest

from medusa.core.emotions import MSP_PODCAST_CLASSES
from medusa.corpus.table_layout import read_table
from medusa.inference.cross_corpus import (
    EvaluationError,
    mapped_truth,
    parse_mapping,
    unweighted_average_recall,
)


def write_table(path, rows, columns=("path", "partition", "speaker", "gender", "votes")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)


def test_labels_map_into_the_bundle_classes_and_the_rest_is_counted(tmp_path):
    write_table(
        tmp_path / "clips.csv",
        [
            ("a.wav", "test", "s1", "F", "exc;exc;neu"),  # excited -> happy by the map
            ("b.wav", "test", "s1", "F", "Sad;sad;fru"),  # frustrated: no class, counted
            ("c.wav", "test", "s2", "M", "fru;oth"),  # nothing maps: left out
            ("d.wav", "test", "s2", "M", "ang;neu"),  # a tie after mapping: left out
            ("e.wav", "test", "s2", "M", ""),  # unlabelled: not evaluated
        ],
    )
    table = read_table(tmp_path, "clips.csv")
    mapping = parse_mapping(["exc=H", "neu=Neutral", "ang=A"], MSP_PODCAST_CLASSES)
    scored = mapped_truth(table.clips, mapping, MSP_PODCAST_CLASSES)
    assert [c.id for c in scored.clips] == ["a", "b"]
    assert [MSP_PODCAST_CLASSES.letters[i] for i in scored.y] == ["H", "S"]
    assert scored.unmapped == Counter({"fru": 2, "oth": 1})
    reasons = dict(scored.excluded)
    assert "no label maps" in reasons["c"] and "tie" in reasons["d"]
    for bad in (["exc"], ["exc=Excited"], ["=H"]):
        with pytest.raises(EvaluationError, match="--map"):
            parse_mapping(bad, MSP_PODCAST_CLASSES)


def test_unweighted_average_recall_is_the_mean_recall_of_the_classes_present():
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 2, 0])
    assert unweighted_average_recall(y, pred) == pytest.approx((3 / 4 + 1 / 2 + 1 / 2) / 3)
