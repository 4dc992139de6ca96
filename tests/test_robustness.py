"""Robustness (Table R, target `robustness`): the config block, perturbed partitions, and the
target on a copy of the completed CI-sized run (2 conditions)."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from medusa.conditions import (
    BABBLE_SOURCE,
    CLEAN,
    RobustnessError,
    build_condition,
    condition_names,
    condition_spec,
    enabled_section,
)
from medusa.partitions import INDEX_COLUMNS, read_audio_index
from medusa.perturb import PerturbationError
from medusa.robustness import SYSTEMS, perturb_partition, posteriors_by_condition

from workflow_runner import CI_CONFIGS, REPO, dry_run_jobs, run_snakemake

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
CHAIN_RULES = (
    "robustness_perturb",
    "robustness_asr",
    "robustness_features",
    "robustness_posteriors",
)


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


def test_robustness_target_builds_table_r_and_reruns_only_an_edited_condition(run_copy):
    # `soup` never plans a robustness job, even forced from scratch.
    forced = dry_run_jobs(run_copy, "soup", "--forceall", config=CI_ROBUSTNESS)
    assert forced and not [rule for rule, _ in forced if rule.startswith("robustness")]

    run = run_snakemake(
        run_copy, "robustness", "--cores", "2", "--resources", "gpu=1",
        configfiles=CI_CONFIGS, config=CI_ROBUSTNESS, timeout=900,
    )  # fmt: skip
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
