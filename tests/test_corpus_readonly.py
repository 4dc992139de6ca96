"""The corpus folder is only ever read: no rule writes under data.root (checked when the workflow
is parsed), the demo corpus lives in its own home, and a run on a user's corpus merged with the
demo's settings leaves every file of it byte-identical."""

import json
import shutil

import pytest

from medusa.core.config import ConfigError
from medusa.corpus.guard import (
    DEMO_CORPUS_HOME,
    is_demo_home,
    may_land_inside,
    missing_corpus_message,
    outputs_inside_corpus,
    refuse_outputs_in_corpus,
)

from workflow_runner import (
    CI_CONFIGS,
    CORPUS_BEFORE_SOUP,
    generate_demo_corpus,
    run_snakemake,
    tree_state,
)

DEMO_COMMAND = "snakemake demo_corpus --configfile config/demo.yaml"


# ---------------------------------------------------------------------------------------------
# The library: which output patterns could land inside data.root.


@pytest.mark.parametrize(
    ("pattern", "data_root", "inside"),
    [
        ("results/data/manifest.tsv", ".", True),
        ("results/data/manifest.tsv", "results", True),
        ("results/data/manifest.tsv", "results/data/manifest.tsv", True),
        ("results/audio/{partition}.tsv", "results", True),
        ("results/audio/{partition}.tsv", "results/audio", True),
        # A wildcard may stand for a folder inside data.root.
        ("results/models/{model}/stage1/checkpoint.pt", "results/models/m01", True),
        # A directory output is deleted as a whole before its job runs.
        ("results/bundle", "results/bundle/corpus", True),
        ("results/audio/shard{shard}.tsv", "results/audio/shard_corpus", True),
        ("{name}.log", "corpus", True),
        ("results/data/manifest.tsv", "/data/MSP-Podcast", False),
        ("results/x/file.tsv", "results/xy", False),
        ("results/audio/shard{shard}.tsv", "results/audiobooks", False),
        ("logs/prepare.log", "resources/demo/msp-podcast", False),
        ("/data/MSP-Podcast/models/hub/{repo}", "/data/MSP-Podcast", True),
        ("/data/MSP-Podcast-models/hub/{repo}", "/data/MSP-Podcast", False),
    ],
)
def test_outputs_that_could_land_in_data_root_are_found(tmp_path, pattern, data_root, inside):
    assert may_land_inside(pattern, data_root, str(tmp_path)) is inside


def test_paths_are_compared_resolved(tmp_path):
    """A data.root reached through a symlink, `..` or an absolute path is the same folder."""
    (tmp_path / "results").mkdir()
    link = tmp_path / "elsewhere"
    link.symlink_to(tmp_path / "results")
    workdir = str(tmp_path)
    for root in (str(link), "elsewhere", "logs/../results", str(tmp_path / "results")):
        assert may_land_inside("results/audio/{partition}.tsv", root, workdir), root
    assert is_demo_home(str(tmp_path / DEMO_CORPUS_HOME), workdir)
    assert is_demo_home(f"./{DEMO_CORPUS_HOME}/", workdir)
    assert not is_demo_home("resources/demo", workdir)


def test_demo_corpus_may_write_only_into_its_own_home(tmp_path):
    workdir = str(tmp_path)
    demo = [("demo_corpus", f"{DEMO_CORPUS_HOME}/Labels/labels_consensus.csv")]
    assert outputs_inside_corpus(demo, DEMO_CORPUS_HOME, workdir) == []
    # The rule as it was: outputs under whatever data.root is.
    user_root = str(tmp_path / "my-corpus")
    old_rule = [("demo_corpus", f"{user_root}/Labels/labels_consensus.csv")]
    assert outputs_inside_corpus(old_rule, user_root, workdir) == old_rule
    # Any other rule writing into the demo's home is refused too.
    other = [("prepare", f"{DEMO_CORPUS_HOME}/Labels/extra.csv")]
    assert outputs_inside_corpus(other, DEMO_CORPUS_HOME, workdir) == other


def test_refusal_names_the_rule_and_the_path(tmp_path):
    products = [
        ("prepare", "results/data/manifest.tsv"),
        ("prepare", "logs/prepare.log"),
        ("audio_index", "results/benchmarks/audio_index/{partition}.tsv"),
        ("fetch_hub_model", "resources/models/hub/{repo}@{revision}"),
    ]
    with pytest.raises(ConfigError) as refused:
        refuse_outputs_in_corpus(products, "results", str(tmp_path))
    message = str(refused.value)
    assert message.startswith("data.root: 'results'")
    assert "rule prepare writes results/data/manifest.tsv" in message
    assert "rule audio_index writes results/benchmarks/audio_index/{partition}.tsv" in message
    assert "fetch_hub_model" not in message and "logs/prepare.log" not in message
    # Snakemake's own records count as written too.
    with pytest.raises(ConfigError, match=r"Snakemake itself writes \.snakemake/"):
        refuse_outputs_in_corpus(products, ".snakemake/metadata", str(tmp_path))
    refuse_outputs_in_corpus(products, str(tmp_path / "corpus"), str(tmp_path))


