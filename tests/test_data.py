"""The data layer: EmoDetail parsing, soft targets, the speaker-disjoint split, `prepare`."""

import csv
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from medusa.core.emotions import MSP_PODCAST_CLASSES, ClassSet
from medusa.core.manifest import (
    MANIFEST_COLUMNS,
    ManifestError,
    consensus_labels,
    manifest_columns,
    read_manifest,
    subset_paths,
    write_manifest,
)
from medusa.corpus.audio_index import clip_paths, write_audio_index
from medusa.corpus.data_report import format_report
from medusa.corpus.labels import (
    DataError,
    Problems,
    Vote,
    normalise_primary,
    parse_emo_detail,
    read_detailed_votes,
    soft_targets,
)
from medusa.corpus.prepare import (
    build_manifest,
    labelled_audio_indexes,
    prepare,
    speaker_disjoint_holdout,
)
from medusa.corpus.table_layout import UNLABELLED
from medusa.evaluation.stats import group_codes

from workflow_runner import run_snakemake


def test_parse_emo_detail_with_quoted_secondaries():
    parsed = parse_emo_detail(
        "WORKER00014; Angry; Disgust,Contempt,Other-annoyed; A:5.0; V:2.0; D:6.0;"
    )
    assert parsed["worker"] == "WORKER00014"
    assert parsed["primary"] == "Angry"
    assert parsed["secondary"] == ["Disgust", "Contempt", "Other-annoyed"]
    assert (parsed["A"], parsed["V"], parsed["D"]) == (5.0, 2.0, 6.0)


def test_parse_emo_detail_empty_secondaries_and_other_primary():
    parsed = parse_emo_detail("WORKER7; Other-bored, a bit sleepy; ; A:3; V:4; D:2;")
    assert parsed["primary"] == "Other-bored, a bit sleepy"
    assert parsed["secondary"] == []
    assert normalise_primary(parsed["primary"]) == ("Other", True)


def test_parse_emo_detail_rejects_garbage():
    with pytest.raises(ValueError, match="ratings"):
        parse_emo_detail("WORKER1; Happy")


def test_normalise_primary_vocabulary():
    assert normalise_primary(" happy ") == ("H", True)
    assert normalise_primary("Contempt") == ("C", True)
    assert normalise_primary("Other") == ("Other", True)
    assert normalise_primary("Hapy") == ("Hapy", False)


def test_soft_targets_math():
    votes = [
        Vote("a.wav", "w1", "A", True),
        Vote("a.wav", "w2", "A", True),
        Vote("a.wav", "w3", "C", True),
        Vote("a.wav", "w4", "Other", True),  # Other counts for none
        Vote("b.wav", "w1", "Other", True),
        Vote("b.wav", "w2", "Other", True),
        Vote("c.wav", "w1", "Hapy", False),
        Vote("c.wav", "w2", "N", True),
    ]
    targets = soft_targets(votes)
    np.testing.assert_allclose(targets["a.wav"], [2 / 3, 0, 0, 0, 0, 0, 1 / 3, 0])
    assert targets["b.wav"] is None  # all votes Other: no soft target
    np.testing.assert_allclose(targets["c.wav"], [0, 0, 0, 0, 0, 0, 0, 1])


