"""The input corpus is only ever read: no rule may write into ``data.root``.

The workflow writes under its working directory (``results/``, ``resources/``, ``logs/``,
``.snakemake/``) and ``model_store``; the corpus folder is an input. Snakemake deletes a job's
existing outputs before running it, so one rule declaring a file under ``data.root`` could
replace or remove a user's corpus. The Snakefile therefore calls
``refuse_outputs_in_corpus`` once every rule is defined: any output, log or benchmark pattern
that could land inside ``data.root`` stops the parse with the rule and the path named.

The rules allowed to write a corpus are ``demo_corpus`` and ``demo_table_corpus``, each only
into its demo corpus's fixed home (``DEMO_CORPUS_HOME``, ``DEMO_TABLE_HOME``; the workflow
defines each rule only when ``data.root`` is that home).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from medusa.core.config import ConfigError

DEMO_CORPUS_HOME = "resources/demo/msp-podcast"
DEMO_CORPUS_RULE = "demo_corpus"
# The second demo corpus: CREMA-D-like, in the table layout (medusa.demo.table_corpus).
DEMO_TABLE_HOME = "resources/demo/table-corpus"
DEMO_TABLE_RULE = "demo_table_corpus"
DEMO_HOMES = {DEMO_CORPUS_RULE: DEMO_CORPUS_HOME, DEMO_TABLE_RULE: DEMO_TABLE_HOME}
# Snakemake's own records (metadata, locks, conda environments) in the working directory.
SNAKEMAKE_RECORDS = ("Snakemake itself", ".snakemake/")


def resolved(path: str, workdir: str) -> str:
    """`path` as an absolute path with symlinks resolved (relative to `workdir`)."""
    return os.path.realpath(os.path.join(workdir, os.path.expanduser(path)))


def is_demo_home(data_root: str, workdir: str, home: str = DEMO_CORPUS_HOME) -> bool:
    """Whether `data_root` is a demo corpus's fixed home (`home`) under `workdir`."""
    return resolved(data_root, workdir) == resolved(home, workdir)


def _written_prefix(pattern: str, workdir: str) -> str:
    """The absolute text every path matching `pattern` starts with: the fixed part before the
    first wildcard (a folder when it ends with "/", else a partial name), or the whole path
    followed by a separator when there is no wildcard."""
    fixed, wildcard, _ = pattern.partition("{")
    if not wildcard or fixed == "" or fixed.endswith("/"):
        return resolved(fixed or ".", workdir).rstrip(os.sep) + os.sep
    folder, partial_name = os.path.split(fixed)
    return os.path.join(resolved(folder or ".", workdir), partial_name)


def may_land_inside(pattern: str, data_root: str, workdir: str) -> bool:
    """Whether a path matching `pattern` could be `data_root`, lie inside it, or contain it
    (a directory output is deleted as a whole before its job runs)."""
    root = resolved(data_root, workdir).rstrip(os.sep) + os.sep
    written = _written_prefix(pattern, workdir)
    return written.startswith(root) or root.startswith(written)


def outputs_inside_corpus(
    products: Iterable[tuple[str, str]], data_root: str, workdir: str
) -> list[tuple[str, str]]:
    """The (rule, pattern) pairs of `products` that could write inside `data_root`.

    A demo corpus's rule is exempt only when `data_root` is that demo corpus's fixed home.
    """
    return [
        (rule, pattern)
        for rule, pattern in products
        if not (rule in DEMO_HOMES and is_demo_home(data_root, workdir, DEMO_HOMES[rule]))
        and may_land_inside(pattern, data_root, workdir)
    ]


def refuse_outputs_in_corpus(
    products: Iterable[tuple[str, str]], data_root: str, workdir: str
) -> None:
    """Raise ConfigError naming every rule and path that could write inside `data_root`.

    `products` are (rule name, output/log/benchmark pattern) pairs, patterns relative to
    `workdir` or absolute.
    """
    offending = outputs_inside_corpus([*products, SNAKEMAKE_RECORDS], data_root, workdir)
    if not offending:
        return
    # One path per rule is enough to see the problem; `data.root: .` would list every rule.
    first_path: dict[str, str] = {}
    for rule, path in offending:
        first_path.setdefault(rule, path)
    listed = [f"{_writer(rule)} writes {path}" for rule, path in first_path.items()]
    more = f" (and {len(listed) - 8} more rules)" if len(listed) > 8 else ""
    raise ConfigError(
        f"data.root: {data_root!r} (resolved: {resolved(data_root, workdir)}) overlaps what the "
        f"workflow writes: {'; '.join(listed[:8])}{more}. The corpus folder is only ever read: "
        "set data.root to the folder holding Audios/ and Labels/, one that is neither inside "
        "nor above any of these paths."
    )


def _writer(rule: str) -> str:
    return rule if rule == SNAKEMAKE_RECORDS[0] else f"rule {rule}"


def missing_corpus_message(data_root: str, demo_home: bool, table: str | None = None) -> str:
    """What to do when `data_root` holds no corpus; `demo_home`: the config is a demo's and
    `data_root` is that demo corpus's home, so its rule builds it; `table`: the table layout's
    table (relative to `data_root`)."""
    demo_command = "snakemake demo_corpus --configfile config/demo.yaml --cores 1"
    if table is not None and demo_home:
        command = (
            "snakemake demo_table_corpus --configfile config/demo.yaml config/demo_table.yaml "
            "--cores 1"
        )
        return (
            f"data.root: no corpus at {data_root!r} yet: the demo table corpus is generated "
            f"before the workflow can plan ASR and features from its audio. Run `{command}` "
            "first (with the same --configfile files as this command)."
        )
    if table is not None:
        return (
            f"data.root: no table {table!r} in {data_root!r} (data.layout: table): set "
            "data.root to your corpus folder and data.table to the table's path inside it "
            '(README, "Your own corpus").'
        )
    if demo_home:
        return (
            f"data.root: no corpus at {data_root!r} yet: the demo corpus is generated before "
            "the workflow can plan ASR and features from its audio. Run "
            f"`{demo_command}` first (with the same --configfile files as this command), "
            "or `make demo`, which generates it and runs the whole demo."
        )
    return (
        f"data.root: no corpus at {data_root!r}: the folder holding Audios/ and "
        "Labels/labels_consensus.csv must exist before the workflow can plan ASR and "
        "features. Set data.root in config/config.yaml (or in a config file of your own "
        "passed with --configfile) to your MSP-Podcast folder. Without the corpus, run "
        f"the embedded demo instead: `make demo` (or `{demo_command}`, then "
        "`snakemake soup --configfile config/demo.yaml --cores 2 --resources gpu=2`)."
    )
