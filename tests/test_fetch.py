"""fetch_models against a real HTTP server on 127.0.0.1 (tests/hub_server.py) that serves a tiny
backbone in the hub's layout (HF_ENDPOINT points at it) and a whisper checkpoint by URL.

On a copy of the completed CI-sized run, the Whisper-encoder feature set's backbone becomes the
hub id ``medusa-test/whisper-tiny-en-5s-encoder`` and ``asr.model`` the checkpoint's URL, both
served from the run's own local backbones (so results must equal the local run's). Checked, in
order, through the Snakemake targets a user runs: an interrupted download leaves nothing
complete-looking; fetch_models materialises both with their revisions; with the server gone
(network off) the feature and ASR jobs run from the local copies and record the revisions;
a changed revision reruns only that backbone's jobs; without network and without a copy the
error names the model, the folder and the command; a tampered copy is refused.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from medusa.asr.transcribe import checkpoint_to_load
from medusa.asr.transcripts import read_provenance, read_transcripts
from medusa.core.fetch import (
    MANIFEST,
    FetchError,
    HubModel,
    hub_model,
    verified_hub_copy,
    whisper_checkpoint,
)

from hub_server import FakeHub
from workflow_runner import (
    CI_CONFIGS,
    REPO,
    dry_run_jobs,
    fetch_models_online,
    online_env,
    run_snakemake,
)

REPO_ID = "medusa-test/whisper-tiny-en-5s-encoder"
FOLDER = "resources/models/hub/medusa-test--whisper-tiny-en-5s-encoder@main"
TARGETS = ("results/features/whisper/train.h5", "results/asr/train.jsonl")


@pytest.fixture
def served(run_copy):
    """The server, holding the run's Whisper encoder (branch main, and a v2 with one more file)
    and its ASR checkpoint; the test config that points the workflow at it."""
    hub = FakeHub().start()
    encoder = run_copy / "resources/backbones/whisper-tiny-en-5s-encoder"
    main = hub.add_folder(REPO_ID, encoder)
    files = {p.name: p.read_bytes() for p in encoder.iterdir() if p.is_file()}
    hub.add_commit(REPO_ID, {**files, "NOTICE.txt": b"second revision\n"}, branch="v2")
    asr_bytes = (run_copy / "resources/backbones/whisper-tiny-en-15s-asr/model.pt").read_bytes()
    asr_url = hub.url + hub.add_whisper("tiny-en-15s", asr_bytes)
    config = {
        "feature_sets": {"whisper": {"backbone": REPO_ID}},
        "asr": {"model": asr_url},
    }
    yield hub, config, main, hashlib.sha256(asr_bytes).hexdigest()
    hub.stop()


DIRECT_FETCH = f"""
import sys
from medusa.core.fetch import FetchError, HubModel, fetch_hub_model, whisper_checkpoint
from medusa.core.fetch import fetch_whisper_checkpoint
try:
    fetch_hub_model(HubModel("{REPO_ID}"), sys.argv[1] + "/hub/medusa-test--encoder@main")
except FetchError as err:
    print("FetchError", err, file=sys.stderr)
