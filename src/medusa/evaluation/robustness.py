"""Robustness (Table R): the ensemble on perturbed dev audio against clean dev audio.

The ``robustness`` target perturbs the audio partition that holds the dev clips once per named
condition (``medusa.evaluation.perturb``), runs ASR, features and every enabled model's posteriors
on that audio only, and scores three systems per condition on the dev clips: the best single
model (class-balanced holdout macro-F1 of the clean posteriors, the report's selection), the
soft vote and the soup head. Here:

- the config's ``robustness`` block (its conditions, checked) is read by
  ``medusa.evaluation.conditions``, a light module the workflow's parse imports;
- ``perturb_partition``: one condition applied to the usable clips of an audio index, written
  under a folder of their own with an index in the audio-index format whose paths are
  relative to that folder (ASR and features read it as they read the corpus's);
- ``robustness_table`` / ``write_robustness``: Table R. Per condition (``clean`` first) and
  system: dev macro-F1 and the CCC of arousal, valence and dominance (where the manifest has
  ratings) with speaker-bootstrap intervals, and the change against clean audio, paired: the
  same clips and the same resamples (``medusa.evaluation.stats.paired_bootstrap``). The clean row is
  computed exactly as the report's dev figures (same clips, same bootstrap settings).

The soft vote's attributes are the mean of the models' attribute predictions (the report's
"Mean of the models" row of ``attributes.tsv``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from medusa.core.atomic import atomic_write_text
from medusa.core.emotions import ATTRIBUTES
from medusa.core.manifest import consensus_labels, read_manifest
from medusa.corpus.audio_index import clip_paths, read_audio_index
from medusa.corpus.partitions import DEV, INDEX_COLUMNS
from medusa.ensemble.inputs import (
    EnsembleError,
    ensemble_classes,
    load_ensemble_inputs,
    manifest_rows,
    posterior_model_name,
    reorder_models,
    selection_scores,
    split_inputs,
)
from medusa.ensemble.meta import head_outputs, load_head
from medusa.ensemble.votes import soft_vote
from medusa.evaluation.conditions import CLEAN, RobustnessError, describe
from medusa.evaluation.figures import UNRELIABLE, DevSet, unreliable_note
from medusa.evaluation.perturb import Condition, perturb_files
from medusa.evaluation.stats import (
    ccc_interval,
    concordance_correlation,
    interval_text,
    macro_f1_interval,
    paired_bootstrap,
    paired_macro_f1,
)

BEST, VOTE, SOUP = "best single model", "soft vote", "MEDUSA (soup)"
SYSTEMS = (BEST, VOTE, SOUP)


# --------------------------------------------------------------------------------------------
# Perturbed audio


def usable_clip_files(index_path: str | os.PathLike, root: str | os.PathLike) -> list[str]:
    """The audio files of an index's usable clips (paths below `root`, the corpus folder)."""
    return [path for _, path in clip_paths(index_path, root)]


def perturb_partition(
    index_path: str | os.PathLike,
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    out_index: str | os.PathLike,
    condition: Condition,
) -> pd.DataFrame:
    """Every usable clip of the audio index `index_path` (paths relative to `root`) perturbed
    by `condition` into `out_dir` (``perturb_files``: same relative paths, as .wav), and their
    index, in the audio-index format with paths relative to `out_dir`, written to `out_index`.
    """
    index = read_audio_index(index_path)
    usable = index[index["problem"] == ""].sort_values("id", kind="stable")
    if usable.empty:
        raise RobustnessError(f"{index_path}: no usable clip to perturb")
    files = [os.path.join(root, p) for p in usable["path"]]
    written = perturb_files(files, root, out_dir, condition)
    rows = usable.copy()
    rows["path"] = [Path(w).relative_to(out_dir).as_posix() for w in written]
    rows["duration_s"] = [round(sf.info(w).duration, 4) for w in written]
    rows["sample_rate"], rows["channels"] = 16000, 1
    atomic_write_text(out_index, rows[INDEX_COLUMNS].to_csv(sep="\t", index=False))
    return rows[INDEX_COLUMNS]


# --------------------------------------------------------------------------------------------
# Table R


def posteriors_by_condition(paths: Sequence[str | os.PathLike]) -> dict[str, list[Path]]:
    """``.../robustness/<condition>/posteriors/<model>.h5`` files grouped by condition, in
    the order given (the models' order within each)."""
    grouped: dict[str, list[Path]] = {}
    for path in map(Path, paths):
        if path.parent.name != "posteriors" or path.parent.parent.parent.name != "robustness":
            raise RobustnessError(f"{path}: not a robustness/<condition>/posteriors/ file")
        grouped.setdefault(path.parent.parent.name, []).append(path)
    return grouped


