"""Every command the documentation shows runs as written.

Read: README.md, config/README.md, docs/*.md and .snakemake-workflow-catalog.yml.

What counts as a command (a line or span whose first word is `snakemake`, `medusa` or `make`):
- every such line of a fenced code block (untagged, bash, sh, shell or console), with a trailing
  `# comment` dropped and `\\` continuations joined;
- an inline `code` span when it is a whole command: a `make` span (the Makefile supplies the
  rest), a `snakemake` span that says which config or how to run (`--configfile`, `--cores`,
  `-c`, `--jobs`, `-j`, `--profile`) and a `medusa` span with arguments after its subcommand.
  Other spans name a target, an option or a subcommand in the prose (`snakemake bundle`,
  `snakemake --lint`, `medusa predict`) and are not run;
- the catalog's usage: its own `snakemake --cores all --sdm conda` line with the mandatory
  flags added (`--sdm conda` is left out where conda is not installed: it needs conda even for
  a dry run and changes nothing in how the words after it are read).
A line that ends in `# fails: <why>` is documented as failing on purpose and must fail.

How each one runs, in a form that cannot be wrong about the original:
- `snakemake`: the command's own words as a dry run, with `--snakefile <repo>/Snakefile
  --directory <scratch> -n` put right after `snakemake` (before any option that takes several
  values, so nothing swallows them), in a scratch working directory that stands in for the
  repository root: the CI-sized demo corpus and the repository's files (`config/`, `profiles/`,
  ...). A command without `--configfile` stands for the recipe with `data.root` edited, as the
  README offers: it gets the CI-sized config (config/demo.yaml and tests/config/ci.yaml) as
  `--configfile` before the `-n`. A dry run does not check that a local run was given `--cores`,
  so a command that would execute jobs must give it (or a profile that sets `jobs`).
- Placeholder files the docs tell the reader to write are made as documented: each YAML block
  whose first line is `# <name>.yaml` is written as that file; one that sets `data.root` (the
  reader's corpus) is merged on the CI-sized config with `data.root` pointing at the demo corpus.
  A profile folder the repository lacks (`profiles/mycluster`) is a copy of `profiles/slurm`,
  as config/README.md says.
- `medusa`: parsed by its own argument parser; run for real with the CI bundle (built by
  `snakemake bundle` in the session's completed CI run) when every path it names is relative,
  with the input recordings it names made from demo clips; with `--help` appended when it names
  absolute paths of the reader's machine (`/models/medusa`), data the test does not have.
- `make`: `make -n <words>` in the repository: the target exists and would run; nothing runs.

Identical commands are checked once; the test id lists every place (`README.md:123`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from workflow_runner import CI_CONFIGS, REPO, SNAKEMAKE, generate_demo_corpus, run_snakemake

DOCS = [REPO / "README.md", REPO / "config/README.md", *sorted((REPO / "docs").glob("*.md"))]
CATALOG = REPO / ".snakemake-workflow-catalog.yml"
PROGRAMS = ("snakemake", "medusa", "make")
SHELL_LANGUAGES = ("", "bash", "sh", "shell", "console")
CORES_OPTIONS = {"--cores", "-c", "--jobs", "-j"}
# Inline snakemake spans with one of these say which config or how they run: whole commands.
WHOLE_COMMAND_OPTIONS = {"--configfile", "--configfiles", "--profile", *CORES_OPTIONS}
# Options with which snakemake executes no job (a dry run, housekeeping, a report).
NON_EXECUTING_OPTIONS = {"-n", "--dry-run", "--dryrun", "--unlock", "--lint", "--report"}
SHELL_OPERATORS = ("&&", "||", "|", ";", ">", ">>", "<", "&")
FAILS_MARKER = re.compile(r"\s#\s*fails:")
MEDUSA = str(Path(sys.executable).parent / "medusa")


@dataclass(frozen=True)
class DocCommand:
    words: tuple[str, ...]
    fails: bool
    places: tuple[str, ...]

    @property
    def program(self) -> str:
        return self.words[0]

    def describe(self) -> str:
        marker = "  (documented to fail)" if self.fails else ""
        return f"{', '.join(self.places)}: {shlex.join(self.words)}{marker}"


# --------------------------------------------------------------------------------------------
# Reading the documentation


def place(path: Path, line: int) -> str:
    return f"{path.relative_to(REPO)}:{line}"


def fenced_lines(text: str):
    """(line number, line) of every line inside a shell fenced block; continuations joined."""
    language, pending, start = None, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            language = None if language is not None else stripped.strip("`").strip().lower()
            continue
        if language not in SHELL_LANGUAGES:
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield start, pending + stripped
        pending = ""


def prose_only(text: str) -> str:
    """`text` with every fenced block's lines blanked (line numbers kept)."""
    lines, inside = [], False
    for line in text.splitlines():
        fence = line.strip().startswith("```")
        lines.append("" if inside or fence else line)
        inside = inside != fence
    return "\n".join(lines)


