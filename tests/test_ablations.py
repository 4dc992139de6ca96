"""The paper's Table 2 through the `ablations` target, on the CI-sized run (one model, five
switches): written with intervals, cached like every other job, and never part of `soup`."""

import pandas as pd

from workflow_runner import CI_CONFIGS, dry_run_jobs, run_snakemake

MODEL = "m05_wavlm_roberta"
# Rows follow the switches' names (the job's params are canonical, sorted JSON).
SWITCHES = ("deep_fusion", "mixup", "multitask", "soft_targets", "stage2")


def test_ablations_write_table2_and_stay_out_of_the_soup(run_copy):
    completed_ci_run = run_copy  # the shared run stays as the SLURM comparison expects it
    # The main run trained no ablation model.
    assert not list((completed_ci_run / "results/models").glob("*__no_*"))
    run = run_snakemake(completed_ci_run, "ablations", "--cores", "2", "--resources", "gpu=2",
                        configfiles=CI_CONFIGS, timeout=1800)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    table = pd.read_csv(completed_ci_run / "results/report/table2.tsv", sep="\t")
    assert list(table["variant"]) == ["full DeepSER"] + [
        f"w/o {s.replace('_', ' ')}" for s in SWITCHES
    ]
    assert (table["model"] == MODEL).all()
    assert (table["macro_f1_low"] <= table["macro_f1"]).all()
    assert (table["macro_f1"] <= table["macro_f1_high"]).all()
    ablated = table.iloc[1:]
    expected = ablated["macro_f1"] / table["macro_f1"].iloc[0] - 1
    pd.testing.assert_series_equal(
        ablated["relative_change"], expected, check_names=False, atol=1e-3
    )
    # w/o stage 2 has no stage-2 job: its posteriors come from stage 1.
    assert not (completed_ci_run / f"results/models/{MODEL}__no_stage2/stage2").exists()
    # Nothing of the soup reruns, and changing one switch retrains only that ablation.
    assert dry_run_jobs(completed_ci_run, "soup") == []
    jobs = dry_run_jobs(
        completed_ci_run,
        "ablations",
        config={"ablations": {"switches": {"mixup": {"mixup": {"p": 0.5}}}}},
    )
    chain = f"model={MODEL}__no_mixup"
    assert jobs == sorted([("posteriors", f"{chain}, posterior_set=labelled"),
                           ("stage1", chain), ("stage2", chain), ("table2", ""),
                           ("ablations", "")])  # fmt: skip
