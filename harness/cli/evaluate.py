"""``harness evaluate``: a run's logged model reloaded from MLflow and evaluated on test, beside the logged
values."""

from __future__ import annotations

from harness.cli.options import add_common
from harness.core.errors import UserError
from harness.core.workdir import resolve_workdir


def add_parser(sub) -> None:
    s = sub.add_parser("evaluate", help="reload a run's logged model from MLflow and evaluate it on test")
    s.add_argument("--run", required=True, help="MLflow run id (printed by `harness run`)")
    s.add_argument("--device", default="cpu")
    add_common(s)
    s.set_defaults(fn=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from mlflow.exceptions import MlflowException

    from harness.runs.logged_model import evaluate_logged_model
    from harness.runs.tracking import client

    workdir = resolve_workdir(args.workdir)
    try:
        logged = client(workdir).get_run(args.run).data.metrics
        metrics = evaluate_logged_model(args.run, workdir, args.device)
    except MlflowException as e:
        raise UserError(f"run {args.run}: {e.message}") from None
    print(f"run {args.run}: its logged model, reloaded from MLflow and evaluated now (logged value beside it)")
    for k, v in metrics.items():
        print(f"  {k:<20} {v:.4f}   logged {logged.get(k, float('nan')):.4f}")
    return 0