def test_missing_corpus_message_names_the_command_that_makes_it():
    for demo_home in (True, False):
        message = missing_corpus_message(DEMO_CORPUS_HOME, demo_home=demo_home)
        assert DEMO_COMMAND in message and "make demo" in message
        assert repr(DEMO_CORPUS_HOME) in message


# ---------------------------------------------------------------------------------------------
# Through snakemake: the checks run when the workflow is parsed.


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"data": {"root": "."}}, "rule prepare writes results/data/manifest.tsv"),
        ({"data": {"root": "results"}}, "rule audio_index writes results/audio/{partition}.tsv"),
        (
            {"data": {"root": "corpus"}, "model_store": "corpus/models"},
            "rule fetch_hub_model writes corpus/models/hub/{repo}@{revision}",
        ),
    ],
)
def test_a_data_root_overlapping_the_outputs_is_refused(tmp_path, data, expected):
    run = run_snakemake(tmp_path, "-n", "soup", configfiles=CI_CONFIGS, config=data)
    assert run.returncode != 0
    message = " ".join((run.stdout + run.stderr).split())
    assert f"data.root: {data['data']['root']!r}" in message
    assert expected in message and "only ever read" in message
    assert not (tmp_path / "results").exists()


def test_a_missing_demo_corpus_names_the_command_that_makes_it(tmp_path):
    """`snakemake soup` with the demo's config before the corpus exists."""
    run = run_snakemake(tmp_path, "-n", "soup", configfiles=CI_CONFIGS)
    assert run.returncode != 0
    message = " ".join((run.stdout + run.stderr).split())
    assert f"no corpus at {DEMO_CORPUS_HOME!r} yet" in message
    assert DEMO_COMMAND in message and "make demo" in message


def rules_run(run) -> list[str]:
    """Names of the rules whose jobs a snakemake run printed."""
    lines = (run.stdout + "\n" + run.stderr).splitlines()
    return [
        line.split()[1].rstrip(":")
        for line in lines
        if line.startswith(("rule ", "localrule ")) and line.rstrip().endswith(":")
    ]


def test_demo_settings_on_a_users_corpus_never_write_to_it(tmp_path):
    """The demo's config merged with a config pointing data.root at a user's corpus (a copy of
    the demo corpus outside resources/, without the demo's demo_truth.csv, with a file of the
    user's own in Labels/): the manifest is built from it, demo_corpus never runs, even with
    every job forced or the rule asked for by name, and every file of the corpus is
    byte-identical, with its mtime, after."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    generate_demo_corpus(workdir)
    user_corpus = tmp_path / "my-corpus"
    shutil.copytree(
        workdir / DEMO_CORPUS_HOME, user_corpus, ignore=shutil.ignore_patterns("demo_truth.csv")
    )
    (user_corpus / "Labels/my_notes.txt").write_text("annotator meeting, 3 March\n")
    before = tree_state(user_corpus)

    user_config = {"data": {"root": str(user_corpus)}}
    for forced in ((), ("--forceall",)):
        run = run_snakemake(
            workdir,
            "results/data/manifest.tsv",
            "--cores",
            "2",
            *forced,
            configfiles=CI_CONFIGS,
            config=user_config,
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        assert "prepare" in rules_run(run) and "demo_corpus" not in rules_run(run), forced
        assert tree_state(user_corpus) == before, forced
    # Asked for by name (the demo's first command with the user's overlay): no such rule here.
    run = run_snakemake(
        workdir, "demo_corpus", "--cores", "1", configfiles=CI_CONFIGS, config=user_config
    )
    assert run.returncode != 0 and "demo_corpus" not in rules_run(run)
    assert tree_state(user_corpus) == before
    # The manifest was made from the user's corpus, not from the demo corpus in the workdir.
    report = (workdir / "results/data/report.md").read_text()
    assert f"`{user_corpus}`" in report and DEMO_CORPUS_HOME not in report
    assert len((workdir / "results/data/manifest.tsv").read_text().splitlines()) > 50


def test_soup_leaves_the_corpus_byte_identical(completed_ci_run):
    """The shared CI-sized run (and whatever else this session ran in it) read the corpus only:
    every file as the generator wrote it, nothing added, nothing removed."""
    before = json.loads((completed_ci_run / CORPUS_BEFORE_SOUP).read_text())
    assert len(before) > 100
    after = tree_state(completed_ci_run / DEMO_CORPUS_HOME)
    assert sorted(after) == sorted(before)
    assert after == before
    assert (completed_ci_run / "results/soup/head.pt").is_file()
