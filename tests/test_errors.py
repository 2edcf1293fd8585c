"""One error family: everything a user can fix is a ``HarnessError``, printed by ``harness`` as one line (exit 2);
nothing else is caught, so a bug keeps its traceback."""

import sys
from importlib.metadata import EntryPoint

import pytest

from harness.cli import main
from harness.core import registry
from harness.core.errors import HarnessError, MissingFileError


@pytest.fixture
def broken_plugin(tmp_path, monkeypatch):
    """A plugin method whose module fails to import, installed beside the built-ins (a fresh METHODS registry)."""
    (tmp_path / "broken_plugin_mod.py").write_text("import no_such_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = registry.component_entry_points("discl_harness.methods")
    ep = EntryPoint("broken", "broken_plugin_mod:Broken", "discl_harness.methods")
    monkeypatch.setattr(registry, "component_entry_points", lambda group: [*found, (ep, "broken-plugin")])
    monkeypatch.setattr(registry.METHODS, "_entries", {})
    monkeypatch.setattr(registry.METHODS, "_loaded", False)
    yield
    sys.modules.pop("broken_plugin_mod", None)


def test_the_user_errors_are_one_family():
    from harness.config import ConfigError
    from harness.data.base import DataError
    from harness.sweep import SweepError
    from reports.collect import NoRunsError

    for cls in (ConfigError, DataError, registry.UnknownNameError, registry.PluginError, SweepError, NoRunsError):
        assert issubclass(cls, HarnessError), cls


def test_a_plugin_that_fails_to_import_is_one_line(broken_plugin, capsys):
    assert main(["list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "'broken'" in err[0] and "broken-plugin" in err[0] and "ModuleNotFoundError" in err[0]


def test_the_registry_is_not_marked_loaded_by_a_failed_load(broken_plugin, monkeypatch):
    for _ in range(2):  # the second lookup fails the same way, not with "unknown method"
        with pytest.raises(registry.PluginError, match="broken"):
            registry.get_method("plain")
    installed = [(ep, d) for ep, d in registry.component_entry_points("discl_harness.methods") if d != "broken-plugin"]
    monkeypatch.setattr(registry, "component_entry_points", lambda group: installed)
    monkeypatch.setattr(registry.METHODS, "_entries", {})  # modules imported before do not decorate again
    assert registry.get_method("plain").registry_name == "plain"  # the plugin gone: every method is found
    assert set(registry.list_methods()) == {ep.name for ep, _ in installed}


def test_a_missing_user_file_is_a_harness_error(tmp_path):
    from harness.models.base import load_weights

    with pytest.raises(MissingFileError, match="no weights file"):
        load_weights(tmp_path / "absent.safetensors")


def test_main_catches_only_harness_errors(monkeypatch):
    """A FileNotFoundError that is not a user's missing file is a bug: its traceback is kept."""
    import harness.cli.list as list_command

    def bug(args):
        raise FileNotFoundError("an internal file the harness itself should have written")

    monkeypatch.setattr(list_command, "cmd_list", bug)
    with pytest.raises(FileNotFoundError):
        main(["list"])
