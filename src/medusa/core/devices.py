"""Which device a GPU job runs on: exactly one CUDA device, or the CPU (README, "GPUs").

A GPU rule declares ``resources: gpu=1``; Snakemake then limits how many such jobs run at once
(``--resources gpu=N``) but never says *which* GPU a job should use. The rules are:

- No CUDA device visible (no GPU, CPU-only torch, or ``CUDA_VISIBLE_DEVICES=""``): CPU.
- One visible device (a SLURM job: SLURM sets ``CUDA_VISIBLE_DEVICES`` to the job's GPU; or a
  one-GPU workstation): use it, no locking; jobs that share one GPU on purpose may do so.
- Several visible devices (a local multi-GPU machine, or a multi-GPU allocation running
  several jobs): each job claims a distinct free device through a lock file per device
  (``fcntl.flock``, released by the kernel even when the job is killed), waiting while all are
  taken. The lock folder is ``$MEDUSA_GPU_LOCK_DIR`` or a per-user (and per-SLURM-job)
  folder in the system temp dir, so unrelated allocations never block each other.

The claimed device becomes the only visible one (``CUDA_VISIBLE_DEVICES`` is set before CUDA
initialises), so the job always computes on ``cuda:0``.

Mixed precision is chosen here too, once for every stage: ``autocast(device)`` is bf16 autocast
on CUDA (fp16 on a GPU without bf16) and float32 on the CPU.

API: ``acquire_device(lock_dir=None)`` context manager yielding a ``torch.device``;
``claim_device_slot(visible_ids, lock_dir)`` context manager yielding the claimed id (the
GPU-free part, tested with threads and processes); ``visible_device_ids()``;
``amp_dtype(device)`` and ``autocast(device, enabled=True, dtype=None)``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def default_lock_dir() -> Path:
    """``$MEDUSA_GPU_LOCK_DIR``, else a folder per user (and SLURM job) in the temp dir."""
    if os.environ.get("MEDUSA_GPU_LOCK_DIR"):
        return Path(os.environ["MEDUSA_GPU_LOCK_DIR"])
    # Device numbers are relative to an allocation under SLURM: two jobs' "0" may be two
    # different GPUs, so each SLURM job gets its own lock namespace.
    name = f"medusa-gpu-locks-{os.getuid()}"
    if os.environ.get("SLURM_JOB_ID"):
        name += f"-slurm{os.environ['SLURM_JOB_ID']}"
    return Path(tempfile.gettempdir()) / name


def visible_device_ids() -> list[str]:
    """Ids of the CUDA devices this process may use, without initialising CUDA.

    ``CUDA_VISIBLE_DEVICES`` when set (indices or UUIDs, as SLURM or the user wrote them);
    otherwise every GPU ``nvidia-smi`` lists; otherwise torch's (NVML-based) count.
    """
    import torch  # here, not at the top: the slot logic alone should not load torch

    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    if not torch.backends.cuda.is_built():
        return []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=index", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            return [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            return []  # a driver nvidia-smi cannot talk to will not run CUDA either
    return [str(i) for i in range(torch.cuda.device_count())]


@contextlib.contextmanager
def claim_device_slot(
    visible_ids: Sequence[str],
    lock_dir: str | os.PathLike | None = None,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
) -> Iterator[str | None]:
    """Claim one of `visible_ids` for the duration of the block; yield it (None if empty).

    With a single id there is nothing to share and nothing is locked. With several, the first
    id whose lock file ``gpu-<id>.lock`` in `lock_dir` is free is taken (an exclusive flock held
    until the block exits or the process dies); while all are held, poll every `poll_s`
    seconds, for at most `timeout_s` (None: wait as long as it takes) then TimeoutError.
    """
    ids = list(visible_ids)
    if len(ids) <= 1:
        yield ids[0] if ids else None
        return
    folder = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    waiting_logged = False
    while True:
        for device_id in ids:
            fd = _try_lock(folder / f"gpu-{device_id.replace('/', '_')}.lock")
            if fd is not None:
                try:
                    yield device_id
                finally:
                    os.close(fd)  # releases the flock
                return
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"no free GPU among {ids} (locks in {folder})")
        if not waiting_logged:
            log.info("all GPUs %s are taken by other jobs (locks in %s); waiting", ids, folder)
            waiting_logged = True
        time.sleep(poll_s)


def _try_lock(path: Path) -> int | None:
    """Open and exclusively flock `path` without blocking; the fd, or None if held elsewhere."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    # Who holds it, for a person looking at the lock folder.
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


# The device ids CUDA was started with when acquire_device had narrowed CUDA_VISIBLE_DEVICES
# (None: CUDA not started under a narrowed visibility). CUDA reads the variable once, so a
# later claim in the same process (a second Recognizer) must choose among these.
_visible_when_cuda_started: list[str] | None = None


def _remember_cuda_visibility(ids: list[str]) -> None:
    global _visible_when_cuda_started
    _visible_when_cuda_started = list(ids)


@contextlib.contextmanager
def acquire_device(lock_dir: str | os.PathLike | None = None) -> Iterator[torch.device]:
    """Yield the one device this job computes on: ``cuda:0`` (the claimed GPU) or ``cpu``."""
    import torch

    if not torch.backends.cuda.is_built():
        log.info("device: cpu (this torch build has no CUDA)")
        yield torch.device("cpu")
        return
    ids = visible_device_ids()
    if not ids:
        log.info(
            "device: cpu (no CUDA device visible; CUDA_VISIBLE_DEVICES=%r)",
            os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
        yield torch.device("cpu")
        return
    if torch.cuda.is_initialized() and _visible_when_cuda_started is not None:
        # CUDA started while an earlier claim had narrowed visibility: the process can only
        # address those devices now, whatever CUDA_VISIBLE_DEVICES says since.
        ids = list(_visible_when_cuda_started)
    with claim_device_slot(ids, lock_dir) as claimed:
        previous = os.environ.get("CUDA_VISIBLE_DEVICES")
        narrowed = not torch.cuda.is_initialized()
        if narrowed:
            os.environ["CUDA_VISIBLE_DEVICES"] = claimed
            device = torch.device("cuda", 0)
        else:
            # Too late to narrow visibility; address the claimed device by its position.
            device = torch.device("cuda", ids.index(claimed))
        try:
            if not torch.cuda.is_available():
                log.warning("device: cpu (CUDA device %s of visible %s is unusable)", claimed, ids)
                device = torch.device("cpu")
            else:
                torch.cuda.set_device(device)
                log.info(
                    "device: %s = CUDA device %s (%s) of visible %s",
                    device,
                    claimed,
                    torch.cuda.get_device_name(device),
                    ids,
                )
            yield device
        finally:
            if narrowed and torch.cuda.is_initialized():
                _remember_cuda_visibility([claimed])
            if previous is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = previous


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The reduced precision of forward passes on `device`: bf16 on CUDA where the GPU
    supports it, fp16 on an older GPU, None (float32) on the CPU."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(
    device: torch.device | str, enabled: bool = True, dtype: torch.dtype | None = None
) -> torch.autocast:
    """The autocast context of a forward pass on `device`, in the precision ``amp_dtype``
    chooses; disabled (plain float32) on the CPU or when not `enabled`.

    `dtype` overrides the choice (tests run the reduced-precision path on the CPU with it).
    """
    import torch

    device = torch.device(device)
    dtype = dtype or amp_dtype(device)
    if dtype is None or not enabled:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)
