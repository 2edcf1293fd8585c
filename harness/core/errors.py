"""The harness's error family: everything a user can fix derives from ``HarnessError``.

``harness`` (``harness.cli.app``) prints such an error as one line and exits with status 2; any other exception is
a bug and keeps its traceback. A leaf module: it imports nothing, so every layer may raise these.
"""

from __future__ import annotations


class HarnessError(Exception):
    """A problem the user can fix (a config, a file, a name, a plugin); the message is one line."""


class UserError(HarnessError):
    """A command used the wrong way (e.g. a missing option)."""


class MissingFileError(HarnessError, FileNotFoundError):
    """A file the user named (a checkpoint, weights, descriptions) does not exist; the message names the setting."""


class NotFoundError(HarnessError, LookupError):
    """Something the user asked for by id is not there (e.g. a run without a logged model)."""


class DataError(HarnessError, RuntimeError):
    """Missing or malformed data or weights; the message says what was expected where."""


class FileSystemError(HarnessError, OSError):
    """The file system under the workdir lacks what its caches need (e.g. ``flock`` locks); the message says which
    mount option or folder fixes it."""
