import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from workflow_runner import (  # noqa: E402
    CI_CONFIGS,
    CORPUS_BEFORE_SOUP,
    generate_demo_corpus,
    run_snakemake,
    tree_state,
)

SESSION_FOLDERS = ("ci-run",)  # tmp_path_factory folders of session fixtures: kept to the end


@pytest.fixture(scope="module", autouse=True)
def remove_module_folders(request, tmp_path_factory):
    """Each module's tmp_path_factory folders (workflow runs of a few hundred MB each) go when
    the module's tests have all passed: the suite's disk use stays one module's, not the sum."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed != failed_before:
        return  # kept for a look at what failed
    for folder in set(base.iterdir()) - before:
        if folder.is_dir() and not folder.name.startswith(SESSION_FOLDERS):
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def torch_single_thread():
    """One torch thread for the module's tests, then the previous setting again."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def completed_ci_run(tmp_path_factory):
    """A working directory in which the CI-sized demo has run to `soup` locally (2 cores).

    Shared by the workflow tests (outputs, rerun behaviour) and the SLURM test (same results).
    """
    workdir = tmp_path_factory.mktemp("ci-run")
    generate_demo_corpus(workdir)
    corpus = tree_state(workdir / "resources/demo/msp-podcast")
    (workdir / CORPUS_BEFORE_SOUP).write_text(json.dumps(corpus, indent=1))
    run = run_snakemake(
        workdir,
        "soup",
        "--cores",
        "2",
        "--resources",
        "gpu=1",
        configfiles=CI_CONFIGS,
        timeout=2400,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return workdir


@pytest.fixture
def run_copy(completed_ci_run, tmp_path):
    """A copy of the completed CI-sized run (corpus, results and Snakemake's records, mtimes
    kept) that a test may change or extend without touching the shared run."""
    copy = tmp_path / "run"
    shutil.copytree(completed_ci_run, copy, symlinks=True)
    return copy
