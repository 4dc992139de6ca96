"""The report's headline (docs/method.md, section 7): the figures a reader needs first, each with
its interval, and marks on those too uncertain to read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from medusa.evaluation.figures import SOUP_SCALED, UNRELIABLE, _read_tsv

# --------------------------------------------------------------------------------------------
# Headline


UNRELIABLE_MARK = "†"
UNRELIABLE_EXPLANATION = (
    f"{UNRELIABLE_MARK} over 10% of the bootstrap resamples left this figure undefined: its "
    "interval comes from the rest and is only a rough guide (column `unreliable_intervals`)."
)


def _with_interval(row: Mapping, key: str) -> str:
    """`0.41 [0.33, 0.49]`, `0.41 ± 0.02 [0.33, 0.49]` (± sd over seeds), `0.41 ± 0.02` or
    `(in-sample)`; marked when the row's `unreliable_intervals` names the interval."""
    if pd.isna(row[key]):
        return "(in-sample)"
    std = row.get(f"{key}_std")
    text = f"{row[key]:.2f}" + (f" ± {std:.2f}" if pd.notna(std) else "")
    if pd.notna(row.get(f"{key}_low")):
        text += f" [{row[f'{key}_low']:.2f}, {row[f'{key}_high']:.2f}]"
    if key in _unreliable(row):
        text += f" {UNRELIABLE_MARK}"
    return text


def _unreliable(row: Mapping) -> set[str]:
    """The figures whose intervals a row's `unreliable_intervals` cell names."""
    note = row.get(UNRELIABLE)
    return {part.split(" (")[0] for part in note.split("; ")} if isinstance(note, str) else set()


