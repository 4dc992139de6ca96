"""The workflow on a real one-node SLURM cluster through `--profile profiles/slurm`, to `soup`.

tests/slurm/slurm-ci.sh starts the cluster (installing SLURM with apt-get when missing) with two
fake GPUs: character devices SLURM schedules and binds like GPUs, while torch sees no CUDA. The
run uses the profile as it is in the repository, plus two settings for a test: status checks
from 5 s after submission (default 40 s, which dominates jobs of a few seconds) and SLURM job
logs kept after success (they are evidence below). Checked: the run completes, every job of a
GPU rule asked for exactly one GPU and saw exactly one (`CUDA_VISIBLE_DEVICES`, also in the
job's own device log line), other jobs none, and the results equal a local `--cores 2` run of
the same config.

Needs root (the script installs packages and starts daemons): skipped otherwise, and skipped
when apt-get cannot install SLURM, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hub_server import FakeHub
from workflow_runner import CI_CONFIGS, REPO, SNAKEMAKE, generate_demo_corpus, online_env

SCRIPT = REPO / "tests/slurm/slurm-ci.sh"
PROFILE = REPO / "profiles/slurm"
GPU_RULES = ("asr", "features", "stage1", "stage2", "posteriors")
HUB_BACKBONE = "medusa-test/whisper-tiny-en-5s-encoder"
HUB_COPY = "resources/models/hub/medusa-test--whisper-tiny-en-5s-encoder@main"
# The CI-sized DAG (33 SLURM jobs) takes 10-16 minutes on 2 CPU cores; a hung run is stopped with
# SIGINT (which makes Snakemake cancel its SLURM jobs; SIGTERM does not stop it).
RUN_TIMEOUT_S = 3600
# Where the wall time of the SLURM run is written (for CI logs and the project's notes).
WALL_TIME_FILE = Path(os.environ.get("MEDUSA_SLURM_WALL_TIME", "/tmp/medusa-slurm-wall-time.txt"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _script(action: str) -> subprocess.CompletedProcess:
    # Two fake GPUs: on a 2-core node two single-threaded GPU jobs run side by side (as a local
    # run with --cores 2 does), and a job must still get exactly one of them.
    env = {**os.environ, "SLURM_CI_GPUS": "2"}
    return subprocess.run(
        ["bash", str(SCRIPT), action], capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running one-node SLURM cluster for this module; always taken down afterwards."""
    if os.geteuid() != 0:
        pytest.skip("SLURM test needs root: tests/slurm/slurm-ci.sh installs and starts SLURM")
    up = _script("up")
    if up.returncode == 3:
        message = f"apt-get could not install SLURM:\n{up.stderr[-2000:]}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        assert up.returncode == 0, f"slurm-ci.sh up failed:\n{up.stdout}\n{up.stderr}"
        yield
    finally:
        down = _script("down")
        assert down.returncode == 0, f"slurm-ci.sh down failed:\n{down.stdout}\n{down.stderr}"


