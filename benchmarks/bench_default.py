"""Wall time of the default experiment cold and warm, and of the nine-method suite, against the targets.

    python benchmarks/bench_default.py [--skip-suite] [--experiment NAME] [--json FILE]

Rows: reference = the target budget in seconds, ratio = harness / budget, better = lower (≤ 1 meets it).

Each figure is a fresh `harness run` subprocess; cold = empty workdir, warm = shared phases cached (runs forced).
Also reports peak memory (max RSS of the child processes).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, row, write_json  # noqa: E402


def timed_run(args: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--quiet", *args], check=True, stdout=subprocess.DEVNULL
    )
    elapsed = time.perf_counter() - start
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024  # MiB (Linux: KiB)
    return elapsed, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-suite", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--experiment", default="digits_lt_discl", help="the single-run experiment to time")
    args = ap.parse_args()
    rows = measure(args.experiment, args.skip_suite)
    print_table(rows)
    write_json(rows, args.json)


def measure(experiment: str = "digits_lt_discl", skip_suite: bool = False) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp) / "wd"
        cold, peak = timed_run(["--experiment", experiment, "--workdir", str(wd)])
        rows.append(
            {
                "name": "default_cold",
                "detail": f"harness run {experiment}, empty workdir (reference = budget)",
                "unit": "s",
                "harness": cold,
                "target": 300.0,
            }
        )
        warm, _ = timed_run(["--experiment", experiment, "--workdir", str(wd), "--force"])
        rows.append(
            {
                "name": "default_warm",
                "detail": f"harness run {experiment} --force, shared phases cached",
                "unit": "s",
                "harness": warm,
                "target": 60.0,
            }
        )
        if not skip_suite:
            suite, peak = timed_run(["--experiment", "digits_lt_suite", "--workdir", str(Path(tmp) / "suite")])
            rows.append(
                {
                    "name": "suite_cold",
                    "detail": "harness run digits_lt_suite, empty workdir (27 runs)",
                    "unit": "s",
                    "harness": suite,
                    "target": 1200.0,
                }
            )
        rows.append(
            {"name": "peak_rss", "detail": "peak RSS of a harness run", "unit": "MiB", "harness": peak, "target": None}
        )
    return [
        row(
            r["name"],
            r["detail"],
            r["unit"],
            r["harness"],
            r["target"],
            r["harness"] / r["target"] if r["target"] else None,
            1.0 if r["target"] else None,
            "lower",
        )
        for r in rows
    ]


if __name__ == "__main__":
    main()
