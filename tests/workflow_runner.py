"""Run the real workflow (the path a user takes) from tests, in a scratch working directory."""

from __future__ import annotations

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
) -> subprocess.CompletedProcess:
    """`snakemake <args>` on the repo's Snakefile with `workdir` as working directory.

    `config` is written to `workdir/test-config.yaml` and passed as the last --configfile
    (on the command line, --config turns nested numbers into strings).
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
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
