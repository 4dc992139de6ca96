"""Evidence beyond the clean dev set: one Markdown document (rule ``evidence``,
``results/report/evidence.md``) that puts the three checks the clean dev figures cannot make
side by side, each with a caption saying what it shows and what it does not:

- Robustness: Table R as the ``robustness_table`` rule writes it (``robustness.md``), and,
  computed from ``robustness.tsv``, whether the soup's paired change of dev macro-F1 under each
  condition is above or below the best single model's and whether the two intervals overlap;
- Calibration: Table C as the report writes it (``calibration.tsv``), and the soup against the
  best single model (the report's Top DeepSER, ``table1.tsv``) and against itself after
  temperature scaling;
- Cross-corpus: per evaluation corpus (``cross_corpus/<corpus>/``,
  ``medusa.inference.cross_corpus``), its figures with intervals, the clips scored, left out and the
  labels mapped to no class, and its macro-F1 against the soup's on the clean dev set.

Every statement about results is derived from the tables' numbers here, never written by hand.
A comparison of two intervals is descriptive: overlapping intervals are not a test, and
intervals that do not overlap mean a difference these data can tell apart.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from medusa.core.atomic import atomic_write_text
from medusa.evaluation.stats import interval_text

TITLE = "# Evidence beyond the clean dev set"
BEST, SOUP = "best single model", "MEDUSA (soup)"  # Table R's system names
CALIBRATED_SOUP, SCALED_SOUP = (
    "Meta-classifier (soup)",
    "Meta-classifier (soup), temperature-scaled",
)  # Table C's
TABLE_R_COLUMNS = ("condition", "system", "model", "macro_f1", "delta_macro_f1",
                   "delta_macro_f1_low", "delta_macro_f1_high")  # fmt: skip
TABLE_C_COLUMNS = ("system", "temperature", "clips", "bins", "ece", "ece_low", "ece_high",
                   "brier", "brier_low", "brier_high", "nll", "nll_low", "nll_high")  # fmt: skip
TABLE1_COLUMNS = ("model", "note", "dev_macro_f1", "dev_macro_f1_low", "dev_macro_f1_high")
METRICS_COLUMNS = ("figure", "value", "low", "high", "clips")
CROSS_CORPUS_FIGURES = {
    "macro_f1": "macro-F1",
    "unweighted_average_recall": "UAR (mean per-class recall)",
    "accuracy": "accuracy",
    "ccc_act": "CCC arousal",
    "ccc_val": "CCC valence",
    "ccc_dom": "CCC dominance",
}

ROBUSTNESS_CAPTION = (
    "**What it shows:** the models and the soup trained on clean audio, scored on the same dev "
    "clips after each synthetic perturbation (noise, babble, speed-up, fades, telephone band, "
    "low-bitrate codecs; config `robustness.conditions`), with speaker-bootstrap intervals; "
    "Δ is the paired change against clean audio (same clips, same resamples). "
    "**What it does not show:** real noisy or distant recordings (every perturbation is "
    "simulated on the dev clips), other corpora or speakers than dev's, levels or "
    "combinations of perturbations not listed, or models trained on perturbed audio."
)
CALIBRATION_CAPTION = (
    "**What it shows:** on the clean dev clips, whether each system's confidence in its "
    "predicted class matches how often it is right (ECE over equal-mass bins) and how much "
    "probability the true class gets (Brier, NLL in nats; lower is better for all three), with "
    "speaker-bootstrap intervals; the temperature T was fitted on the clips the "
    "meta-classifier trained on (`meta.train_on`), never on dev. "
    "**What it does not show:** calibration on perturbed audio, on other corpora or on other "
    "speakers; with few dev clips the bins are coarse. Temperature scaling changes no "
    "prediction: every F1 stays the same."
)
CROSS_CORPUS_CAPTION = (
    "**What it shows:** the trained bundle (the soup) scored on each evaluation corpus listed "
    "under `cross_corpus:`, every clip predicted whole, with speaker-bootstrap intervals. "
    "**What it does not show:** the single models or the soft vote on that corpus (the bundle "
    "predicts with the soup); classes the corpus lacks; clips whose labels map to no class of "
    "the bundle (left out, counted below) or tie after mapping. The label mapping (config "
    "`cross_corpus.<corpus>.map`) is a choice that changes the figures, and a drop mixes "
    "every way the corpus differs: recording, speakers, language use, how emotion was "
    "elicited and labelled."
)
COMPARISON_NOTE = (
    "Overlapping intervals are not a test of the difference; intervals that do not overlap "
    "mean a difference these data can tell apart."
)


class EvidenceError(ValueError):
    """A table the evidence document cannot read; the message names the file."""


# --------------------------------------------------------------------------------------------
# Reading


def read_table(path: str | os.PathLike, columns: Iterable[str]) -> pd.DataFrame:
    """A TSV written by the workflow, with the `columns` it must have."""
    path = Path(path)
    if not path.is_file():
        raise EvidenceError(f"{path}: not found (run its rule first)")
    table = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise EvidenceError(f"{path}: missing column(s) {missing}")
    return table


def _row(table: pd.DataFrame, column: str, value: str, path: str | os.PathLike) -> pd.Series:
    rows = table[table[column].astype(str) == value]
    if rows.empty:
        raise EvidenceError(f"{path}: no row with {column} {value!r}")
    return rows.iloc[0]


def best_model(table1_path: str | os.PathLike) -> str:
    """The report's best single model: the name its Top DeepSER row's note starts with."""
    table1 = read_table(table1_path, TABLE1_COLUMNS)
    note = str(_row(table1, "model", "Top DeepSER", table1_path)["note"])
    return note.split(" ")[0]


# --------------------------------------------------------------------------------------------
# Intervals and comparisons


def overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether the intervals (low, high) `a` and `b` share a point."""
    return bool(max(a[0], b[0]) <= min(a[1], b[1]))


