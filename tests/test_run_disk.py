"""A finished run keeps only what reuse needs, releases its evaluation loaders, and reports its
disk use."""

import torch
from torch.utils.data import DataLoader

from harness.config import load_config
from harness.core.io import write_json
from harness.runs.cleanup import SELECTED, folder_bytes, prune_finished_run, release_loaders, run_disk_usage
from harness.runs.paths import RUN_IDS, run_config_hash


def fake_run_folder(folder):
    model = torch.nn.Linear(64, 64)
    optim = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 64)).sum().backward()
    optim.step()
    best = {k: v.clone() + 1 for k, v in model.state_dict().items()}
    folder.mkdir(parents=True)
    torch.save(
        {"trainer": {"model": model.state_dict(), "optimizer": optim.state_dict()}, "state": {"best_state": best}},
        folder / "checkpoint.pt",
    )
    write_json(folder / RUN_IDS, {"sqlite:///x": "abc"})
    return best


def test_a_finished_run_keeps_no_optimizer_state(tmp_path):
    fake_run_folder(tmp_path / "logged")
    sizes = prune_finished_run(tmp_path / "logged", model_logged=True)
    assert sorted(p.name for p in (tmp_path / "logged").iterdir()) == [RUN_IDS]
    assert sizes["after"] < sizes["before"] / 10

    best = fake_run_folder(tmp_path / "not_logged")
    prune_finished_run(tmp_path / "not_logged", model_logged=False)
    assert sorted(p.name for p in (tmp_path / "not_logged").iterdir()) == [RUN_IDS, SELECTED]
    kept = torch.load(tmp_path / "not_logged" / SELECTED, weights_only=True)
    assert kept.keys() == best.keys() and all(torch.equal(kept[k], best[k]) for k in best)  # the selected weights


def test_run_disk_usage_counts_the_runs_folder_and_artifacts(tmp_path):
    cfg = load_config("digits_lt_tiny")
    folder = tmp_path / "cache" / "runs" / f"{cfg.name}-plain-seed0-{run_config_hash(cfg, 'plain')}"
    fake_run_folder(folder)
    art = tmp_path / "mlartifacts" / cfg.name / "abc" / "artifacts"
    art.mkdir(parents=True)
    (art / "preds.csv").write_bytes(b"x" * 1000)
    usage = run_disk_usage(tmp_path, cfg, "plain", 0)
    assert usage == {"cache": folder_bytes(folder), "artifacts": 1000, "total": folder_bytes(folder) + 1000}
    assert run_disk_usage(tmp_path, cfg, "plain", 1) == {"cache": 0, "artifacts": 0, "total": 0}


def test_release_loaders_ends_persistent_workers():
    loader = DataLoader(list(range(8)), batch_size=4, num_workers=1, persistent_workers=True)
    assert len(list(loader)) == 2
    workers = list(loader._iterator._workers)
    assert all(w.is_alive() for w in workers)
    kept = {"val": loader}
    assert release_loaders(kept) == 1 and kept == {}
    for w in workers:
        w.join(timeout=10)
    assert not any(w.is_alive() for w in workers)
