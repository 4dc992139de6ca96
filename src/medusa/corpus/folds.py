"""Cross-validation over a corpus's speaker folds: one recipe run per held-out fold, aggregated.

A fold-style table (``medusa.corpus.table_layout``) runs the whole recipe once per fold
(``data.fold``; each run's split-dependent results under ``results/fold<k>/``, features shared).
Each run's report scores its held-out fold as ``dev``. ``aggregate_folds`` reads every fold's
Table 1 (each model, Average DeepSER, Top DeepSER, MEDUSA soup) and Table 3 (the whole ensemble's
votes and meta-classifier) and writes, per system, the held-out macro-F1 and accuracy of every fold
with their mean and spread across folds (standard deviation, minimum, maximum): the figure
speaker-independent k-fold studies (e.g. EMO-SUPERB) report. Each fold's own bootstrap
interval stays in its report; the spread here is between folds, i.e. between held-out speaker
groups.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from medusa.core.atomic import atomic_write_text

FIGURES = ("dev_macro_f1", "dev_accuracy")
# Table 3 rows of the whole ensemble that the summary keeps (the top-k ensembles may differ in
# membership between folds, so only the whole ensemble is comparable across folds).
WHOLE_ENSEMBLE_PREFIX = "all "


class FoldError(ValueError):
    """A fold's report is missing or does not fit the others; the message names the file."""


def fold_systems(report_dir: str | os.PathLike) -> pd.DataFrame:
    """One fold's systems and their held-out figures: system, dev_macro_f1, dev_accuracy."""
    report_dir = Path(report_dir)
    tables = {}
    for name in ("table1", "table3"):
        path = report_dir / f"{name}.tsv"
        if not path.is_file():
            raise FoldError(f"{path}: not found (run that fold's `soup` first)")
        tables[name] = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
    table1 = tables["table1"].rename(columns={"model": "system"})
    whole = tables["table3"][tables["table3"]["ensemble"].str.startswith(WHOLE_ENSEMBLE_PREFIX)]
    votes = whole.assign(system=whole["technique"].map(lambda t: f"ensemble: {t}"))
    return pd.concat([table1[["system", *FIGURES]], votes[["system", *FIGURES]]])


def aggregate_folds(report_dirs: Mapping[str, str | os.PathLike]) -> pd.DataFrame:
    """Per system: each fold's held-out figures (columns `<figure>_fold<k>`) and their mean,
    sd (ddof 1), min and max over the folds. `report_dirs`: fold -> its report folder."""
    if len(report_dirs) < 2:
        raise FoldError(f"need the reports of at least 2 folds, got {list(report_dirs)}")
    per_fold = {fold: fold_systems(d).set_index("system") for fold, d in report_dirs.items()}
    systems = list(next(iter(per_fold.values())).index)
    for fold, table in per_fold.items():
        if list(table.index) != systems:
            raise FoldError(
                f"{report_dirs[fold]}: systems {list(table.index)} differ from the first "
                f"fold's {systems}; every fold must run the same models"
            )
    rows = []
    for system in systems:
        row = {"system": system, "folds": len(per_fold)}
        for figure in FIGURES:
            values = np.array([per_fold[f].loc[system, figure] for f in per_fold], dtype=float)
            row |= {
                f"{figure}_mean": values.mean(),
                f"{figure}_sd": values.std(ddof=1),
                f"{figure}_min": values.min(),
                f"{figure}_max": values.max(),
            }
            row |= {f"{figure}_fold{f}": v for f, v in zip(per_fold, values, strict=True)}
        rows.append(row)
    return pd.DataFrame(rows)


def format_summary(summary: pd.DataFrame) -> str:
    """The fold summary as markdown: mean ± sd [min, max] of the held-out figures."""
    folds = int(summary["folds"].iloc[0])
    lines = [
        f"# MEDUSA: {folds}-fold cross-validation",
        "",
        f"Each fold held out once (speaker-independent folds); figures on the held-out fold: "
        f"mean ± standard deviation over the {folds} folds [lowest, highest fold]. Each fold's "
        "bootstrap intervals are in its own report (results/fold<k>/report/).",
        "",
        "| system | macro-F1 | accuracy |",
        "|---|---|---|",
    ]
    for _, row in summary.iterrows():
        cells = [
            f"{row[f'{f}_mean']:.2f} ± {row[f'{f}_sd']:.2f} "
            f"[{row[f'{f}_min']:.2f}, {row[f'{f}_max']:.2f}]"
            for f in FIGURES
        ]
        lines.append(f"| {row['system']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_fold_summary(
    report_dirs: Mapping[str, str | os.PathLike],
    out_tsv: str | os.PathLike,
    out_md: str | os.PathLike,
) -> pd.DataFrame:
    """Aggregate the folds' reports; write the TSV and the markdown atomically."""
    summary = aggregate_folds(report_dirs)
    atomic_write_text(out_tsv, summary.to_csv(sep="\t", index=False, float_format="%.4f"))
    atomic_write_text(out_md, format_summary(summary))
    return summary
