"""Evidence beyond the clean dev set (rule `evidence`, src/medusa/evidence.py): the document
from small hand-written tables, and, on one shared copy of the completed CI-sized run, the
`robustness`, `cross_corpus` and `evidence` targets built in one Snakemake call."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from test_cross_corpus import write_table
from test_robustness import CI_ROBUSTNESS, KEPT

from medusa import cli
from medusa.core.emotions import MSP_PODCAST_CLASSES
from medusa.core.manifest import consensus_labels, read_manifest
from medusa.corpus.audio_index import read_audio_index
from medusa.evaluation.conditions import CLEAN
from medusa.evaluation.evidence import (
    TITLE,
    EvidenceError,
    compose_evidence,
    corpora_of,
    overlap,
    write_evidence,
)
from medusa.evaluation.robustness import SYSTEMS
from medusa.evaluation.stats import interval_text as interval

from workflow_runner import CI_CONFIGS, REPO, dry_run_jobs, run_snakemake

SECTIONS = ("## Robustness (Table R)", "## Calibration (Table C)", "## Cross-corpus")


# --------------------------------------------------------------------------------------------
# The document from hand-written tables


def _table_r(rows):
    """Table R rows (condition, system, model, macro_f1, delta, delta low, delta high)."""
    columns = ["condition", "system", "model", "macro_f1", "delta_macro_f1",
               "delta_macro_f1_low", "delta_macro_f1_high"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


BEST_M, VOTE, SOUP = SYSTEMS
TABLE_R = _table_r(
    [
        ("clean", BEST_M, "m05", 0.50, None, None, None),
        ("clean", VOTE, None, 0.52, None, None, None),
        ("clean", SOUP, None, 0.55, None, None, None),
        # Noise: the soup loses less, intervals overlap.
        ("noise", BEST_M, "m05", 0.40, -0.10, -0.20, -0.02),
        ("noise", VOTE, None, 0.45, -0.07, -0.15, 0.00),
        ("noise", SOUP, None, 0.50, -0.05, -0.12, 0.01),
        # Telephone: the soup loses more, intervals apart.
        ("telephone", BEST_M, "m05", 0.48, -0.02, -0.04, 0.00),
        ("telephone", VOTE, None, 0.40, -0.12, -0.20, -0.05),
        ("telephone", SOUP, None, 0.25, -0.30, -0.40, -0.20),
    ]
)
TABLE_C = pd.DataFrame(
    [
        ("m05", None, 40, 4, 0.20, 0.10, 0.30, 0.70, 0.60, 0.80, 1.50, 1.20, 1.80, ""),
        ("Soft voting", None, 40, 4, 0.15, 0.08, 0.25, 0.65, 0.55, 0.75, 1.40, 1.10, 1.70, ""),
        ("Meta-classifier (soup)", None, 40, 4, 0.05, 0.01, 0.09, 0.60, 0.50, 0.70, 1.30,
         1.25, 1.35, ""),
        ("Meta-classifier (soup), temperature-scaled", 1.234, 40, 4, 0.04, 0.01, 0.08, 0.59,
         0.49, 0.69, 1.28, 1.20, 1.36, "T = 1.234, fitted"),
    ],
    columns=["system", "temperature", "clips", "bins", "ece", "ece_low", "ece_high", "brier",
             "brier_low", "brier_high", "nll", "nll_low", "nll_high", "note"],
)  # fmt: skip
TABLE1 = pd.DataFrame(
    [
        ("m05", "", 0.50, 0.40, 0.60),
        ("Top DeepSER", "m05 (best class-balanced holdout F1)", 0.50, 0.40, 0.60),
        ("MEDUSA (soup)", "meta-classifier soup of 2 seeds", 0.55, 0.45, 0.65),
    ],
    columns=["model", "note", "dev_macro_f1", "dev_macro_f1_low", "dev_macro_f1_high"],
)
METRICS = pd.DataFrame(
    [
        ("macro_f1", 0.30, 0.20, 0.41, 90),
        ("unweighted_average_recall", 0.33, 0.25, 0.44, 90),
        ("accuracy", 0.35, 0.28, 0.47, 90),
        ("ccc_act", 0.12, -0.05, 0.30, 60),
    ],
    columns=["figure", "value", "low", "high", "clips"],
)
TABLE_R_MARKDOWN = "# Table R: robustness\n\n| condition | system |\n|---|---|\n| noise | soup |\n"


def _tsv(table: pd.DataFrame, path):
    table.to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture
def tables(tmp_path):
    """The hand-written tables as the workflow writes them, and one evaluation corpus."""
    corpus = tmp_path / "results/cross_corpus/iemocap"
    corpus.mkdir(parents=True)
    _tsv(METRICS, corpus / "metrics.tsv")
    excluded = [("c1", "no label maps to a class: fru"), ("c2", "votes tie after mapping: {}"),
                ("c3", "no label maps to a class: oth")]  # fmt: skip
    _tsv(pd.DataFrame(excluded, columns=["id", "reason"]), corpus / "excluded.tsv")
    _tsv(
        pd.DataFrame([("fru", 3), ("oth", 1)], columns=["label", "votes"]), corpus / "unmapped.tsv"
    )
    (tmp_path / "robustness.md").write_text(TABLE_R_MARKDOWN)
    return {
        "robustness_tsv": _tsv(TABLE_R, tmp_path / "robustness.tsv"),
        "robustness_md": tmp_path / "robustness.md",
        "calibration_tsv": _tsv(TABLE_C, tmp_path / "calibration.tsv"),
        "table1_tsv": _tsv(TABLE1, tmp_path / "table1.tsv"),
        "corpora": {"iemocap": corpus},
    }


def test_the_document_has_each_section_with_what_it_does_not_show(tables):
    text = compose_evidence(**tables)
    assert text.startswith(TITLE + "\n")
    positions = [text.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert text.count("**What it does not show:**") == 3
    # Table R as the rule wrote it, its heading a subsection of the document.
    assert "### Table R: robustness" in text and "| noise | soup |" in text
    assert "synthetic" in text and "not show calibration" not in text


def test_the_soup_is_compared_with_the_best_model_from_table_r(tables):
    text = compose_evidence(**tables)
    noise = next(line for line in text.splitlines() if line.startswith("- `noise`"))
    assert "soup -0.050 [-0.120, +0.010]" in noise.replace("of the soup ", "soup ")
    assert "(m05) -0.100 [-0.200, -0.020]" in noise
    assert "change is above the best model's; the intervals overlap" in noise
    phone = next(line for line in text.splitlines() if line.startswith("- `telephone`"))
    assert "change is below the best model's; the intervals do not overlap" in phone
    assert (
        "gained more) under 1 of 2 condition(s); the two changes' intervals do not overlap under 1 of 2"
        in text
    )


def test_calibration_compares_the_soup_with_the_best_model_and_after_scaling(tables):
    text = compose_evidence(**tables)
    assert "| m05 (best single model) |  | 0.200 [0.100, 0.300] |" in text
    assert "| Meta-classifier (soup), temperature-scaled | 1.234 | 0.040 [0.010, 0.080] |" in text
    line = next(x for x in text.splitlines() if x.startswith("- The soup (ECE"))
    assert "against the best single model m05 (ECE 0.200 [0.100, 0.300], NLL 1.500" in line
    assert (
        "ECE lower (better), the intervals do not overlap; NLL lower (better), the intervals overlap."
        in line
    )
    scaled = next(x for x in text.splitlines() if "after temperature scaling (T = 1.234)" in x)
    assert "against the soup before (ECE 0.050" in scaled
    assert (
        "ECE lower (better), the intervals overlap; NLL lower (better), the intervals overlap."
        in scaled
    )
    assert "Dev clips scored: 40; ECE over 4 equal-mass bin(s)" in text


def test_each_corpus_gets_its_figures_clip_counts_and_unmapped_labels(tables):
    text = compose_evidence(**tables)
    section = text[text.index("## Cross-corpus") :]
    assert "### `iemocap`" in section
    assert "| macro-F1 | 0.300 [0.200, 0.410] | 90 |" in section
    assert "| UAR (mean per-class recall) | 0.330 [0.250, 0.440] | 90 |" in section
    assert "| CCC arousal | 0.120 [-0.050, 0.300] | 60 |" in section
    assert "CCC valence" not in section  # the corpus rates no valence
    assert "left out: 3 (no label maps to a class: 2; votes tie after mapping: 1)" in section
    assert "fru (3 votes), oth (1 vote)" in section
    assert (
        "is lower than on the clean dev set of the training corpus, 0.550 [0.450, 0.650]" in section
    )
    assert "(-0.250); the intervals do not overlap" in section


def test_no_configured_corpus_is_said_and_a_missing_table_is_named(tables, tmp_path):
    text = compose_evidence(**{**tables, "corpora": {}})
    assert "No evaluation corpus is configured under `cross_corpus:`" in text
    (tables["corpora"]["iemocap"] / "unmapped.tsv").unlink()
    with pytest.raises(EvidenceError, match="iemocap/unmapped.tsv: not found"):
        compose_evidence(**tables)
    TABLE_R.drop(columns="delta_macro_f1").to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    with pytest.raises(EvidenceError, match=r"bad.tsv: missing column\(s\) \['delta_macro_f1'\]"):
        compose_evidence(**{**tables, "robustness_tsv": tmp_path / "bad.tsv"})


def test_written_atomically_and_corpora_found_from_their_metrics(tables, tmp_path):
    metrics = [tables["corpora"]["iemocap"] / "metrics.tsv"]
    assert corpora_of(metrics) == {"iemocap": tables["corpora"]["iemocap"]}
    with pytest.raises(EvidenceError, match="not a cross_corpus/<corpus>/metrics.tsv"):
        corpora_of([tmp_path / "metrics.tsv"])
    args = {k: v for k, v in tables.items() if k != "corpora"}
    text = write_evidence(**args, cross_corpus_metrics=metrics, out=tmp_path / "e/evidence.md")
    assert (tmp_path / "e/evidence.md").read_text() == text
    assert [p.name for p in (tmp_path / "e").iterdir()] == ["evidence.md"]


def test_intervals_and_overlap():
    assert interval(0.5, 0.4, 0.6) == "0.500 [0.400, 0.600]"
    assert interval(-0.05, -0.1, 0.0, signed=True) == "-0.050 [-0.100, +0.000]"
    assert interval(float("nan"), 0, 1) == "n/a"
    assert overlap((0, 1), (1, 2)) and not overlap((0, 1), (1.01, 2))


# --------------------------------------------------------------------------------------------
# Through Snakemake, on one shared copy of the completed CI-sized run

# The table-layout demo corpus (the cross-corpus evaluation corpus of config/demo.yaml) is
# generated with the table demo's config files.
TABLE_CONFIGS = [
    REPO / "config/demo.yaml",
    REPO / "config/demo_table.yaml",
    REPO / "tests/config/ci.yaml",
    REPO / "tests/config/ci_table.yaml",
]
CHAIN_RULES = (
    "robustness_perturb",
    "robustness_asr",
    "robustness_features",
    "robustness_posteriors",
)


@pytest.fixture(scope="module")
def evidence_run(completed_ci_run, tmp_path_factory):
    """A copy of the CI run with its bundle and the CI-sized table corpus, on which
    `robustness cross_corpus evidence` ran in one Snakemake call: (workdir, that run)."""
    workdir = tmp_path_factory.mktemp("evidence") / "run"
    shutil.copytree(completed_ci_run, workdir, symlinks=True)
    table = run_snakemake(workdir, "demo_table_corpus", "--cores", "1", configfiles=TABLE_CONFIGS)
    assert table.returncode == 0, table.stderr[-3000:]
    bundle = run_snakemake(workdir, "bundle", "--cores", "2", configfiles=CI_CONFIGS)
    assert bundle.returncode == 0, bundle.stdout[-3000:] + bundle.stderr[-3000:]
    run = run_snakemake(
        workdir, "robustness", "cross_corpus", "evidence", "--cores", "2", "--resources",
        "gpu=1", configfiles=CI_CONFIGS, config=CI_ROBUSTNESS, timeout=2400,
    )  # fmt: skip
    return workdir, run


def test_robustness_target_builds_table_r_and_reruns_only_an_edited_condition(evidence_run):
    run_copy, run = evidence_run
    # `soup` never plans a robustness job, even forced from scratch.
    forced = dry_run_jobs(run_copy, "soup", "--forceall", config=CI_ROBUSTNESS)
    assert forced and not [rule for rule, _ in forced if rule.startswith("robustness")]

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    table = pd.read_csv(run_copy / "results/report/robustness.tsv", sep="\t")
    assert list(zip(table["condition"], table["system"], strict=True)) == [
        (c, s) for c in (CLEAN, *KEPT) for s in SYSTEMS
    ]
    assert (run_copy / "results/report/robustness.md").read_text().count("| babble_snr20 |") == 3
    _check_clean_rows_equal_the_report(run_copy, table)
    perturbed = table[table["condition"] != CLEAN]
    clean_rows = table[table["condition"] == CLEAN].set_index("system")
    for figure in ("macro_f1", "act_ccc"):
        delta = perturbed[f"delta_{figure}"].to_numpy()
        # The paired change is the condition's figure minus the same system's clean figure.
        before = clean_rows.loc[perturbed["system"], figure].to_numpy()
        assert delta == pytest.approx(perturbed[figure].to_numpy() - before, abs=1e-5)
        assert (perturbed[f"delta_{figure}_low"] <= delta + 1e-12).all()
        assert (delta <= perturbed[f"delta_{figure}_high"] + 1e-12).all()
    # The perturbed audio differs from the corpus's, clip for clip.
    index = read_audio_index(run_copy / "results/robustness/noise_pink_snr10/audio/development.tsv")
    clean_index = read_audio_index(run_copy / "results/audio/development.tsv")
    assert sorted(index["id"]) == sorted(clean_index.loc[clean_index["problem"] == "", "id"])
    clip = index.iloc[0]
    noisy, _ = sf.read(
        run_copy / "results/robustness/noise_pink_snr10/audio/development" / clip["path"]
    )
    source = clean_index.set_index("id").loc[clip["id"], "path"]
    clean, _ = sf.read(run_copy / "resources/demo/msp-podcast" / source)
    assert len(noisy) == len(clean) and not np.allclose(noisy, clean, atol=1e-3)

    # Nothing left to do; editing one condition reruns its chain only, then Table R.
    assert dry_run_jobs(run_copy, "robustness", "soup", config=CI_ROBUSTNESS) == []
    edited = json.loads(json.dumps(CI_ROBUSTNESS))
    edited["robustness"]["conditions"]["noise_pink_snr10"] = {"snr_db": 5}
    jobs = dry_run_jobs(run_copy, "robustness", config=edited)
    chain = {rule for rule, wildcards in jobs if "condition=noise_pink_snr10" in wildcards}
    assert chain == set(CHAIN_RULES)
    assert not [job for job in jobs if "babble_snr20" in job[1]]
    assert {rule for rule, _ in jobs} == {*CHAIN_RULES, "robustness_table", "robustness"}


def _check_clean_rows_equal_the_report(workdir, table):
    """The clean soup row is the report's dev figures for the soup (same clips, resamples)."""
    report = workdir / "results/report"
    soup = table[(table["condition"] == CLEAN) & (table["system"] == "MEDUSA (soup)")].iloc[0]
    table1 = pd.read_csv(report / "table1.tsv", sep="\t").set_index("model")
    for column in ("macro_f1", "macro_f1_low", "macro_f1_high"):
        assert soup[column] == pytest.approx(table1.loc["MEDUSA (soup)", f"dev_{column}"], abs=1e-4)
    attributes = pd.read_csv(report / "attributes.tsv", sep="\t").set_index("system")
    for attribute in ("act", "val", "dom"):
        for suffix in ("ccc", "low", "high"):
            ours = soup[f"{attribute}_ccc" + ("" if suffix == "ccc" else f"_{suffix}")]
            theirs = attributes.loc["MEDUSA (soup)", f"{attribute}_{suffix}"]
            assert ours == pytest.approx(theirs, abs=1e-4)
    best = table[(table["condition"] == CLEAN) & (table["system"] == "best single model")].iloc[0]
    top = table1.loc["Top DeepSER"]
    assert best["model"] in top["note"]
    assert best["macro_f1"] == pytest.approx(top["dev_macro_f1"], abs=1e-4)


