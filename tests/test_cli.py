"""The CLI's own behaviour: reuse and ``--force``, and ``harness ui`` started, serving and ended by SIGTERM together
with the MLflow server's workers (``harness evaluate``: tests/test_tracking.py)."""

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient
from quick import SHORT_TRAINING, as_sets
from workdirs import copy_workdir

from harness.cli import main

QUICK = [*as_sets(SHORT_TRAINING), "--quiet"]


def plain_runs(workdir):
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("digits_lt_tiny")
    return client.search_runs([exp.experiment_id], filter_string="tags.method = 'plain'")


@pytest.fixture(scope="module")
def workdir(tiny_prepared, warm_workdir, tmp_path_factory):
    """One finished `plain` run of digits_lt_tiny (seed 0, 2 epochs), on a copy of the warm caches."""
    wd = copy_workdir(warm_workdir, tmp_path_factory.mktemp("cli"))
    assert main(["run", "-e", "digits_lt_tiny", "-m", "plain", "-s", "0", "--workdir", str(wd), *QUICK]) == 0
    return wd


@pytest.mark.slow  # trains a tiny run (module fixture)
def test_a_speed_only_setting_reuses_the_finished_run(workdir, capsys):
    """`--set spectrum.batch_size=64` (or another worker count, or device) reran a finished run before."""
    (before,) = plain_runs(workdir)
    for speed in ("spectrum.batch_size=64", "device=cpu", "tracking.system_metrics=false"):
        capsys.readouterr()
        argv = ["run", "-e", "digits_lt_tiny", "-m", "plain", "-s", "0", "--workdir", str(workdir), *QUICK]
        assert main([*argv, "--set", speed]) == 0
        assert f"plain-seed0={before.info.run_id}" in capsys.readouterr().out, speed
    assert len(plain_runs(workdir)) == 1


@pytest.mark.slow  # trains a tiny run (module fixture)
def test_force_reruns_in_a_new_run(workdir, capsys):
    (before,) = plain_runs(workdir)
    argv = ["run", "-e", "digits_lt_tiny", "-m", "plain", "-s", "0", "--workdir", str(workdir), *QUICK]
    assert main([*argv, "--force"]) == 0
    runs = plain_runs(workdir)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    forced = next(r for r in runs if r.info.run_id != before.info.run_id)
    assert f"plain-seed0={forced.info.run_id}" in capsys.readouterr().out
    assert forced.data.metrics["test/acc"] == pytest.approx(before.data.metrics["test/acc"])  # same config, same run
    assert main(argv) == 0  # without --force: reused again (the newest finished one)
    assert len(plain_runs(workdir)) == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_ui_serves_and_sigterm_ends_the_server_and_its_workers(tmp_path):
    import psutil

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true"  # the largest tree: MLflow's job runner and its consumers too
    ui = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "ui", "--workdir", str(tmp_path / "wd"), "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children, group = [], None
    try:
        deadline = time.monotonic() + 240
        while not serving(port):
            assert ui.poll() is None, "harness ui exited before it served"
            assert time.monotonic() < deadline, "harness ui did not serve within 240 s"
            time.sleep(1)
        children = psutil.Process(ui.pid).children(recursive=True)
        assert children  # the MLflow server (and its uvicorn workers)
        group = os.getpgid(children[0].pid)  # the server's process group (its job runner's consumers join it later)
        assert group != os.getpgid(0), "the MLflow server runs in the test's own process group"
        ui.send_signal(signal.SIGTERM)  # as `kill` or a job scheduler ends it
        assert ui.wait(timeout=60) != 0
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], f"left running: {[p.cmdline()[:4] for p in alive]}"
        assert in_group(group) == [], "processes of the server's group are left running"
        assert not serving(port)
        with socket.socket() as s:  # no one listens on the port (a closed connection's TIME_WAIT may stay)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    finally:  # whatever failed: end every process of this test (they all name its folder, or descend from one)
        leftover = {p.pid: p for p in children}
        for p in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if str(tmp_path) in " ".join(p.info["cmdline"] or []):
                    leftover.update({q.pid: q for q in [p, *p.children(recursive=True)]})
        for p in leftover.values():
            with contextlib.suppress(psutil.Error):
                p.kill()
        if group is not None and group != os.getpgid(0):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def in_group(pgid: int) -> list[int]:
    import psutil

    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
    return found


def test_end_tree_ends_every_descendant_and_kills_those_that_ignore_sigterm():
    """The supervisor behind `harness ui`: SIGTERM to the server and everything under it, SIGKILL after the grace
    period to a process that ignores SIGTERM."""
    import psutil

    from harness.cli.supervisor import end_tree

    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(100)"
    script = f"sleep 100 & {shlex.quote(sys.executable)} -c {shlex.quote(stubborn)} & wait"
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True, stdout=subprocess.PIPE)
    proc.stdout.readline()  # the stubborn child ignores SIGTERM from here on
    tree = psutil.Process(proc.pid).children(recursive=True)
    assert len(tree) == 2
    try:
        start = time.monotonic()
        end_tree(proc, grace_s=1.0)
        assert proc.returncode is not None
        _, alive = psutil.wait_procs(tree, timeout=5)
        assert alive == []
        assert time.monotonic() - start < 10
    finally:  # whatever failed, nothing of this test is left running
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.kill()
