"""What each kind of workflow job pays before it does any work: the imports of its script.

Every Snakemake job is a fresh Python process, so a job of a few seconds (posteriors, a meta
seed, a demo training stage) can spend most of its time importing. For each script under
workflow/scripts/, this starts fresh processes that run the script's own import statements
(read from its source) and reports the median wall and CPU time, and which heavy packages
they pull in; then the same for the heavy packages alone, for reference.

    python benchmarks/job_overhead.py            # 5 processes per script
    python benchmarks/job_overhead.py --runs 9

Run it on an idle machine: the figures are per process, and two jobs side by side on two cores
each import more slowly.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow/scripts"
HEAVY = ("torch", "transformers", "whisper", "sklearn", "matplotlib", "pandas", "h5py", "numba")
PROBE = """
import json, os, resource, sys, time
start = time.perf_counter()
{imports}
usage = resource.getrusage(resource.RUSAGE_SELF)
heavy = [m for m in {heavy!r} if m in sys.modules]
print(json.dumps({{"wall": time.perf_counter() - start, "cpu": usage.ru_utime + usage.ru_stime,
                  "heavy": heavy}}))
"""


def script_imports(path: Path) -> str:
    """The module-level import statements of a workflow script, as source."""
    tree = ast.parse(path.read_text())
    nodes = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    return "\n".join(ast.unparse(n) for n in nodes)


def measure(imports: str, runs: int) -> dict:
    """Median wall and CPU seconds of `imports` over `runs` fresh processes."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    code = PROBE.format(imports=imports, heavy=HEAVY)
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "wall": statistics.median(s["wall"] for s in samples),
        "cpu": statistics.median(s["cpu"] for s in samples),
        "heavy": samples[-1]["heavy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="processes per measurement")
    args = parser.parse_args()

    print(f"imports of each workflow script, median of {args.runs} fresh processes")
    print(f"{'script':<18} {'wall s':>7} {'cpu s':>7}  heavy packages imported")
    for path in sorted(SCRIPTS.glob("*.py")):
        figures = measure(script_imports(path), args.runs)
        heavy = ", ".join(figures["heavy"]) or "-"
        print(f"{path.stem:<18} {figures['wall']:7.2f} {figures['cpu']:7.2f}  {heavy}")

    print("\nheavy packages alone, for reference")
    for module in ("torch", "transformers.models.auto.modeling_auto", "whisper", "sklearn.metrics"):
        figures = measure(f"import {module}", args.runs)
        print(f"{module:<40} {figures['wall']:7.2f} {figures['cpu']:7.2f}")


if __name__ == "__main__":
    main()