def _relation(a: float, b: float, higher: str, lower: str, level: str = "level with") -> str:
    """`higher` when a > b, `lower` when a < b, `level` when equal at the three decimals shown."""
    diff = round(float(a) - float(b), 3)
    return higher if diff > 0 else lower if diff < 0 else level


def _overlap_text(a: Sequence[float], b: Sequence[float]) -> str:
    return "the intervals overlap" if overlap(a, b) else "the intervals do not overlap"


# --------------------------------------------------------------------------------------------
# Robustness


def robustness_comparison(table: pd.DataFrame) -> list[str]:
    """Per perturbed condition, the soup's Δ macro-F1 against the best single model's, and a
    closing count over the conditions."""
    lines, better, apart = [], 0, 0
    conditions = [c for c in dict.fromkeys(table["condition"]) if c != "clean"]
    for condition in conditions:
        rows = table[table["condition"] == condition].set_index("system")
        if not {BEST, SOUP} <= set(rows.index):
            raise EvidenceError(f"Table R: condition {condition!r} lacks the {BEST} or soup row")
        soup, best = rows.loc[SOUP], rows.loc[BEST]
        span = ("delta_macro_f1_low", "delta_macro_f1_high")
        s, b = [soup[k] for k in span], [best[k] for k in span]
        relation = _relation(soup["delta_macro_f1"], best["delta_macro_f1"], "above", "below")
        better += relation == "above"
        apart += not overlap(s, b)
        lines.append(
            f"- `{condition}`: Δ macro-F1 of the soup "
            f"{interval_text(soup['delta_macro_f1'], *s, signed=True)}, of the best single model "
            f"({best['model']}) {interval_text(best['delta_macro_f1'], *b, signed=True)}: the "
            f"soup's change is {relation} the best model's; {_overlap_text(s, b)}."
        )
    if not conditions:
        return ["No perturbed condition in Table R: nothing to compare."]
    summary = (
        f"The soup's change of macro-F1 was above the best single model's (it lost less or "
        f"gained more) under {better} of {len(conditions)} condition(s); the two changes' "
        f"intervals do not overlap under {apart} of {len(conditions)}. {COMPARISON_NOTE}"
    )
    return [summary, "", *lines]


def _demoted(markdown: str) -> list[str]:
    """A Markdown page's lines with every heading two levels lower (it becomes a subsection)."""
    return [f"##{line}" if line.startswith("#") else line for line in markdown.splitlines()]


def robustness_section(
    table_path: str | os.PathLike, markdown_path: str | os.PathLike
) -> list[str]:
    """Table R (its Markdown as the rule wrote it), its caption and the soup against the best
    single model, from its TSV."""
    table = read_table(table_path, TABLE_R_COLUMNS)
    markdown_path = Path(markdown_path)
    if not markdown_path.is_file():
        raise EvidenceError(f"{markdown_path}: not found (run `snakemake robustness` first)")
    return [
        "## Robustness (Table R)",
        "",
        ROBUSTNESS_CAPTION,
        "",
        *robustness_comparison(table),
        "",
        *_demoted(markdown_path.read_text()),
    ]


