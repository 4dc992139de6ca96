"""Cross-corpus evaluation: a trained bundle scored on another labelled corpus (``medusa evaluate``).

The corpus is a table in the layout of ``medusa.corpus.table_layout`` (one label per clip, vote rows
or a votes column; every labelled row is scored, whatever its partition). Its labels are
mapped into the bundle's classes: ``--map FROM=TO`` first (case-insensitive FROM, e.g.
IEMOCAP's ``exc=H``: excited counted as happy), then a label that is a bundle class's code or
name counts as that class. Labels that map to no class are left out and counted per label,
never guessed; a clip whose votes tie between classes after mapping is left out too. Each
clip is predicted whole, as the workflow scores a clip (``medusa.inference.recognizer.Recognizer``
with no segmentation), and scored like the workflow's dev set: macro-F1, unweighted average recall
(the mean of the per-class recalls) and accuracy with speaker-bootstrap intervals, the
confusion matrix, the concordance correlation of arousal, valence and dominance where the
table has ratings, and macro-F1 per gender.

Files written to the output folder: ``metrics.tsv`` (figure, value, interval, clips),
``confusion.tsv``, ``per_gender.tsv``, ``clips.csv`` (each scored clip: truth, prediction,
posteriors, attributes), ``excluded.tsv`` (each clip left out, with the reason),
``unmapped.tsv`` (each label mapped to no class, with its votes left out) and ``summary.md``.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medusa.core.atomic import atomic_write_text
from medusa.core.emotions import ATTRIBUTES, ClassSet
from medusa.core.manifest import is_unknown
from medusa.core.metrics import confusion_matrix
from medusa.corpus.table_layout import TableClip, read_table
from medusa.evaluation.stats import (
    Interval,
    accuracy_interval,
    bootstrap_interval,
    ccc_interval,
    macro_f1_interval,
    per_group_macro_f1,
)
from medusa.inference.recognizer import Recognizer

# A clip this long or shorter is one segment: with no limit every clip is scored whole.
WHOLE_CLIP_S = 1e9


class EvaluationError(ValueError):
    """A label mapping or corpus that cannot be evaluated; the message names it."""


def describe_classes(classes: ClassSet) -> str:
    """`A (Anger), D (Disgust), ...`"""
    pairs = zip(classes.letters, classes.names, strict=True)
    return ", ".join(f"{code} ({name})" for code, name in pairs)


def parse_mapping(pairs: Sequence[str], classes: ClassSet) -> dict[str, str]:
    """``FROM=TO`` pairs -> {from label (lower case): class code}; TO is a code or a name."""
    mapping = {}
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise EvaluationError(f"--map {pair!r}: expected FROM=TO (e.g. exc=H)")
        code = classes.letter_of(target.strip())
        if code is None:
            raise EvaluationError(
                f"--map {pair!r}: {target.strip()!r} is not a class of the bundle "
                f"({describe_classes(classes)})"
            )
        mapping[source.strip().lower()] = code
    return mapping


@dataclass
class ScoredClips:
    """The clips that can be scored: their table rows and mapped class indices."""

    clips: list[TableClip]
    y: np.ndarray
    excluded: list[tuple[str, str]]  # (clip id, reason)
    unmapped: Counter  # label as written -> votes left out


def mapped_truth(clips: Sequence[TableClip], mapping: Mapping[str, str], classes: ClassSet):
    """Each labelled clip's class after the mapping; the rest excluded with their reason."""
    kept, y, excluded, unmapped = [], [], [], Counter()
    for clip in clips:
        if not clip.labels:
            continue  # unlabelled rows are not evaluated
        votes = Counter()
        for label, _ in clip.labels:
            code = mapping.get(label.strip().lower()) or classes.letter_of(label)
            if code is None:
                unmapped[label] += 1
            else:
                votes[code] += 1
        if not votes:
            labels = sorted({label for label, _ in clip.labels})
            excluded.append((clip.id, f"no label maps to a class: {', '.join(labels)}"))
            continue
        ranked = votes.most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            excluded.append((clip.id, f"votes tie after mapping: {dict(votes)}"))
            continue
        kept.append(clip)
        y.append(classes.index(ranked[0][0]))
    return ScoredClips(kept, np.asarray(y, dtype=np.int64), excluded, unmapped)


