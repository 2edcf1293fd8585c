"""`harness` in a process of its own, for the tests about the process boundary (signals, kill -9, processes sharing
a workdir, `python -m`): one torch thread (runs repeat exactly at a fixed thread count), no progress bars, and the
user's MLflow store unset."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def harness(*args, env=None, **kw) -> subprocess.Popen:
    """``python -m harness.cli ARGS``; stdout and stderr in one pipe unless ``kw`` says otherwise."""
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, **kw}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], env=env, **kw)


def finish(proc: subprocess.Popen, timeout: float = 280) -> tuple[int, str]:
    """Its exit status and output (killed when it outlives ``timeout``)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out.decode() if isinstance(out, bytes) else (out or "")


def kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.kill()
    raise TimeoutError("the condition never held")