def test_a_vote_outside_the_vocabulary_is_reported_and_not_counted(tmp_path):
    """A bare letter (`N`) is not one of the 8 emotion names: the report lists it as an
    unknown label string, so the soft target must not count it either (docs/method.md 1.2)."""
    detailed = tmp_path / "labels_detailed.csv"
    _write_csv(
        detailed,
        ["FileName", "EmoDetail"],
        [
            ["x.wav", "WORKER1; Happy; ; A:4; V:4; D:4;"],
            ["x.wav", "WORKER2; N; ; A:4; V:4; D:4;"],
            ["x.wav", "WORKER3; Other-amused; ; A:4; V:4; D:4;"],
        ],
    )
    problems = Problems()
    targets = soft_targets(read_detailed_votes(detailed, problems))
    assert problems.items["unknown label string"] == ["labels_detailed.csv line 3: 'N'"]
    np.testing.assert_allclose(targets["x.wav"], [0, 0, 1, 0, 0, 0, 0, 0])  # H = 1


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_both_detailed_layouts_give_the_same_votes(tmp_path):
    string_layout = tmp_path / "string.csv"
    _write_csv(
        string_layout,
        ["FileName", "EmoDetail"],
        [
            ["x.wav", "WORKER1; Sad; Angry,Fear; A:2; V:2; D:3;"],
            ["x.wav", "WORKER2; Other-gloomy; ; A:2; V:3; D:3;"],
            ["x.wav", "WORKER3; Neutral; ; A:4; V:4; D:4;"],
        ],
    )
    columns_layout = tmp_path / "columns.csv"
    _write_csv(
        columns_layout,
        ["FileName", "WorkerID", "EmoClass_Major", "EmoClass_Second", "EmoAct", "EmoVal", "EmoDom"],
        [
            ["x.wav", "WORKER1", "Sad", "Angry,Fear", 2, 2, 3],
            ["x.wav", "WORKER2", "Other-gloomy", "", 2, 3, 3],
            ["x.wav", "WORKER3", "Neutral", "", 4, 4, 4],
        ],
    )
    a = read_detailed_votes(string_layout, Problems())
    b = read_detailed_votes(columns_layout, Problems())
    assert [(v.worker, v.primary) for v in a] == [(v.worker, v.primary) for v in b]
    np.testing.assert_allclose(soft_targets(a)["x.wav"], soft_targets(b)["x.wav"])


def test_unrecognised_detailed_layout_names_the_file(tmp_path):
    bad = tmp_path / "labels_detailed.csv"
    _write_csv(bad, ["FileName", "Something"], [["x.wav", "1"]])
    with pytest.raises(DataError, match="labels_detailed.csv"):
        read_detailed_votes(bad, Problems())


def test_speaker_disjoint_split_is_disjoint_stratified_and_seed_stable():
    rng = np.random.default_rng(0)
    speakers = pd.Series([str(s) for s in rng.integers(0, 60, 2000)])
    classes = pd.Series(
        rng.choice(
            list("ASHUFDCNXO"), 2000, p=[0.1, 0.09, 0.22, 0.04, 0.02, 0.02, 0.03, 0.38, 0.05, 0.05]
        )
    )
    held = speaker_disjoint_holdout(speakers, classes, 0.1, seed=3)
    assert set(speakers[held]).isdisjoint(set(speakers[~held]))
    assert 0.05 < held.mean() < 0.15
    # Stratified as well as whole speakers allow: class shares close to the full set's.
    full = classes.value_counts(normalize=True)
    part = classes[held].value_counts(normalize=True).reindex(full.index, fill_value=0)
    assert (full - part).abs().max() < 0.05
    np.testing.assert_array_equal(held, speaker_disjoint_holdout(speakers, classes, 0.1, seed=3))
    assert not np.array_equal(held, speaker_disjoint_holdout(speakers, classes, 0.1, seed=4))


def test_unknown_speakers_stay_in_train():
    speakers = pd.Series(["Unknown"] * 50 + [str(i % 10) for i in range(200)])
    classes = pd.Series(["N"] * 250)
    held = speaker_disjoint_holdout(speakers, classes, 0.2, seed=0)
    assert not held[:50].any()
    assert held.any()


def test_unknown_speaker_spellings_mean_the_same_to_the_split_and_the_bootstrap(tmp_path):
    """One rule (medusa.core.manifest.is_unknown): clips whose SpkrID is spelled `unknown`,
    `UNKNOWN`, `None` or blank are unknown speakers for the split (they stay in train, never
    moved to the holdout as one speaker) and for the bootstrap (each clip its own group); the
    manifest writes them `Unknown`, and an unknown gender empty."""
    spellings = ["unknown", "UNKNOWN", " None ", "", "nan", "Unknown"]
    speakers = pd.Series([spellings[i % 6] for i in range(60)] + ["a"] * 30 + ["b"] * 30)
    classes = pd.Series(["N"] * 120)
    for seed in range(10):
        held = speaker_disjoint_holdout(speakers, classes, 0.5, seed=seed)
        assert not held[:60].any(), seed
        assert held.any()
    assert len(set(group_codes(speakers[:60].to_numpy()))) == 60
    root = _corpus(tmp_path)
    labels = root / "Labels" / "labels_consensus.csv"
    consensus = pd.read_csv(labels, dtype=str, keep_default_na=False)
    first = consensus["SpkrID"] == "1"
    consensus.loc[first, ["SpkrID", "Gender"]] = ["unknown", "UNKNOWN"]
    consensus.to_csv(labels, index=False)
    manifest, _, _ = build_manifest(root, labelled_audio_indexes(root), 0.25, split_seed=1)
    rows = manifest[manifest["id"].isin(consensus.loc[first, "FileName"].str[:-4])]
    assert len(rows) > 1 and (rows["speaker"] == "Unknown").all()
    assert (rows["gender"] == "").all() and (rows["subset"] == "train").all()


