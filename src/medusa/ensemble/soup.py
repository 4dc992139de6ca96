"""Stage 4, the model soup (docs/method.md, section 6.3): the meta-classifier seeds' weights
averaged, greedily by balanced-holdout score, and the soup's test predictions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medusa.core.atomic import atomic_write_text
from medusa.core.manifest import read_manifest
from medusa.corpus.partitions import DEV, HOLDOUT, TEST
from medusa.ensemble.inputs import (
    BALANCED_HOLDOUT,
    EnsembleError,
    ensemble_classes,
    evaluation_data,
    load_ensemble_inputs,
    manifest_rows,
    paths_in_model_order,
)
from medusa.ensemble.meta import (
    MetaClassifier,
    _evaluate,
    _write_outputs,
    head_classes,
    in_sample_views,
    load_head,
    predict_probs,
    score_head,
    single_threaded,
)

log = logging.getLogger(__name__)


def average_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> dict:
    """Uniform mean of state_dicts with the same keys and shapes.

    The sum is taken in float64, so the mean of identical weights is exactly those weights.
    """
    if not state_dicts:
        raise EnsembleError("no state_dict to average")
    keys = list(state_dicts[0])
    for sd in state_dicts[1:]:
        if list(sd) != keys:
            raise EnsembleError(f"state_dicts differ in keys: {keys} vs {list(sd)}")
    return {
        k: torch.stack([sd[k].double() for sd in state_dicts])
        .mean(dim=0)
        .to(state_dicts[0][k].dtype)
        for k in keys
    }


def soup_of(heads: Sequence[MetaClassifier], architecture: Mapping) -> MetaClassifier:
    """The uniform soup: one head whose weights are the mean of `heads`."""
    model = MetaClassifier(**architecture)
    model.load_state_dict(average_state_dicts([h.state_dict() for h in heads]))
    return model.eval()


@single_threaded
def make_soup(
    seed_dirs: Sequence[str | os.PathLike],
    posterior_paths: Sequence[str | os.PathLike],
    manifest_path: str | os.PathLike,
    soup_cfg: Mapping,
    out_dir: str | os.PathLike,
) -> dict:
    """Stage 4: average the seeds' heads; write out_dir/head.pt and out_dir/metrics.json.

    `soup_cfg["method"]`: "uniform" averages every seed. "greedy" (Wortsman et al., 2022)
    ranks the seeds by class-balanced holdout macro-F1 and adds each in turn only if the
    soup's does not drop. With `train_on: holdout` that score is measured on the heads' own
    training clips, which is why uniform is the default.
    """
    method = dict(soup_cfg).get("method", "uniform")
    if method not in ("uniform", "greedy"):
        raise EnsembleError(f"soup config: method must be uniform or greedy, got {method!r}")
    # The ingredients, and how each scores on the balanced holdout.
    heads, infos = _load_ingredients(seed_dirs)
    ref_info = infos[0]
    paths = paths_in_model_order(posterior_paths, ref_info["models"])
    data = evaluation_data(paths, read_manifest(manifest_path))
    scores = [score_head(h, *data[HOLDOUT], balanced=True)["macro_f1"] for h in heads]

    # Which seeds go in, and their average.
    if method == "uniform":
        chosen = list(range(len(heads)))
    else:
        chosen = _greedy_ingredients(heads, scores, ref_info["architecture"], data)
    soup = soup_of([heads[i] for i in chosen], ref_info["architecture"])

    seeds = [s for i in chosen for s in infos[i].get("seeds", [])]
    ingredients = [
        {
            "dir": str(seed_dirs[i]),
            "seeds": info.get("seeds", []),
            "balanced_holdout_macro_f1": scores[i],
            "in_soup": i in chosen,
        }
        for i, info in enumerate(infos)
    ]
    metrics = {
        "method": method,
        "train_on": ref_info["train_on"],
        "in_sample": in_sample_views(ref_info["train_on"]),
        "ingredients": ingredients,
        "seeds": seeds,
        "selection": ref_info.get("selection"),
        **_evaluate(soup, data, head_classes(ref_info)),
    }
    info = {**{k: v for k, v in ref_info.items() if k != "path"}, "seeds": seeds}
    _write_outputs(Path(out_dir), soup, info, metrics)
    log.info(
        f"{method} soup of {len(chosen)}/{len(heads)} seeds: dev macro-F1 "
        f"{metrics[DEV]['macro_f1']:.4f}, balanced holdout macro-F1 "
        f"{metrics[BALANCED_HOLDOUT]['macro_f1']:.4f}"
    )
    return metrics


def _load_ingredients(
    seed_dirs: Sequence[str | os.PathLike],
) -> tuple[list[MetaClassifier], list[dict]]:
    """(heads, their infos) of the seeds, checked to be averageable: same models, architecture
    and training data; for a non-linear head also the same initialisation (averaging only
    makes sense from a shared starting point)."""
    if not seed_dirs:
        raise EnsembleError("make_soup: no seed directories given")
    loaded = [load_head(Path(d) / "head.pt") for d in seed_dirs]
    infos = [info for _, info in loaded]
    ref = infos[0]
    for info in infos[1:]:
        for key in ("models", "architecture", "train_on", "selection"):
            if info.get(key) != ref.get(key):
                raise EnsembleError(
                    f"{info['path']}: {key} {info.get(key)!r} differs from {ref['path']} "
                    f"({ref.get(key)!r}); a soup needs heads of one kind over the same models"
                )
        if ref["architecture"]["head"] != "linear" and info["init_seed"] != ref["init_seed"]:
            raise EnsembleError(
                f"{info['path']}: init_seed {info['init_seed']} differs from {ref['path']} "
                f"({ref['init_seed']}); an MLP soup needs a shared initialisation"
            )
    return [model for model, _ in loaded], infos


def _greedy_ingredients(
    heads: Sequence[MetaClassifier],
    scores: Sequence[float],
    architecture: Mapping,
    data: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> list[int]:
    """Greedy soup: seeds by decreasing balanced-holdout macro-F1 (`scores`), each added only if
    the soup's balanced-holdout macro-F1 does not drop. The indices of the seeds kept."""
    ranked = sorted(range(len(heads)), key=lambda i: -scores[i])  # stable: ties keep order
    chosen, best = [ranked[0]], scores[ranked[0]]
    for i in ranked[1:]:
        candidate = soup_of([heads[j] for j in [*chosen, i]], architecture)
        score = score_head(candidate, *data[HOLDOUT], balanced=True)["macro_f1"]
        if score >= best:
            chosen, best = [*chosen, i], score
    return chosen


