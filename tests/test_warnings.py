"""No warning from the project's own code, in the test process or in the workflow's jobs.

In the test process, pyproject.toml's pytest filters make such warnings errors. A Snakemake
job is another process: its warnings are printed to the job's log, which is read here.
"""

from __future__ import annotations

import re
from pathlib import Path

from medusa.features.backbone import MIXED_MASK_TYPES_WARNING

# Python prints a warning as "<file>:<line>: <Category>: <message>"; the project's code is the
# library, the workflow's scripts and Snakemake's copies of them (.snakemake/scripts/).
OWN_CODE_WARNING = re.compile(
    r"(/medusa/|/workflow/scripts/|/\.snakemake/scripts/)\S*\.py:\d+: \w*Warning: "
)


def project_warnings(log_dir: Path) -> list[str]:
    """Warning lines of the logs under `log_dir` raised from the project's own code, plus
    torch's mixed mask types warning (printed from torch whoever passed the masks)."""
    found = []
    for log in sorted(log_dir.rglob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if OWN_CODE_WARNING.search(line) or MIXED_MASK_TYPES_WARNING in line:
                found.append(f"{log.relative_to(log_dir)}: {line.strip()}")
    return found


def test_project_warnings_are_found_in_job_logs(tmp_path):
    logs = tmp_path / "logs/features"
    logs.mkdir(parents=True)
    (logs / "wavlm.log").write_text(
        "wavlm train:   0%|  | 0/72 [00:00<?, ?clip/s]/x/site-packages/torch/nn/functional.py:6409:"
        f" UserWarning: {MIXED_MASK_TYPES_WARNING} is deprecated. Use same type for both instead.\n"
    )
    (logs / "report.log").write_text(
        "/x/src/medusa/report.py:284: FutureWarning: fillna with a str on float64\n"
        "/x/.snakemake/scripts/tmpab12.make_report.py:9: DeprecationWarning: sum(1)\n"
        # Warnings from inside third-party code stay warnings (and are not reported here).
        "/x/site-packages/torch/backends/mkldnn/__init__.py:96: UserWarning: TF32 acceleration\n"
        "medusa: 12 clips done\n"
    )
    found = project_warnings(tmp_path / "logs")
    assert [line.split(":")[0] for line in found] == [
        "features/report.log",
        "features/report.log",
        "features/wavlm.log",
    ]


def test_ci_run_jobs_print_no_warning_from_project_code(completed_ci_run):
    assert project_warnings(completed_ci_run / "logs") == []
