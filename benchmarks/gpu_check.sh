#!/usr/bin/env bash
# One-GPU check of MEDUSA, at most ~8 minutes on a machine with one GPU (H100/H200 class):
#
#   (a) the environment: .venv as it is, or `make install` when there is none;
#   (b) the CI-sized DAG (config/demo.yaml + tests/config/ci.yaml) on the GPU, in a scratch
#       working directory: `demo_corpus`, then `soup` with one GPU slot;
#   (c) every GPU job's log (ASR, features, stage 1/2, posteriors) holds exactly one device
#       line from medusa.devices, and it names a CUDA device;
#   (d) benchmarks/full_scale.py on the GPU (full-size stand-ins of the recipe's backbones),
#       within the time that is left;
#   (e) a summary; the exit status is 1 if any step failed.
#
#     bash benchmarks/gpu_check.sh            # outputs in ${OUT:-/tmp/gpu_check}
#
# Outputs under $OUT: dag-logs/ (the DAG's job logs), snakemake-*.log, device-lines.txt,
# full_scale.md (the benchmark's tables) and full_scale.json. Scratch (the DAG's working
# directory, the benchmark's stand-in backbones: ~6 GB) goes to $SCRATCH, default /var/tmp.
# GPU_CHECK_BUDGET_S (default 450) is the whole script's time budget in seconds.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-/tmp/gpu_check}"
SCRATCH="${SCRATCH:-/var/tmp}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-450}"
CACHE="${FULL_SCALE_CACHE:-$SCRATCH/medusa-full-scale}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$REPO"
mkdir -p "$OUT" "$SCRATCH"
START=$SECONDS
declare -a SUMMARY=()
FAILED=0

left() { echo $((BUDGET_S - (SECONDS - START))); }
# The smaller of a step's own cap and the time left minus what later steps need.
cap() { local t=$(($(left) - $2)); echo $((t < $1 ? t : $1)); }
record() { # record <step> <status> <seconds>
    SUMMARY+=("$(printf '%-34s %-8s %5ss' "$1" "$2" "$3")")
    if [[ $2 != ok ]]; then FAILED=1; fi
}
step() { # step <name> <timeout_s> <log> <command...>: run with a time limit, record the result
    local name=$1 limit=$2 log=$3 t0=$SECONDS rc=0
    shift 3
    echo "== $name (limit ${limit}s)"
    if ((limit < 10)); then
        record "$name" "no-time" 0
        return 0
    fi
    timeout --kill-after=15 "$limit" "$@" >"$log" 2>&1 || rc=$?
    if ((rc == 0)); then
        record "$name" ok $((SECONDS - t0))
    elif ((rc == 124 || rc == 137)); then
        record "$name" timeout $((SECONDS - t0))
        tail -n 20 "$log"
    else
        record "$name" "rc=$rc" $((SECONDS - t0))
        tail -n 40 "$log"
    fi
}

# (a) environment ------------------------------------------------------------------------------
if [[ -x .venv/bin/python ]]; then
    echo "== .venv exists: installing nothing"
else
    make install
fi
PY="$REPO/.venv/bin/python"
SNAKEMAKE="$REPO/.venv/bin/snakemake"
export PATH="$REPO/.venv/bin:$PATH" # the workflow's scripts run on this python
nvidia-smi -L || true
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "no usable CUDA device: this check needs a GPU" >&2
    exit 1
fi

# (b) the CI-sized DAG on the GPU ----------------------------------------------------------------
WORK="$(mktemp -d "$SCRATCH/medusa-gpu-check.XXXXXX")"
CONFIGS=(config/demo.yaml tests/config/ci.yaml)
echo "== scratch workdir $WORK"
step "DAG: demo_corpus" "$(cap 90 300)" "$OUT/snakemake-demo_corpus.log" \
    "$SNAKEMAKE" demo_corpus --snakefile "$REPO/Snakefile" --directory "$WORK" \
    --configfile "${CONFIGS[@]}" --cores 4