def _corpus(tmp_path: Path) -> Path:
    """A small corpus with one of each problem `prepare` must report."""
    root = tmp_path / "corpus"
    audio = root / "Audios"
    audio.mkdir(parents=True)
    rng = np.random.default_rng(0)
    consensus, detailed = [], []
    speakers = [1, 2, 3, 4, 5, 6, 7, 8]
    for i in range(24):
        name = f"MSP-PODCAST_{i:04d}_0001.wav"
        speaker = speakers[i % len(speakers)]
        split = "Development" if speaker in (7, 8) else "Train"
        letter = "ASHUFDCN"[i % 8]
        label = ["Angry", "Sad", "Happy", "Surprise", "Fear", "Disgust", "Contempt", "Neutral"][
            i % 8
        ]
        consensus.append([name, letter, 4.0, 3.5, 4.5, speaker, "Female", split])
        for w in range(3):
            detailed.append([name, f"WORKER{w}; {label}; ; A:4; V:3; D:5;"])
        if name != "MSP-PODCAST_0003_0001.wav":  # its audio is missing
            sf.write(
                audio / name, rng.normal(0, 0.1, 16000).astype(np.float32), 16000, subtype="PCM_16"
            )
    # Stereo 44.1 kHz clip, an unreadable one, an unlabelled test3 clip, a short one.
    consensus.append(["MSP-PODCAST_0100_0001.wav", "H", 5, 6, 5, 1, "Male", "Train"])
    detailed.append(
        ["MSP-PODCAST_0100_0001.wav", "WORKER1; Happy; Surprise,Other-glad; A:5; V:6; D:5;"]
    )
    sf.write(
        audio / "MSP-PODCAST_0100_0001.wav", rng.normal(0, 0.1, (44100, 2)), 44100, subtype="PCM_16"
    )
    consensus.append(["MSP-PODCAST_0101_0001.wav", "N", 4, 4, 4, 2, "Male", "Train"])
    detailed.append(["MSP-PODCAST_0101_0001.wav", "WORKER1; Neutral; ; A:4; V:4; D:4;"])
    (audio / "MSP-PODCAST_0101_0001.wav").write_bytes(b"RIFF this is not a wav file")
    sf.write(
        audio / "MSP-PODCAST_test3_0001.wav", rng.normal(0, 0.1, 8000), 16000, subtype="PCM_16"
    )
    # All votes Other -> no soft target; attribute out of range; unknown label; duplicate row.
    consensus.append(["MSP-PODCAST_0102_0001.wav", "O", 9.5, 4, 4, 3, "Male", "Train"])
    detailed.append(["MSP-PODCAST_0102_0001.wav", "WORKER1; Other-bored; ; A:4; V:4; D:4;"])
    detailed.append(["MSP-PODCAST_0102_0001.wav", "WORKER2; Hapy; ; A:4; V:4; D:4;"])
    sf.write(audio / "MSP-PODCAST_0102_0001.wav", rng.normal(0, 0.1, 3200), 16000, subtype="PCM_16")
    consensus.append(consensus[0])
    _write_csv(
        root / "Labels" / "labels_consensus.csv",
        ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"],
        consensus,
    )
    _write_csv(root / "Labels" / "labels_detailed.csv", ["FileName", "EmoDetail"], detailed)
    return root


