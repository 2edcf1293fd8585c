"""The ``harness`` command: ``main`` parses the arguments and runs one subcommand."""

from harness.cli.app import main

__all__ = ["main"]