INLINE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)


def inline_spans(text: str):
    """(line number, span) of every inline code span of `text` (a span may wrap a line)."""
    for match in INLINE_SPAN.finditer(text):
        if "\n\n" in match.group(2):
            continue
        yield text.count("\n", 0, match.start()) + 1, " ".join(match.group(2).split())


def command_words(line: str) -> tuple[tuple[str, ...], bool] | None:
    """(words, documented to fail) of a line whose first word is a program, else None."""
    if line.split()[:1] not in ([program] for program in PROGRAMS):
        return None
    words = tuple(shlex.split(line, comments=True))
    return words, bool(FAILS_MARKER.search(line))


def whole_inline_command(words: tuple[str, ...]) -> bool:
    options = {word.split("=")[0] for word in words}
    if words[0] == "make":
        return len(words) > 1
    if words[0] == "snakemake":
        return bool(options & WHOLE_COMMAND_OPTIONS)
    return len(words) > 2  # medusa <subcommand> <arguments...>


def catalog_commands(path: Path):
    """(line, text, inline) of the catalog's usage line with its mandatory flags, and of the
    inline spans of its descriptions."""
    text = path.read_text()
    usage = yaml.safe_load(text)["usage"]
    flags = usage["mandatory-flags"]["flags"]
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.strip().startswith("flags:"))
    conda = usage["software-stack-deployment"].get("conda") and shutil.which("conda")
    prefix = ["snakemake", "--cores", "all", *(["--sdm", "conda"] if conda else [])]
    yield line, " ".join([*prefix, flags]), False
    yield from ((n, span, True) for n, span in inline_spans(text))


def documented_commands() -> list[DocCommand]:
    found: dict[tuple[tuple[str, ...], bool], list[str]] = {}

    def add(path: Path, line: int, text: str, inline: bool) -> None:
        parsed = command_words(text)
        if parsed is None or (inline and not whole_inline_command(parsed[0])):
            return
        found.setdefault(parsed, []).append(place(path, line))

    for path in DOCS:
        text = path.read_text()
        for line, row in fenced_lines(text):
            add(path, line, row, inline=False)
        for line, span in inline_spans(prose_only(text)):
            add(path, line, span, inline=True)
    for line, row, inline in catalog_commands(CATALOG):
        add(CATALOG, line, row, inline)
    return [DocCommand(words, fails, tuple(places)) for (words, fails), places in found.items()]


def documented_overlays() -> dict[str, dict]:
    """File name -> content of every YAML block of the docs whose first line is `# <name>.yaml`."""
    overlays = {}
    for path in DOCS:
        block, language = None, None
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith("```"):
                if language is None:
                    language, block = stripped.strip("`").strip().lower(), []
                else:
                    if language in ("yaml", "yml") and block:
                        name = re.match(r"#\s*([\w.-]+\.ya?ml)\b", block[0].strip())
                        if name:
                            content = textwrap.dedent("\n".join(block))
                            overlays[name.group(1)] = yaml.safe_load(content) or {}
                    language, block = None, None
                continue
            if block is not None:
                block.append(line)
    return overlays


COMMANDS = documented_commands()


def by_program(program: str):
    cases = [c for c in COMMANDS if c.program == program]
    return pytest.mark.parametrize("command", cases, ids=["+".join(c.places) for c in cases])


# --------------------------------------------------------------------------------------------
# Scratch working directories


def merged(base: dict, overlay: dict) -> dict:
    """Snakemake's merge of config files: mappings key by key, anything else replaced."""
    out = dict(base)
    for key, value in overlay.items():
        both_mappings = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both_mappings else value
    return out


def ci_config() -> dict:
    config: dict = {}
    for path in CI_CONFIGS:
        config = merged(config, yaml.safe_load(path.read_text()))
    return config


# The table-layout stand-in: the CI-sized demo table corpus (2 speaker folds).
TABLE_CONFIGS = [
    REPO / "config/demo.yaml",
    REPO / "config/demo_table.yaml",
    REPO / "tests/config/ci.yaml",
    REPO / "tests/config/ci_table.yaml",
]


