"""Timelines and the HTML page (medusa.inference.timeline) for a class set other than MSP-Podcast's.

The page of a real run is opened in a headless browser in tests/test_predict.py; here, made-up
predictions of six classes (one code a Python keyword), with overlapping windows and gaps.
"""

from __future__ import annotations

import io
from html.parser import HTMLParser

import numpy as np
import pandas as pd
from matplotlib.image import imread

from medusa.core.emotions import ClassSet
from medusa.inference.recognize import GAP_COLUMNS, SKIPPED_COLUMNS, Predictions, summarise
from medusa.inference.timeline import html_page, timeline_names, timeline_pngs

CLASSES = ClassSet(("ang", "sad", "hap", "fea", "dis", "in"), ("a", "s", "h", "f", "d", "inner"))


def made_up_predictions() -> Predictions:
    rng = np.random.default_rng(0)
    rows = []
    # talk.wav: turns with gaps; windows.wav: overlapping 8 s windows every 4 s.
    for file, bounds in (
        ("talk.wav", [(1.0, 4.0), (6.0, 9.5), (20.0, 23.0)]),
        ("dir/windows & more.wav", [(0.0, 8.0), (4.0, 12.0), (8.0, 14.0)]),
    ):
        for start, end in bounds:
            probs = rng.dirichlet(np.ones(len(CLASSES)))
            rows.append(
                {
                    "file": file,
                    "start_s": start,
                    "end_s": end,
                    "transcript": "<b>not markup</b> & more",
                    "emotion": CLASSES.letters[int(probs.argmax())],
                    **dict(zip(CLASSES.letters, probs, strict=True)),
                    "act": 3.0,
                    "val": 4.5,
                    "dom": 4.0,
                }
            )
    segments = pd.DataFrame(rows)
    durations = {"talk.wav": 25.0, "dir/windows & more.wav": 14.0}
    gaps = pd.DataFrame(
        [("talk.wav", 0.0, 1.0), ("talk.wav", 4.0, 6.0), ("talk.wav", 9.5, 20.0)],
        columns=GAP_COLUMNS,
    )
    skipped = pd.DataFrame([("quiet.wav", "no speech found")], columns=SKIPPED_COLUMNS)
    return Predictions(segments, summarise(segments, durations, CLASSES), skipped, gaps, CLASSES)


class Resources(HTMLParser):
    """Every URL the page refers to (src, href), and the text of its table cells."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href", "srcset")]

    def handle_data(self, data):
        self.text.append(data)


def test_every_file_gets_a_timeline_and_the_page_refers_to_nothing_outside():
    predictions = made_up_predictions()
    pngs = timeline_pngs(predictions)
    assert list(pngs) == list(predictions.summary["file"])
    for data in pngs.values():
        height, width, _ = imread(io.BytesIO(data)).shape
        assert width >= 600 and height >= 300
    names = timeline_names(predictions.summary["file"])
    assert names == {
        "talk.wav": "0001_talk.wav.png",
        "dir/windows & more.wav": "0002_windows_more.wav.png",
    }

    page = html_page(predictions, pngs, title="run")
    parser = Resources()
    parser.feed(page)
    assert parser.urls  # the images and the summary's links
    assert all(url.startswith(("data:image/png;base64,", "#file")) for url in parser.urls)
    assert "<style>" in page and "<link" not in page and "<script" not in page
    text = "".join(parser.text)
    assert "<b>not markup</b> & more" in text  # escaped: shown as text, not markup
    for code, name in zip(CLASSES.letters, CLASSES.names, strict=True):
        assert f"{name} ({code})" in text
    assert "no speech found" in text
