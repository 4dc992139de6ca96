"""benchmarks/full_scale.py --tiny on the CPU (every measurement, scaled down; ~30 s on an idle
2-core machine) and the syntax of benchmarks/gpu_check.sh (which needs a GPU to run)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "full_scale.py"
FEATURE_SETS = ["wavlm", "hubert", "whisper", "roberta", "modernbert"]
PROJECTION_STAGES = [
    "ASR (Whisper-large-v3)",
    *(f"features: {name}" for name in FEATURE_SETS),
    "DeepSER stage 1",
    "DeepSER stage 2",
    "posteriors",
    "total",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[str, dict]:
    """(stdout, JSON report) of one --tiny run on the CPU."""
    tmp = tmp_path_factory.mktemp("full-scale")
    out = tmp / "full_scale.json"
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu"]  # 1 torch thread
    cmd += ["--cache", str(tmp / "cache"), "--json", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout, json.loads(out.read_text())


def positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def non_negative(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


def test_prints_projection_rows_and_targets(tiny_run):
    stdout, _ = tiny_run
    assert "## Projection" in stdout
    for stage in PROJECTION_STAGES:
        assert f"| {stage} |" in stdout, stage
    assert "## Targets" in stdout
    for target in ("WavLM-large extraction", "ASR, batched", "stage-1 epoch", "data wait"):
        assert target in stdout


def test_runs_every_measurement_without_error(tiny_run):
    _, report = tiny_run
    assert report["mode"] == "tiny"
    assert report["errors"] == {}
    assert report["skipped"] == []
    assert sorted(report["features"]) == sorted(FEATURE_SETS)


def test_asr_decodes_fixed_steps_with_finite_figures(tiny_run):
    rows = tiny_run[1]["asr"]
    assert sorted(r["batch"] for r in rows) == [1, 4]
    for row in rows:
        assert row["tokens_per_window"] == 20
        assert positive(row["rtf"]) and positive(row["clips_per_s"]), row
        assert non_negative(row["peak_mib"]), row


def test_extraction_figures_are_finite_and_positive(tiny_run):
    for name, result in tiny_run[1]["features"].items():
        assert positive(result["info"]["parameters"])
        # On the CPU only fp32: the project never autocasts bf16 there.
        assert {r["precision"] for r in result["rows"]} == {"fp32"}, name
        assert sorted(r["batch"] for r in result["rows"]) == [1, 4], name
        for row in result["rows"]:
            assert positive(row["rtf"]) and positive(row["clips_per_s"]), row
            assert positive(row["frames_per_clip"]), row
            assert non_negative(row["peak_mib"]), row


def test_training_covers_every_model_and_data_wait_is_measured(tiny_run):
    report = tiny_run[1]
    recipe = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    models = sorted(m for row in report["training"] for m in row["models"])
    assert models == sorted(recipe["models"])
    for row in report["training"]:
        assert positive(row["steps_per_s"]), row
        assert non_negative(row["peak_mib"]), row
    wait = report["data_wait"]
    assert positive(wait["steps_per_s"]) and positive(wait["read_mb_per_s"]), wait
    assert 0 <= wait["data_wait_share"] < 1, wait


def test_projection_and_targets_are_complete(tiny_run):
    report = tiny_run[1]
    stages = [row["stage"] for row in report["projection"]]
    assert stages == PROJECTION_STAGES
    hours = [row["gpu_hours"] for row in report["projection"]]
    assert all(positive(h) for h in hours), report["projection"]
    assert math.isclose(hours[-1], sum(hours[:-1]), rel_tol=1e-9)
    assert len(report["targets"]) == 4
    for target in report["targets"]:
        assert non_negative(target["value"]), target
        assert target["verdict"] == "no verdict (--tiny shapes)"


def test_gpu_check_script_parses():
    script = ROOT / "benchmarks" / "gpu_check.sh"
    run = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
