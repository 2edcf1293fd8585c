"""MLflow → tidy pandas: the finished method runs of one experiment, their metric histories and artifacts.

A method run is a finished run tagged ``method`` that is neither a report (tag ``report=true``) nor a sweep
trial (a child run or one tagged ``sweep``). When a (method, loss, seed) was run more than once, the newest
finished run stands for it and the older ones are counted as superseded.
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from harness.core.errors import HarnessError

log = logging.getLogger("harness")

PARENT_TAG = "mlflow.parentRunId"


class NoRunsError(HarnessError, LookupError):
    """The experiment has no finished method runs."""


@dataclass
class RunSet:
    """The runs behind one report. ``runs`` has one row per run: run_id, method, loss, label, seed, start_time,
    and one column per final metric (raw fractions, as logged)."""

    experiment: str
    client: object
    runs: pd.DataFrame
    params: pd.DataFrame  # run_id-indexed, flattened config values as logged (strings)
    tags: pd.DataFrame  # run_id-indexed
    sweep_runs: pd.DataFrame  # every run of the experiment that belongs to a sweep (parents and trials)
    download_dir: Path
    workdir: Path
    superseded: int = 0
    artifact_uris: dict = field(default_factory=dict)  # run_id → artifact_uri
    _artifacts: dict = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.runs.label))

    def artifact(self, run_id: str, path: str) -> Path | None:
        """The local copy of one artifact file (downloaded once), or None if the run did not log it."""
        key = (run_id, path)
        if key not in self._artifacts:
            self._artifacts[key] = self._download(run_id, path)
        return self._artifacts[key]

    def _download(self, run_id: str, path: str) -> Path | None:
        local_root = local_artifact_root(self.artifact_uris.get(run_id, ""))
        if local_root is not None:  # a file store: read in place, no copy and no tracking-server round trips
            local = local_root / path
            return local if local.is_file() else None
        parent = str(Path(path).parent) if "/" in path else None
        listed = {f.path for f in self.client.list_artifacts(run_id, parent)}
        if path not in listed:
            return None
        dst = self.download_dir / run_id
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, path, str(dst)))

    def frame_artifact(self, path: str, run_ids: list[str] | None = None) -> pd.DataFrame:
        """A CSV artifact of every run that has it, stacked, with the run's id, label and seed in front."""
        frames = []
        for row in self.runs.itertuples():
            if run_ids is not None and row.run_id not in run_ids:
                continue
            local = self.artifact(row.run_id, path)
            if local is not None:
                frames.append(pd.read_csv(local).assign(run_id=row.run_id, label=row.label, seed=row.seed))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def history(self, keys: list[str]) -> pd.DataFrame:
        """Per-step metric values of every run: run_id, label, seed, key, step, value."""
        rows = []
        for run in self.runs.itertuples():
            for key in keys:
                for m in self.client.get_metric_history(run.run_id, key):
                    rows.append((run.run_id, run.label, run.seed, key, m.step, m.value))
        return pd.DataFrame(rows, columns=["run_id", "label", "seed", "key", "step", "value"])

    def config(self, run_id: str) -> dict:
        local = self.artifact(run_id, "config.yaml")
        return yaml.safe_load(local.read_text()) if local else {}

    def method_order(self) -> list[str]:
        """The experiment's own method order (from its logged config), then any others alphabetically."""
        listed = []
        for value in self.params.get("methods", pd.Series(dtype=str)).dropna().unique():
            try:
                listed += [m for m in ast.literal_eval(value) if m not in listed]
            except (ValueError, SyntaxError):
                continue
        present = list(self.runs.method.unique())
        return [m for m in listed if m in present] + sorted(m for m in present if m not in listed)


def local_artifact_root(uri: str) -> Path | None:
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri:
        return Path(uri)
    return None


def search_all(client, experiment: str) -> pd.DataFrame:
    """Every run of the experiment as mlflow.search_runs' wide frame (metrics.*, params.*, tags.*)."""
    from harness.runs.tracking import runs_frame

    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return pd.DataFrame()
    return runs_frame(client, [exp.experiment_id])


def is_sweep_run(frame: pd.DataFrame) -> pd.Series:
    parents = set(frame.get(f"tags.{PARENT_TAG}", pd.Series(dtype=str)).dropna())
    child = frame.get(f"tags.{PARENT_TAG}", pd.Series(index=frame.index, dtype=object)).notna()
    tagged = frame.get("tags.sweep", pd.Series(index=frame.index, dtype=object)).notna()
    return child | tagged | frame.run_id.isin(parents)


