"""The data stage's report: what the manifest holds and every problem found in the labels."""

from __future__ import annotations

import pandas as pd

from medusa.core.emotions import (
    MSP_PODCAST_CLASSES,
    ClassSet,
)
from medusa.core.manifest import (
    is_unknown,
)
from medusa.corpus.labels import PROBLEM_ACTIONS, TABLE_PROBLEM_ACTIONS, Problems
from medusa.corpus.partitions import HOLDOUT, MSP_PODCAST, TABLE, TRAIN


def _report_header(manifest: pd.DataFrame, summary: dict, classes: ClassSet) -> list[str]:
    """The report's title and corpus lines, which name the layout."""
    if summary.get("layout", MSP_PODCAST) == MSP_PODCAST:
        lines = [
            "# MSP-Podcast data report",
            "",
            f"Corpus: `{summary['root']}` (read only).",
            f"Audio files in labelled partitions: {summary['audio_files']}; consensus rows: {summary['consensus_rows']}; "
            f"annotator votes: {summary['annotator_votes']}; manifest rows: {len(manifest)}.",
        ]
    else:
        lines = [
            "# Table data report",
            "",
            f"Corpus: `{summary['root']}` (read only); table: `{summary['table']}`.",
            f"Audio files in labelled partitions: {summary['audio_files']}; table rows: "
            f"{summary['table_rows']}; labelled clips: {summary['labelled_clips']}; unlabelled "
            f"clips (partition `unlabelled`, predicted): {summary['unlabelled_clips']}; labels "
            f"and votes: {summary['votes']}; manifest rows: {len(manifest)}.",
        ]
        if summary["folds"]:
            lines.append(
                f"Folds: {', '.join(summary['folds'])}; held out (data.fold): {summary['fold']}, "
                "the `dev` subset; the other folds are `train` (and `holdout`, `meta`)."
            )
    if classes != MSP_PODCAST_CLASSES:
        named = ", ".join(f"{c} ({n})" for c, n in zip(classes.letters, classes.names, strict=True))
        lines.append(f"Classes: {named}.")
    return lines


def format_report(
    manifest: pd.DataFrame,
    problems: Problems,
    summary: dict,
    examples: int = 5,
    classes: ClassSet = MSP_PODCAST_CLASSES,
) -> str:
    """The human-readable data report (markdown): one column per class of `classes`."""
    letters = classes.letters
    lines = [
        *_report_header(manifest, summary, classes),
        "",
        "## Subsets",
        "",
        "| subset | files | speakers | hours | with soft target | "
        + " | ".join(letters)
        + " | O | X |",
        "|---" * (6 + len(letters)) + "|",
    ]
    for subset, part in manifest.groupby("subset", sort=False):
        counts = part["emo_class"].value_counts()
        lines.append(
            f"| {subset} | {len(part)} | {part['speaker'].nunique()} | "
            f"{part['duration_s'].sum() / 3600:.3f} | {int(part[letters[0]].notna().sum())} | "
            + " | ".join(str(int(counts.get(c, 0))) for c in (*letters, "O", "X"))
            + " |"
        )
    known = ~manifest["speaker"].map(is_unknown)
    train_speakers = set(manifest.loc[known & (manifest["subset"] == TRAIN), "speaker"])
    holdout_speakers = set(manifest.loc[known & (manifest["subset"] == HOLDOUT), "speaker"])
    lines += [
        "",
        f"Speakers shared by train and holdout: {len(train_speakers & holdout_speakers)} "
        "(speaker-disjoint split; files of unknown speakers stay in train). The `holdout` "
        "selects DeepSER checkpoints; the `meta` subset, speakers of neither, trains the "
        "meta-classifier.",
        "",
        "## Problems",
        "",
    ]
    actions = PROBLEM_ACTIONS
    if summary.get("layout", MSP_PODCAST) == TABLE:
        actions = PROBLEM_ACTIONS | TABLE_PROBLEM_ACTIONS
    if not problems.items:
        lines.append("None found.")
    else:
        lines += ["| problem | count | what happened | examples |", "|---|---|---|---|"]
        for kind in sorted(problems.items):
            found = problems.items[kind]
            shown = "; ".join(str(e).replace("|", "/") for e in found[:examples])
            more = f" (+{len(found) - examples} more)" if len(found) > examples else ""
            lines.append(f"| {kind} | {len(found)} | {actions[kind]} | {shown}{more} |")
    return "\n".join(lines) + "\n"
