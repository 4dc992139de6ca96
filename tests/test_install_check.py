"""`python -m medusa.core.install_check` passes on this stack and names a mismatched or drifted
package."""

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNDEFINED_SYMBOL = (
    "{lib}: undefined symbol: torch_exception_get_what_without_backtrace"  # torchaudio 2.11.1
)


def run_check(*front: Path) -> subprocess.CompletedProcess:
    """The check in a fresh interpreter, with `front` ahead of everything on its path."""
    path = [str(p) for p in front] + [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    return subprocess.run(
        [sys.executable, "-m", "medusa.core.install_check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def fake_distribution(root: Path, name: str, version: str, module_source: str | None = None):
    """An installed-looking distribution under root: its dist-info, and a module if given."""
    info = root / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if module_source is not None:
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(module_source)


def the_failure(run: subprocess.CompletedProcess) -> str:
    """The check's one message, after asserting it failed with exactly one and no traceback."""
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    (message,) = [line for line in run.stderr.splitlines() if "install check failed" in line]
    return message


def test_the_installed_stack_passes():
    run = run_check()
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("install check ok:"), run.stdout
    assert f"torch {metadata.version('torch')}" in run.stdout
    assert f"torchaudio {metadata.version('torchaudio')}" in run.stdout


def test_a_torchaudio_that_does_not_load_with_this_torch_is_named(tmp_path):
    lib = tmp_path / "torchaudio/lib/libtorchaudio.so"
    raise_like_2_11_1 = f"raise OSError({UNDEFINED_SYMBOL.format(lib=lib)!r})\n"
    fake_distribution(tmp_path, "torchaudio", "2.11.1", raise_like_2_11_1)
    message = the_failure(run_check(tmp_path))
    assert f"torchaudio 2.11.1 does not load with torch {metadata.version('torch')}" in message
    assert "undefined symbol: torch_exception_get_what_without_backtrace" in message
    assert "exactly matching pair" in message and "make install" in message


def test_a_package_that_drifted_from_its_pin_is_named(tmp_path):
    try:
        metadata.requires("medusa-ser")
    except metadata.PackageNotFoundError:
        pytest.skip("medusa-ser is not installed here: no pins to compare against")
    fake_distribution(tmp_path, "h5py", "3.15.0")  # metadata only: the real h5py still imports
    message = the_failure(run_check(tmp_path))
    assert "h5py 3.15.0 (pinned ==3.16" in message and "make install" in message