def method_runs(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or "tags.method" not in frame:
        return frame.iloc[0:0]
    report = frame.get("tags.report", pd.Series(index=frame.index, dtype=object)).astype(str).str.lower() == "true"
    keep = frame["tags.method"].notna() & (frame.status == "FINISHED") & ~report & ~is_sweep_run(frame)
    return frame[keep]


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: identity columns then the final metrics, with the 'metrics.' prefix dropped."""
    loss = frame.get("params.train.loss", pd.Series("ce", index=frame.index)).fillna("ce")
    out = pd.DataFrame(
        {
            "run_id": frame.run_id,
            "method": frame["tags.method"],
            "loss": loss,
            "seed": frame["tags.seed"].astype(int),
            "start_time": frame.start_time,
        }
    )
    label_with_loss = out.loss.nunique() > 1
    out["label"] = out.method + (" (" + out.loss + ")" if label_with_loss else "")
    metrics = frame[[c for c in frame.columns if c.startswith("metrics.")]]
    metrics.columns = [c[len("metrics.") :] for c in metrics.columns]
    return pd.concat([out, metrics], axis=1).reset_index(drop=True)


def newest_per_seed(runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    ordered = runs.sort_values("start_time", ascending=False)
    newest = ordered.drop_duplicates(["method", "loss", "seed"])
    return newest, len(runs) - len(newest)


def prefixed(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    cols = [c for c in frame.columns if c.startswith(prefix)]
    out = frame[["run_id", *cols]].set_index("run_id")
    out.columns = [c[len(prefix) :] for c in cols]
    return out


def collect(experiment: str, workdir: Path, download_dir: Path) -> RunSet:
    """The finished method runs of ``experiment``, ordered by the experiment's method list, then seed."""
    from harness.runs.tracking import client as tracking_client

    c = tracking_client(Path(workdir))
    everything = search_all(c, experiment)
    found = method_runs(everything)
    if found.empty:
        raise NoRunsError(
            f"no finished runs in experiment {experiment!r} of {workdir}; "
            f"run `harness run --experiment {experiment}` first"
        )
    runs, superseded = newest_per_seed(tidy(found))
    if superseded:
        log.info("%d older runs of the same (method, loss, seed) superseded by newer ones", superseded)
    params, tags = prefixed(found, "params."), prefixed(found, "tags.")
    sweeps = everything[is_sweep_run(everything)] if not everything.empty else everything
    rs = RunSet(
        experiment,
        c,
        runs,
        params.loc[runs.run_id],
        tags.loc[runs.run_id],
        sweeps,
        Path(download_dir),
        Path(workdir),
        superseded,
        dict(zip(found.run_id, found.artifact_uri)),
    )
    rank = {m: i for i, m in enumerate(rs.method_order())}
    ordered = runs.assign(_r=runs.method.map(rank), _ce=runs.loss != "ce")  # plain CE before other losses
    rs.runs = ordered.sort_values(["_r", "_ce", "loss", "seed"]).drop(columns=["_r", "_ce"]).reset_index(drop=True)
    return rs


def pool_scores_from_cache(rs: RunSet) -> pd.DataFrame | None:
    """For runs logged before ``spectrum/scores.csv`` existed: the scored pool from the workdir cache, found
    through the hashes of the first synthetic run's config. None when that cache is gone."""
    from harness.config import Config, ConfigError, build
    from harness.config.keys import pool_key, scorer_key
    from harness.core.io import read_jsonl
    from harness.core.workdir import cache_dir
    from harness.phases.filter import apply_filter
    from harness.phases.spectrum import read_manifest

    synthetic = rs.runs[rs.runs.get("spectrum/kept", pd.Series(dtype=float)).notna()]
    for run_id in synthetic.run_id:
        try:
            cfg = build(Config, rs.config(run_id))
        except ConfigError:
            continue
        pool_dir = cache_dir(rs.workdir) / "pool" / pool_key(cfg)
        scores_path = pool_dir / f"scores-{scorer_key(cfg)}.jsonl"
        if not scores_path.exists():
            continue
        scores = pd.DataFrame(read_jsonl(scores_path)).drop_duplicates("key", keep="last")
        pool = read_manifest(pool_dir).merge(scores, on="key")
        return apply_filter(pool, cfg.filter.threshold)
    return None


def sweep_objective(parent: pd.DataFrame, trials: pd.DataFrame) -> str | None:
    """The metric column a sweep's trials hold their objective in: ``objective/0`` (harness/sweep.py), else
    ``best/<the parent's objective tag>``, else the first ``best/val`` metric the trials logged."""
    if "metrics.objective/0" in trials and trials["metrics.objective/0"].notna().any():
        return "objective/0"
    tagged = parent.get("tags.objective", pd.Series(dtype=str)).dropna()
    if len(tagged) and f"metrics.best/{tagged.iloc[0].split(',')[0]}" in trials:
        return f"best/{tagged.iloc[0].split(',')[0]}"
    candidates = sorted(c[len("metrics.") :] for c in trials if c.startswith("metrics.best/val"))
    return candidates[0] if candidates else None