@single_threaded
def predict_test(
    soup_dir: str | os.PathLike,
    posterior_paths: Sequence[str | os.PathLike],
    manifest: str | os.PathLike | pd.DataFrame,
    out_csv: str | os.PathLike,
    out_posteriors_csv: str | os.PathLike,
) -> pd.DataFrame:
    """Challenge submission for every `test` clip of the manifest, from the soup head.

    `manifest`: a manifest path or table with the `test` rows (the workflow passes the
    unlabelled partition's clips, ``medusa.corpus.audio_index.unlabelled_manifest``).

    Writes `out_csv` (`FileName,EmoClass`, one class letter per clip, sorted by FileName) and
    `out_posteriors_csv` (FileName and the class posteriors, columns named by class code).
    FileName is the audio file's name (e.g. `MSP-PODCAST_test3_0001.wav`). Returns the
    posteriors table.
    """
    model, info = load_head(soup_dir)
    paths = paths_in_model_order(posterior_paths, info["models"])
    ids, X = load_ensemble_inputs(paths, TEST)
    if not isinstance(manifest, pd.DataFrame):
        manifest = read_manifest(manifest)
    rows = manifest_rows(manifest, TEST, ids)
    file_names = [Path(p).name for p in rows["path"]]  # read_manifest: never empty
    if len(set(file_names)) != len(file_names):
        where = manifest.attrs.get("path", "manifest")
        raise EnsembleError(f"{where}: two test clips share an audio file name")
    probs = predict_probs(model, X)
    classes = ensemble_classes(paths)
    table = pd.DataFrame(probs, columns=list(classes))
    table.insert(0, "FileName", file_names)
    table.insert(1, "EmoClass", np.asarray(classes)[probs.argmax(axis=1)])
    table = table.sort_values("FileName", kind="stable").reset_index(drop=True)
    atomic_write_text(out_csv, table[["FileName", "EmoClass"]].to_csv(index=False))
    posteriors = table.drop(columns="EmoClass")
    atomic_write_text(out_posteriors_csv, posteriors.to_csv(index=False, float_format="%.6f"))
    return posteriors
