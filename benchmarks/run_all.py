"""Every benchmark, one table.

    python benchmarks/run_all.py [--quick] [--json FILE] [--gpu-json FILE]

--quick: the digits_lt_tiny experiment for the end-to-end figures (no suite), tiny pipelines, small training
batches; at most 5 minutes on 2 quiet CPU cores. --json writes a list of rows {name, detail, unit, harness,
reference, ratio, spread, target, better} (``name`` a short stable id, ``spread`` the range of the per-repeat
ratios as % of their median). --gpu-json: rows measured elsewhere (e.g. on an H100 with bench_train_step /
bench_generation / bench_unet_variants --json) appended to the table with ``@gpu`` after their names; nothing
measured is hard-coded here. The load average is printed before and after: compare runs only on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import FIELDS, print_table, write_json  # noqa: E402


def subprocess_rows(script: str, args: list[str]) -> list[dict]:
    """Run a benchmark in its own process (its own torch threads and memory) and read its --json rows."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        subprocess.run(
            [sys.executable, str(HERE / script), *args, "--json", str(out)], check=True, stdout=subprocess.DEVNULL
        )
        return json.loads(out.read_text())


TAKE_REPEATS = {"bench_training.py", "bench_ddp_eval.py", "bench_train_step.py"}  # the scripts with --repeats


def benchmarks(quick: bool) -> list[tuple[str, list[str]]]:
    import torch

    plan = [
        ("bench_scoring.py", ["--quick"] if quick else []),
        ("bench_training.py", ["--quick"] if quick else []),
        ("bench_input.py", ["--quick"] if quick else []),
        ("bench_ddp_eval.py", ["--quick"] if quick else []),
        ("bench_train_step.py", ["--quick"] if quick else []),
        ("bench_generation.py", ["--quick"] if quick else []),
        ("bench_default.py", ["--experiment", "digits_lt_tiny", "--skip-suite"] if quick else []),
    ]
    if torch.cuda.is_available() and not quick:
        plan.append(("bench_unet_variants.py", []))
    return plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--gpu-json", help="rows measured on a GPU machine, shown with a (GPU file) label")
    ap.add_argument("--repeats", type=int, help=f"repeats per figure for {', '.join(sorted(TAKE_REPEATS))}")
    ap.add_argument("--only", nargs="+", help="run only these benchmark scripts (e.g. bench_scoring.py)")
    ap.add_argument("--compare", help="an earlier --json file: print each ratio's change against it (goal: ≤ 5%%)")
    args = ap.parse_args()
    rows, wall, cpu = [], time.perf_counter(), time.process_time()
    load_before = os.getloadavg()
    for script, script_args in benchmarks(args.quick):
        if args.only and script not in args.only:
            continue
        start = time.perf_counter()
        print(f"running {script} {' '.join(script_args)}", file=sys.stderr, flush=True)
        if args.repeats and script in TAKE_REPEATS:
            script_args = [*script_args, "--repeats", str(args.repeats)]
        rows += subprocess_rows(script, script_args)
        print(f"  {script}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    if args.gpu_json:
        rows += [
            {**r, "name": f"{r['name']}@gpu", "detail": f"(from {Path(args.gpu_json).name}) {r.get('detail') or ''}"}
            for r in json.loads(Path(args.gpu_json).read_text())
        ]
    rows = [{k: r.get(k) for k in FIELDS} for r in rows]
    print_table(rows)
    import resource

    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"wall {time.perf_counter() - wall:.0f} s; "
        f"CPU {time.process_time() - cpu + child.ru_utime + child.ru_stime:.0f} s"
        f" (all processes); load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (1 min)"
    )
    write_json(rows, args.json)
    if args.compare:
        compare(rows, json.loads(Path(args.compare).read_text()))


def compare(rows: list[dict], earlier: list[dict]) -> None:
    """Each ratio against the same row of an earlier run: the change as % of the earlier ratio."""
    before = {r["name"]: r for r in earlier}
    print(f"\nratio change against the earlier run ({len(before)} rows):")
    worst = 0.0
    for r in rows:
        old = before.get(r["name"])
        if not old or r["ratio"] is None or not old.get("ratio"):
            continue
        change = 100 * (r["ratio"] / old["ratio"] - 1)
        worst = max(worst, abs(change))
        print(
            f"  {r['name']:36s} {old['ratio']:9.4g} -> {r['ratio']:9.4g}  {change:+6.1f}%"
            + ("  (over 5%)" if abs(change) > 5 else "")
        )
    print(f"largest change {worst:.1f}%")


if __name__ == "__main__":
    main()