# The target comes before --resources (which takes every following word as a resource).
step "DAG: soup (gpu=1)" "$(cap 270 170)" "$OUT/snakemake-soup.log" \
    "$SNAKEMAKE" soup --snakefile "$REPO/Snakefile" --directory "$WORK" \
    --configfile "${CONFIGS[@]}" --cores 8 --resources gpu=1
rm -rf "$OUT/dag-logs"
if [[ -d $WORK/logs ]]; then cp -r "$WORK/logs" "$OUT/dag-logs"; fi

# (c) one CUDA device per GPU job ----------------------------------------------------------------
# medusa.devices logs "device: cuda:0 = CUDA device <id> (<name>) of visible [...]" or
# "device: cpu (...)", whatever the log format puts in front.
check_device_lines() {
    local t0=$SECONDS n=0 bad=0 log lines
    : >"$OUT/device-lines.txt"
    shopt -s nullglob
    for log in "$WORK"/logs/asr/*.log "$WORK"/logs/asr/*/*.log \
        "$WORK"/logs/features/*/*.log "$WORK"/logs/features/*/*/*.log \
        "$WORK"/logs/models/*/stage*.log "$WORK"/logs/posteriors/*/*.log; do
        [[ $log == *.merge.log ]] && continue
        n=$((n + 1))
        lines="$(grep -E 'device: (cuda:[0-9]+ = CUDA device |cpu \()' "$log" || true)"
        printf '%s\t%s\n' "${log#"$WORK"/}" "${lines:-<no device line>}" >>"$OUT/device-lines.txt"
        if [[ $(printf '%s' "$lines" | grep -c 'device: ') -ne 1 ]] ||
            ! grep -qE 'device: cuda:[0-9]+ = CUDA device ' <<<"$lines"; then
            echo "not exactly one CUDA device: $log: ${lines:-<none>}"
            bad=$((bad + 1))
        fi
    done
    shopt -u nullglob
    # Every kind of GPU job ran (a DAG that stopped early leaves some without a log).
    for kind in 'logs/asr/' 'logs/features/' 'logs/models/[^/]*/stage1' \
        'logs/models/[^/]*/stage2' 'logs/posteriors/'; do
        if ! grep -q "^$kind" "$OUT/device-lines.txt"; then
            echo "no GPU job log matches $kind"
            bad=$((bad + 1))
        fi
    done
    echo "GPU job logs checked: $n; problems: $bad"
    if ((n == 0 || bad > 0)); then
        record "device line per GPU job ($n logs)" fail $((SECONDS - t0))
    else
        record "device line per GPU job ($n logs)" ok $((SECONDS - t0))
    fi
}
echo "== device lines"
check_device_lines

# (d) the full-scale benchmark on the GPU ------------------------------------------------------
# --budget-s: no new measurement starts past it (its JSON is written after each one).
LIMIT="$(cap 600 5)"
step "full_scale.py --device cuda" "$LIMIT" "$OUT/full_scale.md" \
    "$PY" benchmarks/full_scale.py --device cuda --json "$OUT/full_scale.json" \
    --cache "$CACHE" --budget-s $((LIMIT > 60 ? LIMIT - 45 : 15))
# Scratch only: the DAG's logs are in $OUT/dag-logs; a cache the caller chose stays.
rm -rf "$WORK"
if [[ -z ${FULL_SCALE_CACHE:-} ]]; then rm -rf "$CACHE"; fi

# (e) summary ------------------------------------------------------------------------------------
echo
echo "== summary ($((SECONDS - START)) s of ${BUDGET_S} s; outputs in $OUT)"
printf '%s\n' "${SUMMARY[@]}"
if [[ -f $OUT/full_scale.md ]]; then
    echo
    sed -n '/^## Targets/,$p' "$OUT/full_scale.md"
fi
exit "$FAILED"
