"""Every finished run's metric histories in a workdir's MLflow store, by method: what two runs of one config compare."""

from pathlib import Path


def metric_histories(workdir: Path) -> dict[str, dict[str, list[list]]]:
    from harness.runs.tracking import client

    c = client(Path(workdir))
    experiments = [e.experiment_id for e in c.search_experiments()]
    return {
        r.data.tags["method"]: {
            k: [[m.step, m.value] for m in c.get_metric_history(r.info.run_id, k)] for k in r.data.metrics
        }
        for r in c.search_runs(experiments, filter_string="tags.method != ''")
    }
