"""``harness ui``: the MLflow UI on the workdir's store, served until this process ends; on this machine only
unless ``--expose`` says otherwise, since MLflow's UI has no login."""

from __future__ import annotations

import ipaddress
import os
import sys

from harness.cli.options import add_common
from harness.cli.supervisor import serve
from harness.core.errors import UserError
from harness.core.workdir import resolve_workdir, tracking_uri


def add_parser(sub) -> None:
    s = sub.add_parser("ui", help="the MLflow UI on the workdir's store")
    s.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    s.add_argument("--port", type=int, default=5000)
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (default 1: one person's UI; MLflow's own default of 4 starts slower and holds 4× "
        "the memory)",
    )
    s.add_argument(
        "--expose",
        action="store_true",
        help="allow a --host other machines reach: MLflow's UI has no login, so anyone there can read and delete runs",
    )
    add_common(s)
    s.set_defaults(fn=cmd_ui)


def cmd_ui(args) -> int:
    from harness.runs.tracking import client

    check_exposure(args.host, args.port, args.expose)
    if args.workers < 1:
        raise UserError(f"harness ui --workers {args.workers}: give 1 or more server processes")
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
        "--workers",
        str(args.workers),
    ]
    # MLflow 3.17's UI opens on its GenAI views unless told the workflow (the experiments' kind tag alone does not)
    print(f"MLflow UI on http://{args.host}:{args.port}/#/experiments?workflowType=machine_learning (Ctrl-C to stop)")
    # MLflow's job runner (7 huey consumers) serves its GenAI features (LLM scorers, prompt optimisation), which a
    # training harness does not use: without it the UI is up in ~9 s instead of ~14 s, in 2 processes instead of 10
    env = {**os.environ}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return serve(cmd, env=env)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False


def check_exposure(host: str, port: int, expose: bool) -> None:
    """Refuse an address other machines reach unless ``--expose``; with it, say that the UI has no login."""
    if is_loopback(host):
        return
    if not expose:
        raise UserError(
            f"harness ui --host {host}: MLflow's UI has no login, so anyone who reaches {host} could read and delete "
            f"every run; add --expose to serve it there anyway, or keep 127.0.0.1 and tunnel to it "
            f"(ssh -L {port}:127.0.0.1:{port} THIS_HOST)"
        )
    print(
        f"harness: warning: serving the MLflow UI on {host}, with no login: anyone who reaches it can read and "
        "delete every run in this workdir",
        file=sys.stderr,
    )