def clip_paths_of(root: Path, partition: str, tmp_path: Path) -> list[tuple[str, str]]:
    """The usable clips of one partition, through the written audio index."""
    index = tmp_path / f"{partition}.tsv"
    write_audio_index(root, partition, index, tmp_path / f"{partition}.md")
    return clip_paths(index, root)


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_build_manifest_reports_every_problem(tmp_path):
    root = _corpus(tmp_path)
    manifest, problems, _ = build_manifest(
        root, labelled_audio_indexes(root), holdout_fraction=0.25, split_seed=1, min_duration_s=0.5
    )
    assert list(manifest.columns) == MANIFEST_COLUMNS
    for kind in [
        "missing audio",
        "unreadable audio",
        "no 8-class vote",
        "unknown label string",
        "attribute out of range",
        "duplicate consensus row",
        "short audio",
        "resampled on read",
        "downmixed on read",
    ]:
        assert problems.count(kind) >= 1, kind
    assert problems.count("missing audio") == 1
    ids = set(manifest["id"])
    assert "MSP-PODCAST_0003_0001" not in ids  # missing audio
    assert "MSP-PODCAST_0101_0001" not in ids  # unreadable
    stereo = manifest.set_index("id").loc["MSP-PODCAST_0100_0001"]
    assert (stereo["sample_rate"], stereo["channels"]) == (44100, 2)
    # Unlabelled audio is its own partition, never in the manifest (medusa.corpus.partitions).
    assert "MSP-PODCAST_test3_0001" not in ids
    assert [i for i, _ in clip_paths_of(root, UNLABELLED, tmp_path)] == ["MSP-PODCAST_test3_0001"]
    other = manifest.set_index("id").loc["MSP-PODCAST_0102_0001"]
    assert np.isnan(other["A"]) and np.isnan(other["act"])
    assert set(manifest["subset"]) == {"train", "holdout", "dev"}
    train = set(manifest.loc[manifest.subset == "train", "speaker"])
    holdout = set(manifest.loc[manifest.subset == "holdout", "speaker"])
    assert train.isdisjoint(holdout)
    labelled = manifest[manifest["A"].notna()]
    np.testing.assert_allclose(labelled[list("ASHUFDCN")].sum(axis=1), 1.0)


def test_a_file_without_annotator_rows_is_not_reported_as_all_other(tmp_path):
    """A labelled file absent from labels_detailed.csv (a partial or mismatched file) is
    reported as such, not as a file whose votes were all Other or unknown."""
    root = _corpus(tmp_path)
    detailed = root / "Labels" / "labels_detailed.csv"
    lines = detailed.read_text().splitlines(keepends=True)
    detailed.write_text("".join(line for line in lines if "MSP-PODCAST_0005_0001" not in line))
    manifest, problems, _ = build_manifest(
        root, labelled_audio_indexes(root), holdout_fraction=0.25, split_seed=1
    )
    assert problems.items["no annotator rows"] == ["MSP-PODCAST_0005_0001.wav"]
    assert problems.items["no 8-class vote"] == ["MSP-PODCAST_0102_0001.wav"]  # all Other
    assert "no annotator rows" in format_report(manifest, problems, {"root": str(root),
        "audio_files": 0, "consensus_rows": 0, "annotator_votes": 0})  # fmt: skip
    assert np.isnan(manifest.set_index("id").loc["MSP-PODCAST_0005_0001", "A"])


def test_manifest_round_trip_keeps_strings_and_missing_values(tmp_path):
    root = _corpus(tmp_path)
    manifest, _, _ = build_manifest(
        root, labelled_audio_indexes(root), holdout_fraction=0.25, split_seed=1
    )
    write_manifest(manifest, tmp_path / "m.tsv")
    back = read_manifest(tmp_path / "m.tsv")
    pd.testing.assert_frame_equal(back, manifest, check_dtype=False)
    assert back.attrs["path"] == str(tmp_path / "m.tsv")
    assert set(back["emo_class"]) <= {*"ASHUFDCNOX", ""}  # "N" is Neutral, not a missing value
    assert back["sample_rate"].dtype.kind == "i" and back["A"].isna().any()
    dev = manifest[manifest["subset"] == "dev"]
    expected = list(zip(dev["id"], dev["path"], strict=True))
    assert subset_paths(tmp_path / "m.tsv", "dev") == expected


