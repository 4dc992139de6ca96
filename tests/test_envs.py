"""The lock, the conda env and pyproject.toml agree (`make lock` writes the first two)."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _normalised(requirement: str) -> tuple[str, str, str]:
    """`name==version ; marker` as (canonical name, specifier, marker), spacing and case aside."""
    parsed = Requirement(requirement)
    return canonicalize_name(parsed.name), str(parsed.specifier), str(parsed.marker or "")


def _lock_requirements() -> list[tuple[str, str, str]]:
    """requirements.lock's requirement lines: the ones that open a block (no hashes, comments)."""
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    entries = [line.rstrip(" \\") for line in lines if line and line[0] not in " #-"]
    return sorted(_normalised(entry) for entry in entries)


def _pip_requirements(env_file: Path) -> list[tuple[str, str, str]]:
    env = yaml.safe_load(env_file.read_text())
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    return sorted(_normalised(r) for group in pips for r in group)


def _direct_dependencies() -> list[str]:
    project = PYPROJECT["project"]
    return project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]


def _pinned_version(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier  # exactly one clause
    assert specifier.operator == "==" and "*" not in specifier.version, str(requirement)
    return specifier.version


def test_the_lock_pins_every_requirement_exactly_with_hashes():
    lock = (ROOT / "requirements.lock").read_text()
    entries = _lock_requirements()
    assert len(entries) > 100, "requirements.lock looks truncated"
    assert all(specifier.startswith("==") for _, specifier, _ in entries)
    assert lock.count("--hash=sha256:") >= len(entries)


def test_conda_env_pins_exactly_the_lock():
    env_file = ROOT / "envs/medusa.yaml"
    assert _pip_requirements(env_file) == _lock_requirements(), "run `make lock`"
    assert "python=3.11" in yaml.safe_load(env_file.read_text())["dependencies"]


def test_every_direct_dependency_is_pinned_and_locked_at_its_pin():
    locked = {(name, specifier) for name, specifier, _ in _lock_requirements()}
    for line in _direct_dependencies():
        requirement = Requirement(line)
        pin = f"=={_pinned_version(requirement)}"
        assert (canonicalize_name(requirement.name), pin) in locked, f"{line}: run `make lock`"


def test_the_build_backend_is_the_locked_setuptools():
    """`make install` builds medusa with --no-build-isolation, on the lock's setuptools."""
    (build,) = (Requirement(r) for r in PYPROJECT["build-system"]["requires"])
    locked = {name: specifier for name, specifier, _ in _lock_requirements()}
    assert build.name == "setuptools"
    assert locked["setuptools"] == f"=={_pinned_version(build)}"


def test_every_rule_that_runs_code_declares_the_conda_env():
    for rules in sorted((ROOT / "workflow/rules").glob("*.smk")):
        blocks = ("\n" + rules.read_text()).split("\nrule ")[1:]
        for block in blocks:
            if "script:" in block or "shell:" in block:
                assert 'conda:\n        "../../envs/medusa.yaml"' in block, (rules.name, block[:40])


def test_the_workflow_knows_every_demo_backbone():
    from medusa.demo.backbones import BACKBONE_NAMES

    common = (ROOT / "workflow/rules/demo.smk").read_text()
    block = common[common.index("DEMO_BACKBONES = (") : common.index("\n)\n")]
    assert sorted(re.findall(r'"([^"]+)"', block)) == sorted(BACKBONE_NAMES)
