#!/usr/bin/env bash
# One-GPU check of MEDUSA, made to run as it is on a lent GPU machine that reaches no network,
# in at most ~8 minutes (GPU_CHECK_BUDGET_S, default 450 s, shared out between the steps):
#
#   (a) environment: the machine's python3 and its torch, plus the wheels that
#       benchmarks/gpu_prepare.py put in .gpu-carry/wheels (installed with pip --no-index into
#       a scratch folder) and MEDUSA from src/; the image checked against what the wheels
#       require (.gpu-carry/image-requirements.txt), then `python -m medusa.core.install_check`;
#   (b) the CI-sized DAG (config/demo.yaml + tests/config/ci.yaml + benchmarks/gpu_check.yaml:
#       random backbones only) to `soup` with one GPU slot, in a scratch working directory, on
#       the corpus carried in .gpu-carry/corpus (or, without it, made by `demo_corpus`);
#   (c) every GPU job's log (ASR, features, stage 1/2, posteriors) holds exactly one device
#       line from medusa.core.devices, and it names a CUDA device;
#   (d) benchmarks/full_scale.py --device cuda (full-size stand-ins of the recipe's backbones,
#       fp32 and bf16) in the time left;
#   (e) a summary: each step's time against its limit, then the benchmark's targets and its
#       projection table last. The exit status is 1 if any step failed.
#
# Without CUDA (`make gpu-rehearsal`) the same steps run on the CPU: each GPU job must log the
# CPU instead, and full_scale.py runs --tiny.
#
#     .venv/bin/python benchmarks/gpu_prepare.py   # here: fills .gpu-carry/, prints the call
#     bash benchmarks/gpu_check.sh                 # there, carrying .gpu-carry
#
# Outputs in $OUT (default /tmp/gpu_check; at most 8 files, for the device tool): gpu_check.log
# (all of this output), setup.log, snakemake-soup.log, device-lines.txt, dag-logs.tar.gz (the
# DAG's job logs), full_scale.md and full_scale.json. Scratch (the DAG's working directory, the
# installed wheels, the benchmark's stand-in backbones: ~6 GB on a GPU) goes to $SCRATCH,
# default /var/tmp. GPU_CHECK_PYTHON overrides the interpreter (default: python3 when
# .gpu-carry/wheels exists, else .venv/bin/python).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="$REPO/.gpu-carry"
OUT="${OUT:-/tmp/gpu_check}"
SCRATCH="${SCRATCH:-/var/tmp}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-450}"
CACHE="${FULL_SCALE_CACHE:-$SCRATCH/medusa-full-scale}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1
cd "$REPO"
mkdir -p "$OUT" "$SCRATCH"
exec > >(tee "$OUT/gpu_check.log") 2>&1
START=$SECONDS
declare -a SUMMARY=()
FAILED=0

left() { echo $((BUDGET_S - (SECONDS - START))); }
# A step's limit: its share (percent) of the whole budget, never more than the time left minus
# what the later steps are promised.
cap() { # cap <percent> <seconds kept for later steps>
    local share=$((BUDGET_S * $1 / 100)) t=$(($(left) - $2))
    echo $((t < share ? t : share))
}
record() { # record <step> <status> <seconds> [limit]
    SUMMARY+=("$(printf '%-36s %-8s %5ss  (limit %ss)' "$1" "$2" "$3" "${4:--}")")
    if [[ $2 != ok ]]; then FAILED=1; fi
}
step() { # step <name> <limit_s> <log> <command...>: run with a time limit, record the result
    local name=$1 limit=$2 log=$3 t0=$SECONDS rc=0
    shift 3
    echo "== $name: limit ${limit} s ($(left) s of ${BUDGET_S} s left)"
    if ((limit < 10)); then
        record "$name" "no-time" 0 "$limit"
        return 1
    fi
    timeout --kill-after=15 "$limit" "$@" >"$log" 2>&1 || rc=$?
    if ((rc == 0)); then
        record "$name" ok $((SECONDS - t0)) "$limit"
    elif ((rc == 124 || rc == 137)); then
        record "$name" timeout $((SECONDS - t0)) "$limit"
        tail -n 20 "$log"
    else
        record "$name" "rc=$rc" $((SECONDS - t0)) "$limit"
        tail -n 40 "$log"
    fi
    return "$rc"
}
summary() {
    echo
    echo "== summary ($((SECONDS - START)) s of ${BUDGET_S} s; outputs in $OUT)"
    printf '%s\n' "${SUMMARY[@]}"
    if [[ -s $OUT/full_scale.md ]]; then
        echo
        sed -n '/^## Targets/,$p' "$OUT/full_scale.md"
        echo
        sed -n '/^## Projection/,/^## Targets/{/^## Targets/!p;}' "$OUT/full_scale.md"
    fi
}

# (a) environment ------------------------------------------------------------------------------
SITE="$SCRATCH/medusa-gpu-site"
if [[ -n ${GPU_CHECK_PYTHON:-} ]]; then
    PY="$GPU_CHECK_PYTHON"
elif [[ -d $CARRY/wheels ]]; then
    PY=python3
elif [[ -x .venv/bin/python ]]; then
    PY="$REPO/.venv/bin/python"
else
    echo "no .gpu-carry/wheels (run benchmarks/gpu_prepare.py here first) and no .venv" >&2
    exit 1
