"""Faults injected on purpose into the real workflow (snakemake on a copy of the completed
CI-sized run): a full disk, bytes changed in finished files, a diverging training run, a killed
job, a second snakemake on the same folder. Each must stop with a message that names the file
or the model, leave nothing that Snakemake would take as finished, and lose nothing: after
the fault is gone, the rerun gives the results of the undisturbed run, byte for byte."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from workflow_runner import CI_CONFIGS, REPO, SNAKEMAKE, online_env, run_snakemake

FEATURES = "results/features/whisper/unlabelled.h5"  # used only by m13's unlabelled posteriors
CHECKPOINT = "results/models/m05_wavlm_roberta/stage1/checkpoint.pt"
POSTERIORS = "results/posteriors/m13_whisper_wavlm/labelled.h5"


def snakemake(workdir: Path, *args: str, config: dict | None = None):
    return run_snakemake(workdir, *args, "--cores", "2", configfiles=CI_CONFIGS, config=config)


def output(run: subprocess.CompletedProcess) -> str:
    return run.stdout + run.stderr


def job_log(workdir: Path, path: str) -> str:
    return (workdir / path).read_text(encoding="utf-8")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@contextlib.contextmanager
def full_disk(folder: Path, free: int = 16 * 1024):
    """`folder` moved onto a tmpfs with `free` bytes to spare: writing more fails with
    ENOSPC. Unmounting frees the space; what was written meanwhile is gone with it."""
    kept = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}
    pages = sum(-(-len(data) // 4096) for data, _ in kept.values()) + free // 4096
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={pages * 4096}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mount.stderr.strip()}")
    try:
        for path, (data, mtime) in kept.items():  # the same files, times kept: nothing to rerun
            path.write_bytes(data)
            os.utime(path, ns=(mtime, mtime))
        # Not empty, so that Snakemake's clean-up of empty output folders leaves the mount point.
        (folder / KEEP).touch()
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


KEEP = ".keep"


def test_full_disk_fails_naming_the_file_and_the_rerun_recovers_it(run_copy, tmp_path):
    """ENOSPC while writing a feature file, a checkpoint and a posteriors file (one tmpfs each,
    too small for the file): each job fails naming the file, nothing is left in its place, and
    once space is free the rerun writes the undisturbed run's bytes."""
    targets = [FEATURES, CHECKPOINT, POSTERIORS]
    undisturbed = {t: (run_copy / t).read_bytes() for t in targets}
    for t in targets:
        (run_copy / t).unlink()  # the file is being made, as in a first run
    with contextlib.ExitStack() as stack:
        folders = [stack.enter_context(full_disk((run_copy / t).parent)) for t in targets]
        run = snakemake(run_copy, *targets, "--keep-going")
        assert run.returncode != 0
        logs = {
            FEATURES: "logs/features/whisper/unlabelled.log",
            CHECKPOINT: "logs/models/m05_wavlm_roberta/stage1.log",
            POSTERIORS: "logs/posteriors/m13_whisper_wavlm/labelled.log",
        }
        for t in targets:
            log = job_log(run_copy, logs[t])
            assert f"cannot write {t}" in log, log[-2000:] + output(run)[-3000:]
            assert "No space left on device" in log
            assert "Error in rule" in output(run)
        # Nothing at the outputs' paths, no temporary file either: the disk is not kept full.
        for t, folder in zip(targets, folders, strict=True):
            assert Path(t).name not in leftovers(folder)
            assert not [n for n in leftovers(folder) if n.endswith(".tmp")], leftovers(folder)
    for t in targets:  # the tmpfs is gone: the outputs are still missing on the real disk
        assert not (run_copy / t).exists()
    start = time.monotonic()
    rerun = snakemake(run_copy, *targets)
    recovery = time.monotonic() - start
    assert rerun.returncode == 0, output(rerun)[-3000:]
    for t in targets:
        assert (run_copy / t).read_bytes() == undisturbed[t], t
    print(f"full disk: recovered in {recovery:.1f} s")