def test_snakemake_cross_corpus_scores_the_bundle_on_the_table_corpus(evidence_run):
    evaluation_run, run = evidence_run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    out = evaluation_run / "results/cross_corpus/crema_like"
    metrics = pd.read_csv(out / "metrics.tsv", sep="\t").set_index("figure")
    table = pd.read_csv(evaluation_run / "resources/demo/table-corpus/clips.csv")
    labelled = table["label"].notna().sum()
    assert metrics.loc["macro_f1", "clips"] == labelled  # the six codes are MSP-Podcast's
    assert {"unweighted_average_recall", "accuracy", "ccc_act"} <= set(metrics.index)
    assert (metrics["low"] <= metrics["value"] + 1e-9).all()
    assert (metrics["value"] <= metrics["high"] + 1e-9).all()
    confusion = pd.read_csv(out / "confusion.tsv", sep="\t", index_col=0)
    assert list(confusion.columns) == list(MSP_PODCAST_CLASSES.letters)
    assert confusion.to_numpy().sum() == labelled
    assert set(pd.read_csv(out / "per_gender.tsv", sep="\t")["gender"]) == {"Female", "Male"}


def test_evaluate_reproduces_the_workflow_dev_metrics_on_the_dev_clips(evidence_run, tmp_path):
    """The dev clips written as a table and scored with the bundle give the report's figure."""
    evaluation_run, _ = evidence_run
    manifest = read_manifest(evaluation_run / "results/data/manifest.tsv")
    dev = manifest[manifest["subset"] == "dev"]
    scored, _ = consensus_labels(dev["emo_class"])
    dev = dev[scored]
    corpus = evaluation_run / "resources/demo/msp-podcast"
    rows = [
        (str(corpus / r.path), "development", r.speaker, r.gender, r.emo_class)
        for r in dev.itertuples()
    ]
    write_table(tmp_path / "dev.csv", rows, ("path", "partition", "speaker", "gender", "label"))
    bundle = str(evaluation_run / "results/bundle")
    args = ["--bundle", bundle, "--backbone-root", str(evaluation_run), "--resamples", "200"]
    assert (
        cli.main(["evaluate", *args, "-o", str(tmp_path / "out"), str(tmp_path / "dev.csv")]) == 0
    )
    metrics = pd.read_csv(tmp_path / "out/metrics.tsv", sep="\t").set_index("figure")
    table1 = pd.read_csv(evaluation_run / "results/report/table1.tsv", sep="\t")
    soup = table1.set_index("model").loc["MEDUSA (soup)"]
    assert metrics.loc["macro_f1", "clips"] == len(dev)
    assert metrics.loc["macro_f1", "value"] == pytest.approx(soup["dev_macro_f1"], abs=1e-3)
    assert metrics.loc["accuracy", "value"] == pytest.approx(soup["dev_accuracy"], abs=1e-3)


