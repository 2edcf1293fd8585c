"""The ``harness`` command: the parser assembled from one module per subcommand, and ``main``, which runs the
chosen subcommand and turns the errors a user can fix into one line."""

from __future__ import annotations

import argparse
import logging
import sys

from harness.cli import evaluate, generate, plan, pool, recipe, report, run, status, sweep, ui
from harness.cli import list as list_command
from harness.core.errors import HarnessError
from harness.engine.preempt import Preempted

SUBCOMMANDS = (list_command, run, status, generate, plan, pool, sweep, report, evaluate, ui, recipe)  # --help order


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description="DisCL benchmark harness")
    sub = p.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if not args.quiet else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("alembic", "mlflow", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.fn(args)
    except HarnessError as e:
        if args.debug:
            raise
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:
        print(f"harness: {e}; rerun the same command to resume", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("harness: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
