"""Pictures of `medusa predict`'s output: a timeline per recording and one HTML page per run.

A timeline (PNG) shows, over the recording's time, the class posteriors of each segment as a
stacked band (one colour per class of the bundle, in its order), arousal and valence as curves
(1-7, through the segments' middles, broken at gaps), and the gaps (no speech, not scored)
shaded. The HTML page holds the per-file summary, the skipped files, and per file its timeline
(embedded as a base64 PNG), its segments with transcript and emotion, and its gaps. It is
self-contained: no script, style sheet, font or image is fetched from anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from medusa.core.atomic import atomic_directory, atomic_write_text

GAP_COLOUR = "#d9d9d9"
ATTRIBUTE_STYLE = {"act": ("arousal", "#c0392b"), "val": ("valence", "#2471a3")}
DPI = 100


def class_colours(n: int) -> list:
    """n distinguishable colours (tab10 up to 10 classes, tab20 up to 20, then a ramp)."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]


def timeline_figure(
    file: str, duration_s: float, segments: pd.DataFrame, gaps: pd.DataFrame, classes
) -> Figure:
    """The timeline of one recording (its rows of the segment and gap tables)."""
    width = float(np.clip(4.0 + duration_s / 20.0, 8.0, 20.0))
    fig = Figure(figsize=(width, 4.2))
    band, curves = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    # Fixed margins (a constrained layout costs as much again): 1.7 in right for the legends.
    fig.subplots_adjust(left=0.8 / width, right=1 - 1.7 / width, top=0.93, bottom=0.12, hspace=0.12)
    starts = segments["start_s"].to_numpy(float)
    ends = segments["end_s"].to_numpy(float)
    # Overlapping windows (hop < window): each is drawn up to where the next one starts.
    shown_ends = np.minimum(ends, np.append(starts[1:], np.inf))
    widths = shown_ends - starts
    probs = segments[list(classes.letters)].to_numpy(float)
    bottom = np.zeros(len(segments))
    for i, (letter, name) in enumerate(zip(classes.letters, classes.names, strict=True)):
        band.bar(
            starts,
            probs[:, i],
            widths,
            bottom=bottom,
            align="edge",
            color=class_colours(len(classes))[i],
            linewidth=0,
            label=f"{letter} {name}" if name != letter else letter,
        )
        bottom += probs[:, i]
    band.set_ylim(0, 1)
    band.set_ylabel("posterior")
    band.set_title(file, fontsize=9, loc="left")
    # Each segment's rating held over its time, joined to the next one unless a gap lies
    # between them (a NaN breaks the line there).
    breaks = np.r_[False, starts[1:] > shown_ends[:-1] + 1e-6]
    for column, (label, colour) in ATTRIBUTE_STYLE.items():
        x, y = [], []
        for start, end, value, broken in zip(
            starts, shown_ends, segments[column].to_numpy(float), breaks, strict=True
        ):
            if broken:
                x.append(np.nan)
                y.append(np.nan)
            x += [start, end]
            y += [value, value]
        curves.plot(x, y, color=colour, linewidth=1.5, label=label)
    curves.set_ylim(1, 7)
    curves.set_ylabel("rating (1-7)")
    curves.set_xlabel("time (s)")
    curves.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    for ax in (band, curves):
        ax.set_xlim(0, max(duration_s, float(ends.max()) if len(ends) else 0.0))
        for gap in gaps.itertuples():
            ax.axvspan(gap.start_s, gap.end_s, color=GAP_COLOUR, zorder=0, linewidth=0)
    handles, labels = band.get_legend_handles_labels()
    if len(gaps):
        handles.append(Patch(color=GAP_COLOUR))
        labels.append("gap (no speech)")
    band.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return fig


def timeline_pngs(predictions) -> dict[str, bytes]:
    """file -> its timeline as PNG bytes, for every predicted file (summary order)."""
    pngs = {}
    segments = predictions.segments.groupby("file", sort=False)
    gap_rows = predictions.gaps.groupby("file", sort=False)
    empty_gaps = predictions.gaps.iloc[:0]
    for row in predictions.summary.itertuples():
        file_gaps = gap_rows.get_group(row.file) if row.file in gap_rows.groups else empty_gaps
        fig = timeline_figure(
            row.file, row.duration_s, segments.get_group(row.file), file_gaps, predictions.classes
        )
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        pngs[row.file] = buffer.getvalue()
    return pngs


def timeline_names(files) -> dict[str, str]:
    """file -> its PNG's name: the file's number in the summary, then its name (made safe)."""
    return {
        file: f"{i + 1:04d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', Path(file).name)}.png"
        for i, file in enumerate(files)
    }


