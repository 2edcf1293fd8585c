"""``harness plan``'s output: the plan as text (one compact table per method) and as plain JSON."""

from __future__ import annotations

import pandas as pd

from harness.plan.epochs import EPOCH_COLUMNS


def compact(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs of consecutive epochs that train on the same composition, one row each (``epochs``: "0-14")."""
    same = pd.Series(["|".join(map(str, r)) for r in frame.drop(columns=["epoch", "stage"]).itertuples(index=False)])
    run = (same != same.shift()).cumsum().to_numpy()

    def span(values) -> str:
        values = [v for v in values if not pd.isna(v)]
        if not values:
            return "-"
        return f"{values[0]}" if values[0] == values[-1] else f"{values[0]}-{values[-1]}"

    rows = []
    for _, group in frame.groupby(run, sort=False):
        first = group.iloc[0].drop(["epoch", "stage"])
        rows.append({"epochs": span(list(group.epoch)), "stages": span(list(group.stage)), **first})
    return pd.DataFrame(rows, columns=["epochs", "stages", *EPOCH_COLUMNS[2:]])


# --------------------------------------------------------------------------- spectrum and GPU-hours


def json_row(row: dict) -> dict:
    """Plain JSON values: NA → null, numpy scalars → Python numbers."""
    out = {}
    for k, v in row.items():
        if isinstance(v, list):
            out[k] = v
        elif v is None or pd.isna(v):
            out[k] = None
        else:
            out[k] = v.item() if hasattr(v, "item") else v
    return out


def to_json(plan: dict) -> dict:
    out = dict(plan)
    out["methods"] = {
        n: {"epochs": m["epochs"].to_dict("records"), "total_steps": m["total_steps"]}
        for n, m in plan["methods"].items()
    }
    return out


def format_plan(plan: dict) -> str:
    lines = [
        f"plan of {plan['experiment']} (seed {plan['seed']}, {plan['world']} process(es), global batch "
        f"{plan['global_batch']}, {plan['rows_per_image']} training row(s) per image)",
        "data: " + ", ".join(f"{k} {v}" for k, v in plan["data"].items()),
    ]
    s = plan["spectrum"]
    lines.append(
        f"spectrum: {s['sources']} sources × λ {s['levels']} × {s['seeds']} seeds = {s['images_per_level']} images "
        f"per level, {s['images']} in all; kept per level {s['kept_per_level']}"
    )
    lines += [f"  hard set: {s['hard']}", f"  pool: {s['pool']}"]
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        for name, m in plan["methods"].items():
            frame = compact(m["epochs"])
            frame["tail_share"] = frame.tail_share.map(lambda x: f"{x:.3f}")
            unknown = not frame.levels_known.all()
            frame["levels"] = [
                (str(lv) + ("?" if not known else "")) for lv, known in zip(frame.levels, frame.levels_known)
            ]
            lines += ["", f"{name}: {m['total_steps']} steps in all"]
            table = frame.drop(columns=["levels_known"]).to_string(index=False)
            lines.append(table if len(frame) else "  no epochs: the base model, evaluated as trained")
            if unknown:
                lines.append("  ?: chosen during training (adaptive); the first candidate level is shown")
    g = plan["gpu_hours"]
    lines += ["", f"GPU-hours on {g['gpu']}, one seed:"]
    for key in ("base", "spectrum", "scoring"):
        lines.append(f"  {key}: {g[key]}")
    for name, h in g["fine_tune_per_seed"].items():
        lines.append(f"  fine-tune {name}: {h}")
    lines.append(f"  total: {g['total_one_seed']}")
    return "\n".join(lines)
