"""Wall time of the default experiment cold and warm, and of the nine-method suite, against the targets.

    python benchmarks/bench_default.py [--skip-suite] [--json FILE]

Each figure is a fresh `harness run` subprocess; cold = empty workdir, warm = shared phases cached (runs forced).
Also reports peak memory (max RSS of the child processes).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_run(args: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness.cli", "run", "--quiet", *args], check=True,
                   stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024  # MiB (Linux: KiB)
    return elapsed, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-suite", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp) / "wd"
        cold, peak = timed_run(["--experiment", "digits_lt_discl", "--workdir", str(wd)])
        rows.append({"name": "digits_lt_discl cold", "unit": "s", "harness": cold, "target": 300.0})
        warm, _ = timed_run(["--experiment", "digits_lt_discl", "--workdir", str(wd), "--force"])
        rows.append({"name": "digits_lt_discl warm", "unit": "s", "harness": warm, "target": 60.0})
        if not args.skip_suite:
            suite, peak = timed_run(["--experiment", "digits_lt_suite", "--workdir", str(Path(tmp) / "suite")])
            rows.append({"name": "digits_lt_suite cold (27 runs)", "unit": "s", "harness": suite, "target": 1200.0})
        rows.append({"name": "peak RSS of a run", "unit": "MiB", "harness": peak, "target": None})
    print(f"{'figure':34s} {'harness':>10s} {'target':>10s} {'ratio':>7s}")
    for r in rows:
        r.update(reference=r["target"], better="lower",
                 ratio=(r["harness"] / r["target"]) if r["target"] else None)
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        target = f"{r['target']:.0f}" if r["target"] else "-"
        print(f"{r['name']:34s} {r['harness']:10.1f} {target:>10s} {ratio:>7s}   ({r['unit']}; ratio < 1 meets the target)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
