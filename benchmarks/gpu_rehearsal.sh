#!/usr/bin/env bash
# Rehearsal of the GPU check here, without a GPU (`make gpu-rehearsal`, after `make gpu-prepare`):
#
#   1. a Python 3.12 virtual environment standing in for the GPU machine's image
#      (.gpu-rehearsal/venv, reused while its inputs are unchanged): the image's packages that
#      MEDUSA and the carried wheels rely on (.gpu-carry/image-requirements.txt), at the image's
#      versions where benchmarks/gpu_image.txt gives them; any package pip adds that the image
#      does not list is removed again. What differs from the image is printed.
#   2. a copy of what the device tool sends: the tracked and untracked-not-ignored files
#      (`git ls-files -co --exclude-standard`) plus the carried .gpu-carry/, in a scratch folder;
#   3. benchmarks/gpu_check.sh in that copy, with the stand-in's python3 first on PATH, a bare
#      environment (no pip configuration, an empty HOME, the hub offline) and no network (a new
#      network namespace): the carried wheels are all it gets, and it takes the CPU fallback.
#
# GPU_REHEARSAL_PYTHON: the Python 3.12 to build the venv with (default: python3.12 on PATH,
# else the newest 3.12 under pyenv). GPU_REHEARSAL_BUDGET_S: the check's budget on this CPU
# (default 1500 s). The check's outputs stay in the printed folder.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REHEARSAL="$REPO/.gpu-rehearsal"
VENV="$REHEARSAL/venv"
CARRY="$REPO/.gpu-carry"
IMAGE_LIST="$REPO/benchmarks/gpu_image.txt"
START=$SECONDS

if [[ ! -f $CARRY/image-requirements.txt ]]; then
    echo "no $CARRY/image-requirements.txt: run make gpu-prepare first" >&2
    exit 1
fi

python312() {
    if [[ -n ${GPU_REHEARSAL_PYTHON:-} ]]; then
        echo "$GPU_REHEARSAL_PYTHON"
    elif command -v python3.12 >/dev/null; then
        command -v python3.12
    elif command -v pyenv >/dev/null &&
        compgen -G "$(pyenv root)/versions/3.12*/bin/python3.12" >/dev/null; then
        compgen -G "$(pyenv root)/versions/3.12*/bin/python3.12" | sort -V | tail -n 1
    else
        echo "no Python 3.12 here: set GPU_REHEARSAL_PYTHON" >&2
        return 1
    fi
}

# 1. the stand-in for the image ----------------------------------------------------------------
mkdir -p "$REHEARSAL"
grep -E '^[A-Za-z0-9._-]+==' "$IMAGE_LIST" >"$REHEARSAL/image-pins.txt"
STAMP_TEXT="$(cat "$REHEARSAL/image-pins.txt" "$CARRY/image-requirements.txt" "$IMAGE_LIST")"
if [[ ! -x $VENV/bin/python3 ]]; then "$(python312)" -m venv "$VENV"; fi
if [[ "$(cat "$VENV/.stand-in" 2>/dev/null)" != "$STAMP_TEXT" ]]; then
    echo "== building the image's stand-in in $VENV"
    "$VENV/bin/python" -m pip install --quiet -r "$CARRY/image-requirements.txt" \
        -c "$REHEARSAL/image-pins.txt"
    # Keep only what the image has: a package pip pulled in that the image lacks would let the
    # rehearsal pass where the GPU machine fails.
    mapfile -t EXTRA < <("$VENV/bin/python" - "$IMAGE_LIST" <<'EOF'
import re, sys
from importlib import metadata

def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()

listed = {canonical(line.split("==")[0].strip()) for line in open(sys.argv[1])
          if line.strip() and not line.startswith("#")}
for dist in metadata.distributions():
    if canonical(dist.metadata["Name"]) not in listed:
        print(dist.metadata["Name"])
EOF
    )
    if ((${#EXTRA[@]})); then
        echo "== removing what the image does not list: ${EXTRA[*]}"
        "$VENV/bin/python" -m pip uninstall --quiet --yes "${EXTRA[@]}"
    fi
    printf '%s' "$STAMP_TEXT" >"$VENV/.stand-in"
fi
echo "== the stand-in against the image (where the image's version is known)"
"$VENV/bin/python" - "$REHEARSAL/image-pins.txt" <<'EOF'
import sys
from importlib import metadata

print(f"python {sys.version.split()[0]} (image: 3.12.3)")
for line in open(sys.argv[1]):
    name, version = line.strip().split("==")
    try:
        here = metadata.version(name)
    except metadata.PackageNotFoundError:
        continue
    print(f"{name} {here}" + ("" if here.split("+")[0] == version else f" (image: {version})"))
EOF

# 2. what travels --------------------------------------------------------------------------------
TMP="$(mktemp -d "${TMPDIR:-/var/tmp}/medusa-gpu-rehearsal.XXXXXX")"
mkdir -p "$TMP/repo" "$TMP/home" "$TMP/out" "$TMP/scratch"
(cd "$REPO" && git ls-files -co --exclude-standard -z |
    tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$TMP/repo"
cp -a "$CARRY" "$TMP/repo/.gpu-carry"
echo "== sent to the copy in $TMP/repo: working tree $(du -sh --exclude=.gpu-carry "$TMP/repo" |
    cut -f1), .gpu-carry $(du -sh "$TMP/repo/.gpu-carry" | cut -f1)"

# 3. the check, offline, on the stand-in --------------------------------------------------------
OFFLINE=(unshare --net --)
if ! unshare --net true 2>/dev/null; then
    echo "== unshare --net is refused here (not root?): the check runs with the network" >&2
    OFFLINE=()
fi
T0=$SECONDS
rc=0
env -i HOME="$TMP/home" PATH="$VENV/bin:/usr/local/bin:/usr/bin:/bin" LANG=C.UTF-8 \
    PIP_CONFIG_FILE=/dev/null OUT="$TMP/out" SCRATCH="$TMP/scratch" TMPDIR="$TMP/scratch" \
    GPU_CHECK_BUDGET_S="${GPU_REHEARSAL_BUDGET_S:-1500}" \
    "${OFFLINE[@]}" bash "$TMP/repo/benchmarks/gpu_check.sh" || rc=$?
rm -rf "${TMP:?}/repo" "${TMP:?}/scratch" "${TMP:?}/home"
echo
echo "== rehearsal: gpu_check.sh exit status $rc after $((SECONDS - T0)) s;" \
    "$((SECONDS - START)) s in all; .gpu-carry $(du -sh "$CARRY" | cut -f1); outputs in $TMP/out"
exit "$rc"
