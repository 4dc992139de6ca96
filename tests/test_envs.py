"""The conda environment files carry exactly the project's pinned dependencies."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pip_requirements(env_file: Path) -> list[str]:
    env = yaml.safe_load(env_file.read_text())
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    return sorted(r for group in pips for r in group)


def test_env_files_agree_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env_files = sorted((ROOT / "envs").glob("*.yaml"))
    assert env_files, "no conda environment under envs/"
    for env_file in env_files:
        assert _pip_requirements(env_file) == sorted(project), env_file.name


def test_every_rule_that_runs_code_declares_the_conda_env():
    for rules in sorted((ROOT / "workflow/rules").glob("*.smk")):
        blocks = ("\n" + rules.read_text()).split("\nrule ")[1:]
        for block in blocks:
            if "script:" in block or "shell:" in block:
                assert 'conda:\n        "../../envs/medusa.yaml"' in block, (rules.name, block[:40])


def test_the_workflow_knows_every_demo_backbone():
    from medusa.demo.backbones import BACKBONE_NAMES

    common = (ROOT / "workflow/rules/common.smk").read_text()
    block = common[common.index("DEMO_BACKBONES = (") : common.index("DEMO_BACKBONE_PATTERN")]
    assert sorted(re.findall(r'"([^"]+)"', block)) == sorted(BACKBONE_NAMES)
