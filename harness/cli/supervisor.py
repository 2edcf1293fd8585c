"""A server run as a child process and ended together with every process under it when this process ends: by
Ctrl-C, or by SIGTERM / SIGHUP as a job scheduler or ``kill`` sends it, which would otherwise leave the server's
workers running and its port bound."""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess

import psutil

log = logging.getLogger("harness")


def serve(cmd: list[str], grace_s: float = 10.0, env: dict[str, str] | None = None) -> int:
    """Run ``cmd`` (in ``env``, default this process's) until it exits or this process is stopped; then end its
    process tree (``end_tree``)."""
    # a session of its own: Ctrl-C in the terminal reaches this process only, which then ends the server's tree
    proc = subprocess.Popen(cmd, start_new_session=True, env=env)

    def end(signum, frame):
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, end) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        end_tree(proc, grace_s)


def end_tree(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to ``proc`` and all its descendants, then SIGKILL to those still there after ``grace_s``."""
    if proc.poll() is None:  # not reaped yet, so its pid is still its own
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(proc.pid)
            tree = [root, *root.children(recursive=True)]
            for p in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.terminate()
            _, alive = psutil.wait_procs(tree, timeout=grace_s, callback=ended)
            for p in alive:
                log.warning("process %d did not end within %g s of SIGTERM: killed", p.pid, grace_s)
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            psutil.wait_procs(alive, timeout=grace_s)
    proc.wait()


def ended(p: psutil.Process) -> None:
    log.debug("process %d ended (exit %s)", p.pid, p.returncode)