checkpoint = whisper_checkpoint({{"model": sys.argv[2]}})
fetch_whisper_checkpoint(checkpoint, checkpoint.path(sys.argv[1]))
"""


def fetch(workdir: Path, hub: FakeHub, config: dict):
    """`snakemake fetch_models` with the network on (HF_ENDPOINT at the server)."""
    return fetch_models_online(workdir, config, hub.url)


def run_targets(workdir: Path, config: dict, *extra: str, endpoint: str = "http://127.0.0.1:9"):
    """The feature and ASR jobs, in an environment that would let them reach `endpoint`."""
    return run_snakemake(
        workdir,
        *TARGETS,
        "--cores",
        "2",
        "--resources",
        "gpu=2",
        *extra,
        configfiles=CI_CONFIGS,
        config=config,
        offline=False,
        env={"HF_ENDPOINT": endpoint},
    )


def complete_looking(workdir: Path) -> list[Path]:
    store = workdir / "resources/models"
    return sorted(store.rglob(MANIFEST)) + sorted(store.rglob("*.pt")) if store.exists() else []


def test_fetch_then_run_offline_then_change_revision(served, run_copy, completed_ci_run):
    hub, config, main_commit, asr_sha256 = served

    # 1. Downloads that stop half-way: the fetch fails and leaves nothing complete-looking.
    hub.drop = {"model.safetensors", "tiny-en-15s.pt"}
    failed = fetch(run_copy, hub, config)
    assert failed.returncode != 0
    assert complete_looking(run_copy) == []
    assert not (run_copy / FOLDER).exists()

    # The same through the library alone (no Snakemake to delete a failed job's outputs), in a
    # fresh process as the fetch job runs it.
    direct = subprocess.run(
        [sys.executable, "-c", DIRECT_FETCH, str(run_copy / "direct"), config["asr"]["model"]],
        capture_output=True,
        text=True,
        env=online_env(HF_ENDPOINT=hub.url, PYTHONPATH=str(REPO / "src")),
    )
    assert direct.returncode != 0
    assert f"FetchError cannot fetch {REPO_ID}@main" in direct.stderr, direct.stderr[-2000:]
    last_line = direct.stderr.strip().splitlines()[-1]
    assert "FetchError: cannot download whisper checkpoint tiny-en-15s" in last_line, last_line
    assert "closed after" in last_line
    assert [p for p in (run_copy / "direct").rglob("*") if not p.is_dir()] == []
    assert not (run_copy / "direct/hub/medusa-test--encoder@main").exists()

    # 2. The real fetch: both models, pinned and recorded.
    hub.drop = set()
    done = fetch(run_copy, hub, config)
    assert done.returncode == 0, done.stderr[-4000:]
    manifest = verified_hub_copy(run_copy / FOLDER)
    assert (manifest["repo_id"], manifest["revision"]) == (REPO_ID, "main")
    assert manifest["commit"] == main_commit
    assert "model.safetensors" in manifest["files"] and "config.json" in manifest["files"]
    checkpoint = run_copy / f"resources/models/whisper/tiny-en-15s-{asr_sha256}.pt"
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == asr_sha256
    fetch_requests = len(hub.requests)

    # 3. The jobs load the local copies without a single request, though the server is up and
    # nothing in their environment says offline; they record the revisions and compute what the
    # local backbones computed.
    ran = run_targets(run_copy, config, endpoint=hub.url)
    assert ran.returncode == 0, ran.stderr[-4000:]
    assert len(hub.requests) == fetch_requests, hub.requests[fetch_requests:]
    hub.stop()  # the network is off from here on
    with h5py.File(run_copy / TARGETS[0]) as new, h5py.File(completed_ci_run / TARGETS[0]) as old:
        assert new.attrs["backbone"] == REPO_ID
        assert new.attrs["revision"] == main_commit
        assert new.attrs["weights_sha256"] == old.attrs["weights_sha256"]
        assert np.array_equal(new["frames"][()], old["frames"][()])
    provenance = read_provenance(run_copy / TARGETS[1])
    assert provenance["model"] == config["asr"]["model"]
    assert provenance["revision"] == asr_sha256
    assert read_transcripts(run_copy / TARGETS[1]) == read_transcripts(
        completed_ci_run / TARGETS[1]
    )

    # 4. A changed revision reruns exactly that backbone's jobs (ASR and the others stay).
    v2 = {**config, "feature_sets": {"whisper": {"backbone": REPO_ID, "revision": "v2"}}}
    targets = (*TARGETS, "results/features/wavlm/train.h5")
    assert dry_run_jobs(run_copy, *targets, config=config) == []
    assert dry_run_jobs(run_copy, *targets, config=v2) == [
        ("features", "feature_set=whisper, partition=train"),
        ("fetch_hub_model", "repo=medusa-test--whisper-tiny-en-5s-encoder, revision=v2"),
    ]

    # 5. No network and no copy of v2: the error names the model, the folder and the command.
    offline = fetch(run_copy, hub, v2)
    assert offline.returncode != 0
    log = (run_copy / "logs/fetch/hub/medusa-test--whisper-tiny-en-5s-encoder@v2.log").read_text()
    assert f"cannot fetch {REPO_ID}@v2" in log
    assert "resources/models/hub/medusa-test--whisper-tiny-en-5s-encoder@v2" in log
    assert "snakemake fetch_models" in log

    # 6. A fetched file changed afterwards: the job refuses the copy.
    weights = run_copy / FOLDER / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    refused = run_targets(run_copy, config, "--forcerun", "features")
    assert refused.returncode != 0
    log = (run_copy / "logs/features/whisper/train.log").read_text()
    assert "model.safetensors differs from what was fetched" in log


def test_an_asr_checkpoint_that_is_not_the_pinned_one_is_refused(tmp_path):
    checkpoint = tmp_path / "tiny.pt"
    checkpoint.write_bytes(b"not the checkpoint")
    pinned = "0" * 64
    with pytest.raises(FetchError, match="refusing it"):
        checkpoint_to_load(f"http://127.0.0.1:9/whisper/{pinned}/tiny.pt", None, checkpoint)
    sha256 = hashlib.sha256(b"not the checkpoint").hexdigest()
    url = "http://127.0.0.1:9/x/tiny.pt"
    assert checkpoint_to_load(url, sha256, checkpoint) == (str(checkpoint), sha256)


def test_a_folder_without_a_complete_fetch_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({}))
    with pytest.raises(FetchError, match="run `snakemake fetch_models`"):
        verified_hub_copy(tmp_path)


def test_remote_models_are_told_from_local_paths_and_bad_settings_named():
    assert hub_model({"backbone": "resources/backbones/wavlm-tiny"}, "feature_sets.w") is None
    assert hub_model({"backbone": "org/name"}, "feature_sets.w") == HubModel("org/name", "main")
    assert hub_model({"backbone": "org/name", "revision": "v2"}, "k").folder("store") == Path(
        "store/hub/org--name@v2"
    )
    with pytest.raises(ValueError, match="feature_sets.w.backbone 'a/b/c'"):
        hub_model({"backbone": "a/b/c"}, "feature_sets.w")
    release = whisper_checkpoint({"model": "large-v3"})
    assert release.url.startswith("https://") and release.url.endswith("/large-v3.pt")
    assert release.sha256 in release.url
    assert whisper_checkpoint({"model": "resources/backbones/x/model.pt"}) is None
    with pytest.raises(ValueError, match="asr.revision"):
        whisper_checkpoint({"model": "https://mirror.example/whisper/large-v3.pt"})
    with pytest.raises(ValueError, match="asr.model 'huge-v9'"):
        whisper_checkpoint({"model": "huge-v9"})


def test_whisper_releases_come_from_the_package_source_without_importing_torch():
    """Every parse reads the release table: it must not pay for importing torch."""
    import subprocess
    import sys

    code = (
        "import sys; from medusa.core.fetch import whisper_releases; "
        "table = whisper_releases(); print(len(table), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, torch_imported = out.stdout.split()
    assert torch_imported == "False"
    import whisper

    from medusa.core.fetch import whisper_releases

    assert whisper_releases() == whisper._MODELS and int(count) == len(whisper._MODELS)
