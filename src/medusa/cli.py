"""The `medusa` command: use a trained MEDUSA bundle (``results/bundle/``) on new recordings.

    medusa predict --bundle DIR [--output OUT.csv] [--format csv|jsonl] [--html]
                   [--segments vad|fixed] [--min-turn-s S] [--max-turn-s S] [--max-pause-s S]
                   [--window-s W] [--hop-s H] [--device auto|cpu|cuda] [--no-timelines]
                   [--backbone-root DIR] [--path-map OLD=NEW ...] [--model-store DIR] PATH...
    medusa verify [--model-store DIR] DIR
    medusa evaluate --bundle DIR [--map FROM=TO ...] [--output DIR] TABLE

Exit status of `predict`: 0 when at least one file was predicted (skipped files are listed on
stderr and in ``<output stem>.skipped.csv``), 1 when nothing could be predicted, 2 for a bad
command line or an unusable bundle (the message names the file).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence

from medusa.inference.segments import DEFAULT_MAX_PAUSE_S, DEFAULT_MIN_TURN_S

EXIT_OK, EXIT_NOTHING, EXIT_ERROR = 0, 1, 2
MODEL_STORE_HELP = (
    "the workflow's model store, where `snakemake fetch_models` put the hub backbones and the "
    "ASR checkpoint (default: the model_store the bundle recorded; a hub backbone not there "
    "is loaded from the Hugging Face cache at the recorded commit)"
)


def _path_map(values: Sequence[str] | None) -> dict[str, str]:
    mapping = {}
    for value in values or []:
        old, sep, new = value.partition("=")
        if not sep or not old or not new:
            raise argparse.ArgumentTypeError(f"--path-map expects OLD=NEW, got {value!r}")
        mapping[old] = new
    return mapping


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medusa", description="MEDUSA speech emotion recognition with a trained bundle."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_predict(sub)
    _add_verify(sub)
    _add_evaluate(sub)
    return parser


def _add_predict(sub) -> None:
    predict = sub.add_parser(
        "predict",
        help="predict the emotion of audio files or folders",
        description=(
            "Cut each recording into speech turns (or fixed windows), transcribe them, extract "
            "the features, run every model and the soup; write one row per segment, plus "
            "<stem>.summary.csv (per file), <stem>.skipped.csv (files that could not be used), "
            "<stem>.gaps.csv (stretches without speech, not scored), a timeline PNG per file "
            "in <stem>.timelines/ and, with --html, one page <stem>.html."
        ),
    )
    predict.add_argument("paths", nargs="+", metavar="PATH", help="audio files or folders")
    predict.add_argument("--bundle", required=True, help="bundle folder (results/bundle)")
    predict.add_argument("--output", "-o", help="segment table (default predictions.csv/.jsonl)")
    predict.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    _add_segment_options(predict)
    predict.add_argument("--no-timelines", action="store_true", help="no timeline PNG per file")
    predict.add_argument(
        "--uncalibrated",
        action="store_true",
        help="the soup's raw posteriors, as the workflow writes them (default: scaled by the "
        "temperature the bundle records, fitted on the meta-classifier's clips; same classes)",
    )
    predict.add_argument(
        "--html",
        action="store_true",
        help="also write <stem>.html: one self-contained page with every file's summary, "
        "timeline and segments",
    )
    _add_model_options(predict)


def _add_segment_options(predict: argparse.ArgumentParser) -> None:
    """Where recordings are cut into the segments that are scored."""
    predict.add_argument(
        "--segments",
        choices=("vad", "fixed"),
        default="vad",
        help="vad: speech turns found by voice-activity detection (Silero VAD), silences "
        "reported as gaps and not scored; fixed: windows of --window-s every --hop-s "
        "(default: vad)",
    )
    predict.add_argument(
        "--min-turn-s",
        type=float,
        help=f"vad: a shorter turn is widened with the audio around it (default: "
        f"{DEFAULT_MIN_TURN_S:g})",
    )
    predict.add_argument(
        "--max-turn-s",
        type=float,
        help="vad: a longer turn is split at its pauses (default: --max-segment-s)",
    )
    predict.add_argument(
        "--max-pause-s",
        type=float,
        help=f"vad: speech separated by a shorter pause is one turn (default: "
        f"{DEFAULT_MAX_PAUSE_S:g})",
    )
    predict.add_argument("--window-s", type=float, help="fixed: segment length (bundle default: 8)")
    predict.add_argument("--hop-s", type=float, help="fixed: segment hop (bundle default: 8)")
    predict.add_argument(
        "--max-segment-s",
        type=float,
        help="a recording up to this long is scored whole, as the workflow scores a clip "
        "(with vad: if it holds speech; bundle default: 12)",
    )
    predict.add_argument(
        "--silence-rms",
        type=float,
        help="skip files whose RMS is below this (bundle default: 1e-5; 0 scores every file, "
        "as the workflow does)",
    )


def _add_model_options(predict: argparse.ArgumentParser) -> None:
    """Where the backbones and the ASR model are, and what runs them."""
    predict.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    predict.add_argument(
        "--backbone-root",
        help="folder relative local backbone paths are taken from (default: working directory)",
    )
    predict.add_argument(
        "--path-map",
        action="append",
        metavar="OLD=NEW",
        help="replace a recorded backbone path (or path prefix, or hub id) by NEW; repeatable",
    )
    predict.add_argument("--model-store", help=MODEL_STORE_HELP)
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.add_argument(
        "--threads", type=int, help="CPU threads of torch (default: torch's choice)"
    )


def _add_verify(sub) -> None:
    verify = sub.add_parser(
        "verify",
        help="check a bundle's files against its checksums, and its fetched hub backbones and "
        "ASR checkpoint against the model store",
    )
    verify.add_argument("bundle")
    verify.add_argument("--model-store", help=MODEL_STORE_HELP)


def _add_evaluate(sub) -> None:
    evaluate = sub.add_parser(
        "evaluate",
        help="score the bundle on another labelled corpus (a table, as the workflow's table "
        "layout reads)",
        description=(
            "Predict every labelled clip of TABLE whole and score it: macro-F1, unweighted "
            "average recall and accuracy with speaker-bootstrap intervals, the confusion "
            "matrix, CCC of the attributes the table rates, macro-F1 per gender. Labels map "
            "into the bundle's classes with --map FROM=TO (a label that is a class's code or "
            "name needs none); the others are left out and counted."
        ),
    )
    evaluate.add_argument("table", metavar="TABLE", help="the corpus table (CSV or TSV)")
    evaluate.add_argument("--bundle", required=True, help="bundle folder (results/bundle)")
    evaluate.add_argument(
        "--map", action="append", default=[], metavar="FROM=TO", help="label mapping, repeatable"
    )
    evaluate.add_argument("--output", "-o", default="evaluation", help="output folder")
    evaluate.add_argument("--backbone-root", help="folder local backbone paths start from")
    evaluate.add_argument("--model-store", help=MODEL_STORE_HELP)
    evaluate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    evaluate.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    evaluate.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="medusa: %(message)s", stream=sys.stderr)
    if args.command == "verify":
        return _verify(args)
    if args.command == "evaluate":
        return _evaluate(args)
    return _predict(args, parser)


def _evaluate(args) -> int:
    from medusa.corpus.table_layout import TableError
    from medusa.inference.bundle_files import BundleError
    from medusa.inference.cross_corpus import EvaluationError, evaluate_table

    bootstrap = {"n_resamples": args.resamples, "seed": args.seed, "confidence": 0.95}
    try:
        metrics = evaluate_table(
            args.bundle,
            args.table,
            args.output,
            mapping_pairs=args.map,
            bootstrap=bootstrap,
            backbone_root=args.backbone_root,
            model_store=args.model_store,
            device=args.device,
        )
    except (BundleError, EvaluationError, TableError, OSError, ValueError) as err:
        print(f"medusa evaluate: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    for row in metrics.itertuples():
        print(f"{row.figure}: {row.value:.3f} [{row.low:.3f}, {row.high:.3f}] ({row.clips} clips)")
    print(f"medusa evaluate: -> {args.output}/ (summary.md)", file=sys.stderr)
    return EXIT_OK


def _verify(args) -> int:
    import json
    from pathlib import Path

    from medusa.inference.bundle_files import MANIFEST, BundleError, verify_checksums
    from medusa.inference.bundle_load import verify_fetched_models

    try:
        files = verify_checksums(args.bundle)
        manifest = json.loads((Path(args.bundle) / MANIFEST).read_text(encoding="utf-8"))
        fetched = verify_fetched_models(manifest, args.model_store)
    except BundleError as err:
        print(f"medusa verify: {err}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{args.bundle}: {len(files)} files, all checksums match")
    for line in fetched:
        print(f"  {line}")
    return EXIT_OK


def _predict(args, parser: argparse.ArgumentParser) -> int:
    try:
        path_map = _path_map(args.path_map)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    import torch

    from medusa.inference.bundle_files import BundleError
    from medusa.inference.recognize import write_predictions
    from medusa.inference.recognizer import Recognizer

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    output = args.output or f"predictions.{args.format}"
    started = time.perf_counter()
    try:
        with Recognizer(
            args.bundle,
            device=args.device,
            backbone_root=args.backbone_root,
            path_map=path_map,
            window_s=args.window_s,
            hop_s=args.hop_s,
            max_segment_s=args.max_segment_s,
            segmentation=args.segments,
            min_turn_s=args.min_turn_s,
            max_turn_s=args.max_turn_s,
            max_pause_s=args.max_pause_s,
            silence_rms=args.silence_rms,
            model_store=args.model_store,
            progress=not args.no_progress,
            calibrate=not args.uncalibrated,
        ) as recognizer:
            predictions = recognizer.predict(args.paths)
    except (BundleError, OSError, ValueError, RuntimeError) as err:
        print(f"medusa predict: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    # Each skipped file was already reported on stderr (a warning of medusa.inference.recognizer).
    paths = write_predictions(
        predictions,
        output,
        args.format,
        timelines=not args.no_timelines,
        html=args.html,
        title=f"medusa predict: {args.bundle}",
    )
    n_files = len(predictions.summary)
    extras = "".join(f"; {what}: {paths[what]}" for what in ("timelines", "html") if what in paths)
    print(
        f"medusa predict: {n_files} file(s), {len(predictions.segments)} segment(s) in "
        f"{time.perf_counter() - started:.1f} s -> {paths['segments']} (per file: "
        f"{paths['summary']}; gaps: {paths['gaps']}{extras}); {len(predictions.skipped)} "
        f"skipped -> {paths['skipped']}; posteriors {predictions.calibration}",
        file=sys.stderr,
    )
    return EXIT_OK if n_files else EXIT_NOTHING


if __name__ == "__main__":
    sys.exit(main())