def test_manifest_errors_name_the_file_and_line(tmp_path):
    def write(*rows: dict | None) -> Path:
        """A manifest of rows {"id": "a", "path": "a.wav", "subset": "dev"} | row; None: blank."""
        cells = {c: "" for c in MANIFEST_COLUMNS} | {"id": "a", "path": "a.wav", "subset": "dev"}
        lines = ["\t".join(MANIFEST_COLUMNS)]
        for row in rows:
            lines.append("" if row is None else "\t".join((cells | row)[c] for c in cells))
        (tmp_path / "m.tsv").write_text("\n".join(lines) + "\n")
        return tmp_path / "m.tsv"

    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_manifest(tmp_path / "nope.tsv")
    (tmp_path / "m.tsv").write_text("id\tpath\tsubset\na\ta.wav\tdev\n")
    with pytest.raises(ManifestError, match=r"m\.tsv: missing column\(s\) \['speaker'"):
        read_manifest(tmp_path / "m.tsv")
    assert subset_paths(tmp_path / "m.tsv", "dev") == [("a", "a.wav")]  # needs no labels
    # Blank lines are skipped, but line numbers still count them.
    with pytest.raises(ManifestError, match=r"m\.tsv:4: id 'a' appears twice"):
        read_manifest(write({}, None, {}))
    with pytest.raises(ManifestError, match=r"m\.tsv:3: empty path"):
        read_manifest(write({}, {"id": "b", "path": " "}))
    with pytest.raises(ManifestError, match=r"m\.tsv:3: A of 'b' is not a number: 'x'"):
        read_manifest(write({}, {"id": "b", "A": "x"}))
    assert issubclass(ManifestError, ValueError)


