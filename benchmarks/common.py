"""What every benchmark shares: the JSON row schema, interleaved repeats (each timed by ``torch.utils.benchmark``)
with their medians and spread, the table printer."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

# name: a short stable id (input_pipeline, ddp_eval, train_step_resnet10_bf16, ...); detail: what was measured, in
# words; spread: the range (max - min) of the per-repeat ratios as % of their median (None: one repeat, or no ratio).
FIELDS = ("name", "detail", "unit", "harness", "reference", "ratio", "spread", "target", "better")


def row(
    name: str, detail: str, unit: str, harness, reference, ratio, target, better: str, spread: float | None = None
) -> dict:
    """One figure. ``ratio`` is harness / reference; ``better`` says which way is good for the values and the
    ratio, and ``target`` is the bound on the ratio."""
    assert better in ("higher", "lower"), better
    assert name and " " not in name, f"row names are short ids, got {name!r}"
    return dict(zip(FIELDS, (name, detail, unit, harness, reference, ratio, spread, target, better)))


def timed(fn) -> float:
    """Seconds of one call of ``fn``, after one untimed call: ``torch.utils.benchmark``'s ``blocked_autorange`` with
    no minimum run time times one block of one call (its block-size estimate is the warm-up). The Timer waits for
    the accelerator before reading the clock; ``num_threads`` keeps torch's thread count (its default is 1)."""
    import torch  # here, not above: run_all and cost_model, which time no statement, stay free of torch
    from torch.utils.benchmark import Timer

    timer = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=0).median


def paired(harness_fn, reference_fn, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of each per repeat, alternating the two (and which goes first) so that load drifts on a shared
    machine hit both alike."""
    ours, ref = [], []
    for i in range(repeats):
        if i % 2:
            ref.append(timed(reference_fn))
            ours.append(timed(harness_fn))
        else:
            ours.append(timed(harness_fn))
            ref.append(timed(reference_fn))
    return ours, ref


def spread(ours: list[float], ref: list[float]) -> float | None:
    """The range of the per-repeat ratios ours[i] / ref[i] as % of their median (None for one repeat)."""
    if len(ours) < 2:
        return None
    ratios = [a / b for a, b in zip(ours, ref)]
    return 100 * (max(ratios) - min(ratios)) / statistics.median(ratios)


def time_row(
    name: str,
    detail: str,
    ours: list[float],
    ref: list[float],
    target,
    n_items: int | None = None,
    unit: str | None = None,
) -> dict:
    """A row from interleaved seconds: with ``n_items``, throughput (items/s, higher is better); otherwise seconds
    (lower is better). The ratio is the ratio of the medians; the spread that of the per-repeat ratios."""
    t_ours, t_ref = statistics.median(ours), statistics.median(ref)
    if n_items is None:
        return row(name, detail, unit or "s", t_ours, t_ref, t_ours / t_ref, target, "lower", spread(ours, ref))
    return row(
        name,
        detail,
        unit or "items/s",
        n_items / t_ours,
        n_items / t_ref,
        t_ref / t_ours,
        target,
        "higher",
        spread(ref, ours),
    )


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def print_table(rows: list[dict]) -> None:
    width = max([len(r["name"]) for r in rows] + [6])
    print(
        f"{'name':{width}s}  {'unit':>9s} {'harness':>9s} {'reference':>9s} {'ratio':>7s} {'spread':>7s} "
        f"{'target':>7s} better  detail"
    )
    for r in rows:
        spread_ = "-" if r.get("spread") is None else f"{r['spread']:.1f}%"
        target = "-" if r["target"] is None else ("≥ " if r["better"] == "higher" else "≤ ") + fmt(r["target"])
        print(
            f"{r['name']:{width}s}  {r['unit']:>9s} {fmt(r['harness']):>9s} {fmt(r['reference']):>9s} "
            f"{fmt(r['ratio']):>7s} {spread_:>7s} {target:>7s} {r['better']:6s}  {r.get('detail') or ''}"
        )


def write_json(rows: list[dict], path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(rows, indent=2))
