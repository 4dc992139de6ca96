"""Jobs import only what they use (benchmarks/job_overhead.py measures what that saves).

Each check runs in a fresh process: a module that starts importing something heavy at the top
(or a scoring path that pulls in scikit-learn again) fails here.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from job_overhead import SCRIPTS, script_imports  # noqa: E402

HEAVY = ("torch", "transformers", "whisper", "sklearn", "matplotlib")


def imported_after(code: str) -> set[str]:
    """The heavy packages in sys.modules after running `code` in a fresh process."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("code", "allowed"),
    [
        # Transcript files, the fetch stage, data preparation: no model library at all.
        (
            "import medusa.asr.transcripts, medusa.core.fetch, medusa.corpus.prepare,"
            " medusa.corpus.partitions, medusa.corpus.audio_index",
            set(),
        ),
        # Scoring (every training epoch, meta seed and report) without scikit-learn.
        (
            "import numpy as np\nfrom medusa.core.metrics import classification_metrics\n"
            "classification_metrics(np.array([0, 1, 2]), np.array([0, 2, 2]), balanced=True)",
            set(),
        ),
        ("import medusa.training.loop, medusa.training.posteriors", {"torch"}),
        ("import medusa.ensemble.meta_training, medusa.ensemble.soup", {"torch"}),
        # Feature jobs never load whisper's decoder package (text ones read transcripts only).
        ("import medusa.features.extract", {"torch", "transformers"}),
    ],
)
def test_modules_import_only_what_they_use(code, allowed):
    assert imported_after(code) <= allowed


def test_merging_transcripts_imports_no_model_library():
    assert imported_after(script_imports(SCRIPTS / "asr_merge.py")) == set()


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent is a module, and `name` a function or constant
        return False


def test_the_workflow_parse_imports_no_model_library():
    """Every parse (the main process's, and each cluster job's) imports what common.smk
    imports: torch there costs seconds per parse."""
    common = (REPO / "workflow/rules/common.smk").read_text()
    imports = [line for line in common.splitlines() if line.startswith("from medusa.")]
    assert len(imports) >= 5
    modules = {line.split()[1] for line in imports}
    # `from medusa.dag import layout`: the submodule is imported too, not just the package.
    for line in imports:
        package, names = line.split()[1], line.split(" import ")[1]
        for name in names.strip("( ").split(","):
            name = name.split(" as ")[0].strip()
            if name and _is_module(f"{package}.{name}"):
                modules.add(f"{package}.{name}")
    modules = sorted(modules)
    assert imported_after("import " + ", ".join(modules)) == set()
