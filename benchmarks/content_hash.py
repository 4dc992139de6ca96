"""What the content fingerprints of the audio partitions cost at MSP-Podcast scale.

The workflow fingerprints each audio partition from the SHA-256 of every file's bytes
(``medusa.corpus.partitions.corpus_fingerprints``), cached by file identity in a digest cache. This
builds a synthetic corpus shaped like MSP-Podcast (default 120,000 clips, 16 kHz 16-bit mono,
190 h in all, clip lengths spread around the mean; 15% unlabelled) and measures:

1. the first hash (empty cache): every file read and hashed;
2. a rescan with the digest cache warm (what a parse pays after the corpus changed): the folder
   listed, the labels read, every file's digest looked up, no file read;
3. the cached scan (``medusa.corpus.scan_cache``) of an unchanged corpus, as the main ``snakemake``
   process checks it (folder listed, every file's state compared) and as a cluster job's parse
   does (the folders' and label files' states only);
4. for reference, the listing alone (what the size-and-time fingerprint cost before);
5. with ``--dry-run``: ``snakemake -n soup`` on the recipe (config/config.yaml) with data.root
   set to the synthetic corpus, its digest cache warm: without a cached scan, with one, and
   as a cluster job's parse (``--mode subprocess``, Snakemake's own flag for job processes).

By default the clips are *sparse* files (``--sparse``): their full logical size (about 22 GB)
is read and hashed, but the reads come from holes, not the disk, so (1) is the CPU cost of
hashing and the disk's read speed bounds it on a real corpus (22 GB at 500 MB/s: 44 s).
``--dense`` writes real random bytes instead (mind the disk space; use ``--clips`` to scale
down and extrapolate: the cost of (1) is linear in bytes, of (2) and (3) in files).

    python benchmarks/content_hash.py                        # 120k sparse clips, ~0 disk
    python benchmarks/content_hash.py --dense --clips 12000  # 2.2 GB of real bytes
    python benchmarks/content_hash.py --workdir /scratch/bench --keep
    python benchmarks/content_hash.py --dry-run              # and the recipe's dry run

Page cache: a dense corpus written just now is still in memory; the figures are then the
hashing speed, not the disk's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from medusa.corpus.partitions import audio_partitions, corpus_fingerprints  # noqa: E402
from medusa.corpus.scan_cache import scan_cache_path  # noqa: E402

HOURS = 190.0
BYTES_PER_SECOND = 16000 * 2  # 16 kHz, 16-bit mono
WAV_HEADER = 44


def clip_sizes(clips: int, hours: float, seed: int = 0) -> np.ndarray:
    """Byte sizes of `clips` clips totalling `hours` (lengths lognormal, 2.75-11 s as in
    MSP-Podcast's segmentation)."""
    lengths = np.random.default_rng(seed).lognormal(0.0, 0.35, clips)
    seconds = np.clip(lengths / lengths.mean() * hours * 3600 / clips, 2.75, 11.0)
    return (seconds * BYTES_PER_SECOND).astype(np.int64) // 2 * 2 + WAV_HEADER


def build_corpus(root: Path, sizes: np.ndarray, dense: bool, unlabelled: float) -> None:
    audios = root / "Audios"
    (root / "Labels").mkdir(parents=True)
    audios.mkdir()
    labelled = int(len(sizes) * (1 - unlabelled))
    names = [f"MSP-PODCAST_{i:06d}.wav" for i in range(labelled)]
    names += [f"MSP-PODCAST_test3_{i:06d}.wav" for i in range(len(sizes) - labelled)]
    rng = np.random.default_rng(1)
    for name, size in zip(names, sizes, strict=True):
        with open(audios / name, "wb") as handle:
            if dense:
                handle.write(rng.bytes(int(size)))
            else:
                handle.truncate(int(size))
    splits = ["Train"] * 8 + ["Development"] * 2
    rows = [f"{n},N,4,4,4,1,Male,{splits[i % 10]}" for i, n in enumerate(names[:labelled])]
    (root / "Labels" / "labels_consensus.csv").write_text(
        "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n" + "\n".join(rows)
    )


def timed(function, runs: int = 1) -> tuple[float, float]:
    """Median wall and CPU seconds (all threads) of `runs` calls: on a shared machine the CPU
    time is the steadier figure."""
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def dry_run(workdir: Path, root: Path, *extra: str) -> tuple[float, float]:
    """Wall and CPU seconds of ``snakemake -n soup`` on the recipe with data.root = `root`,
    in `workdir` (its results/cache is the benchmark's)."""
    config = workdir / "synthetic-corpus.yaml"
    config.write_text(yaml.safe_dump({"data": {"root": str(root)}}))
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "-n", "soup", "-q", "--cores", "1",
           "--configfile", str(REPO / "config/config.yaml"), str(config), *extra]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    before, wall = os.times(), time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall, after = time.perf_counter() - wall, os.times()
    if run.returncode:
        sys.exit(f"dry run failed:\n{run.stdout[-2000:]}{run.stderr[-3000:]}")
    user = after.children_user - before.children_user
    return wall, user + after.children_system - before.children_system


