"""Does the installed stack load together, at the versions medusa-ser pins?

`python -m medusa.core.install_check` (the last step of `make install`) imports the heavy
dependencies in a fresh process, torch first and torchaudio straight after it, so a mismatched pair
fails here with one clear message instead of deep inside a workflow job. It then compares the
installed version of every pinned direct dependency with the pins in medusa-ser's own metadata, so
it needs no pyproject.toml at run time. Exit status 0 with a one-line summary, or 1 with the
message.
"""

import importlib
import sys
from importlib import metadata

from packaging.requirements import Requirement

DIST = "medusa-ser"
REINSTALL = "reinstall from the lock: make install (rm -rf .venv first)"

# (module to import, attribute it must provide, distribution it comes from), in import order.
STACK = (
    ("transformers", "WavLMModel", "transformers"),
    ("whisper", "load_model", "openai-whisper"),
    ("h5py", "File", "h5py"),
    ("soundfile", "read", "soundfile"),
    ("sklearn", "__version__", "scikit-learn"),
    ("snakemake", "__version__", "snakemake"),
)
SUMMARY = ("torch", "torchaudio", "transformers", "openai-whisper", "numpy", "snakemake")


class InstallError(Exception):
    """The installed stack is broken; the message says which packages and what to do."""


def installed(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def describe(err: BaseException) -> str:
    """The error and the errors that caused it, innermost last (the undefined symbol, say)."""
    causes = [str(err)]
    while (err := err.__cause__ or err.__context__) is not None and len(causes) < 5:
        causes.append(str(err))
    return " <- ".join(dict.fromkeys(c for c in causes if c))


def check_torch_pair() -> None:
    """torch, then torchaudio with its C++ extension: the pair must be an exact match."""
    torch_v, audio_v = installed("torch"), installed("torchaudio")
    pair = "torch and torchaudio must be an exactly matching pair"
    try:
        import torch
    except Exception as err:
        raise InstallError(
            f"torch {torch_v} does not import: {describe(err)}. {REINSTALL}"
        ) from err
    try:
        import torchaudio.functional as F

        wave = torch.linspace(-1.0, 1.0, 160).unsqueeze(0)
        F.resample(wave, 16000, 8000)
        F.lfilter(wave, torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5]))  # a C++ op
    except Exception as err:
        raise InstallError(
            f"torchaudio {audio_v} does not load with torch {torch_v}: {describe(err)}. "
            f"{pair}; {REINSTALL}"
        ) from err
    if torch_v.split("+")[0] != audio_v.split("+")[0]:  # 2.11.0+cu130 pairs with 2.11.0
        raise InstallError(
            f"torchaudio {audio_v} does not match torch {torch_v}: {pair}; {REINSTALL}"
        )


def check_imports() -> None:
    """The rest of the stack, each import on top of the torch (and numpy) already loaded."""
    for module, attribute, dist in STACK:
        try:
            getattr(importlib.import_module(module), attribute)
        except Exception as err:
            raise InstallError(
                f"{module} ({dist} {installed(dist)}) does not import alongside torch "
                f"{installed('torch')} and numpy {installed('numpy')}: {describe(err)}. {REINSTALL}"
            ) from err


def pinned_requirements() -> list[Requirement]:
    """medusa-ser's [project.dependencies], from its installed metadata (extras left out)."""
    requirements = [Requirement(line) for line in metadata.requires(DIST) or ()]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def drifted(requirement: Requirement) -> bool:
    try:
        version = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        return True
    return not requirement.specifier.contains(version, prereleases=True)


def check_pins() -> int:
    """Every pinned direct dependency is installed at its pinned version; returns how many."""
    try:
        requirements = pinned_requirements()
    except metadata.PackageNotFoundError:
        return 0  # run from a source tree on PYTHONPATH (the workflow's conda env): no pins
    drift = [
        f"{r.name} {installed(r.name)} (pinned {r.specifier})" for r in requirements if drifted(r)
    ]
    if drift:
        raise InstallError(
            f"installed versions differ from {DIST}'s pins: {', '.join(drift)}. {REINSTALL}"
        )
    return len(requirements)


def main() -> int:
    try:
        check_torch_pair()
        check_imports()
        pins = check_pins()
    except InstallError as err:
        print(f"install check failed: {err}", file=sys.stderr)
        return 1
    versions = ", ".join(f"{dist} {installed(dist)}" for dist in SUMMARY)
    pinned = f"{pins} pins of {DIST} match" if pins else f"{DIST} not installed, pins not checked"
    print(f"install check ok: python {sys.version.split()[0]}, {versions}; {pinned}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
