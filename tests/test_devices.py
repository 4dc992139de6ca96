"""Device choice for GPU jobs: distinct lock-file slots for concurrent jobs, no GPU needed."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from medusa.core.devices import claim_device_slot, default_lock_dir

IDS = ["0", "1", "2"]


def test_single_or_no_device_needs_no_lock(tmp_path):
    with claim_device_slot(["3"], tmp_path) as a, claim_device_slot(["3"], tmp_path) as b:
        assert a == b == "3"  # one visible GPU (a SLURM job): nothing to share out
    with claim_device_slot([], tmp_path) as none:
        assert none is None
    assert list(tmp_path.iterdir()) == []


def test_concurrent_threads_get_distinct_devices(tmp_path):
    barrier = threading.Barrier(len(IDS))
    claimed, errors = [], []

    def job():
        try:
            with claim_device_slot(IDS, tmp_path, poll_s=0.01, timeout_s=5) as device:
                claimed.append(device)
                barrier.wait(timeout=5)  # every job holds its slot at the same time
        except Exception as err:  # surfaced below: a thread's exception is otherwise lost
            errors.append(err)

    threads = [threading.Thread(target=job) for _ in IDS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(claimed) == IDS


def test_all_taken_waits_then_gets_the_freed_slot(tmp_path):
    with (
        claim_device_slot(IDS[:2], tmp_path) as first,
        claim_device_slot(IDS[:2], tmp_path) as second,
    ):
        assert {first, second} == set(IDS[:2])
        with pytest.raises(TimeoutError, match="no free GPU"):
            with claim_device_slot(IDS[:2], tmp_path, poll_s=0.01, timeout_s=0.1):
                pass
    got = []

    def waiter():
        with claim_device_slot(IDS[:2], tmp_path, poll_s=0.01, timeout_s=5) as device:
            got.append(device)

    with claim_device_slot(IDS[:2], tmp_path), claim_device_slot(IDS[:2], tmp_path) as held:
        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.1)
        assert got == []  # still waiting while both are held
    t.join(timeout=5)
    assert got and got[0] in IDS[:2]
    with claim_device_slot(IDS, tmp_path) as again:  # released on exit
        assert again == "0"
    assert held is not None


def _holder(lock_dir, ids=IDS):
    """A separate process that claims a slot, reports it, and holds it until killed."""
    code = textwrap.dedent(
        f"""
        import time
        from medusa.core.devices import claim_device_slot
        with claim_device_slot({ids!r}, {str(lock_dir)!r}) as device:
            print(device, flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def test_processes_get_distinct_devices_and_a_killed_job_frees_its_slot(tmp_path):
    a, dev_a = _holder(tmp_path)
    b, dev_b = _holder(tmp_path)
    try:
        assert {dev_a, dev_b} | {"2"} == set(IDS) and dev_a != dev_b
        with claim_device_slot(IDS, tmp_path, timeout_s=0) as mine:
            assert mine == "2"
        os.kill(a.pid, signal.SIGKILL)  # a crashed job: the kernel drops its flock
        a.wait()
        with claim_device_slot(IDS, tmp_path, poll_s=0.01, timeout_s=5) as mine:
            assert mine == dev_a
    finally:
        for p in (a, b):
            p.kill()
            p.wait()


def _acquire_in_job(env):
    """Run acquire_device in a fresh process (CUDA must not be initialised beforehand)."""
    code = textwrap.dedent(
        """
        import json, logging, os
        from medusa.core.devices import acquire_device
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        with acquire_device() as device:
            inside = os.environ.get("CUDA_VISIBLE_DEVICES")
        print(json.dumps([str(device), inside, os.environ.get("CUDA_VISIBLE_DEVICES")]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def test_acquire_device_without_visible_gpu_uses_cpu_and_says_why():
    (device, inside, after), log = _acquire_in_job({"CUDA_VISIBLE_DEVICES": ""})
    assert device == "cpu" and "no CUDA device visible" in log
    assert inside == after == ""


def test_acquire_device_restricts_visibility_to_the_claimed_gpu(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "5,7", "MEDUSA_GPU_LOCK_DIR": str(tmp_path)}
    a, dev_a = _holder(tmp_path, ["5", "7"])
    try:
        (device, inside, after), log = _acquire_in_job(env)
    finally:
        a.kill()
        a.wait()
    assert dev_a == "5" and inside == "7"  # the job sees only the device it claimed
    assert after == "5,7"  # and the process environment is restored afterwards
    # Without real GPUs behind ids 5 and 7 the job falls back to the CPU, and says so.
    assert device in ("cuda:0", "cpu")
    if device == "cpu":
        assert "unusable" in log or "no CUDA" in log


def test_default_lock_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDUSA_GPU_LOCK_DIR", str(tmp_path))
    assert default_lock_dir() == tmp_path
    monkeypatch.delenv("MEDUSA_GPU_LOCK_DIR")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert default_lock_dir().name == f"medusa-gpu-locks-{os.getuid()}-slurm42"


def test_autocast_is_float32_on_cpu_unless_asked():
    import torch

    from medusa.core.devices import amp_dtype, autocast

    assert amp_dtype("cpu") is None
    x = torch.randn(4, 4)
    with autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
        assert (x @ x).dtype == torch.float32
    with autocast(torch.device("cpu"), dtype=torch.bfloat16):  # the reduced path, on the CPU
        assert (x @ x).dtype == torch.bfloat16
    with autocast("cpu", enabled=False, dtype=torch.bfloat16):
        assert (x @ x).dtype == torch.float32


class _FakeCuda:
    """torch.cuda as a process with three GPUs sees it: CUDA starts on the first set_device and
    reads CUDA_VISIBLE_DEVICES then, once; an index beyond what it saw is an invalid ordinal."""

    def __init__(self):
        self.started_with = None  # the ids CUDA was started with
        self.current = None

    def is_initialized(self):
        return self.started_with is not None

    def is_available(self):
        return True

    def set_device(self, device):
        if self.started_with is None:
            self.started_with = os.environ["CUDA_VISIBLE_DEVICES"].split(",")
        if device.index >= len(self.started_with):
            raise RuntimeError("CUDA error: invalid device ordinal")
        self.current = self.started_with[device.index]

    def get_device_name(self, device):
        return "fake GPU"


def test_a_second_claim_in_one_process_uses_a_device_cuda_can_address(monkeypatch, tmp_path):
    """Two Recognizers in one notebook: the first narrows visibility to its GPU and CUDA
    starts with that one; the second must not address a device CUDA never saw."""
    import torch

    from medusa.core import devices

    fake = _FakeCuda()
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    for name in ("is_initialized", "is_available", "set_device", "get_device_name"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    monkeypatch.setattr(devices, "_visible_when_cuda_started", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    with devices.acquire_device(tmp_path) as first:
        assert (str(first), fake.current) == ("cuda:0", "0")
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2"  # restored for child processes
    with devices.acquire_device(tmp_path) as again:  # first one still open in a notebook
        with devices.acquire_device(tmp_path) as second:
            assert str(again) == str(second) == "cuda:0"  # the only device CUDA has
            assert fake.current == "0"
