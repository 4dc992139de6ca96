"""Prepare here what `benchmarks/gpu_check.sh` needs on a lent GPU machine that reaches no network.

That machine's image has Python 3.12 with torch, torchaudio, transformers and most of the
scientific stack (benchmarks/gpu_image.txt lists its packages); the working tree and the folders
carried with it travel, at most 64 MiB in all. This script fills the ignored folder `.gpu-carry/`:

- `wheels/`: exactly the wheels the image lacks, for CPython 3.12 on manylinux x86_64: the
  closure of MEDUSA's runtime dependencies (pyproject.toml, at the versions of
  requirements.lock), cut wherever the image has a package (the image's own version is used
  there). The SLURM executor plugin is left out (the check runs locally). A package with no
  wheel on PyPI (openai-whisper) is built here into a pure-Python wheel.
- `image-requirements.txt`: what the carried wheels and MEDUSA require of the image's
  packages (`gpu_prepare.py --check-image` checks it there before anything runs).
- `corpus/msp-podcast/`: the CI-sized demo corpus (config/demo.yaml + tests/config/ci.yaml),
  made here by the workflow's `demo_corpus` rule: the speech synthesiser's wheel cannot travel.

It stops (exit 1) with the sizes if the folder is over 60 MiB or the working tree and the folder
together are over 64 MiB; otherwise it prints the device tool's `run` call to copy.

    .venv/bin/python benchmarks/gpu_prepare.py              # or: make gpu-prepare
    .venv/bin/python benchmarks/gpu_prepare.py --carry transformers huggingface-hub
    python3 benchmarks/gpu_prepare.py --check-image         # on the GPU machine (gpu_check.sh)
"""

from __future__ import annotations

import argparse
import email.parser
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
CARRY = REPO / ".gpu-carry"
IMAGE_LIST = REPO / "benchmarks" / "gpu_image.txt"
LOCK = REPO / "requirements.lock"
CI_CONFIGS = [REPO / "config" / "demo.yaml", REPO / "tests" / "config" / "ci.yaml"]
CORPUS_IN_RUN = Path("resources/demo/msp-podcast")  # data.root of config/demo.yaml
# Not needed on the GPU machine: the check runs the workflow locally.
NOT_CARRIED = {"snakemake-executor-plugin-slurm"}
ROOT = "medusa-ser"
MAX_CARRY_MIB = 60.0
MAX_TREE_MIB = 64.0  # the device tool's limit on the working tree plus the carried folders
RUN_TIMEOUT_S = 540  # gpu_check.sh's default 450 s budget, its setup and a margin

# The GPU machine's interpreter, for markers and wheel tags.
TARGET_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
# pip matches manylinux_2_N tags one by one: offer every glibc up to the image's (Ubuntu 24.04).
PLATFORMS = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"] + [
    f"manylinux_2_{n}_x86_64" for n in range(5, 40)
]


@dataclass
class Closure:
    """What to carry (name -> lock version) and what is asked of the image (requirements)."""

    carried: dict[str, str] = field(default_factory=dict)
    extras: dict[str, set[str]] = field(default_factory=dict)
    on_image: list[str] = field(default_factory=list)


def read_image_list(path: Path = IMAGE_LIST) -> dict[str, str | None]:
    """Canonical name -> version (None where the image's version was not read)."""
    packages: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            packages[canonicalize_name(name)] = version or None
    return packages


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """Canonical name -> version in the lock, for the GPU machine's Python where a pin has a
    marker (the lock is universal: some packages have one pin per Python range)."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+))?", line)
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker is None or Marker(marker.strip()).evaluate(TARGET_ENV):
            pins[canonicalize_name(name)] = version
    return pins


def runtime_roots(pyproject: Path = REPO / "pyproject.toml") -> list[Requirement]:
    """MEDUSA's own runtime dependencies (no extras), as pyproject.toml declares them."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return [Requirement(spec) for spec in project["dependencies"]]