# --------------------------------------------------------------------------------------------
# Calibration


def _scores(row: pd.Series) -> str:
    return ", ".join(
        f"{name} {interval_text(row[key], row[f'{key}_low'], row[f'{key}_high'])}"
        for name, key in (("ECE", "ece"), ("NLL", "nll"))
    )


def _calibration_sentence(name_a: str, a: pd.Series, name_b: str, b: pd.Series) -> str:
    """`a`'s ECE and NLL against `b`'s: lower (better) or higher, and whether they overlap."""
    parts = []
    for label, key in (("ECE", "ece"), ("NLL", "nll")):
        span_a, span_b = (a[f"{key}_low"], a[f"{key}_high"]), (b[f"{key}_low"], b[f"{key}_high"])
        relation = _relation(a[key], b[key], "higher (worse)", "lower (better)", "level")
        parts.append(f"{label} {relation}, {_overlap_text(span_a, span_b)}")
    return f"- {name_a} ({_scores(a)}) against {name_b} ({_scores(b)}): " + "; ".join(parts) + "."


def calibration_markdown(table: pd.DataFrame, best: str) -> list[str]:
    """Table C as a Markdown table: T, ECE, Brier and NLL with their intervals per system."""
    lines = ["| system | T | ECE | Brier | NLL |", "|---|---|---|---|---|"]
    for row in table.to_dict("records"):
        name = f"{row['system']} ({BEST})" if row["system"] == best else row["system"]
        t = "" if pd.isna(row["temperature"]) else f"{row['temperature']:.3f}"
        cells = [
            interval_text(row[k], row[f"{k}_low"], row[f"{k}_high"])
            for k in ("ece", "brier", "nll")
        ]
        lines.append(f"| {name} | {t} | " + " | ".join(cells) + " |")
    return lines


def calibration_section(table_path: str | os.PathLike, table1_path: str | os.PathLike) -> list[str]:
    """Table C, its caption, and the soup against the best single model and after scaling."""
    table = read_table(table_path, TABLE_C_COLUMNS)
    best = best_model(table1_path)
    soup = _row(table, "system", CALIBRATED_SOUP, table_path)
    lines = [
        "## Calibration (Table C)",
        "",
        CALIBRATION_CAPTION,
        "",
        f"Dev clips scored: {int(table['clips'].iloc[0])}; ECE over {int(table['bins'].iloc[0])} "
        "equal-mass bin(s) of the top posterior.",
        "",
        _calibration_sentence("The soup", soup, f"the {BEST} {best}",
                              _row(table, "system", best, table_path)),
    ]  # fmt: skip
    if SCALED_SOUP in set(table["system"].astype(str)):
        scaled = _row(table, "system", SCALED_SOUP, table_path)
        lines.append(
            _calibration_sentence(
                f"The soup after temperature scaling (T = {scaled['temperature']:.3f})",
                scaled,
                "the soup before",
                soup,
            )
        )
    else:
        lines.append("- Table C has no temperature-scaled row (no `temperature.json`).")
    return [*lines, f"- {COMPARISON_NOTE}", "", *calibration_markdown(table, best)]


# --------------------------------------------------------------------------------------------
# Cross-corpus


def _left_out(excluded_path: Path) -> str:
    """`3 (no label maps to a class: 2; votes tie after mapping: 1)`, from excluded.tsv."""
    excluded = read_table(excluded_path, ("id", "reason"))
    reasons = Counter(str(r).split(":")[0].split(" (")[0] for r in excluded["reason"])
    detail = "; ".join(f"{reason}: {n}" for reason, n in reasons.items())
    return f"{len(excluded)}" + (f" ({detail})" if detail else "")


def _unmapped(unmapped_path: Path) -> str:
    """`fru (2 votes), oth (1 vote)`, from unmapped.tsv; `none` when every label mapped."""
    unmapped = read_table(unmapped_path, ("label", "votes"))
    if unmapped.empty:
        return "none"
    return ", ".join(
        f"{r.label} ({r.votes} vote{'s' if r.votes != 1 else ''})" for r in unmapped.itertuples()
    )


def corpus_table(metrics: pd.DataFrame) -> list[str]:
    """One corpus's figures with intervals and clips, in the order of CROSS_CORPUS_FIGURES."""
    lines = ["| figure | value [interval] | clips |", "|---|---|---|"]
    by_figure = metrics.set_index("figure")
    for figure, label in CROSS_CORPUS_FIGURES.items():
        if figure in by_figure.index:
            row = by_figure.loc[figure]
            lines.append(
                f"| {label} | {interval_text(row['value'], row['low'], row['high'])} "
                f"| {int(row['clips'])} |"
            )
    return lines


