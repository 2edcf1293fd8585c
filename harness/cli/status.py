"""``harness status``: where each (method, seed) run of an experiment stands."""

from __future__ import annotations

from harness.cli.options import add_common, add_experiment, add_methods, add_seeds
from harness.config import load_config
from harness.core.workdir import resolve_workdir


def add_parser(sub) -> None:
    s = sub.add_parser("status", help="each (method, seed) run: finished / running / failed / not started, job, disk")
    add_experiment(s)
    add_methods(s)
    add_seeds(s)
    add_common(s)
    s.set_defaults(fn=cmd_status)


def cmd_status(args) -> int:
    from harness.launch.status import shared_phases_line, status_frame

    cfg = load_config(args.experiment, args.overrides, methods=args.method)
    workdir = resolve_workdir(args.workdir)
    frame = status_frame(cfg, workdir, args.method, args.seed)
    counts = frame.state.value_counts()
    print(f"experiment {cfg.name}: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    phases = shared_phases_line(workdir, cfg)
    if phases:
        print(f"shared phases (latest SLURM submission): {phases}")
    print(frame.fillna("").to_string(index=False))
    return 0