@pytest.fixture(scope="module")
def hub(completed_ci_run):
    """A hub on 127.0.0.1 serving the CI run's Whisper encoder as a hub model (tests/hub_server.py):
    the SLURM run fetches it with the local rule fetch_models and its GPU jobs load the copy."""
    server = FakeHub().start()
    server.add_folder(
        HUB_BACKBONE, completed_ci_run / "resources/backbones/whisper-tiny-en-5s-encoder"
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, hub, tmp_path_factory):
    """A working directory in which the CI-sized demo ran to `soup` on SLURM, its `whisper`
    feature set's backbone a hub id fetched on the submitting node."""
    workdir = tmp_path_factory.mktemp("slurm-run")
    generate_demo_corpus(workdir)  # locally, as a user would before submitting
    hub_config = workdir / "hub.yaml"
    hub_config.write_text(f"feature_sets: {{whisper: {{backbone: {HUB_BACKBONE}}}}}\n")
    cmd = [
        "timeout", "-s", "INT", "-k", "30", str(RUN_TIMEOUT_S),
        SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--profile", str(PROFILE),
        "--slurm-init-seconds-before-status-checks", "5",
        "--slurm-keep-successful-logs",
        "--configfile", *map(str, CI_CONFIGS), str(hub_config),
        "--", "soup",
    ]  # fmt: skip
    # The network is on for the whole run (as on a login node): only the fetch may use it.
    env = online_env(HF_ENDPOINT=hub.url)
    start = time.monotonic()
    run = subprocess.run(
        cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S + 60, env=env, cwd=REPO
    )
    wall_s = time.monotonic() - start
    (workdir / "snakemake.log").write_text(run.stdout + run.stderr)
    n_jobs = len(re.findall(r"has been submitted with SLURM jobid", run.stdout + run.stderr))
    note = (
        f"SLURM run of the CI-sized demo to soup: {wall_s:.0f} s wall time, {n_jobs} SLURM jobs, "
        f"exit status {run.returncode} ({workdir})\n"
    )
    print(note, end="")
    WALL_TIME_FILE.write_text(note)
    (workdir / "slurm-wall-time.txt").write_text(note)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return workdir


def slurm_jobs() -> list[dict[str, str]]:
    """Every job slurmctld still knows (finished ones too: MinJobAge is an hour), as fields."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.strip()]


def job_logs(workdir: Path) -> dict[str, list[Path]]:
    """SLURM output files of the run per rule (.snakemake/slurm_logs/rule_<rule>/.../<id>.log)."""
    logs: dict[str, list[Path]] = {}
    for rule_dir in (workdir / ".snakemake/slurm_logs").glob("rule_*"):
        logs[rule_dir.name.removeprefix("rule_")] = sorted(rule_dir.rglob("*.log"))
    return logs


def visible_devices(slurm_log: str) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each task (batch script, srun step) the cluster's prolog printed."""
    return re.findall(r"^slurm-ci task: .*CUDA_VISIBLE_DEVICES=(\S*)$", slurm_log, re.M)


def test_slurm_run_produces_the_final_outputs(slurm_run):
    results = slurm_run / "results"
    for output in (
        "soup/head.pt",
        "soup/metrics.json",
        "predictions/test.csv",
        "report/table1.tsv",
        "report/headline.md",
    ):
        assert (results / output).stat().st_size > 0, output
    logs = job_logs(slurm_run)
    # Aggregation rules and the fetch are local rules: never submitted.
    assert not {"soup", "all", "fetch_models", "fetch_hub_model"} & set(logs)
    assert set(GPU_RULES) | {
        "audio_index",
        "prepare",
        "meta",
        "model_soup",
        "predict",
        "report",
    } <= set(logs)


def test_gpu_jobs_get_exactly_one_gpu(slurm_run):
    # What the jobs asked for: `--gpus=1` shows as TresPerJob=gres:gpu:1; other jobs no GPU.
    # The executor's job comment is rule_<rule>[_wildcards_<values>].
    jobs = [j for j in slurm_jobs() if j.get("Comment", "").startswith("rule_")]
    assert jobs, "slurmctld lists no job of the run"
    rules = set()
    for job in jobs:
        rule = re.match(r"rule_(\w+?)(_wildcards_.*)?$", job["Comment"]).group(1)
        rules.add(rule)
        gpus = job.get("TresPerJob", "")
        if rule in GPU_RULES:
            assert gpus == "gres:gpu:1", (job["JobId"], job["Comment"], gpus)
        else:
            assert "gpu" not in gpus, (job["JobId"], job["Comment"], gpus)
    assert rules >= set(GPU_RULES), rules

    # What they saw: SLURM's CUDA_VISIBLE_DEVICES (one of the node's two ids) in every task,
    # and the same single device in the job's own log line from medusa.core.devices.
    for rule, paths in job_logs(slurm_run).items():
        assert paths, rule
        for path in paths:
            text = path.read_text()
            seen = visible_devices(text)
            assert len(seen) >= 2, (path, "expected the batch and the srun step's prolog lines")
            if rule not in GPU_RULES:
                assert set(seen) == {"<unset>"}, (path, seen)
                continue
            assert len(set(seen)) == 1 and seen[0] in ("0", "1"), (path, seen)
            rule_log = re.search(r"^\s+log: ([^,\s]+)", text, re.M)
            assert rule_log, path
            device_line = re.search(
                r"device: .*\bCUDA device (\w+)", (slurm_run / rule_log.group(1)).read_text()
            )
            assert device_line and device_line.group(1) == seen[0], (path, rule_log.group(1))


