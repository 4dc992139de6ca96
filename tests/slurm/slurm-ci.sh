#!/bin/bash
# A real one-node SLURM cluster on this machine, for tests and CI (Debian 12, slurm 22.05).
#
#   bash tests/slurm/slurm-ci.sh up      # install if missing, start munged, slurmctld, slurmd
#   bash tests/slurm/slurm-ci.sh down    # cancel jobs, stop the daemons, wipe the state
#
# Run as root. State, logs and fake devices live under $SLURM_CI_DIR (default /tmp/slurm-ci).
# The configuration has to be /etc/slurm/slurm.conf: the executor's job step drops every
# SLURM_* variable, SLURM_CONF included, before its srun. `up` refuses to overwrite a
# slurm.conf it did not write; `down` removes the files it wrote.
#
# The node is `localhost` in partition `debug` (the default), with every CPU of the machine,
# 90% of its memory and $SLURM_CI_GPUS (default 1) fake GPUs: character devices behaving like
# /dev/null, so SLURM schedules them and sets CUDA_VISIBLE_DEVICES while no GPU exists.
# No accounting database: sacct does not work, use squeue for job status. Every task (the batch
# script and each srun step) first prints one line to the job's output file, for tests:
#   slurm-ci task: job=<id> step=<batch|id> CUDA_VISIBLE_DEVICES=<what SLURM set, or <unset>>
# Exit status of `up`: 0 ready, 3 SLURM could not be installed, 1 anything else.
set -euo pipefail
B=${SLURM_CI_DIR:-/tmp/slurm-ci}
NGPU=${SLURM_CI_GPUS:-1}
ETC=/etc/slurm
MARK="# written by slurm-ci.sh"

alive() { [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status"; }

# Stop the daemon whose PID is in file $1: TERM, wait up to 10 s, then KILL.
stop_pidfile() {
  [ -f "$1" ] || return 0
  local p
  p=$(cat "$1")
  kill "$p" 2>/dev/null || true
  for _ in $(seq 100); do alive "$p" || break; sleep 0.1; done
  if alive "$p"; then kill -9 "$p" 2>/dev/null || true; fi
  rm -f "$1"
}

ours() { [ -f "$1" ] && head -1 "$1" | grep -qx "$MARK"; }

down() {
  if [ -f "$B/run/slurmctld.pid" ]; then
    scancel --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 50); do [ -z "$(squeue -h -t R,CG,PD 2>/dev/null)" ] && break; sleep 0.2; done
  fi
  stop_pidfile "$B/run/slurmd.pid"
  stop_pidfile "$B/run/slurmctld.pid"
  stop_pidfile "$B/run/munged.pid"
  # A node drained by a bad configuration would stay drained across restarts otherwise.
  rm -rf "$B/state"
  if ours "$ETC/slurm.conf"; then rm -f "$ETC/slurm.conf"; fi
  if ours "$ETC/gres.conf"; then rm -f "$ETC/gres.conf"; fi
}

install_slurm() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    return 0
  fi
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null; } || {
    echo "slurm-ci: apt-get could not install slurmctld slurmd slurm-client munge" >&2
    exit 3
  }
}

up() {
  [ "$(id -u)" = 0 ] || { echo "slurm-ci: run as root" >&2; exit 1; }
  for f in "$ETC/slurm.conf" "$ETC/gres.conf"; do
    if [ -e "$f" ] && ! ours "$f"; then
      echo "slurm-ci: $f exists and was not written by slurm-ci.sh; not touching it" >&2
      exit 1
    fi
  done
  down
  install_slurm
  mkdir -p "$B"/{state/ctld,state/d,log,run,dev} "$ETC"
  [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  cp /run/munge/munged.pid "$B/run/munged.pid"

  # The node line slurmd detects (CPUs, sockets, memory), renamed to localhost; memory at 90%
  # so that jobs cannot push the machine into the OOM killer.
  local node mem
  node=$(slurmd -C | head -1 | sed "s/^NodeName=[^ ]*/NodeName=localhost NodeAddr=127.0.0.1/")
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  node=${node/RealMemory=$mem/RealMemory=$((mem * 9 / 10))}
  # Fake GPUs must be character devices: SLURM refuses regular files and File-less Count=.
  for i in $(seq 0 $((NGPU - 1))); do
    [ -e "$B/dev/gpu$i" ] || mknod -m 666 "$B/dev/gpu$i" c 1 3
  done

  # TaskProlog: what it prints as "print <text>" goes to the task's standard output.
  cat >"$B/task-prolog.sh" <<'PROLOG'
#!/bin/sh
echo "print slurm-ci task: job=$SLURM_JOB_ID step=${SLURM_STEP_ID:-batch} CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>}"
PROLOG
  chmod 755 "$B/task-prolog.sh"

  # MinJobAge: finished jobs stay visible to squeue and scontrol for an hour: the executor
  # trusts squeue only when this is >= 3x its status interval, and tests inspect finished jobs.
  # DefMemPerCPU: a job without --mem would otherwise take the whole node's memory.
  cat >"$ETC/slurm.conf" <<EOF
$MARK
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
StateSaveLocation=$B/state/ctld
SlurmdSpoolDir=$B/state/d
SlurmctldPidFile=$B/run/slurmctld.pid
SlurmdPidFile=$B/run/slurmd.pid
SlurmctldLogFile=$B/log/slurmctld.log
SlurmdLogFile=$B/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
TaskProlog=$B/task-prolog.sh
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
GresTypes=gpu
$node Gres=gpu:$NGPU State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES DefaultTime=60 MaxTime=INFINITE State=UP
EOF
  printf '%s\nAutoDetect=off\nNodeName=localhost Name=gpu File=%s/dev/gpu[0-%d]\n' \
    "$MARK" "$B" $((NGPU - 1)) >"$ETC/gres.conf"

  slurmctld
  slurmd -N localhost
  for _ in $(seq 150); do
    [ "$(sinfo -h -N -o %t 2>/dev/null)" = idle ] && return 0
    sleep 0.2
  done
  echo "slurm-ci: SLURM did not come up" >&2
  sinfo -N -o '%N %t %E' >&2 || true
  tail -n 20 "$B"/log/*.log >&2 || true
  return 1
}

case "${1:-}" in
  up | down) "$1" ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
