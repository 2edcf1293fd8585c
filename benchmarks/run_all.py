"""Every benchmark, one table.

    python benchmarks/run_all.py [--quick] [--json FILE] [--gpu-json FILE]

--quick: the digits_lt_tiny experiment for the end-to-end figures (no suite), tiny pipelines, few repeats; about
a few minutes on 2 CPU cores. --json writes a list of rows {name, unit, harness, reference, ratio, target, better}.
--gpu-json: rows measured elsewhere (e.g. on an H100 with bench_generation/bench_unet_variants --json) appended to
the table, labelled as such; nothing measured is hard-coded here.
"""
from __future__ import annotations

import argparse
import json
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
        subprocess.run([sys.executable, str(HERE / script), *args, "--json", str(out)], check=True,
                       stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def benchmarks(quick: bool) -> list[tuple[str, list[str]]]:
    import torch

    plan = [("bench_scoring.py", ["--quick"] if quick else []),
            ("bench_training.py", ["--quick"] if quick else []),
            ("bench_input.py", ["--quick"] if quick else []),
            ("bench_generation.py", ["--quick"] if quick else []),
            ("bench_default.py", ["--experiment", "digits_lt_tiny", "--skip-suite"] if quick else [])]
    if torch.cuda.is_available() and not quick:
        plan.append(("bench_unet_variants.py", []))
    return plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--gpu-json", help="rows measured on a GPU machine, shown with a (GPU file) label")
    ap.add_argument("--only", nargs="+", help="run only these benchmark scripts (e.g. bench_scoring.py)")
    args = ap.parse_args()
    rows, wall, cpu = [], time.perf_counter(), time.process_time()
    for script, script_args in benchmarks(args.quick):
        if args.only and script not in args.only:
            continue
        print(f"running {script} {' '.join(script_args)}", file=sys.stderr, flush=True)
        rows += subprocess_rows(script, script_args)
    if args.gpu_json:
        rows += [{**r, "name": f"{r['name']} (GPU file)"} for r in json.loads(Path(args.gpu_json).read_text())]
    rows = [{k: r.get(k) for k in FIELDS} for r in rows]
    print_table(rows)
    import resource

    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"wall {time.perf_counter() - wall:.0f} s; CPU {time.process_time() - cpu + child.ru_utime + child.ru_stime:.0f} s"
          f" (all processes)")
    write_json(rows, args.json)


if __name__ == "__main__":
    main()
