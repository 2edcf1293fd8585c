"""``harness ui`` serves MLflow's UI, which has no login: on this machine only, unless ``--expose`` asks for an
address other machines reach (then with a warning); one server process and no MLflow job runner unless asked."""

import pytest

from harness.cli import main


class Served(list):
    """The commands ``harness ui`` would serve; ``envs``: the environment each would start in."""

    def __init__(self):
        super().__init__()
        self.envs = []

    def __call__(self, cmd, env=None):
        self.append(cmd)
        self.envs.append(env)
        return 0


@pytest.fixture
def served(monkeypatch):
    """The commands ``harness ui`` would serve, recorded instead of started."""
    served = Served()
    monkeypatch.setattr("harness.cli.ui.serve", served)
    monkeypatch.setattr("harness.runs.tracking.client", lambda workdir: None)
    return served


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "myhost.example"])
def test_a_host_other_machines_reach_is_refused_without_expose(tmp_path, served, capsys, host):
    assert main(["ui", "--host", host, "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"harness: error: harness ui --host {host}: MLflow's UI has no login") and "--expose" in err
    assert err.count("\n") == 1 and served == []


def test_expose_serves_there_with_a_warning(tmp_path, served, capsys):
    assert main(["ui", "--host", "0.0.0.0", "--expose", "--workdir", str(tmp_path)]) == 0
    assert "harness: warning: serving the MLflow UI on 0.0.0.0, with no login" in capsys.readouterr().err
    assert served and served[0][served[0].index("--host") + 1] == "0.0.0.0"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_nothing(tmp_path, served, capsys, host):
    assert main(["ui", "--host", host, "--workdir", str(tmp_path)]) == 0
    assert served and "warning" not in capsys.readouterr().err


def test_one_server_process_and_no_job_runner_unless_asked(tmp_path, served, monkeypatch):
    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    assert main(["ui", "--workdir", str(tmp_path)]) == 0
    assert served[0][served[0].index("--workers") + 1] == "1"
    assert served.envs[0]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")  # the user's setting wins
    assert main(["ui", "--workers", "3", "--workdir", str(tmp_path)]) == 0
    assert served[1][served[1].index("--workers") + 1] == "3"
    assert served.envs[1]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


def test_no_server_processes_is_refused_in_one_line(tmp_path, served, capsys):
    assert main(["ui", "--workers", "0", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "harness: error: harness ui --workers 0: give 1 or more server processes\n" and served == []