def applies(requirement: Requirement, extras: set[str]) -> bool:
    """Whether a Requires-Dist line applies on the GPU machine, for the requested extras."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**TARGET_ENV, "extra": e}) for e in extras | {""})


def wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(name).decode())
    return [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]


def wheel_name(wheel: Path) -> str:
    return canonicalize_name(wheel.name.split("-")[0])


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False
    )


def fetch_wheels(pins: dict[str, str], folder: Path) -> dict[str, Path]:
    """The wheel of each name==version in `folder` (kept if already there, else downloaded for
    the GPU machine; built here when PyPI has no wheel, which must then be pure Python)."""
    present = {wheel_name(w): w for w in folder.glob("*.whl")}
    wanted = {}
    for name, version in pins.items():
        wheel = present.get(name)
        if wheel is not None and wheel.name.split("-")[1] == version:
            wanted[name] = wheel
    missing = [f"{n}=={v}" for n, v in pins.items() if n not in wanted]
    if missing:
        tags = [f"--platform={p}" for p in PLATFORMS]
        args = ["download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version=3.12"]
        args += ["--implementation=cp", *tags, "--dest", str(folder)]
        for spec in missing:
            # One call per wheel: a package without a wheel must not stop the others.
            if pip(*args, spec).returncode != 0:
                build_pure_wheel(spec, folder)
    present = {wheel_name(w): w for w in folder.glob("*.whl")}
    return {name: present[name] for name in pins}


def build_pure_wheel(spec: str, folder: Path) -> None:
    """Build `spec` from its source distribution into a wheel; only pure Python may travel."""
    with tempfile.TemporaryDirectory() as tmp:
        built = pip("wheel", "--quiet", "--no-deps", "--no-binary=:all:", "--wheel-dir", tmp, spec)
        wheels = list(Path(tmp).glob("*.whl"))
        if built.returncode != 0 or len(wheels) != 1:
            raise SystemExit(
                f"no wheel for {spec} (Python 3.12, manylinux x86_64):\n{built.stderr}"
            )
        if not wheels[0].name.endswith("-py3-none-any.whl"):
            raise SystemExit(f"{spec}: built {wheels[0].name}, which is not pure Python")
        shutil.move(wheels[0], folder / wheels[0].name)


def resolve(image: dict[str, str | None], lock: dict[str, str], folder: Path, carry: set[str]):
    """Walk the requirements from MEDUSA's roots; a package the image has ends the walk there
    (its requirement is recorded), unless `carry` names it. Returns (Closure, wheel paths)."""
    closure, wheels = Closure(), {}
    level = [(r, ROOT) for r in runtime_roots()]
    while level:
        todo: dict[str, str] = {}
        for requirement, required_by in level:
            name = canonicalize_name(requirement.name)
            if name in NOT_CARRIED:
                continue
            if name in image and name not in carry:
                # MEDUSA's own pins give way to the image's versions (that is what the check
                # tests); a carried wheel's requirement must hold as it is.
                wanted = requirement.name if required_by == ROOT else str(requirement)
                closure.on_image.append(f"{wanted}  # {required_by}")
                continue
            if name not in lock:
                raise SystemExit(f"{name} (needed by {required_by}) has no pin in {LOCK.name}")
            new_extras = set(requirement.extras) - closure.extras.get(name, set())
            closure.extras.setdefault(name, set()).update(requirement.extras)
            if name not in closure.carried or new_extras:
                closure.carried[name] = lock[name]
                todo[name] = lock[name]
        wheels.update(fetch_wheels(todo, folder))
        level = [
            (r, name)
            for name in todo
            for r in wheel_requirements(wheels[name])
            if applies(r, closure.extras[name])
        ]
    return closure, wheels


def prepare_wheels(carry: set[str]) -> Closure:
    folder = CARRY / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    closure, wheels = resolve(read_image_list(), read_lock(), folder, carry)
    for stale in set(folder.glob("*.whl")) - set(wheels.values()):
        stale.unlink()  # one version of each package: two would stop the install there
    lines = sorted(set(closure.on_image), key=str.lower)
    header = "# Requirements of MEDUSA and the carried wheels on the image's own packages.\n"
    (CARRY / "image-requirements.txt").write_text(header + "\n".join(lines) + "\n")
    return closure


def prepare_corpus() -> None:
    """The CI-sized corpus, made by the workflow's own rule in a scratch working directory."""
    from medusa.core.atomic import atomic_directory

    snakemake = Path(sys.executable).parent / "snakemake"
    with tempfile.TemporaryDirectory(prefix="medusa-gpu-corpus.") as workdir:
        cmd = [str(snakemake), "demo_corpus", "--snakefile", str(REPO / "Snakefile")]
        cmd += ["--directory", workdir, "--cores", "1", "--configfile", *map(str, CI_CONFIGS)]
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise SystemExit(f"demo_corpus failed:\n{run.stdout[-2000:]}{run.stderr[-3000:]}")
        with atomic_directory(CARRY / "corpus" / CORPUS_IN_RUN.name) as tmp:
            shutil.copytree(Path(workdir) / CORPUS_IN_RUN, tmp, dirs_exist_ok=True)