# Outputs compared byte for byte with the local run: the tables, texts and JSON of every stage.
# Training on the CPU is deterministic for a seed, and each job uses one thread in both runs.
TEXT_OUTPUTS = (
    "data/manifest.tsv",
    "data/report.md",
    "audio/*.tsv",
    "audio/*.md",
    "asr/*.jsonl",
    "models/*/stage*/metrics.json",
    "models/*/stage*/history.tsv",
    "meta/seed*/metrics.json",
    "soup/metrics.json",
    "predictions/*.csv",
    "report/*.tsv",
    "report/*.md",
)
# HDF5 outputs compared by content (every dataset and attribute; the files' bytes hold
# creation details): features and posteriors, the outputs of the GPU rules.
HDF5_OUTPUTS = ("features/*/*.h5", "posteriors/*/*.h5")


def hdf5_contents(path: Path) -> dict[str, object]:
    """Every attribute and dataset of an HDF5 file, by name."""
    contents: dict[str, object] = {}

    def add(name, node):
        contents.update({f"{name}@{k}": v for k, v in node.attrs.items()})
        if isinstance(node, h5py.Dataset):
            contents[name] = node[()]

    with h5py.File(path) as handle:
        add("", handle)
        handle.visititems(add)
    return contents


def same_files(slurm: Path, local: Path, pattern: str) -> list[Path]:
    names = sorted(p.relative_to(local) for p in local.glob(pattern))
    assert names, f"the local run has no {pattern}"
    assert sorted(p.relative_to(slurm) for p in slurm.glob(pattern)) == names, pattern
    return names


def test_slurm_results_equal_a_local_run(slurm_run, completed_ci_run):
    slurm, local = slurm_run / "results", completed_ci_run / "results"
    for pattern in TEXT_OUTPUTS:
        for name in same_files(slurm, local, pattern):
            assert (slurm / name).read_bytes() == (local / name).read_bytes(), name
    for pattern in HDF5_OUTPUTS:
        for name in same_files(slurm, local, pattern):
            a, b = hdf5_contents(slurm / name), hdf5_contents(local / name)
            assert a.keys() == b.keys(), name
            if name.parts[:2] == ("features", "whisper"):
                # Served from the hub in the SLURM run: same weights, other provenance.
                a = {k: v for k, v in a.items() if k not in ("@backbone", "@revision")}
            for key in a:
                assert np.array_equal(a[key], b[key]), (name, key)


def test_gpu_jobs_load_the_copy_fetched_by_the_local_rule(slurm_run, hub):
    # fetch_hub_model ran on this (submitting) node: its log is a local job log, not SLURM's.
    fetch_log = slurm_run / "logs/fetch/hub/medusa-test--whisper-tiny-en-5s-encoder@main.log"
    assert "fetched medusa-test/whisper-tiny-en-5s-encoder@main" in fetch_log.read_text()
    commit = json.loads((slurm_run / HUB_COPY / "medusa-fetch.json").read_text())["commit"]
    # The features jobs (on SLURM) loaded that copy and asked the hub for nothing: every
    # request the server saw is one of the fetch's, none twice.
    assert len(set(hub.requests)) == len(hub.requests), hub.requests
    for path in (slurm_run / "results/features/whisper").glob("*.h5"):
        with h5py.File(path) as f:
            assert (f.attrs["backbone"], f.attrs["revision"]) == (HUB_BACKBONE, commit), path
        log = (slurm_run / "logs/features/whisper" / f"{path.stem}.log").read_text()
        assert HUB_COPY in log, path
