"""What the workflow's parse knows of the corpus: its audio partitions with their fingerprints,
the label digests and a table's folds (``medusa.corpus.partitions.corpus_fingerprints``),
checked against ``data.fold``, and what follows from them: the labelled partitions and subsets,
and every fold's report for ``snakemake folds``.

ASR and features run per partition: a partition whose audio content changed, and only that
one, gets a new fingerprint and is indexed, transcribed and extracted again. Errors are
``medusa.dag.layout.LayoutError`` naming the key or file (the workflow shows them as its own).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

from medusa.corpus.guard import missing_corpus_message
from medusa.corpus.partitions import CorpusFingerprints, corpus_fingerprints
from medusa.corpus.table_layout import UNLABELLED
from medusa.dag.layout import LayoutError, fold_report

# The manifest subsets each labelled partition holds: train, holdout and meta are carved out
# of `train`, dev is `development`, a fold-style table's four all live in `labelled`; any other
# Split_Set is a subset under its own name.
PARTITION_SUBSETS = {
    "train": ["train", "holdout", "meta"],
    "development": ["dev"],
    "labelled": ["train", "holdout", "meta", "dev"],
}


def corpus_present(root: str, layout: str, table: str | None) -> bool:
    """Whether `root` holds the files its layout reads (the table, or Audios/ and the
    consensus labels)."""
    if layout == "table":
        return os.path.isfile(os.path.join(root, table))
    labels = os.path.join(root, "Labels", "labels_consensus.csv")
    return os.path.isfile(labels) and os.path.isdir(os.path.join(root, "Audios"))


def check_fold(folds: Sequence[str], fold: str | None, table_path: str | None) -> None:
    """``data.fold`` must name one of a fold-style table's folds, and only such a table's."""
    if folds and fold is None:
        raise LayoutError(
            f"data.fold: {table_path} has folds {', '.join(folds)}; "
            "set data.fold to the fold held out (e.g. --config 'data={fold: 1}')"
        )
    if fold is not None and fold not in folds:
        found = f"its folds are {', '.join(folds)}" if folds else "it has no numbered folds"
        raise LayoutError(f"data.fold: {fold} is not a fold of the corpus ({found})")


def load_corpus_state(
    root: str,
    cache_path: str,
    *,
    layout: str,
    table: str | None,
    fold: str | None,
    demo_home: bool,
    check_files: bool,
) -> CorpusFingerprints:
    """The corpus's fingerprints, checked: the corpus is there (else what to run, for a demo
    whose rule builds it: `demo_home`) and ``data.fold`` fits its folds. The scan is cached
    (``medusa.corpus.scan_cache``); without `check_files` (a cluster job's parse) it trusts the
    folders' and label files' states, with it it also checks every audio file's."""
    if not corpus_present(root, layout, table):
        raise LayoutError(missing_corpus_message(root, demo_home=demo_home, table=table))
    state = corpus_fingerprints(
        root, cache_path, layout=layout, table=table, check_files=check_files
    )
    table_path = None if table is None else os.path.join(root, table)
    check_fold(state.folds, fold, table_path)
    return state


def labelled_partitions(partitions: Mapping[str, str]) -> list[str]:
    """The audio partitions with labels, sorted (never the unlabelled one)."""
    return sorted(p for p in partitions if p != UNLABELLED)


def labelled_subsets(partitions: Mapping[str, str]) -> list[str]:
    """The manifest subsets with labels, partition by partition (``PARTITION_SUBSETS``)."""
    return [s for p in labelled_partitions(partitions) for s in PARTITION_SUBSETS.get(p, [p])]


def partition_fingerprint(partitions: Mapping[str, str], partition: str, root: str) -> str:
    """One audio partition's fingerprint (`root`: the corpus, for the error)."""
    if partition not in partitions:
        raise LayoutError(
            f"no audio partition {partition!r} in {root} "
            f"(partitions: {', '.join(sorted(partitions))})"
        )
    return partitions[partition]


def fold_report_inputs(
    folds: Sequence[str], fold: str | None, exists: Callable[[str], bool] = os.path.isdir
) -> dict[str, list[str]]:
    """Table 1 and Table 3 of every fold's report: the held-out `fold`'s are built by this run,
    the others must exist (`exists`) from that fold's own run (``--config 'data={fold: <k>}'``).
    """
    if not folds:
        raise LayoutError(
            "folds: the corpus has no numbered folds (a table layout whose partition column "
            "holds fold numbers); its results are in results/report/"
        )
    reports = {f: fold_report(f) for f in folds}
    missing = [f for f in folds if f != fold and not exists(reports[f])]
    if missing:
        runs = "; ".join(f"snakemake soup --config 'data={{fold: {f}}}' ..." for f in missing)
        raise LayoutError(
            f"folds: no report yet for fold(s) {', '.join(missing)}: run each fold first "
            f"with the same config files ({runs}), then `snakemake folds`"
        )
    return {
        "table1": [f"{reports[f]}/table1.tsv" for f in folds],
        "table3": [f"{reports[f]}/table3.tsv" for f in folds],
    }