def mib(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file()) / 2**20


def tree_files() -> list[Path]:
    """What travels besides the carried folder: tracked and untracked-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [REPO / name for name in listed.split("\0") if name]


def report_sizes(closure: Closure) -> bool:
    wheels = sorted((CARRY / "wheels").glob("*.whl"))
    carried = mib([p for p in CARRY.rglob("*")])
    tree = mib(tree_files())
    print(f"carried wheels ({len(wheels)}, {mib(wheels):.1f} MiB):")
    for wheel in wheels:
        print(f"  {wheel.name}  {mib([wheel]):.2f} MiB")
    print(
        f"relied on in the image: {len(closure.on_image)} requirements, see image-requirements.txt"
    )
    corpus = mib(list((CARRY / "corpus").rglob("*")))
    print(f"corpus: {corpus:.1f} MiB")
    print(
        f"{CARRY.name}/: {carried:.1f} MiB; working tree: {tree:.1f} MiB; total {carried + tree:.1f} MiB"
    )
    if carried > MAX_CARRY_MIB or carried + tree > MAX_TREE_MIB:
        print(
            f"TOO LARGE: {CARRY.name}/ must stay under {MAX_CARRY_MIB:.0f} MiB and the working "
            f"tree plus {CARRY.name}/ under {MAX_TREE_MIB:.0f} MiB",
            file=sys.stderr,
        )
        return False
    return True


def print_run_call() -> None:
    print("\nOn a lent GPU machine, call the device tool's `run` with:")
    print("  command:   bash benchmarks/gpu_check.sh")
    print(f'  carry:     ["{CARRY.name}"]')
    print(f"  timeout_s: {RUN_TIMEOUT_S}")


def check_image(requirements: Path = CARRY / "image-requirements.txt") -> int:
    """On the GPU machine: does this interpreter's environment meet every recorded requirement?"""
    from importlib import metadata

    problems = []
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement}: not installed")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement}: {version} installed")
    for problem in problems:
        print(f"image does not meet {problem}", file=sys.stderr)
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--carry",
        nargs="+",
        default=[],
        metavar="NAME",
        help="carry these at the lock's version although the image has them (e.g. transformers)",
    )
    parser.add_argument(
        "--check-image", action="store_true", help="on the GPU machine: check the image"
    )
    args = parser.parse_args()
    if args.check_image:
        return check_image()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    closure = prepare_wheels({canonicalize_name(n) for n in args.carry})
    prepare_corpus()
    if not report_sizes(closure):
        return 1
    print_run_call()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
