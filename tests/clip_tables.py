"""Test helper: an audio partition's clip table (medusa.corpus.audio_index) from a small
manifest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medusa.corpus.partitions import INDEX_COLUMNS


def partition_index(manifest_tsv: str | Path, subset: str) -> Path:
    """Write the clips of `subset` of a manifest-like TSV (id, path, subset) as the clip table
    of a partition named after the subset, next to it; returns its path."""
    manifest_tsv = Path(manifest_tsv)
    table = pd.read_csv(manifest_tsv, sep="\t", dtype=str, keep_default_na=False)
    rows = table[table["subset"] == subset]
    index = pd.DataFrame({"id": rows["id"], "path": rows["path"], "partition": subset})
    # Columns the manifest lacks are empty strings (a float NaN column would not take "").
    index = index.reindex(columns=INDEX_COLUMNS, fill_value="")
    out = manifest_tsv.parent / f"{subset}.tsv"
    index.to_csv(out, sep="\t", index=False)
    return out