def test_prepare_rule_writes_manifest_and_report_and_leaves_corpus_alone(tmp_path):
    root = _corpus(tmp_path)
    before = _tree_digest(root)
    work = tmp_path / "work"
    work.mkdir()
    run = run_snakemake(
        work,
        "--cores",
        "1",
        "results/data/manifest.tsv",
        config={"data": {"root": str(root), "holdout_fraction": 0.25}},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = read_manifest(work / "results/data/manifest.tsv")
    assert len(manifest) == 24 - 1 + 1 + 1  # one missing, stereo, all-Other file
    report = (work / "results/data/report.md").read_text()
    for kind in ["missing audio", "unreadable audio", "no 8-class vote", "unknown label string"]:
        assert kind in report
    assert "MSP-PODCAST_0003_0001.wav" in report
    assert _tree_digest(root) == before


def test_meta_subset_is_carved_from_the_holdout_by_speaker(tmp_path):
    """Held-out data used once per purpose: `meta` (trains the meta-classifier) shares no
    speaker with `holdout` (selects checkpoints) or `train`; 0 leaves no meta subset."""
    root = _corpus(tmp_path)
    indexes = labelled_audio_indexes(root)
    without, _, _ = build_manifest(root, indexes, holdout_fraction=0.7, split_seed=1)
    manifest, _, _ = build_manifest(
        root, indexes, holdout_fraction=0.7, split_seed=1, meta_fraction=0.5
    )
    assert "meta" not in set(without["subset"])
    speakers = {
        s: set(manifest.loc[manifest["subset"] == s, "speaker"]) for s in manifest["subset"]
    }
    assert speakers["meta"] and speakers["holdout"]
    assert speakers["meta"].isdisjoint(speakers["holdout"] | speakers.get("train", set()))
    # The meta clips come out of the held-out ones: train is unchanged.
    held = without["subset"] == "holdout"
    assert set(manifest.loc[manifest["subset"].isin(["holdout", "meta"]), "id"]) == set(
        without.loc[held, "id"]
    )


def test_a_four_class_set_on_the_msp_layout(tmp_path):
    """Votes and consensus classes outside the configured set are reported, soft targets
    count only the set's classes, and an outside consensus is kept as written, not scored."""
    root = _corpus(tmp_path)
    classes = ClassSet(("A", "S", "H", "N"), ("Angry", "Sad", "Happy", "Neutral"))
    manifest, problems, summary = build_manifest(
        root, labelled_audio_indexes(root), 0.25, split_seed=1, classes=classes
    )
    assert list(manifest.columns) == manifest_columns(("A", "S", "H", "N"))
    rows = manifest.set_index("id")
    # 0000 Angry, 0001 Sad, 0004 Fear (all 3 votes outside the set), 0100 Happy + a secondary.
    np.testing.assert_array_equal(
        rows.loc["MSP-PODCAST_0000_0001", ["A", "S", "H", "N"]], [1, 0, 0, 0]
    )
    np.testing.assert_array_equal(
        rows.loc["MSP-PODCAST_0100_0001", ["A", "S", "H", "N"]], [0, 0, 1, 0]
    )
    assert rows.loc["MSP-PODCAST_0004_0001", ["A", "S", "H", "N"]].isna().all()
    assert rows.loc["MSP-PODCAST_0004_0001", "emo_class"] == "F"  # kept as written
    scored, _ = consensus_labels(manifest["emo_class"], classes.letters)
    assert set(manifest.loc[scored, "emo_class"]) == {"A", "S", "H", "N"}
    labelled = manifest[manifest["A"].notna()]
    np.testing.assert_allclose(labelled[["A", "S", "H", "N"]].sum(axis=1), 1.0)
    # U F D C: 3 files each with 3 votes (0003 has no audio, but its labels are read).
    assert problems.count("vote outside the class set") == 4 * 3 * 3
    assert "labels_detailed.csv line 11: 'Surprise'" in problems.items["vote outside the class set"]
    outside = problems.items["consensus outside the class set"]
    assert len(outside) == 4 * 3 and "MSP-PODCAST_0004_0001.wav: EmoClass='F'" in outside
    assert "MSP-PODCAST_0102_0001.wav" in problems.items["no vote in the class set"]  # all Other
    assert problems.count("no 8-class vote") == 0
    report = format_report(manifest, problems, summary, classes=classes)
    assert "| with soft target | A | S | H | N | O | X |" in report
    assert "| vote outside the class set | 36 |" in report
    assert "Classes: A (Angry), S (Sad), H (Happy), N (Neutral)." in report


def test_a_class_code_naming_another_emotion_never_scores_msp_consensus_as_it(tmp_path):
    """Classes are matched by name: with A meaning "Anger", MSP-Podcast's A (Angry) is
    outside the set, and its consensus letter must not be scored as the set's A."""
    root = _corpus(tmp_path)
    classes = ClassSet(("A", "N"), ("Anger", "Neutral"))
    manifest, problems, _ = build_manifest(
        root, labelled_audio_indexes(root), 0.25, split_seed=1, classes=classes
    )
    rows = manifest.set_index("id")
    assert rows.loc["MSP-PODCAST_0000_0001", "emo_class"] == ""
    assert rows.loc["MSP-PODCAST_0000_0001", ["A", "N"]].isna().all()
    assert (
        "MSP-PODCAST_0000_0001.wav: EmoClass='A'"
        in problems.items["consensus outside the class set"]
    )


def test_prepare_reads_the_data_config_and_names_its_keys(tmp_path):
    root = _corpus(tmp_path)
    data = {"holdout_fraction": 0.25, "split_seed": 1, "min_duration_s": 0.5}
    data |= {"meta_fraction": 0.0, "layout": "msp_podcast", "table": "clips.csv", "fold": None}
    out = tmp_path / "out"

    def run(**changes):
        config = {k: v for k, v in (data | changes).items() if v != "absent"}
        return prepare(root, labelled_audio_indexes(root), out / "m.tsv", out / "r.md", config,
                       MSP_PODCAST_CLASSES)  # fmt: skip

    manifest = run()  # data.table is not read by the MSP-Podcast layout
    expected, _, _ = build_manifest(root, labelled_audio_indexes(root), 0.25, split_seed=1)
    pd.testing.assert_frame_equal(manifest, expected)
    with pytest.raises(DataError, match=r"data\.fold: 2 is only read with data\.layout: table"):
        run(fold=2)
    with pytest.raises(DataError, match=r"config: missing data\.layout"):
        run(layout="absent")
    with pytest.raises(DataError, match=r"data\.layout: 'iemocap' is not one of msp_podcast"):
        run(layout="iemocap")
