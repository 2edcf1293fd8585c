"""``harness ui`` serves MLflow's UI, which has no login: on this machine only, unless ``--expose`` asks for an
address other machines reach (then with a warning)."""

import pytest

from harness.cli import main


@pytest.fixture
def served(monkeypatch):
    """The commands ``harness ui`` would serve, recorded instead of started."""
    commands = []
    monkeypatch.setattr("harness.cli.ui.serve", lambda cmd: commands.append(cmd) or 0)
    monkeypatch.setattr("harness.runs.tracking.client", lambda workdir: None)
    return commands


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