def write_timelines(pngs: Mapping[str, bytes], predictions, folder: str | os.PathLike) -> Path:
    """The PNGs into `folder` (replaced as a whole: no timeline of an earlier run lingers)."""
    names = timeline_names(predictions.summary["file"])
    with atomic_directory(folder) as tmp:
        for file, data in pngs.items():
            (tmp / names[file]).write_bytes(data)
    return Path(folder)


# --------------------------------------------------------------------------------------------
# The page

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.timeline { max-width: 100%; height: auto; display: block; }
section { margin-bottom: 2.5em; }
.muted { color: #666; }
"""


def _cell(value, numeric: bool = False) -> str:
    if numeric:
        return (
            f'<td class="num">{value:.3f}</td>'
            if isinstance(value, float)
            else (f'<td class="num">{html.escape(str(value))}</td>')
        )
    return f"<td>{html.escape(str(value))}</td>"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _emotion(letter: str, classes) -> str:
    name = classes.names[classes.letters.index(letter)]
    return letter if name == letter else f"{name} ({letter})"


def html_page(predictions, pngs: Mapping[str, bytes], title: str = "") -> str:
    """The whole run's page (see the module docstring)."""
    classes = predictions.classes
    letters = list(classes.letters)
    gap_seconds = (
        (predictions.gaps["end_s"] - predictions.gaps["start_s"])
        .groupby(predictions.gaps["file"])
        .sum()
    )
    summary_rows = []
    # Records, not named tuples: a class code may be a Python keyword ("in", "or").
    for i, values in enumerate(predictions.summary.to_dict("records")):
        scored = values["duration_s"] - float(gap_seconds.get(values["file"], 0.0))
        summary_rows.append(
            [
                f'<td><a href="#file{i + 1}">{html.escape(values["file"])}</a></td>',
                _cell(values["duration_s"], True),
                _cell(scored, True),
                _cell(values["segments"], True),
                _cell(_emotion(values["emotion"], classes)),
                *(_cell(float(values[c]), True) for c in letters),
                *(_cell(float(values[a]), True) for a in ("act", "val", "dom")),
            ]
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title or 'medusa predict')}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title or 'medusa predict')}</h1>",
        f'<p class="muted">{len(predictions.summary)} file(s), {len(predictions.segments)} '
        f"segment(s), {len(predictions.skipped)} skipped; written "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}. Classes: "
        f"{html.escape(', '.join(_emotion(c, classes) for c in letters))}. Posteriors of the "
        "summary are duration-weighted over a file's segments; act, val, dom are arousal, "
        "valence and dominance (1-7). Posteriors: "
        f"{html.escape(getattr(predictions, 'calibration', 'uncalibrated'))}.</p>",
        "<h2>Summary</h2>",
        _table(
            [
                "file",
                "duration s",
                "scored s",
                "segments",
                "emotion",
                *letters,
                "act",
                "val",
                "dom",
            ],
            summary_rows,
        ),
    ]
    if len(predictions.skipped):
        parts += [
            "<h2>Skipped</h2>",
            _table(
                ["file", "reason"],
                [[_cell(r.file), _cell(r.reason)] for r in predictions.skipped.itertuples()],
            ),
        ]
    segments = predictions.segments.groupby("file", sort=False)
    gap_rows = predictions.gaps.groupby("file", sort=False)
    for i, file in enumerate(predictions.summary["file"]):
        parts.append(_file_section(i + 1, file, pngs[file], segments.get_group(file), classes))
        if file in gap_rows.groups:
            rows = [
                [_cell(float(g.start_s), True), _cell(float(g.end_s), True)]
                for g in gap_rows.get_group(file).itertuples()
            ]
            parts += ["<h3>Gaps (no speech, not scored)</h3>", _table(["start s", "end s"], rows)]
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _file_section(number: int, file: str, png: bytes, segments: pd.DataFrame, classes) -> str:
    letters = list(classes.letters)
    image = base64.b64encode(png).decode("ascii")
    rows = []
    for values in segments.to_dict("records"):
        top = max(letters, key=lambda c: values[c])
        rows.append(
            [
                _cell(float(values["start_s"]), True),
                _cell(float(values["end_s"]), True),
                _cell(values["transcript"]),
                _cell(_emotion(values["emotion"], classes)),
                _cell(float(values[top]), True),
                *(_cell(float(values[a]), True) for a in ("act", "val", "dom")),
            ]
        )
    return "\n".join(
        [
            f'<section id="file{number}"><h2>{html.escape(file)}</h2>',
            f'<img class="timeline" alt="timeline of {html.escape(file)}" '
            f'src="data:image/png;base64,{image}">',
            _table(
                ["start s", "end s", "transcript", "emotion", "posterior", "act", "val", "dom"],
                rows,
            ),
        ]
    )


def write_html(predictions, pngs: Mapping[str, bytes], path: str | os.PathLike, title="") -> Path:
    atomic_write_text(path, html_page(predictions, pngs, title))
    return Path(path)