def unweighted_average_recall(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in the truth (balanced accuracy)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ValueError("cannot score an empty set")
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def score_clips(
    y: np.ndarray,
    posteriors: np.ndarray,
    attributes: np.ndarray,
    truth_attributes: np.ndarray,
    speakers: np.ndarray,
    genders: np.ndarray,
    classes: ClassSet,
    bootstrap: Mapping,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(metrics, confusion, per gender) of predicted `posteriors` against truth `y`."""
    pred = posteriors.argmax(axis=1)
    groups = np.array(
        [f"clip:{i}" if is_unknown(s) else f"speaker:{s}" for i, s in enumerate(speakers)]
    )
    figures: dict[str, Interval] = {
        "macro_f1": macro_f1_interval(y, pred, groups, **bootstrap),
        "unweighted_average_recall": bootstrap_interval(
            unweighted_average_recall, (y, pred), groups, **bootstrap
        ),
        "accuracy": accuracy_interval(y, pred, groups, **bootstrap),
    }
    clips = {name: len(y) for name in figures}
    for i, name in enumerate(ATTRIBUTES):
        rated = np.isfinite(truth_attributes[:, i])
        if rated.sum() >= 2:
            figures[f"ccc_{name}"] = ccc_interval(
                truth_attributes[rated, i], attributes[rated, i], groups[rated], **bootstrap
            )
            clips[f"ccc_{name}"] = int(rated.sum())
    metrics = pd.DataFrame(
        [
            {"figure": k, "value": v.value, "low": v.low, "high": v.high, "clips": clips[k]}
            for k, v in figures.items()
        ]
    )
    confusion = pd.DataFrame(
        confusion_matrix(y, pred, n_classes=len(classes)).astype(int),
        index=pd.Index(classes.letters, name="true \\ predicted"),
        columns=list(classes.letters),
    )
    genders_f1 = per_group_macro_f1(y, pred, genders)
    per_gender = pd.DataFrame(
        [{"gender": g, "clips": n, "macro_f1": f1} for g, (n, f1) in genders_f1.items()]
    )
    return metrics, confusion, per_gender


def evaluate_table(
    bundle_dir: str | os.PathLike,
    table_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    mapping_pairs: Sequence[str] = (),
    bootstrap: Mapping | None = None,
    **recognizer_options,
) -> pd.DataFrame:
    """Score the bundle on every labelled clip of the table; write the files of the module
    docstring to `out_dir` and return the metrics table."""

    table_path = Path(table_path)
    table = read_table(table_path.parent, table_path.name)
    options = {"segmentation": "fixed", "max_segment_s": WHOLE_CLIP_S, **recognizer_options}
    with Recognizer(bundle_dir, **options) as recognizer:
        classes = recognizer.classes
        scored = mapped_truth(table.clips, parse_mapping(mapping_pairs, classes), classes)
        if not scored.clips:
            raise EvaluationError(
                f"{table_path}: no labelled clip maps to the bundle's classes "
                f"{list(classes.letters)}; unmapped labels: {dict(scored.unmapped)} "
                "(add --map FROM=TO)"
            )
        paths = [_audio_path(table_path.parent, clip) for clip in scored.clips]
        summary = recognizer.predict(paths).summary.set_index("file")
    return _write(table_path, scored, paths, summary, classes, out_dir, bootstrap or {})


def _audio_path(root: Path, clip: TableClip) -> str:
    return str(clip.path if os.path.isabs(clip.path) else root / clip.path)


def _write(table_path, scored, paths, summary, classes, out_dir, bootstrap) -> pd.DataFrame:
    """Score the predicted clips (those predict skipped are excluded, with its reason)."""
    predicted = np.array([p in summary.index for p in paths])
    excluded = list(scored.excluded) + [
        (clip.id, "not predicted (see medusa predict's skipped files)")
        for clip, ok in zip(scored.clips, predicted, strict=True)
        if not ok
    ]
    clips = [c for c, ok in zip(scored.clips, predicted, strict=True) if ok]
    rows = summary.loc[[p for p, ok in zip(paths, predicted, strict=True) if ok]]
    y = scored.y[predicted]
    posteriors = rows[list(classes.letters)].to_numpy(dtype=np.float64)
    attributes = rows[list(ATTRIBUTES)].to_numpy(dtype=np.float64)
    truth_attributes = np.array(
        [[_number(c.attributes.get(a, "")) for a in ATTRIBUTES] for c in clips], dtype=float
    ).reshape(len(clips), len(ATTRIBUTES))
    speakers = np.array([c.speaker for c in clips], dtype=object)
    genders = np.array([c.gender for c in clips], dtype=object)
    metrics, confusion, per_gender = score_clips(
        y, posteriors, attributes, truth_attributes, speakers, genders, classes, bootstrap
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_clip = pd.DataFrame(
        {
            "id": [c.id for c in clips],
            "speaker": speakers,
            "gender": genders,
            "truth": np.asarray(classes.letters)[y],
            "predicted": np.asarray(classes.letters)[posteriors.argmax(axis=1)],
        }  # fmt: skip
    )
    per_clip[list(classes.letters)] = posteriors
    per_clip[list(ATTRIBUTES)] = attributes
    tsv = {"sep": "\t", "index": False, "float_format": "%.4f"}
    atomic_write_text(out_dir / "metrics.tsv", metrics.to_csv(**tsv))
    atomic_write_text(out_dir / "confusion.tsv", confusion.to_csv(sep="\t"))
    atomic_write_text(out_dir / "per_gender.tsv", per_gender.to_csv(**tsv))
    atomic_write_text(out_dir / "clips.csv", per_clip.to_csv(index=False, float_format="%.6f"))
    excluded_table = pd.DataFrame(excluded, columns=["id", "reason"])
    atomic_write_text(out_dir / "excluded.tsv", excluded_table.to_csv(sep="\t", index=False))
    unmapped = pd.DataFrame(sorted(scored.unmapped.items()), columns=["label", "votes"])
    atomic_write_text(out_dir / "unmapped.tsv", unmapped.to_csv(sep="\t", index=False))
    atomic_write_text(
        out_dir / "summary.md", _summary(table_path, metrics, scored, excluded_table, classes)
    )
    return metrics


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _summary(table_path, metrics, scored, excluded, classes) -> str:
    lines = [
        f"# Cross-corpus evaluation on `{table_path}`",
        "",
        f"Classes of the bundle: {describe_classes(classes)}.",
        f"Scored clips: {int(metrics['clips'].iloc[0])}; left out: {len(excluded)}.",
        "",
        "| figure | value | 95% interval (speakers resampled) | clips |",
        "|---|---|---|---|",
    ]
    for _, row in metrics.iterrows():
        lines.append(
            f"| {row['figure']} | {row['value']:.2f} | [{row['low']:.2f}, {row['high']:.2f}] "
            f"| {row['clips']} |"
        )
    if scored.unmapped:
        lines += ["", "Labels mapped to no class (votes left out): "
                  + ", ".join(f"{k} ({v})" for k, v in sorted(scored.unmapped.items())) + "."]  # fmt: skip
    return "\n".join(lines) + "\n"