def write_overlays(workdir: Path) -> None:
    ci = ci_config()
    for name, content in documented_overlays().items():
        if content.get("data", {}).get("layout") == "table":
            # A table corpus of the reader's: the demo table corpus instead (it has folds: the
            # first is held out unless the command names one).
            stand_in = {"root": "resources/demo/table-corpus", "table": "clips.csv", "fold": 1}
            content = merged(merged(ci, content), {"data": stand_in})
        elif "root" in content.get("data", {}):  # the reader's corpus: the CI-sized demo
            content = merged(merged(ci, content), {"data": {"root": ci["data"]["root"]}})
        for corpus in content.get("cross_corpus", {}).values():
            corpus["table"] = "resources/demo/table-corpus/clips.csv"  # the reader's corpora
        (workdir / name).write_text(yaml.safe_dump(content, sort_keys=False))


def add_profiles(workdir: Path) -> None:
    """The repository's profiles, and a copy of profiles/slurm for every other profile the docs
    name (config/README.md: copy profiles/slurm to a folder named after your cluster)."""
    profiles = workdir / "profiles"
    profiles.mkdir()
    for profile in (REPO / "profiles").iterdir():
        (profiles / profile.name).symlink_to(profile)
    for command in COMMANDS:
        for profile in profile_names(command.words):
            folder = workdir / profile
            if profile.startswith("profiles/") and not folder.exists():
                shutil.copytree(REPO / "profiles/slurm", folder)


# Made in the working directory by a run (or the demo corpus here): never taken from the repo.
RUN_FOLDERS = {"results", "resources", "logs", "profiles"}


@pytest.fixture(scope="module")
def docs_workdir(tmp_path_factory) -> Path:
    """A stand-in for the repository root the docs' commands run in: the CI-sized demo corpus,
    the repository's files (config/, benchmarks/, ...), profiles/ and the example config files the docs name (my.yaml, ...)."""
    workdir = tmp_path_factory.mktemp("docs-commands")
    generate_demo_corpus(workdir)
    table = run_snakemake(workdir, "demo_table_corpus", "--cores", "1", configfiles=TABLE_CONFIGS)
    assert table.returncode == 0, table.stdout[-2000:] + table.stderr[-3000:]
    for entry in REPO.iterdir():
        if not entry.name.startswith(".") and entry.name not in RUN_FOLDERS:
            (workdir / entry.name).symlink_to(entry)
    add_profiles(workdir)
    write_overlays(workdir)
    return workdir


@pytest.fixture(scope="module")
def bundle_workdir(completed_ci_run, tmp_path_factory) -> Path:
    """A working directory with the CI bundle at results/bundle and the demo backbones under
    resources/ (both from the completed CI run, read only); outputs land in it."""
    run = run_snakemake(completed_ci_run, "bundle", "--cores", "2", configfiles=CI_CONFIGS)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    workdir = tmp_path_factory.mktemp("docs-medusa")
    (workdir / "results").mkdir()
    (workdir / "results/bundle").symlink_to(completed_ci_run / "results/bundle")
    (workdir / "resources").symlink_to(completed_ci_run / "resources")
    return workdir


def run_in(workdir: Path, argv: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        argv, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env
    )


def check_outcome(command: DocCommand, run: subprocess.CompletedProcess, shown: list[str]) -> None:
    output = (run.stdout + "\n" + run.stderr)[-4000:]
    if command.fails:
        assert run.returncode != 0, f"{command.describe()} is documented to fail but ran"
    else:
        assert run.returncode == 0, (
            f"{command.describe()} fails (exit {run.returncode}); ran as {shlex.join(shown)}\n"
            + output
        )


def check_plain_words(command: DocCommand) -> None:
    operators = [word for word in command.words if word in SHELL_OPERATORS]
    assert not operators, f"{command.describe()}: shell operators {operators}; write one command"


# --------------------------------------------------------------------------------------------
# The tests


def test_the_docs_show_commands_of_every_kind():
    """The extraction finds what the README is known to hold (guards the reader itself)."""
    programs = {command.program for command in COMMANDS}
    assert programs == set(PROGRAMS)
    assert any(command.fails for command in COMMANDS)
    assert any("--profile" in command.words for command in COMMANDS)
    assert any(place.startswith(CATALOG.name) for c in COMMANDS for place in c.places)