def test_snakemake_evidence_shows_the_three_tables_numbers(evidence_run):
    workdir, run = evidence_run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    report = workdir / "results/report"
    text = (report / "evidence.md").read_text()
    positions = [text.index(section) for section in SECTIONS]
    assert positions == sorted(positions) and text.count("**What it does not show:**") == 3
    # Table R: its Markdown and each condition's paired changes, soup and best model.
    table_r = pd.read_csv(report / "robustness.tsv", sep="\t")
    assert "| babble_snr20 |" in text and text.count("| babble_snr20 |") == 3
    for condition in KEPT:
        rows = table_r[table_r["condition"] == condition].set_index("system")
        line = next(x for x in text.splitlines() if x.startswith(f"- `{condition}`"))
        for system in ("MEDUSA (soup)", "best single model"):
            row = rows.loc[system]
            low, high = row["delta_macro_f1_low"], row["delta_macro_f1_high"]
            assert interval(row["delta_macro_f1"], low, high, signed=True) in line
        deltas = rows["delta_macro_f1"]
        diff = np.sign(round(deltas["MEDUSA (soup)"] - deltas["best single model"], 3))
        relation = {1: "above", -1: "below", 0: "level with"}[int(diff)]
        assert f"change is {relation} the best model's" in line
    # Table C: every system's ECE, Brier and NLL with intervals.
    table_c = pd.read_csv(report / "calibration.tsv", sep="\t")
    for row in table_c.to_dict("records"):
        cells = [
            interval(row[k], row[f"{k}_low"], row[f"{k}_high"]) for k in ("ece", "brier", "nll")
        ]
        assert " | ".join(cells) in text
    # Cross-corpus: the demo table corpus's figures as metrics.tsv has them.
    metrics = pd.read_csv(workdir / "results/cross_corpus/crema_like/metrics.tsv", sep="\t")
    assert "### `crema_like`" in text
    for row in metrics.to_dict("records"):
        assert f"| {interval(row['value'], row['low'], row['high'])} | {row['clips']} |" in text
    # The headline names the target and the file without needing them.
    headline = (report / "headline.md").read_text()
    assert "`snakemake evidence`" in headline and "`results/report/evidence.md`" in headline
    # Not part of `soup`; in the HTML report with its caption, under its category.
    forced = dry_run_jobs(workdir, "soup", "--forceall", config=CI_ROBUSTNESS)
    assert forced and not [
        rule for rule, _ in forced if rule in ("evidence", "cross_corpus_evaluation")
    ]
    html = run_snakemake(
        workdir, "--report", "report.zip", "evidence",
        configfiles=CI_CONFIGS, config=CI_ROBUSTNESS,
    )  # fmt: skip
    assert html.returncode == 0, html.stdout[-3000:] + html.stderr[-5000:]
    names = zipfile.ZipFile(workdir / "report.zip").namelist()
    for name in ("evidence.md", "robustness.md", "calibration.tsv", "metrics.tsv", "summary.md"):
        assert any(n.endswith(name) for n in names), (name, names[:40])