fi
# shellcheck disable=SC2317  # run by `timeout ... bash -c setup` below
setup() {
    if [[ -d $CARRY/wheels ]]; then
        rm -rf "$SITE"
        # Only the carried files, whatever pip's configuration on the machine says.
        PIP_CONFIG_FILE=/dev/null "$PY" -m pip install --quiet --no-index --no-deps \
            --no-compile --no-cache-dir --disable-pip-version-check --target "$SITE" \
            "$CARRY"/wheels/*.whl
        echo "== image against .gpu-carry/image-requirements.txt"
        # Reported, not fatal: the import check below says whether a difference matters.
        "$PY" benchmarks/gpu_prepare.py --check-image || echo "(image differs: see above)"
    fi
    "$PY" -c 'import sys, torch; print(sys.executable, sys.version.split()[0], "torch",
        torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.device_count())'
    "$PY" -m medusa.core.install_check
}
if [[ -d $CARRY/wheels ]]; then
    export PYTHONPATH="$SITE:$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$SITE/bin:$PATH"
fi
GPUS_LISTED="$(nvidia-smi -L 2>/dev/null | tee /dev/stderr | grep -c '^GPU ' || true)"
export PY SITE CARRY
export -f setup # `timeout` runs programs: the function runs in a child bash
if ! step "setup: wheels, image, imports" "$(cap 20 300)" "$OUT/setup.log" \
    bash -euo pipefail -c setup; then
    summary
    exit 1
fi
cat "$OUT/setup.log"
if grep -q '^image does not meet' "$OUT/setup.log"; then
    # Not a failure by itself: the DAG and the benchmark show whether the difference matters.
    SUMMARY+=("image differs from what the carried wheels require: see setup.log")
fi
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    DEVICE=cuda
    GPU_SLOTS=1
    DEVICE_LINE='device: cuda:[0-9]+ = CUDA device '
elif ((GPUS_LISTED > 0)); then
    # A GPU that torch cannot use: the CPU fallback would only spend the lent time.
    echo "nvidia-smi lists $GPUS_LISTED GPU(s) but torch sees no usable CUDA device" >&2
    summary
    exit 1
else
    DEVICE=cpu
    GPU_SLOTS=$(nproc)
    DEVICE_LINE='device: cpu \('
    echo "== no usable CUDA device: CPU fallback (each GPU job must log the CPU)"
fi

# (b) the CI-sized DAG -------------------------------------------------------------------------
WORK="$(mktemp -d "$SCRATCH/medusa-gpu-check.XXXXXX")"
CONFIGS=(config/demo.yaml tests/config/ci.yaml benchmarks/gpu_check.yaml)
SNAKEMAKE=("$PY" -m snakemake --snakefile "$REPO/Snakefile" --directory "$WORK")
echo "== scratch workdir $WORK"
if [[ -d $CARRY/corpus/msp-podcast ]]; then
    mkdir -p "$WORK/resources/demo"
    cp -a "$CARRY/corpus/msp-podcast" "$WORK/resources/demo/"
else
    step "DAG: demo_corpus" "$(cap 15 250)" "$OUT/snakemake-demo_corpus.log" \
        "${SNAKEMAKE[@]}" demo_corpus --configfile "${CONFIGS[@]}" --cores "$(nproc)" || true
fi
# The target comes before --resources (which takes every following word as a resource).
step "DAG: soup ($DEVICE, gpu=$GPU_SLOTS)" "$(cap 55 100)" "$OUT/snakemake-soup.log" \
    "${SNAKEMAKE[@]}" soup --configfile "${CONFIGS[@]}" --cores "$(nproc)" \
    --resources gpu="$GPU_SLOTS" || true
if [[ -d $WORK/logs ]]; then tar -czf "$OUT/dag-logs.tar.gz" -C "$WORK" logs; fi

# (c) one device per GPU job -------------------------------------------------------------------
# medusa.core.devices logs "device: cuda:0 = CUDA device <id> (<name>) of visible [...]" or
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
            ! grep -qE "$DEVICE_LINE" <<<"$lines"; then
            echo "not exactly one $DEVICE device: $log: ${lines:-<none>}"
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
        record "one $DEVICE device per GPU job ($n logs)" fail $((SECONDS - t0))
    else
        record "one $DEVICE device per GPU job ($n logs)" ok $((SECONDS - t0))
    fi
}
echo "== device lines"
check_device_lines

# (d) the full-scale benchmark -----------------------------------------------------------------
# --budget-s: no new measurement starts past it (its JSON is written after each one).
LIMIT="$(cap 100 5)"
if [[ $DEVICE == cuda ]]; then
    SCALE=(--device cuda)
else
    SCALE=(--tiny --device cpu) # full size on a CPU would take hours
fi
step "full_scale.py ${SCALE[*]}" "$LIMIT" "$OUT/full_scale.md" \
    "$PY" benchmarks/full_scale.py "${SCALE[@]}" --json "$OUT/full_scale.json" \
    --cache "$CACHE" --budget-s $((LIMIT > 60 ? LIMIT - 45 : 15)) || true
# Scratch only: the DAG's logs are in $OUT/dag-logs.tar.gz; a cache the caller chose stays.
rm -rf "$WORK" "$SITE"
if [[ -z ${FULL_SCALE_CACHE:-} ]]; then rm -rf "$CACHE"; fi

# (e) summary ----------------------------------------------------------------------------------
summary
exit "$FAILED"