def flip_a_byte(path: Path, where: float = 0.5) -> None:
    """Change one byte (at fraction `where` of the file), keeping size and modification time:
    what bit rot or a bad copy leaves, invisible to Snakemake."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x10
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize(
    ("damaged", "consumer", "rule", "log"),
    [
        (
            "results/features/whisper/train.h5",
            "results/models/m13_whisper_wavlm/stage1/checkpoint.pt",
            "stage1",
            "logs/models/m13_whisper_wavlm/stage1.log",
        ),
        (
            "results/models/m05_wavlm_roberta/stage2/checkpoint.pt",
            "results/posteriors/m05_wavlm_roberta/labelled.h5",
            "posteriors",
            "logs/posteriors/m05_wavlm_roberta/labelled.log",
        ),
        (POSTERIORS, "results/meta/seed0/head.pt", "meta", "logs/meta/seed0.log"),
    ],
    ids=["features", "checkpoint", "posteriors"],
)
def test_a_changed_byte_stops_the_job_that_reads_the_file(run_copy, damaged, consumer, rule, log):
    """A byte flipped in the middle of a finished file: the next job reading it fails naming
    it and how to rebuild it, and the rebuild the message names restores the file."""
    original = (run_copy / damaged).read_bytes()
    flip_a_byte(run_copy / damaged)
    run = snakemake(run_copy, consumer, "--forcerun", rule)
    assert run.returncode != 0
    message = job_log(run_copy, log)
    assert f"{damaged}: SHA-256" in message and f"rm {damaged}" in message, message[-2000:]
    assert not (run_copy / consumer).exists()  # nothing learnt from it was kept
    (run_copy / damaged).unlink()  # what the message says to do
    start = time.monotonic()
    rebuild = snakemake(run_copy, damaged)
    recovery = time.monotonic() - start
    assert rebuild.returncode == 0, output(rebuild)[-3000:]
    assert (run_copy / damaged).read_bytes() == original
    print(f"{damaged} changed: rebuilt in {recovery:.1f} s")


def test_a_diverging_model_stops_naming_model_stage_epoch_and_batch(run_copy):
    """A learning rate far too large: the stage stops at the first non-finite loss instead of
    writing a checkpoint of NaN weights, and the job exits non-zero."""
    config = {"models": {"m05_wavlm_roberta": {"stage1": {"lr": 1.0e30}}}}
    run = snakemake(run_copy, CHECKPOINT, config=config)
    assert run.returncode != 0
    log = job_log(run_copy, "logs/models/m05_wavlm_roberta/stage1.log")
    assert "NonFiniteTrainingError: model m05_wavlm_roberta, stage 1 (lr 1e+30), epoch " in log
    assert ", batch " in log and "non-finite" in log, log[-2000:]
    assert not (run_copy / CHECKPOINT).exists()


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    """snakemake in its own process group, as a batch job (SLURM signals the whole job)."""
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += [*args, "--cores", "2", "--configfile", *map(str, CI_CONFIGS)]
    env = online_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def wait_for(condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_sigterm_mid_run_and_a_second_snakemake_lose_nothing(run_copy):
    """A job killed by SIGTERM (SLURM's time limit, pre-emption) while ASR and feature
    extraction run, and meanwhile the same snakemake command started again on the same
    folder: the second stops at the lock without touching anything, the killed run leaves no
    partial output, and the rerun gives the uninterrupted run's files."""
    asr, features = "results/asr/train.jsonl", "results/features/wavlm/train.h5"
    undisturbed = {t: (run_copy / t).read_bytes() for t in (asr, features)}
    first = start_snakemake(run_copy, asr, features, "--forcerun", "asr", "features")
    try:
        # Mid-run: ASR is transcribing (its progress bar is in the log) and the features job
        # is writing its (temporary) file.
        wait_for(lambda: "asr train:" in _read(run_copy / "logs/asr/train.log"))
        wait_for(lambda: list((run_copy / "results/features/wavlm").glob(".train.h5.*.tmp")))
        before = results_state(run_copy)
        second = snakemake(run_copy, asr, features)  # the same command, in another shell
        assert second.returncode != 0
        assert "cannot be locked" in output(second), output(second)[-2000:]
        assert results_state(run_copy) == before
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode != 0
    # Never a partial file at an output's path: a job the signal killed left nothing there; one
    # that finished while the second command was parsing (a loaded machine) left its whole file.
    killed = [t for t in (asr, features) if not (run_copy / t).exists()]
    assert killed, "the signal came after both jobs had finished: nothing was interrupted"
    for t in set((asr, features)) - set(killed):
        assert (run_copy / t).read_bytes() == undisturbed[t], t
    start = time.monotonic()
    rerun = snakemake(run_copy, asr, features)
    recovery = time.monotonic() - start
    assert rerun.returncode == 0, output(rerun)[-3000:]
    for t in (asr, features):
        assert (run_copy / t).read_bytes() == undisturbed[t], t
    assert not list((run_copy / "results/features/wavlm").glob("*.tmp"))
    print(f"SIGTERM: recovered in {recovery:.1f} s")


def results_state(workdir: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every result, but those the running jobs write."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in (workdir / "results").rglob("*")
        if p.is_file() and not str(p.relative_to(workdir)).startswith(RUNNING_JOBS_WRITE)
    }


# What the running jobs write, and the corpus digest cache every parse may refresh.
RUNNING_JOBS_WRITE = (
    "results/asr/",
    "results/features/wavlm/",
    "results/benchmarks/",
    "results/cache/",
)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
