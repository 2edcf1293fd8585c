"""``harness ui``: the MLflow UI on the workdir's store, served until this process ends."""

from __future__ import annotations

import sys

from harness.cli.options import add_common
from harness.cli.supervisor import serve
from harness.core.workdir import resolve_workdir, tracking_uri


def add_parser(sub) -> None:
    s = sub.add_parser("ui", help="the MLflow UI on the workdir's store")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=5000)
    add_common(s)
    s.set_defaults(fn=cmd_ui)


def cmd_ui(args) -> int:
    from harness.runs.tracking import client

    workdir = resolve_workdir(args.workdir)
    client(workdir)  # create the store if it does not exist yet
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        tracking_uri(workdir),
        "--default-artifact-root",
        (workdir / "mlartifacts").as_uri(),
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    # MLflow 3.17's UI opens on its GenAI views unless told the workflow (the experiments' kind tag alone does not)
    print(f"MLflow UI on http://{args.host}:{args.port}/#/experiments?workflowType=machine_learning (Ctrl-C to stop)")
    return serve(cmd)