def _scored_dev(paths: Sequence[Path], manifest: pd.DataFrame, classes) -> tuple:
    """(ids, X, y, manifest rows) of the dev clips with a consensus in the class set."""
    ids, X = load_ensemble_inputs(paths, DEV)
    rows = manifest_rows(manifest, DEV, ids)
    keep, y = consensus_labels(rows["emo_class"], classes)
    if not len(y):
        raise EnsembleError(f"no dev clip with a consensus in the classes {list(classes)}")
    return ids[keep], X[keep], y, rows[keep]


def system_outputs(
    X: np.ndarray, names: Sequence[str], best: str, head, head_models: Sequence[str], n_classes
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each system's (predicted class indices [N], attributes [N, 3]) on ensemble inputs X."""
    probs, attributes = split_inputs(X, n_classes)
    i = list(names).index(best)
    soup_probs, soup_attributes = head_outputs(head, reorder_models(X, names, head_models))
    return {
        BEST: (probs[i].argmax(axis=1), attributes[i]),
        VOTE: (soft_vote(list(probs)).argmax(axis=1), attributes.mean(axis=0)),
        SOUP: (soup_probs.argmax(axis=1), soup_attributes),
    }


def _rated(dev: DevSet) -> list[bool]:
    """Per attribute: whether at least two scored clips have a rating (a CCC exists)."""
    return [int(np.isfinite(dev.attributes[:, j]).sum()) >= 2 for j in range(len(ATTRIBUTES))]


def _figures(dev, outputs, clean, boot) -> tuple[dict, dict]:
    """One system's row figures on one condition; `clean`: its clean outputs (None: clean)."""
    (pred, attributes), row, intervals = outputs, {}, {}
    f1 = macro_f1_interval(dev.y, pred, dev.speakers, **boot)
    row |= {"macro_f1": f1.value, "macro_f1_low": f1.low, "macro_f1_high": f1.high}
    intervals["macro_f1"] = f1
    if clean is not None:
        delta = paired_macro_f1(dev.y, pred, clean[0], dev.speakers, **boot)
        row |= {"delta_macro_f1": delta.value, "delta_macro_f1_low": delta.low,
                "delta_macro_f1_high": delta.high}  # fmt: skip
        intervals["delta_macro_f1"] = delta
    for j, (attribute, rated) in enumerate(zip(ATTRIBUTES, _rated(dev), strict=True)):
        if not rated:
            continue
        truth = dev.attributes[:, j]
        ccc = ccc_interval(truth, attributes[:, j], dev.speakers, **boot)
        row |= {f"{attribute}_ccc": ccc.value, f"{attribute}_ccc_low": ccc.low,
                f"{attribute}_ccc_high": ccc.high}  # fmt: skip
        intervals[f"{attribute}_ccc"] = ccc
        if clean is not None:
            delta = paired_bootstrap(
                concordance_correlation,
                (truth, attributes[:, j]),
                (truth, clean[1][:, j]),
                dev.speakers,
                **boot,
            )
            row |= {f"delta_{attribute}_ccc": delta.value,
                    f"delta_{attribute}_ccc_low": delta.low,
                    f"delta_{attribute}_ccc_high": delta.high}  # fmt: skip
            intervals[f"delta_{attribute}_ccc"] = delta
    return row, intervals


def table_columns() -> list[str]:
    figures = ["macro_f1", *(f"{a}_ccc" for a in ATTRIBUTES)]
    columns = ["condition", "perturbation", "system", "model", "clips"]
    for figure in figures:
        columns += [figure, f"{figure}_low", f"{figure}_high"]
    for figure in figures:
        columns += [f"delta_{figure}", f"delta_{figure}_low", f"delta_{figure}_high"]
    return [*columns, UNRELIABLE]


def robustness_table(
    manifest_path: str | os.PathLike,
    clean_posteriors: Sequence[str | os.PathLike],
    soup_dir: str | os.PathLike,
    condition_posteriors: Mapping[str, Sequence[str | os.PathLike]],
    specs: Mapping[str, Mapping],
    boot: Mapping,
) -> pd.DataFrame:
    """Table R (module docstring): one row per (condition, system), ``clean`` first.

    `clean_posteriors`: every model's labelled posteriors (the report's); `condition_posteriors`:
    condition -> the same models' posteriors of its perturbed dev clips, in the same order;
    `specs`: condition -> its ``condition_spec``; `boot`: ``bootstrap_settings``.
    """
    manifest = read_manifest(manifest_path)
    clean_paths = [Path(p) for p in clean_posteriors]
    names = [posterior_model_name(p) for p in clean_paths]
    classes = ensemble_classes(clean_paths)
    scores = selection_scores(clean_paths, manifest)
    best = max(names, key=lambda n: scores[n])  # first of equals, as the report's Top DeepSER
    head, info = load_head(soup_dir)
    ids, X, y, rows = _scored_dev(clean_paths, manifest, classes)
    dev = DevSet.of(y, rows, classes)
    clean = system_outputs(X, names, best, head, info["models"], len(classes))
    perturbed = {CLEAN: clean}
    for condition, paths in condition_posteriors.items():
        paths = [Path(p) for p in paths]
        have = [posterior_model_name(p) for p in paths]
        if have != names:
            raise RobustnessError(f"robustness/{condition}: posteriors of {have}, expected {names}")
        c_ids, c_X, _, _ = _scored_dev(paths, manifest, classes)
        if len(c_ids) != len(ids) or (c_ids != ids).any():
            raise RobustnessError(
                f"{paths[0]}: its dev clips differ from the clean posteriors' ({len(c_ids)} "
                f"against {len(ids)}): Table R pairs the same clips"
            )
        perturbed[condition] = system_outputs(c_X, names, best, head, info["models"], len(classes))
    table = []
    for condition, outputs in perturbed.items():
        what = "none (the clean dev audio)" if condition == CLEAN else describe(specs[condition])
        for system in SYSTEMS:
            before = None if condition == CLEAN else clean[system]
            figures, intervals = _figures(dev, outputs[system], before, boot)
            table.append({"condition": condition, "perturbation": what, "system": system,
                          "model": best if system == BEST else "", "clips": len(y),
                          **figures, UNRELIABLE: unreliable_note(intervals)})  # fmt: skip
    return pd.DataFrame(table).reindex(columns=table_columns())


def _cell(row: Mapping, figure: str, signed: bool = False) -> str:
    value = row.get(figure)
    if value is None or not np.isfinite(value):
        return ""
    return interval_text(value, row[f"{figure}_low"], row[f"{figure}_high"], signed)


def format_markdown(table: pd.DataFrame, boot: Mapping) -> str:
    """Table R as a short markdown page: figures with intervals, and what they do not show."""
    level = f"{100 * boot['confidence']:.0f}%"
    lines = [
        "# Table R: robustness of the ensemble on perturbed dev audio",
        "",
        f"Dev clips ({int(table['clips'].iloc[0])} scored) perturbed per condition; macro-F1 "
        f"and CCC with {level} speaker-bootstrap intervals ({boot['n_resamples']} resamples); "
        "Δ: the change against the clean dev audio, paired (same clips, same resamples).",
        "",
        "| condition | system | macro-F1 | Δ macro-F1 | "
        + " | ".join(f"{a} CCC | Δ {a} CCC" for a in ATTRIBUTES)
        + " |",
        "|" + "---|" * (4 + 2 * len(ATTRIBUTES)),
    ]
    for row in table.to_dict("records"):
        system = f"{row['system']} ({row['model']})" if row["model"] else row["system"]
        cells = [
            row["condition"],
            system,
            _cell(row, "macro_f1"),
            _cell(row, "delta_macro_f1", True),
        ]
        for a in ATTRIBUTES:
            cells += [_cell(row, f"{a}_ccc"), _cell(row, f"delta_{a}_ccc", True)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Not shown: other noises, levels or codecs than the conditions listed; real recordings "
        "(the perturbations are simulated); models retrained on perturbed audio (every model "
        "and the soup were trained on clean audio); conditions combined.",
    ]
    unreliable = table[table[UNRELIABLE].fillna("") != ""]
    for row in unreliable.to_dict("records"):
        lines.append(f"- unreliable: {row['condition']}, {row['system']}: {row[UNRELIABLE]}")
    return "\n".join(lines) + "\n"


def write_robustness(
    manifest_path: str | os.PathLike,
    clean_posteriors: Sequence[str | os.PathLike],
    soup_dir: str | os.PathLike,
    condition_posteriors: Sequence[str | os.PathLike],
    specs: Mapping[str, Mapping],
    boot: Mapping,
    out_tsv: str | os.PathLike,
    out_md: str | os.PathLike,
) -> pd.DataFrame:
    """Table R as TSV and markdown (``robustness_table``); `condition_posteriors`: the
    ``robustness/<condition>/posteriors/<model>.h5`` files of every condition in `specs`."""
    grouped = posteriors_by_condition(condition_posteriors)
    missing = sorted(set(specs) - set(grouped))
    if missing:
        raise RobustnessError(f"no posteriors for robustness condition(s) {missing}")
    ordered = {name: grouped[name] for name in specs}
    table = robustness_table(manifest_path, clean_posteriors, soup_dir, ordered, specs, boot)
    atomic_write_text(out_tsv, table.to_csv(sep="\t", index=False, float_format="%.6g"))
    atomic_write_text(out_md, format_markdown(table, boot))
    return table
