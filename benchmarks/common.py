"""What every benchmark shares: the JSON row schema, a median-of-repeats timer, the table printer."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

FIELDS = ("name", "unit", "harness", "reference", "ratio", "target", "better")


def row(name: str, unit: str, harness, reference, ratio, target, better: str) -> dict:
    """One figure. ``ratio`` is harness / reference; ``better`` says which way is good for the values and the
    ratio, and ``target`` is the bound on the ratio."""
    assert better in ("higher", "lower"), better
    return dict(zip(FIELDS, (name, unit, harness, reference, ratio, target, better)))


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(harness_fn, reference_fn, repeats: int) -> tuple[float, float]:
    """Median seconds of each, alternating the two so load drifts on a shared machine hit both alike."""
    ours, ref = [], []
    for _ in range(repeats):
        ours.append(median_time(harness_fn, 1))
        ref.append(median_time(reference_fn, 1))
    return statistics.median(ours), statistics.median(ref)


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def print_table(rows: list[dict]) -> None:
    width = max([len(r["name"]) for r in rows] + [6])
    print(f"{'figure':{width}s}  {'unit':>10s} {'harness':>9s} {'reference':>9s} {'ratio':>7s} {'target':>7s}  better")
    for r in rows:
        print(f"{r['name']:{width}s}  {r['unit']:>10s} {fmt(r['harness']):>9s} {fmt(r['reference']):>9s} "
              f"{fmt(r['ratio']):>7s} {fmt(r['target']):>7s}  {r['better']}")


def write_json(rows: list[dict], path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(rows, indent=2))
