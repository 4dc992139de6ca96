"""Run the real workflow (the path a user takes) from tests, in a scratch working directory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def run_snakemake(
    workdir: Path,
    *args: str,
    configfiles: list[Path] | None = None,
    config: dict | None = None,
    timeout: int = 900,
    offline: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """`snakemake <args>` on the repo's Snakefile with `workdir` as working directory.

    `config` is written to `workdir/test-config.yaml` and passed as the last --configfile
    (on the command line, --config turns nested numbers into strings). The hub is offline
    unless `offline` is False (fetch_models needs it); `env` adds variables (HF_ENDPOINT).
    """
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += [*args]
    files = [str(f) for f in configfiles or []]
    if config:
        extra = workdir / "test-config.yaml"
        extra.write_text(yaml.safe_dump(config))
        files.append(str(extra))
    if files:
        cmd += ["--configfile", *files]
    offline_env = dict.fromkeys(OFFLINE_VARIABLES, "1") if offline else {}
    run_env = online_env(**{**offline_env, **(env or {})})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=run_env)


# Either one set makes huggingface_hub refuse the network.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def online_env(**extra: str) -> dict[str, str]:
    """This process's environment with the hub allowed (as on a node with network), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARIABLES}
    return {**env, **extra}


CI_CONFIGS = [REPO / "config/demo.yaml", REPO / "tests/config/ci.yaml"]


def fetch_models_online(workdir: Path, config: dict, endpoint: str) -> subprocess.CompletedProcess:
    """`snakemake fetch_models` on the CI-sized config with the network on, the hub at
    `endpoint` (a test server's HF_ENDPOINT)."""
    return run_snakemake(
        workdir,
        "fetch_models",
        "--cores",
        "1",
        configfiles=CI_CONFIGS,
        config=config,
        offline=False,
        env={"HF_ENDPOINT": endpoint},
    )


def generate_demo_corpus(workdir: Path) -> None:
    """The CI-sized demo corpus under `workdir` (what `make demo` runs first): the workflow
    plans ASR and features from the corpus's audio, so the corpus exists before it is parsed."""
    run = run_snakemake(workdir, "demo_corpus", "--cores", "1", configfiles=CI_CONFIGS)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]


# The corpus as generated, before `soup` ran (JSON of `tree_state`, written by the
# `completed_ci_run` fixture into its working directory).
CORPUS_BEFORE_SOUP = "corpus-before-soup.json"


def tree_state(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path) -> its sha256, size and modification time:
    equal before and after a run when the run only read the folder."""
    state = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink()):
        stat = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "link"
        state[str(path.relative_to(folder))] = f"{digest} {stat.st_size} {stat.st_mtime_ns}"
    return state


def dry_run_jobs(workdir: Path, *targets: str, config: dict | None = None) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run of the CI-sized demo would run, sorted.

    Aggregation targets (`all`, `soup`) run no code and are left out.
    """
    run = run_snakemake(workdir, "-n", *targets, configfiles=CI_CONFIGS, config=config)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    jobs, rule = [], None
    for line in (run.stdout + "\n" + run.stderr).splitlines():
        stripped = line.strip()
        if line.startswith(("rule ", "localrule ")) and stripped.endswith(":"):
            if rule is not None:
                jobs.append((rule, ""))
            rule = stripped.split()[1].rstrip(":")
        elif rule is not None and stripped.startswith("wildcards:"):
            jobs.append((rule, stripped.removeprefix("wildcards:").strip()))
            rule = None
        elif rule is not None and stripped.startswith("resources:"):
            # Jobs without wildcards print resources right after their other fields.
            jobs.append((rule, ""))
            rule = None
    if rule is not None:
        jobs.append((rule, ""))
    return sorted(job for job in jobs if job[0] not in ("all", "soup"))
