"""The table layout (medusa.corpus.table_layout): a corpus described by one CSV/TSV, its audio
partitions, manifests (single labels, one row per vote, a votes column, folds) and errors."""

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from medusa.core.emotions import ClassSet
from medusa.core.manifest import manifest_columns, read_manifest
from medusa.corpus.audio_index import clip_paths, write_audio_index
from medusa.corpus.partitions import audio_partitions, corpus_fingerprints, partition_of_subset
from medusa.corpus.prepare import build_table_manifest, labelled_audio_indexes, prepare
from medusa.corpus.table_layout import UNLABELLED, TableError, read_table

from workflow_runner import run_snakemake

CLASSES = ClassSet(("A", "H", "N", "S"), ("Angry", "Happy", "Neutral", "Sad"))
TABLE = "lists/clips.csv"  # in a subfolder: audio paths are relative to the table's folder


def _wav(path: Path, seconds: float = 0.6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.random.default_rng(len(path.name)).normal(0, 0.1, int(seconds * 16000))
    sf.write(path, samples, 16000, subtype="PCM_16")


def _write_table(root: Path, header: list[str], rows: list[list], name: str = TABLE) -> str:
    """Write the table (delimiter from the extension) and the audio of every row (except
    paths starting with "missing"); returns its path relative to root."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter="\t" if name.endswith(".tsv") else ",").writerows(
            [header, *rows]
        )
    at = header.index("path")
    for row in rows:
        audio = Path(row[at]) if Path(row[at]).is_absolute() else path.parent / row[at]
        if row[at].strip() and "missing" not in audio.name and not audio.exists():
            _wav(audio)
    return name


def _data(table: str, fold=None, **changes) -> dict:
    """The data sub-config (without root) `prepare` takes."""
    data = {"holdout_fraction": 0.3, "split_seed": 0, "min_duration_s": 0.5}
    data |= {"meta_fraction": 0.0, "layout": "table", "table": table, "fold": fold}
    return data | changes


def _prepare(root: Path, table: str, out: Path, classes=CLASSES, fold=None):
    """Run `prepare` as the rule does (written audio indexes); (manifest, report text)."""
    corpus = {"layout": "table", "table": table}
    indexes = []
    for partition in sorted(audio_partitions(root, **corpus)):
        if partition != UNLABELLED:
            index = out / "audio" / f"{partition}.tsv"
            write_audio_index(root, partition, index, out / "audio" / f"{partition}.md", **corpus)
            indexes.append(index)
    manifest_path, report_path = out / "manifest.tsv", out / "report.md"
    prepare(root, indexes, manifest_path, report_path, _data(table, fold), classes)
    return read_manifest(manifest_path), report_path.read_text()


def _single_label_corpus(root: Path) -> str:
    """Split style, one label per clip (codes and names in any case), an absolute path, a
    labelled test clip and two unlabelled rows."""
    absolute = root.parent / "elsewhere" / "b3.wav"
    rows = [
        ["../audio/a1.wav", "train", "s1", "F", "A", 4, 2, 5],
        ["../audio/a2.wav", "Train", "s1", "F", "happy", "", "", ""],
        ["../audio/a3.wav", "train", "s1", "F", "N", 4, 4, 4],
        ["../audio/b1.wav", "train", "s2", "M", "Sad", 2, 2, 3],
        ["../audio/b2.wav", "train", "s2", "M", "A", 5, 2, 5],
        [str(absolute), "train", "s2", "M", "H", 5, 6, 5],
        ["../audio/e1.wav", "train", "s5", "", "N", 4, 4, 4],
        ["../audio/e2.wav", "train", "s5", "", "H", 5, 6, 5],
        ["../audio/c1.wav", "dev", "s3", "F", "N", 4, 4, 4],
        ["../audio/c2.wav", "Validation", "s3", "F", "ANGRY", 9, 2, 5],
        ["../audio/d1.wav", "test", "s4", "M", "S", 2, 2, 3],
        ["../audio/u1.wav", "test", "", "", "", "", "", ""],
        ["../audio/u2.wav", "", "s1", "", "", "", "", ""],
    ]
    header = ["path", "partition", "speaker", "gender", "label", "act", "val", "dom"]
    return _write_table(root, header, rows)


def _names(partitions):
    return {p: [f.id for f in files] for p, files in partitions.items()}


def test_single_labels_give_partitions_manifest_and_report(tmp_path):
    root = tmp_path / "corpus"
    table = _single_label_corpus(root)
    assert _names(audio_partitions(root, layout="table", table=table)) == {
        "train": ["a1", "a2", "a3", "b1", "b2", "b3", "e1", "e2"],
        "development": ["c1", "c2"],
        "test_labelled": ["d1"],
        UNLABELLED: ["u1", "u2"],
    }
    manifest, report = _prepare(root, table, tmp_path / "out")
    assert list(manifest.columns) == manifest_columns(CLASSES.letters)
    rows = manifest.set_index("id")
    assert rows.loc["a1", "path"] == "audio/a1.wav"  # relative to data.root
    assert rows.loc["b3", "path"] == str(tmp_path / "elsewhere" / "b3.wav")  # kept absolute
    assert dict(rows["emo_class"]) == {
        "a1": "A", "a2": "H", "a3": "N", "b1": "S", "b2": "A", "b3": "H", "e1": "N", "e2": "H",
        "c1": "N", "c2": "A", "d1": "S",
    }  # fmt: skip
    np.testing.assert_array_equal(rows.loc["a2", ["A", "H", "N", "S"]], [0, 1, 0, 0])  # one-hot
    assert np.isnan(rows.loc["a2", "act"]) and rows.loc["a1", "val"] == 2
    assert np.isnan(rows.loc["c2", "act"])  # 9 is out of range: reported
    assert set(rows.loc[["c1", "c2"], "subset"]) == {"dev"} and rows.loc["d1", "subset"] == (
        "test_labelled"
    )
    train = set(rows.index[rows["subset"].isin(["train", "holdout"])])
    assert train == {"a1", "a2", "a3", "b1", "b2", "b3", "e1", "e2"}
    assert "holdout" in set(rows["subset"]) and rows.loc["e1", "gender"] == ""
    assert "u1" not in rows.index  # unlabelled: predicted, not in the manifest
    assert report.startswith("# Table data report\n")
    assert (
        "| subset | files | speakers | hours | with soft target | A | H | N | S | O | X |" in report
    )
    assert "| attribute out of range | 1 |" in report and "clips.csv:11: act='9'" in report
    # The unlabelled partition's clip table, as ASR and features read it.
    index = tmp_path / "u.tsv"
    write_audio_index(root, UNLABELLED, index, tmp_path / "u.md", layout="table", table=table)
    assert clip_paths(index, root) == [
        ("u1", str(root / "audio" / "u1.wav")),
        ("u2", str(root / "audio" / "u2.wav")),
    ]
    assert "test3" not in (tmp_path / "u.md").read_text()  # every unlabelled row is predicted


def _vote_rows() -> list[list]:
    """Clip x: A, A, N, Surprise (outside the set); clip y: H, S (a tie); clip z: one vote
    outside the set; clip w: unlabelled."""
    return [
        ["audio/x.wav", "train", "s1", "w1", "A"],
        ["audio/x.wav", "train", "s1", "w2", "angry"],
        ["audio/x.wav", "train", "s1", "w3", "N"],
        ["audio/x.wav", "train", "s1", "w4", "Surprise"],
        ["audio/y.wav", "train", "s2", "w1", "H"],
        ["audio/y.wav", "train", "s2", "w2", "Sad"],
        ["audio/y.wav", "train", "s2", "w2", "Happy"],  # the same annotator twice
        ["audio/z.wav", "development", "s3", "w1", "Bored"],
        ["audio/w.wav", "", "", "", ""],
    ]


def _check_votes(manifest, report: str, table_name: str, lines: dict) -> None:
    rows = manifest.set_index("id")
    np.testing.assert_allclose(rows.loc["x", ["A", "H", "N", "S"]], [2 / 3, 0, 1 / 3, 0])
    np.testing.assert_allclose(rows.loc["y", ["A", "H", "N", "S"]], [0, 0.5, 0, 0.5])
    assert rows.loc["z", ["A", "H", "N", "S"]].isna().all()
    assert dict(rows["emo_class"]) == {"x": "A", "y": "X", "z": "O"}
    for label, line in lines.items():
        assert f"{table_name}:{line}: {label!r}" in report, (label, report)
    assert "| label outside the class set | 2 |" in report


def test_one_row_per_vote(tmp_path):
    root = tmp_path / "corpus"
    header = ["path", "partition", "speaker", "annotator", "label"]
    table = _write_table(root, header, _vote_rows(), name="votes.tsv")
    manifest, report = _prepare(root, table, tmp_path / "out")
    _check_votes(manifest, report, "votes.tsv", {"Surprise": 5, "Bored": 9})
    assert "| duplicate annotator row | 1 |" in report and "votes.tsv:8: y w2" in report
    assert "labels and votes: 7" in report  # the repeated vote is not counted


def test_a_votes_column(tmp_path):
    root = tmp_path / "corpus"
    rows = [
        ["audio/x.wav", "train", "s1", "A; angry;N;Surprise;"],
        ["audio/y.wav", "train", "s2", "H;Sad"],
        ["audio/z.wav", "development", "s3", "Bored"],
        ["audio/w.wav", "", "", ""],
    ]
    table = _write_table(root, ["path", "partition", "speaker", "votes"], rows)
    manifest, report = _prepare(root, table, tmp_path / "out")
    _check_votes(manifest, report, "clips.csv", {"Surprise": 2, "Bored": 4})


def test_the_rows_of_one_clip_must_agree(tmp_path):
    root = tmp_path / "corpus"
    rows = _vote_rows()
    rows[2][2] = "s9"  # another speaker on x's third vote
    table = _write_table(root, ["path", "partition", "speaker", "annotator", "label"], rows)
    with pytest.raises(TableError, match=r"clips\.csv:4: the rows of clip 'x' \(lines 2 and 4\) "
                       r"disagree: speaker 's1' vs 's9'"):  # fmt: skip
        read_table(root, table)


HEADER = ["path", "partition", "speaker", "label"]


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (["path", "speaker", "label"], [["a.wav", "s1", "A"]],
         r"clips\.csv:1: missing column\(s\) \['partition'\]; found \['path', 'speaker', 'label'\]"),
        (["path", "partition", "speaker"], [["a.wav", "train", "s1"]], r"clips\.csv:1: no label column"),
        (HEADER, [["a.wav", "train", "s1", "A"], [" ", "train", "s1", "A"]], r"clips\.csv:3: empty path"),
        (HEADER, [["a.wav", "train", "s1", "A"], ["x/a.wav", "test", "s1", "A"]],
         r"clips\.csv:3: id 'a' appears twice \(first at line 2\)"),
        (HEADER, [["a.wav", "train", "s1", "A"], ["b.wav", "holdout", "s2", "A"]],
         r"clips\.csv:3: partition 'holdout' of a labelled row is not train"),
        (HEADER, [["a.wav", "train", "s1", "A"], ["b.wav", "0", "s2", "A"]],
         r"clips\.csv:3: partition '0' of a labelled row"),
        (HEADER, [["a.wav", "train", "s1", "A"], ["b.wav", "", "s2", ""], ["c.wav", "2", "s3", "A"]],
         r"clips\.csv:4: partition '2' mixes the two styles \(line 2 uses train/development/test\)"),
    ],
)  # fmt: skip
def test_bad_tables_name_the_file_and_line(tmp_path, header, rows, message):
    root = tmp_path / "corpus"
    table = _write_table(root, header, rows)
    with pytest.raises(TableError, match=message):
        read_table(root, table)
    with pytest.raises(TableError, match=message):  # at every parse of the workflow
        corpus_fingerprints(root, tmp_path / "cache.tsv", layout="table", table=table)


def test_a_missing_table_is_named(tmp_path):
    with pytest.raises(TableError, match=r"corpus/nope\.csv: table not found"):
        read_table(tmp_path / "corpus", "nope.csv")
    with pytest.raises(TableError, match=r"data\.table: 'clips\.txt' must end in \.csv or \.tsv"):
        read_table(tmp_path / "corpus", "clips.txt")


def test_a_speaker_in_two_partitions_is_an_error(tmp_path):
    root = tmp_path / "corpus"
    rows = [
        ["a.wav", "train", "s1", "A"],
        ["b.wav", "train", "s2", "A"],
        ["c.wav", "test", "s1", "H"],
        ["d.wav", "development", "Unknown", "N"],  # unknown speakers may be anywhere
        ["e.wav", "train", "", "N"],
        ["f.wav", "dev", "s2", "N"],
        ["g.wav", "", "s1", ""],  # unlabelled rows are not a partition
    ]
    table = _write_table(root, HEADER, rows)
    message = (
        r"clips\.csv: 2 speaker\(s\) in more than one partition: 's1' in train \(line 2\), "
        r"test \(line 4\); 's2' in train \(line 3\), development \(line 7\); partitions must "
        r"be speaker-independent"
    )
    with pytest.raises(TableError, match=message):
        audio_partitions(root, layout="table", table=table)
    with pytest.raises(TableError, match=message):
        build_table_manifest(root, [], table, classes=CLASSES)


def test_unknown_labels_and_missing_audio_are_reported(tmp_path):
    root = tmp_path / "corpus"
    rows = [
        ["a.wav", "train", "s1", "A"],
        ["b.wav", "train", "s1", "Surprise"],  # a class of no set here
        ["missing1.wav", "train", "s2", "H"],
        ["c.wav", "train", "s2", "h"],  # a code is exact: "h" is no code (names any case)
        ["d.wav", "test", "s3", "N"],
        ["missing2.wav", "", "", ""],
    ]
    table = _write_table(root, HEADER, rows)
    manifest, report = _prepare(root, table, tmp_path / "out")
    rows = manifest.set_index("id")
    assert "missing1" not in rows.index  # excluded
    assert rows.loc["b", "emo_class"] == "O" and rows.loc["b", ["A", "H", "N", "S"]].isna().all()
    assert "| label outside the class set | 2 |" in report
    assert "clips.csv:3: 'Surprise'; clips.csv:5: 'h'" in report
    assert "| missing audio | 1 |" in report and "missing1.wav (clips.csv:4)" in report
    assert "| missing unlabelled audio | 1 |" in report and "missing2.wav (clips.csv:7)" in report


def _fold_corpus(root: Path) -> str:
    """Three speaker folds of two speakers each, and an unlabelled clip."""
    rows = []
    for fold in (1, 2, 3):
        for speaker in (f"f{fold}a", f"f{fold}b"):
            for i, label in enumerate("AHNS"):
                rows.append(
                    [f"{speaker}_{i}", f"wav/{speaker}_{i}.wav", f"0{fold}", speaker, label]
                )
    rows.append(["u", "wav/u.wav", "", "", ""])
    return _write_table(root, ["id", "path", "partition", "speaker", "label"], rows)


def test_folds_change_the_manifest_not_the_audio_partitions(tmp_path):
    root = tmp_path / "corpus"
    table = _fold_corpus(root)
    cache = tmp_path / "cache.tsv"
    state = corpus_fingerprints(root, cache, layout="table", table=table)
    assert state.folds == ("1", "2", "3") and sorted(state.partitions) == ["labelled", UNLABELLED]
    assert list(state.labels) == [table]
    manifests = {}
    for fold in ("2", 3):
        manifest, report = _prepare(root, table, tmp_path / f"fold{fold}", fold=fold)
        manifests[str(fold)] = manifest.set_index("id")
        assert f"held out (data.fold): {fold}, the `dev` subset" in report
        # The audio partitions do not depend on the fold: features are extracted once.
        assert corpus_fingerprints(root, cache, layout="table", table=table) == state
    for fold, rows in manifests.items():
        dev = set(rows.loc[rows["subset"] == "dev", "speaker"])
        assert dev == {f"f{fold}a", f"f{fold}b"}
        assert set(rows["subset"]) == {"train", "holdout", "dev"}
        assert set(rows.loc[rows["subset"] == "holdout", "speaker"]).isdisjoint(
            rows.loc[rows["subset"] == "train", "speaker"]
        )
        assert set(rows.index) == set(manifests["2"].index)  # every labelled clip, each time
    assert [partition_of_subset(s, folds=True) for s in ("train", "holdout", "meta", "dev", "test")] == [
        "labelled", "labelled", "labelled", "labelled", UNLABELLED,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("fold", "message"),
    [
        (None, r"data\.fold: the table 'lists/clips\.csv' has folds 1, 2, 3: set data\.fold"),
        (4, r"data\.fold: 4 is not a fold of the table 'lists/clips\.csv' \(folds: 1, 2, 3\)"),
    ],
)
def test_data_fold_must_name_a_fold_of_a_fold_table(tmp_path, fold, message):
    root = tmp_path / "corpus"
    table = _fold_corpus(root)
    with pytest.raises(TableError, match=message):
        build_table_manifest(root, labelled_audio_indexes(root, layout="table", table=table),
                             table, fold, classes=CLASSES)  # fmt: skip


def test_data_fold_on_a_split_table_is_an_error(tmp_path):
    root = tmp_path / "corpus"
    table = _single_label_corpus(root)
    with pytest.raises(TableError, match=r"data\.fold: '1' is set, but the table .* has no folds"):
        build_table_manifest(root, [], table, "1", classes=CLASSES)


def test_table_partitions_follow_paths_partitions_and_labelledness_only(tmp_path):
    root = tmp_path / "corpus"
    table = _single_label_corpus(root)
    cache = tmp_path / "cache.tsv"
    before = corpus_fingerprints(root, cache, layout="table", table=table)
    path = root / table
    text = path.read_text()
    path.write_text(text.replace(",happy,", ",Sad,").replace(",s5,", ",s6,"))  # labels, speakers
    after = corpus_fingerprints(root, cache, layout="table", table=table)
    assert after.partitions == before.partitions and after.labels != before.labels
    path.write_text(text.replace("../audio/u2.wav,,s1,,", "../audio/u2.wav,train,s1,,A"))
    labelled = corpus_fingerprints(root, cache, layout="table", table=table).partitions
    assert {p for p in labelled if labelled[p] != before.partitions[p]} == {"train", UNLABELLED}


def test_the_prepare_rule_on_a_fold_table(tmp_path):
    """Through Snakemake, as a user runs it: each data.fold gets its own manifest with the
    configured classes, over audio indexed once; a speaker in two folds stops the parse."""
    root = tmp_path / "corpus"
    table = _fold_corpus(root)
    work = tmp_path / "work"
    work.mkdir()
    classes = [{code: name} for code, name in zip(CLASSES.letters, CLASSES.names, strict=True)]

    def run(fold):
        data = {"root": str(root), "layout": "table", "table": table, "fold": fold}
        target = f"results/fold{fold}/data/manifest.tsv"
        config = {"data": data | {"holdout_fraction": 0.3}, "classes": classes}
        return run_snakemake(work, "--cores", "1", target, config=config)

    assert (first := run(2)).returncode == 0, first.stderr[-3000:]
    index = work / "results/audio/labelled.tsv"  # every fold's clips, indexed once
    indexed = index.stat().st_mtime_ns
    assert (second := run(3)).returncode == 0, second.stderr[-3000:]
    assert index.stat().st_mtime_ns == indexed
    for fold in (2, 3):
        manifest = read_manifest(work / f"results/fold{fold}/data/manifest.tsv")
        assert list(manifest.columns) == manifest_columns(CLASSES.letters)
        dev = set(manifest.loc[manifest["subset"] == "dev", "speaker"])
        assert dev == {f"f{fold}a", f"f{fold}b"}
    path = root / table
    path.write_text(path.read_text().replace(",f3a,", ",f1a,", 1))  # f1a now in folds 1, 3
    failed = run(2)
    assert failed.returncode != 0
    assert "speaker(s) in more than one partition: 'f1a' in 1 (line 2), 3 (line 18)" in (
        failed.stderr
    )
