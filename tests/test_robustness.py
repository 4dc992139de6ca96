"""Robustness (Table R, target `robustness`): the config block and perturbed partitions. The
target itself runs on a copy of the completed CI-sized run (2 conditions) in
tests/test_evidence.py, with `cross_corpus` and `evidence`, in one Snakemake call."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from medusa.corpus.audio_index import read_audio_index
from medusa.corpus.partitions import INDEX_COLUMNS
from medusa.evaluation.conditions import (
    BABBLE_SOURCE,
    RobustnessError,
    build_condition,
    condition_names,
    condition_spec,
    enabled_section,
)
from medusa.evaluation.degrade import PerturbationError
from medusa.evaluation.robustness import perturb_partition, posteriors_by_condition

from workflow_runner import REPO

SR = 16000
RECIPE = yaml.safe_load((REPO / "config/config.yaml").read_text())["robustness"]
# The CI run keeps two of the recipe's conditions: generated noise and babble (which reads the
# training partition's clips).
KEPT = ("noise_pink_snr10", "babble_snr20")
CI_ROBUSTNESS = {
    "robustness": {
        "conditions": {n: {"enabled": False} for n in RECIPE["conditions"] if n not in KEPT}
    }
}


def test_the_recipe_lists_the_issue_conditions():
    names = condition_names(RECIPE)
    for snr in (20, 10, 0):
        assert f"noise_pink_snr{snr}" in names and f"babble_snr{snr}" in names
    assert {"speedup", "fade", "telephone", "mp3_low", "opus_low"} <= set(names)
    assert RECIPE["noise_dir"] is None


def test_disabled_conditions_are_dropped_and_specs_name_only_their_condition():
    section = {"seed": 3, "noise_dir": None, "conditions": {
        "noise_pink_snr10": {"snr_db": 5}, "babble_snr0": None, "fade": {"enabled": False}}}  # fmt: skip
    assert list(enabled_section(section)["conditions"]) == ["noise_pink_snr10", "babble_snr0"]
    assert condition_names(section) == ["noise_pink_snr10", "babble_snr0"]
    noise = condition_spec(section, "noise_pink_snr10")
    assert noise == {"kind": "noise", "seed": 3, "params": {"colour": "pink", "snr_db": 5}}
    babble = condition_spec(section, "babble_snr0")
    assert babble["params"]["clips"] == BABBLE_SOURCE
    with pytest.raises(RobustnessError, match="fade"):
        build_condition(section, "fade", [])


def test_a_bad_condition_names_its_key():
    section = {"seed": 0, "noise_dir": None, "conditions": {"telephone": {"high_hz": 5000}}}
    with pytest.raises(PerturbationError, match="robustness.conditions.telephone"):
        condition_names(section)
    section = {"seed": 0, "noise_dir": None, "conditions": {"noise_file_snr10": None}}
    with pytest.raises(PerturbationError, match="noise_dir"):
        condition_names(section)
    section = {"seed": 0, "noise_dir": None, "conditions": {"clean": {"kind": "fade",
               "fade_in_s": 1, "fade_out_s": 1, "shape": "linear"}}}  # fmt: skip
    with pytest.raises(RobustnessError, match="robustness.conditions.clean"):
        condition_names(section)


def test_a_perturbed_partition_is_indexed_relative_to_its_folder(tmp_path):
    root, rng = tmp_path / "corpus", np.random.default_rng(0)
    (root / "Audios").mkdir(parents=True)
    rows = []
    for i, problem in enumerate(["", "", "unreadable"]):
        name = f"Audios/clip{i}.wav"
        sf.write(root / name, 0.1 * rng.standard_normal(SR), SR)
        rows.append([f"clip{i}", name, "development", 1.0, SR, 1, problem])
    index = tmp_path / "development.tsv"
    pd.DataFrame(rows, columns=INDEX_COLUMNS).to_csv(index, sep="\t", index=False)
    section = {"seed": 0, "noise_dir": None, "conditions": {"speedup": None}}
    out = tmp_path / "robustness/speedup/audio/development"
    perturb_partition(
        index, root, out, out.with_suffix(".tsv"), build_condition(section, "speedup", [])
    )
    written = read_audio_index(out.with_suffix(".tsv"))
    assert written["id"].tolist() == ["clip0", "clip1"]  # the unusable clip is left out
    assert written["path"].tolist() == ["Audios/clip0.wav", "Audios/clip1.wav"]
    # 30% of the clip at 1.25x: 6% shorter.
    assert written["duration_s"].tolist() == pytest.approx([0.94, 0.94], abs=1e-3)
    assert json.loads((out / "condition.json").read_text())["kind"] == "speedup"


def test_posteriors_are_grouped_by_condition_in_model_order():
    paths = [f"results/robustness/{c}/posteriors/{m}.h5" for c in ("b", "a") for m in ("m2", "m1")]
    grouped = posteriors_by_condition(paths)
    assert list(grouped) == ["b", "a"] and [p.stem for p in grouped["a"]] == ["m2", "m1"]
    with pytest.raises(RobustnessError, match="not a robustness"):
        posteriors_by_condition(["results/posteriors/m1/labelled.h5"])