SAMPLE = """Run `snakemake soup --configfile my.yaml
--cores 2` or build `snakemake bundle`; `make demo` too, `medusa predict` and `rm -rf x`.

   ```bash
   source .venv/bin/activate
   snakemake --cores 2 \\
       --configfile my.yaml soup   # fails: soup read as a file
   medusa verify results/bundle  # or: sha256sum -c checksums.sha256
   ```

```yaml
snakemake --cores 1
```
"""


def test_the_reader_takes_whole_commands_and_their_markers():
    fenced = [(line, command_words(row)) for line, row in fenced_lines(SAMPLE)]
    assert [(line, parsed) for line, parsed in fenced if parsed] == [
        (6, (("snakemake", "--cores", "2", "--configfile", "my.yaml", "soup"), True)),
        (8, (("medusa", "verify", "results/bundle"), False)),
    ]
    spans = [(line, command_words(span)) for line, span in inline_spans(prose_only(SAMPLE))]
    whole = [(line, words) for line, (words, _) in filter(lambda s: s[1], spans)]
    assert [(line, words) for line, words in whole if whole_inline_command(words)] == [
        (1, ("snakemake", "soup", "--configfile", "my.yaml", "--cores", "2")),
        (2, ("make", "demo")),
    ]


@by_program("snakemake")
def test_snakemake_command(command: DocCommand, docs_workdir: Path):
    check_plain_words(command)
    options = {word.split("=")[0] for word in command.words}
    if not command.fails and not options & NON_EXECUTING_OPTIONS:
        assert options & CORES_OPTIONS or profile_sets_jobs(command, docs_workdir), (
            f"{command.describe()} executes jobs locally without --cores: Snakemake refuses it"
        )
    default_config = [] if options & {"--configfile", "--configfiles"} else CI_CONFIGS
    argv = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(docs_workdir)]
    if default_config:
        argv += ["--configfile", *map(str, default_config)]
    argv += ["-n", *command.words[1:]]
    run = run_in(docs_workdir, argv, timeout=300)
    if "folds" in command.words[1:]:
        # The cross-validation summary reads every fold's report, and no fold has run here:
        # the command must stop naming the folds to run first.
        assert run.returncode != 0 and "no report yet for fold(s) 2" in run.stdout + run.stderr, (
            f"{command.describe()}: expected the missing folds named\n" + run.stdout[-3000:]
        )
        return
    check_outcome(command, run, argv)


def profile_names(words: tuple[str, ...]) -> list[str]:
    return [value for option, value in zip(words, words[1:], strict=False) if option == "--profile"]


def profile_sets_jobs(command: DocCommand, workdir: Path) -> bool:
    for profile in profile_names(command.words):
        settings = yaml.safe_load((workdir / profile / "config.yaml").read_text()) or {}
        if "jobs" in settings or "cores" in settings:
            return True
    return False


@by_program("medusa")
def test_medusa_command(command: DocCommand, request):
    check_plain_words(command)
    from medusa.cli import _parser

    try:
        args = _parser().parse_args(command.words[1:])
    except SystemExit as error:
        raise AssertionError(f"{command.describe()}: medusa rejects its arguments") from error
    if any(word.split("=")[-1].startswith("/") for word in command.words):
        # Paths on the reader's machine: the command line is checked, the data is not here.
        argv = [MEDUSA, *command.words[1:], "--help"]
        check_outcome(command, run_in(REPO, argv, timeout=120), argv)
        return
    workdir = request.getfixturevalue("bundle_workdir")
    for path in getattr(args, "paths", []):
        make_recording_input(workdir, path)
    argv = [MEDUSA, *command.words[1:]]
    check_outcome(command, run_in(workdir, argv), argv)


def make_recording_input(workdir: Path, name: str) -> None:
    """A recording a documented `medusa predict` names, made of demo clips: a file in the
    format its suffix names, or a folder of two Test3 clips."""
    path = workdir / name
    if path.exists():
        return
    audios = sorted((workdir / "resources/demo/msp-podcast/Audios").glob("*.wav"))
    if path.suffix:
        audio, rate = sf.read(audios[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, rate)
    else:
        path.mkdir(parents=True)
        for clip in [a for a in audios if "_test3_" in a.name][:2]:
            shutil.copy(clip, path / clip.name)


@by_program("make")
def test_make_command(command: DocCommand):
    check_plain_words(command)
    argv = ["make", "-n", *command.words[1:]]
    check_outcome(command, run_in(REPO, argv, timeout=60), argv)
