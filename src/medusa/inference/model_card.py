"""The bundle's model card (README.md in the bundle): what the models are, how `medusa predict`
uses them, what it writes, and where they should not be trusted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from medusa.core.emotions import ClassSet
from medusa.inference.bundle_files import BundleSources
from medusa.inference.recognize import (
    GAP_COLUMNS,
    MIN_GAP_S,
    SKIPPED_COLUMNS,
    output_paths,
    segment_columns,
    summary_columns,
)
from medusa.inference.segments import (
    DEFAULT_MAX_PAUSE_S,
    DEFAULT_MIN_TURN_S,
    NO_SPEECH,
    VAD_THRESHOLD,
)

# --------------------------------------------------------------------------------------------
# The model card


def _tsv_to_markdown(path: str | os.PathLike) -> str:
    lines = [line.split("\t") for line in Path(path).read_text(encoding="utf-8").splitlines()]
    if not lines:
        return "(empty)\n"
    width = len(lines[0])
    rows = ["| " + " | ".join(cells + [""] * (width - len(cells))) + " |" for cells in lines]
    return "\n".join([rows[0], "|" + "---|" * width, *rows[1:]]) + "\n"


def _report_section(path: str | os.PathLike, heading: str) -> str:
    """One `## heading` section of a markdown report (without the heading)."""
    text = Path(path).read_text(encoding="utf-8").splitlines()
    out, inside = [], False
    for line in text:
        if line.startswith("## "):
            inside = line[3:].strip() == heading
            continue
        if inside:
            out.append(line)
    return "\n".join(out).strip() + "\n"


def meta_selection_section(record: Mapping | None) -> str:
    """The model card's account of the meta-classifier's cross-validated regularisation
    (``medusa.ensemble.meta_cv``): the grid with each point's score and spread, and the choice."""
    if not record:
        return "The soup's metrics hold no record of a cross-validated meta-classifier choice.\n"
    lines = [
        f"Meta-classifier regularisation (speaker-grouped {record.get('folds')}-fold "
        f"cross-validation on {record.get('n_clips')} clips of {record.get('n_speakers')} "
        f"speakers; choice: **{record.get('choice')}**; {record.get('reason')}):",
        "",
    ]
    if record.get("grid"):
        lines += ["| setting | CV macro-F1 | sd | se | chosen |", "|---|---|---|---|---|"]
        for point in record["grid"]:
            figures = [_figure(point.get(k)) for k in ("cv_macro_f1", "sd", "se")]
            chosen = "yes" if point.get("prior_strength") == record.get("choice") else ""
            lines.append(f"| {point.get('setting')} | " + " | ".join(figures) + f" | {chosen} |")
    return "\n".join(lines) + "\n"


def calibration_section(record: Mapping | None, table: str | None) -> str:
    """The model card's account of the soup's temperature scaling and of Table C."""
    if not record:
        return "## Calibration\n\nThis bundle records no temperature: posteriors are the soup's.\n"
    fitted = record["fitted_on"]
    lines = [
        "## Calibration",
        "",
        f"The soup's posteriors p are temperature-scaled: softmax(ln p / T) with T = "
        f"{record['temperature']:.4f} (`calibration` in `bundle.json`, `Bundle.calibrate`), "
        f"{record['note']}: {fitted['clips']} clips of {fitted['speakers']} speaker(s), their "
        f"negative log-likelihood {record['nll_before']:.4f} before, {record['nll_after']:.4f} "
        "after. T > 1 softens over-confident posteriors, T < 1 sharpens them; the predicted "
        "class never changes.",
        "",
    ]
    if table:
        lines += [
            "Table C (on dev: expected calibration error over equal-mass bins, Brier score, "
            "negative log-likelihood, with speaker-bootstrap intervals; lower is better):",
            "",
            _tsv_to_markdown(table),
        ]
    return "\n".join(lines)


