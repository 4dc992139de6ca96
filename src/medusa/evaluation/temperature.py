"""Temperature scaling of the soup (docs/method.md, section 7): one number T, fitted after
the soup on the clips the meta-classifier trained on, recorded in ``temperature.json``.

The soup's posteriors p become softmax(ln p / T)
(``medusa.evaluation.calibration.temperature_scale``): T > 1 softens over-confident posteriors,
T < 1 sharpens under-confident ones, and no prediction changes (the argmax is the same). T
minimises the negative log-likelihood of the consensus labels
(``medusa.evaluation.calibration.fit_temperature``) on the clips of ``meta.train_on``, read from
the soup's checkpoint: by default the `meta` clips, which share no speaker with
dev or the selection holdout. Dev is never used, so the report's dev figures after scaling
(Table C) are out of sample. With ``train_on: holdout`` T is fitted on the selection
holdout, and the record says so.

The head learned on the same clips, so a head that overfits them looks more confident there
than on new speech and T fitted there is too small for new data; Table C on dev shows
whether the scaling helps out of sample.

``temperature.json``: method, temperature, fitted_on (subset, clips, speakers, ids), NLL,
Brier and ECE of the fitted clips before and after, the soup's models and classes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medusa.core.atomic import atomic_write_json
from medusa.core.manifest import consensus_labels, read_manifest
from medusa.corpus.partitions import HOLDOUT
from medusa.ensemble.inputs import (
    EnsembleError,
    load_ensemble_inputs,
    manifest_rows,
    paths_in_model_order,
)
from medusa.ensemble.meta import head_classes, load_head, predict_probs
from medusa.ensemble.meta_training import single_threaded
from medusa.evaluation.calibration import (
    calibration_scores,
    fit_temperature,
    log_posteriors,
    temperature_scale,
)

log = logging.getLogger(__name__)

METHOD = "temperature"


@single_threaded
def fit_soup_temperature(
    soup_dir: str | os.PathLike,
    posterior_paths: Sequence[str | os.PathLike],
    manifest_path: str | os.PathLike,
    out_json: str | os.PathLike,
) -> dict:
    """Fit T on the soup's `train_on` clips (those with a consensus in the class set) and
    write `out_json`; returns the record."""
    head, info = load_head(soup_dir)
    subset = info["train_on"]
    classes = head_classes(info)
    paths = paths_in_model_order(posterior_paths, info["models"])
    ids, X = load_ensemble_inputs(paths, subset)
    rows = manifest_rows(read_manifest(manifest_path), subset, ids)
    keep, labels = consensus_labels(rows["emo_class"], classes)
    if not keep.any():
        raise EnsembleError(
            f"{manifest_path}: no {subset!r} clip (meta.train_on) has a consensus in the "
            f"classes {list(classes)}: nothing to fit the soup's temperature on"
        )
    probs = predict_probs(head, X[keep]).astype(np.float64)
    temperature = fit_temperature(log_posteriors(probs), labels)
    before = calibration_scores(probs, labels)
    after = calibration_scores(temperature_scale(probs, temperature), labels)
    record = {
        "method": METHOD,
        "temperature": temperature,
        "fitted_on": {
            "subset": subset,
            "clips": int(keep.sum()),
            "speakers": int(rows["speaker"][keep].nunique()),
            "ids": [str(i) for i in ids[keep]],
        },
        "before": before,
        "after": after,
        "models": list(info["models"]),
        "classes": list(classes),
        "note": fitted_on_note(subset),
    }
    atomic_write_json(out_json, record)
    log.info(
        "temperature %.4f fitted on %d %s clips: NLL %.4f -> %.4f",
        temperature,
        keep.sum(),
        subset,
        before["nll"],
        after["nll"],
    )
    return record


def fitted_on_note(subset: str) -> str:
    """What the clips T was fitted on are, in a sentence."""
    if subset == HOLDOUT:
        return (
            "fitted on the selection holdout (meta.train_on: holdout): the clips that chose "
            "every model's checkpoint and trained the meta-classifier; never on dev"
        )
    return f"fitted on the {subset!r} clips the meta-classifier trained on (meta.train_on), never on dev"


def read_temperature(path: str | os.PathLike, models: Sequence[str] | None = None) -> dict:
    """A ``temperature.json`` record, checked: a finite T > 0 and, given `models`, fitted for
    a soup over exactly those models (in that order)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"temperature file not found: {path} (rule temperature)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise EnsembleError(f"{path}: not JSON ({err})") from err
    temperature = record.get("temperature") if isinstance(record, Mapping) else None
    if record.get("method") != METHOD or not _positive(temperature):
        raise EnsembleError(
            f"{path}: not a temperature record (method {record.get('method')!r}, "
            f"temperature {temperature!r})"
        )
    if models is not None and list(record.get("models", [])) != list(models):
        raise EnsembleError(
            f"{path}: fitted for a soup over {record.get('models')}, this soup combines "
            f"{list(models)}: rerun rule temperature"
        )
    return record


def _positive(value) -> bool:
    return isinstance(value, int | float) and np.isfinite(value) and value > 0