def show_dry_runs(workdir: Path, root: Path, cache: Path, runs: int) -> None:
    scan = scan_cache_path(cache)
    rows = []
    for name, extra, cached in [("no cached scan", (), False), ("cached scan", (), True),
                                ("cluster job's parse", ("--mode", "subprocess"), True)]:  # fmt: skip
        times = []
        for _ in range(runs):
            if not cached:
                scan.unlink(missing_ok=True)
            times.append(dry_run(workdir, root, *extra))
        rows.append((name, statistics.median(t[0] for t in times),
                     statistics.median(t[1] for t in times)))  # fmt: skip
    for name, wall, cpu in rows:
        print(f"snakemake -n soup, {name}: {wall:.2f} s ({cpu:.2f} s CPU; median of {runs})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=120_000)
    parser.add_argument("--hours", type=float, help="total hours (default: 190 h x clips/120k)")
    parser.add_argument("--dense", action="store_true", help="real bytes instead of sparse files")
    parser.add_argument("--unlabelled", type=float, default=0.15)
    parser.add_argument("--workdir", type=Path, help="where to build it (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic corpus")
    parser.add_argument("--runs", type=int, default=3, help="warm parses to take the median of")
    parser.add_argument("--dry-run", action="store_true", help="also time the recipe's dry run")
    args = parser.parse_args()
    hours = args.hours or HOURS * args.clips / 120_000
    workdir = Path(tempfile.mkdtemp(prefix="medusa-hash-", dir=args.workdir))
    root, cache = workdir / "corpus", workdir / "results/cache/content-digests.tsv"
    try:
        sizes = clip_sizes(args.clips, hours)
        total_gb = sizes.sum() / 1e9
        kind = "dense" if args.dense else "sparse"
        print(f"corpus: {args.clips} clips, {hours:.1f} h, {total_gb:.1f} GB ({kind}) in {root}")
        built, _ = timed(lambda: build_corpus(root, sizes, args.dense, args.unlabelled))
        print(f"  built in {built:.1f} s")
        cold, cold_cpu = timed(lambda: corpus_fingerprints(root, cache))
        print(f"first hash (empty cache): {cold:.1f} s = {total_gb * 1e3 / cold:.0f} MB/s "
              f"({cold_cpu:.1f} s CPU, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")  # fmt: skip
        # Empty (not written) when every file is younger than the racy margin.
        print(f"  cache: {cache.stat().st_size / 1e6 if cache.exists() else 0:.1f} MB")
        # A real corpus is older than the racy margin; the one just built is not, so the
        # first run cached nothing of what changed in the last 2 s: hash those now.
        time.sleep(2.1)
        corpus_fingerprints(root, cache)

        def rescan():
            scan_cache_path(cache).unlink(missing_ok=True)
            corpus_fingerprints(root, cache)

        warm, warm_cpu = timed(rescan, args.runs)
        main_check, main_cpu = timed(lambda: corpus_fingerprints(root, cache), args.runs)
        job_check, job_cpu = timed(
            lambda: corpus_fingerprints(root, cache, check_files=False), args.runs
        )
        listing, listing_cpu = timed(lambda: audio_partitions(root), args.runs)
        print(f"rescan with the digest cache warm: {warm:.2f} s ({warm_cpu:.2f} s CPU; median "
              f"of {args.runs}, load {os.getloadavg()[0]:.1f})")  # fmt: skip
        print(f"  of which listing the folder and the labels: {listing:.2f} s "
              f"({listing_cpu:.2f} s CPU)")  # fmt: skip
        print(f"cached scan, main process (every file's state checked): {main_check:.2f} s "
              f"({main_cpu:.2f} s CPU)")  # fmt: skip
        print(f"cached scan, cluster job (folders and label files only): {job_check:.4f} s "
              f"({job_cpu:.4f} s CPU)")  # fmt: skip
        scale = 120_000 / args.clips
        if scale != 1:
            print(f"at 120k clips (x{scale:g}): first hash {cold * scale:.0f} s, "
                  f"rescan {warm * scale:.2f} s, cached main {main_check * scale:.2f} s")  # fmt: skip
        if args.dry_run:
            show_dry_runs(workdir, root, cache, args.runs)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