def format_headline(out_dir: str | os.PathLike) -> str:
    """A short markdown summary rendered from the report's tables."""
    out_dir = Path(out_dir)
    table1 = _read_tsv(out_dir / "table1.tsv")
    table3 = _read_tsv(out_dir / "table3.tsv")
    comparisons = _read_tsv(out_dir / "comparisons.tsv")
    by_model = table1.set_index("model")
    top, soup = by_model.loc["Top DeepSER"], by_model.loc["MEDUSA (soup)"]
    n_classes = len(report_classes(out_dir))
    lines = [
        "# MEDUSA: results",
        "",
        f"Scored on `dev` ({n_classes} consensus classes, X/O excluded), with 95% bootstrap intervals "
        "(speakers resampled), and on the selection holdout with every clip weighted by 1 / "
        "its class's count (class-balanced). Meta-classifier (single): mean ± sd over seeds, "
        "and the interval of that mean. The holdout column is selection-biased, not out of "
        "sample: every model's checkpoint, the top-k ensembles and a greedy soup were chosen on "
        "that holdout; compare systems on dev. Product of experts: the normalised geometric "
        'mean of the posteriors, the meta-classifier\'s start and its "stay at the vote".',
        "",
        "| Ensemble | Technique | dev F1 | dev Acc | bal. holdout F1 (selection-biased) |",
        "|---|---|---|---|---|",
    ]
    for _, row in table3.iterrows():
        cells = [_with_interval(row, k) for k in ("dev_macro_f1", "dev_accuracy")]
        cells.append(_with_interval(row, "balanced_holdout_macro_f1"))
        lines.append(f"| {row['ensemble']} | {row['technique']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"- Best single DeepSER model ({top['note'].split(' ')[0]}, chosen on the class-balanced "
        f"holdout): dev macro-F1 {_with_interval(top, 'dev_macro_f1')}.",
        f"- MEDUSA soup: dev macro-F1 {_with_interval(soup, 'dev_macro_f1')}.",
    ]
    for _, row in comparisons.iterrows():
        lines.append(
            f"- {row['comparison']}: {row['difference']:+.2f} [{row['low']:+.2f}, "
            f"{row['high']:+.2f}]; the soup is better in {100 * row['share_soup_better']:.0f}% "
            "of resamples."
        )
    lines += _selection_lines(out_dir / "meta_selection.tsv")
    lines += _calibration_lines(out_dir / "calibration.tsv", top["note"].split(" ")[0])
    if UNRELIABLE_MARK in "\n".join(lines):
        lines += ["", UNRELIABLE_EXPLANATION, ""]
    lines += [
        f"- Chance level: macro-F1 {1 / n_classes:.3f} (1/{n_classes}, uniform guessing on "
        "balanced classes).",
        f"- Soup: {soup['note']}.",
        "- An interval that contains 0 for a difference means these data cannot tell the two "
        "systems apart.",
        "",
        *_evidence_lines(out_dir),
    ]
    return "\n".join(lines)


def _evidence_lines(out_dir: Path) -> list[str]:
    """Where the figures beyond clean dev are: named, never read (the headline is part of
    `soup`; the evidence document is not, and comes later)."""
    where = f"{out_dir.as_posix()}/evidence.md" if not out_dir.is_absolute() else "evidence.md"
    return [
        "## Beyond the clean dev set",
        "",
        "Every figure above is measured on clean dev audio of this corpus. `snakemake evidence` "
        f"(same config files; not part of `soup`) writes `{where}`: robustness to perturbed "
        "audio (Table R), calibration (Table C) and each cross-corpus evaluation, each with "
        "what it shows and what it does not, and the soup against the best single model.",
        "",
    ]


def report_classes(out_dir: str | os.PathLike) -> tuple[str, ...]:
    """The class codes a report scored: the per-class table's columns before macro_f1."""
    columns = list(_read_tsv(Path(out_dir) / "per_class_f1.tsv").columns)
    return tuple(columns[columns.index("subset") + 1 : columns.index("macro_f1")])


def _calibration_lines(path: Path, top: str) -> list[str]:
    """Table C in the headline: the soup before and after temperature scaling, the soft vote
    and the best model, and what these figures do and do not show."""
    if not path.is_file():
        return []
    table = _read_tsv(path).set_index("system")

    def scores(system: str) -> str:
        row = table.loc[system]
        return ", ".join(
            f"{name} {_with_interval(row, key)}"
            for name, key in (("ECE", "ece"), ("Brier", "brier"), ("NLL", "nll"))
        )

    lines = [
        f"- Calibration on dev (Table C, `calibration.tsv`; ECE over {table['bins'].iloc[0]} "
        "equal-mass bin(s) of the top posterior, Brier score, NLL in nats; lower is better): "
        f"soup {scores('Meta-classifier (soup)')}; soft vote {scores('Soft voting')}; best "
        f"single model ({top}) {scores(top)}."
    ]
    if SOUP_SCALED in table.index:
        lines.append(
            f"- Soup after temperature scaling: {scores(SOUP_SCALED)}; "
            f"{table.loc[SOUP_SCALED, 'note']}."
        )
    lines.append(
        "- Table C shows whether the confidence of the predicted class matches how often it is "
        "right on dev (ECE) and how much probability the true class gets (Brier, NLL); it "
        "does not show calibration on other speakers or recording conditions, and temperature "
        "scaling changes no prediction, so every F1 above stays the same."
    )
    return lines


def _selection_lines(path: Path) -> list[str]:
    """One headline line per ensemble: the meta-classifier's cross-validated choice."""
    if not path.is_file():
        return []
    table = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
    lines = []
    for ensemble, rows in table.groupby("ensemble", sort=False):
        chosen = rows[rows["chosen"].astype(str) == "True"]
        setting = chosen["setting"].iloc[0] if len(chosen) else "?"
        scored = rows.dropna(subset=["cv_macro_f1"])
        grid = ", ".join(
            f"{r.setting} {r.cv_macro_f1:.2f} ± {r.se:.2f}" for r in scored.itertuples()
        )
        lines.append(
            f"- Meta-classifier of {ensemble}: {setting} "
            + (f"(cross-validated macro-F1 ± se: {grid}; {rows['reason'].iloc[0]})." if grid
               else f"({rows['reason'].iloc[0]}).")
        )  # fmt: skip
    return lines