def _figure(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _backbone_where(record: Mapping) -> str:
    """The model card's 'where' of a feature set's backbone."""
    if record.get("hub"):
        return (
            f"hub id at commit {record.get('commit')}, fetched into the model store "
            f"(`{record['fetched']}`), weights sha256 {record['weights_sha256'][:12]}..."
        )
    if record["local"]:
        return f"local folder, sha256 {record['weights_sha256'][:12]}..."
    return "hub id" + (f", revision {record['revision']}" if record["revision"] else "")


def _asr_where(asr: Mapping) -> str:
    if asr["local"]:
        return f"local checkpoint, sha256 {asr['sha256'][:12]}..."
    if asr.get("fetched"):
        return f"fetched into the model store (`{asr['fetched']}`), sha256 {asr['sha256'][:12]}..."
    return "official model name"


def use_section(manifest: Mapping) -> str:
    """The model card's "Use": the commands, how predict segments, calibrates and what it
    writes. The settings are the bundle's (``segmentation``) and medusa.inference.segments' own."""
    seg = manifest["segmentation"]
    classes = ClassSet(tuple(manifest["classes"]), tuple(manifest["class_names"]))
    return f"""## Use

```bash
medusa predict --bundle path/to/bundle --output predictions.csv recordings/ talk.flac
# local backbones recorded as relative paths (the demo's resources/backbones/...):
medusa predict --bundle path/to/bundle --backbone-root path/to/training/run recordings/
# also one HTML page for the run; fixed windows instead of speech turns:
medusa predict --bundle path/to/bundle --html --segments fixed -o windows.csv talk.flac
```

Segments (`--segments vad`, the default): voice-activity detection with Silero VAD (the
`silero-vad` package, MIT licence; its model ships inside the package and runs on the CPU,
speech probability threshold {VAD_THRESHOLD:g}) finds the speech. Speech separated by pauses
shorter than {DEFAULT_MAX_PAUSE_S:g} s (`--max-pause-s`) is one turn; a turn longer than
{seg["max_segment_s"]:g} s (`--max-turn-s`, default `--max-segment-s`) is split at the pause
nearest its middle (continuous speech: in its middle); one shorter than {DEFAULT_MIN_TURN_S:g} s
(`--min-turn-s`) is widened with the audio around it, never over a neighbouring turn. What no
turn covers (silence, music, noise) is a gap: listed, not scored. A recording in which no speech
is found is skipped ("{NO_SPEECH}"). A recording up to {seg["max_segment_s"]:g} s
(`--max-segment-s`) that holds speech is one segment, scored whole as the workflow scores a
clip. `--segments fixed` cuts every recording, silence included, into windows of
{seg["window_s"]:g} s every {seg["hop_s"]:g} s (`--window-s`, `--hop-s`; a last piece shorter
than {seg["min_segment_s"]:g} s is dropped; a recording up to {seg["max_segment_s"]:g} s is one
segment). Either way a file that cannot be read, is empty or whose RMS is below
{seg["silence_rms"]:g} (`--silence-rms`) is skipped. Window, hop, whole-clip length and silence
threshold are this bundle's (`segmentation` in `bundle.json`); the turn settings are those of
the installed medusa (`medusa.inference.segments`), not recorded in the bundle.

Each segment gets the {len(classes.letters)} class posteriors (`{" ".join(classes.letters)}` =
{", ".join(classes.names)}), the predicted class and the three attributes (`act`, `val`, `dom`,
on the 1-7 scale of MSP-Podcast). {_posteriors_text(manifest.get("calibration"))}

{_outputs_text(classes)}"""


def _posteriors_text(record: Mapping | None) -> str:
    """Which posteriors predict writes with this bundle."""
    if not record:
        return (
            "This bundle records no temperature: the posteriors are the soup's, uncalibrated "
            "(`--uncalibrated` changes nothing)."
        )
    return (
        f"The posteriors are calibrated by default: temperature-scaled with T = "
        f"{record['temperature']:.4f} (see Calibration), the predicted class unchanged; "
        "`--uncalibrated` writes the soup's raw posteriors, exactly as the workflow writes them. "
        "The run's summary line (on stderr) and the HTML page name the calibration applied."
    )


def _outputs_text(classes: ClassSet) -> str:
    """predict's output files and their columns, from the functions that write them."""
    paths = {k: p.name for k, p in output_paths("predictions.csv").items()}

    def columns(names: Sequence[str]) -> str:
        return "`" + ", ".join(names) + "`"

    return f"""Outputs of `--output predictions.csv` (`--format jsonl`: JSON lines; the other files are
named after its stem):

- `{paths["segments"]}`: one row per segment: {columns(segment_columns(classes))}; `emotion`
  is the class of the highest posterior, the posteriors of a row sum to 1;
- `{paths["summary"]}`: one row per predicted file: {columns(summary_columns(classes))};
  posteriors and attributes averaged over its segments weighted by their duration (gaps count
  for nothing), `emotion` the class of those posteriors;
- `{paths["gaps"]}`: {columns(GAP_COLUMNS)} of what no segment covers (with VAD: no speech
  found there); gaps shorter than {MIN_GAP_S:g} s are not listed;
- `{paths["skipped"]}`: {columns(SKIPPED_COLUMNS)} of each file that could not be used (not
  found, unreadable, empty, silent, {NO_SPEECH}); also printed on stderr;
- `{paths["timelines"]}/NNNN_<name>.png` (not with `--no-timelines`): one per predicted file,
  numbered in the summary's order: the class posteriors over time as a stacked band, arousal
  and valence as curves, the gaps shaded;
- with `--html`, `{paths["html"]}`: one self-contained page for the run (the summary, the
  skipped files, and per file its timeline, its segments with transcript and emotion, and its
  gaps); it loads nothing from anywhere.
"""


def limits_section(manifest: Mapping) -> str:
    """The model card's "Limits": where the bundle's predictions must not be trusted."""
    seg = manifest["segmentation"]
    calibrated = (
        "- Calibration: one temperature for all classes, fitted on clips of the training "
        "corpus; on other recordings, conditions or languages the calibrated confidences can "
        "still be off. The attributes are not calibrated.\n"
        if manifest.get("calibration")
        else ""
    )
    corpus = (
        "Synthetic demo: not a model of real emotional speech."
        if manifest["demo"]
        else "MSP-Podcast only: podcast audio, mostly American English, perceived (not felt) "
        "emotion."
    )
    return f"""## Limits

- {corpus}
- English only: the ASR and the text backbones were run in English; other languages get
  meaningless transcripts and text features.
- Trained on MSP-Podcast-like segments (a few seconds of one speaker). Speech turns come from
  voice-activity detection, not speaker diarisation: a turn can hold two speakers who overlap
  or follow each other with a pause under {DEFAULT_MAX_PAUSE_S:g} s, and a turn widened to
  {DEFAULT_MIN_TURN_S:g} s takes in the audio around it. A recording up to
  {seg["max_segment_s"]:g} s is scored whole, silences included.
- VAD errors: Silero VAD can take singing, music with vocals, laughter or noise for speech
  (then scored as speech) and miss quiet, distant, whispered or noisy speech (then a gap, not
  scored, or the file skipped as without speech). Continuous speech longer than
  {seg["max_segment_s"]:g} s without a pause is cut in its middle, perhaps mid-word.
- `--segments fixed` cuts windows blindly: they may mix speakers, silence or music.
{calibrated}- Class imbalance of the training data (Neutral and Happy dominate) shows in the posteriors.
- Not for clinical, forensic, hiring or any decision about a person without a validation on
  the target population and setting.
"""


def model_card(manifest: Mapping, sources: BundleSources) -> str:
    """README.md of the bundle: what it is, how it was trained and scored, how to use it, and
    where it must not be trusted."""
    soup = json.loads(Path(sources.soup_metrics).read_text(encoding="utf-8"))
    dev = soup.get("dev", {})
    report_head = Path(sources.data_report).read_text(encoding="utf-8").splitlines()
    corpus_lines = [line for line in report_head[:6] if line.startswith(("Corpus", "Audio"))]
    fs = manifest["feature_sets"]
    models = manifest["model_files"]
    demo = manifest["demo"]
    model_rows = "\n".join(
        f"| {m} | {' + '.join(info['features'])} | {info['stage']} | {info['epoch']} |"
        for m, info in models.items()
    )
    fs_rows = "\n".join(
        f"| {name} | `{r['backbone']}` | {r['kind']} | {r['layer']} | {r['dim']} | "
        f"{_backbone_where(r)} |"
        for name, r in fs.items()
    )
    asr = manifest["asr"]
    what = (
        "**This bundle was trained on the embedded synthetic demo corpus** (espeak-ng speech, "
        "simulated annotators, random or tiny backbones). It shows that the pipeline works end "
        "to end; its predictions on real speech mean nothing."
        if demo
        else "Trained on the MSP-Podcast corpus (the challenge release's Train split; "
        "Development used for reporting)."
    )
    return f"""# MEDUSA speech emotion recognition: model bundle

{what}

MEDUSA (Interspeech 2025 SER challenge, Task 1): Whisper ASR, layer embeddings of
self-supervised backbones, {len(models)} DeepSER fusion model(s), a meta-classifier over their
posteriors trained over several seeds and averaged into one model soup. This folder is
everything `medusa predict` needs apart from the backbones (see below); it was written by the
workflow's `bundle` rule (medusa {manifest["medusa_version"]}, {manifest["created"]}).

{use_section(manifest)}
## Contents

| file | what |
|---|---|
| `bundle.json` | class order, model order, ASR and feature-set definitions, the window, whole-clip and silence settings of `medusa predict` (`segmentation`), the soup's temperature (`calibration`), the configuration used |
| `models/<model>.safetensors`, `.json` | each DeepSER model's final checkpoint (weights and input statistics; settings) |
| `head.safetensors`, `head.json` | the soup meta-classifier |
| `metrics/` | `soup_metrics.json`, Tables 1, 3 and C (calibration) of the report |
| `checksums.sha256` | sha256 of every file; checked on every load (`sha256sum -c checksums.sha256` works too) |

Models (the meta-classifier reads them in this order):

| model | features | stage | epoch |
|---|---|---|---|
{model_rows}

Feature sets (backbones are not copied into the bundle):

| feature set | backbone | kind | layer | dim | where |
|---|---|---|---|---|---|
{fs_rows}

ASR: openai-whisper `{asr["model"]}` ({_asr_where(asr)}), language `{asr["language"]}`,
greedy decoding.

Hub backbones and a fetched ASR checkpoint are loaded from the copies `snakemake fetch_models`
made in the model store (`--model-store DIR`; default: the training run's
`{manifest.get("model_store")}`), after checking every file, the commit and the weights'
sha256, without contacting the hub; a hub backbone with no copy there is loaded from the
Hugging Face cache at the recorded commit (`HF_HUB_OFFLINE=1` works once it is cached).
`medusa verify --model-store DIR path/to/bundle` checks the store's copies. Local paths are
looked up through `--path-map OLD=NEW`, then, when relative, under `--backbone-root`
(default: the working directory); a local folder's weights must match the recorded checksum.

## Training data

{chr(10).join(corpus_lines)}

{_report_section(sources.data_report, "Subsets")}
## Results

Soup on `dev`: macro-F1 {dev.get("macro_f1", float("nan")):.4f}, accuracy
{dev.get("accuracy", float("nan")):.4f}.

Table 1 (each model and the ensemble):

{_tsv_to_markdown(sources.table1)}
Table 3 (ensemble techniques; the holdout columns are selection-biased, compare on dev):

{_tsv_to_markdown(sources.table3)}
{meta_selection_section(soup.get("selection"))}
{calibration_section(manifest.get("calibration"), sources.calibration)}
## Intended use

Research on categorical speech emotion recognition of English podcast-style speech, and
reproduction of MEDUSA. Predictions are estimates of how annotators of MSP-Podcast would label
a segment's perceived emotion, not of what the speaker felt.

{limits_section(manifest)}"""