def corpus_section(name: str, folder: str | os.PathLike, dev_soup: pd.Series) -> list[str]:
    """One evaluation corpus: figures, clips scored and left out, unmapped labels, and its
    macro-F1 against the soup's on the clean dev set (`dev_soup`: Table 1's soup row)."""
    folder = Path(folder)
    metrics = read_table(folder / "metrics.tsv", METRICS_COLUMNS)
    f1 = _row(metrics, "figure", "macro_f1", folder / "metrics.tsv")
    dev = [dev_soup[f"dev_macro_f1{s}"] for s in ("", "_low", "_high")]
    relation = _relation(f1["value"], dev[0], "higher", "lower", "level")
    return [
        f"### `{name}`",
        "",
        f"Scored clips: {int(f1['clips'])}; left out: {_left_out(folder / 'excluded.tsv')}; "
        f"labels mapped to no class (votes left out): {_unmapped(folder / 'unmapped.tsv')}.",
        "",
        *corpus_table(metrics),
        "",
        f"- The soup's macro-F1 here, {interval_text(f1['value'], f1['low'], f1['high'])}, is "
        f"{relation} {'with' if relation == 'level' else 'than'} on the clean dev set of the training corpus, {interval_text(*dev)} "
        f"({f1['value'] - dev[0]:+.3f}); {_overlap_text((f1['low'], f1['high']), dev[1:])}.",
    ]


def cross_corpus_section(corpora: Mapping[str, str | os.PathLike], table1_path) -> list[str]:
    """Every configured evaluation corpus (name -> its results folder), or why there is none."""
    lines = ["## Cross-corpus", "", CROSS_CORPUS_CAPTION, ""]
    if not corpora:
        return [*lines, "No evaluation corpus is configured under `cross_corpus:` in the config: "
                "this run has no cross-corpus figure (README, \"Cross-corpus evaluation\")."]  # fmt: skip
    table1 = read_table(table1_path, TABLE1_COLUMNS)
    dev_soup = _row(table1, "model", SOUP, table1_path)
    for name, folder in corpora.items():
        lines += [*corpus_section(name, folder, dev_soup), ""]
    return lines[:-1]


def corpora_of(metrics_paths: Iterable[str | os.PathLike]) -> dict[str, Path]:
    """``.../cross_corpus/<corpus>/metrics.tsv`` files -> {corpus: its folder}, in order."""
    corpora = {}
    for path in map(Path, metrics_paths):
        if path.name != "metrics.tsv" or path.parent.parent.name != "cross_corpus":
            raise EvidenceError(f"{path}: not a cross_corpus/<corpus>/metrics.tsv file")
        corpora[path.parent.name] = path.parent
    return corpora


# --------------------------------------------------------------------------------------------
# The document


def compose_evidence(
    robustness_tsv: str | os.PathLike,
    robustness_md: str | os.PathLike,
    calibration_tsv: str | os.PathLike,
    table1_tsv: str | os.PathLike,
    corpora: Mapping[str, str | os.PathLike],
) -> str:
    """The document of the module docstring; `corpora`: corpus name -> its results folder."""
    intro = (
        "Every figure of the headline is measured on the clean dev set of the training corpus. "
        "The three sections below go beyond it: perturbed dev audio (robustness), how far the "
        "posteriors can be trusted as probabilities (calibration) and other corpora "
        "(cross-corpus). Each says what it shows and what it does not; intervals resample "
        "speakers (config `evaluation.bootstrap`)."
    )
    sections = [
        [TITLE, "", intro],
        robustness_section(robustness_tsv, robustness_md),
        calibration_section(calibration_tsv, table1_tsv),
        cross_corpus_section(corpora, table1_tsv),
    ]
    return "\n\n".join("\n".join(lines).strip("\n") for lines in sections) + "\n"


def write_evidence(
    robustness_tsv: str | os.PathLike,
    robustness_md: str | os.PathLike,
    calibration_tsv: str | os.PathLike,
    table1_tsv: str | os.PathLike,
    cross_corpus_metrics: Iterable[str | os.PathLike],
    out: str | os.PathLike,
) -> str:
    """``compose_evidence`` written to `out`; the corpora are found from their metrics files."""
    corpora = corpora_of(cross_corpus_metrics)
    text = compose_evidence(robustness_tsv, robustness_md, calibration_tsv, table1_tsv, corpora)
    atomic_write_text(out, text)
    return text
