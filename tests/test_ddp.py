"""`harness run` under torchrun (DDP over 2 CPU processes, gloo): each rank trains on its own half of every epoch,
gradients are averaged, and only rank 0 tracks the run in MLflow; evaluation and retrieval's embeddings are sharded
and gathered."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from quick import DIGITS, as_sets
from torch.nn.parallel import DistributedDataParallel

from harness.config import OptimConfig
from harness.core.io import read_jsonl
from harness.data.base import TensorImages
from harness.engine.train import Part, Trainer, batches, rank_shard
from harness.models.base import HarnessModel
from harness.phases.spectrum import read_manifest

N, PER_RANK_BATCH = 8, 2
OPT = OptimConfig(epochs=2, batch_size=PER_RANK_BATCH, lr=0.1, optimizer="adam")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_part() -> Part:
    """Image i is filled with the value i, so a batch says which samples it holds."""
    images = torch.arange(N, dtype=torch.float32).view(N, 1, 1, 1).expand(N, 1, 2, 2) / N
    return Part(TensorImages(images, np.arange(N) % 3, [str(i) for i in range(N)]), np.arange(N))


def flyp_part() -> Part:
    g = torch.Generator().manual_seed(2)
    return Part(
        TensorImages(torch.rand(N, 3, 8, 8, generator=g), np.arange(N) % 3, [str(i) for i in range(N)]), np.arange(N)
    )


class Plain(HarnessModel, torch.nn.Sequential):
    """A plain classifier with the trainer's capability defaults."""


class OwnLoss(HarnessModel, torch.nn.Sequential):
    """A model that trains with its own objective (as FLYP does)."""

    own_loss = True

    def loss(self, x, y, templates):
        return torch.nn.functional.cross_entropy(self(x), y)


def tiny_model(kind: str = "plain") -> torch.nn.Module:
    if kind == "flyp":  # the tiny random CLIP, fine-tuned with FLYP's contrastive loss
        from harness.models.paper import ClipFlyp
        from harness.weights.tiny import tiny_clip

        clip, processor = tiny_clip(seed=0, image_size=8)
        return ClipFlyp(clip, processor.tokenizer, ["cat", "dog", "fox"], ["a photo of {name}."])
    torch.manual_seed(0)
    return (OwnLoss if kind == "own_loss" else Plain)(torch.nn.Flatten(), torch.nn.Linear(4, 3))


def train(opt: OptimConfig, distributed: bool, kind: str = "plain") -> tuple[Trainer, list[float]]:
    model = tiny_model(kind)  # FLYP: each rank's contrastive loss takes its negatives from the global batch
    if kind == "flyp":  # Adam would turn float noise in CLIP's near-zero gradients (attention keys) into full steps
        opt = OptimConfig(**{**vars(opt), "optimizer": "sgd"})
    trainer = Trainer(model, opt, opt.epochs, None, seed=0, device=torch.device("cpu"), distributed=distributed)
    part = flyp_part() if kind == "flyp" else tiny_part()
    return trainer, [trainer.train_epoch([part], epoch) for epoch in range(opt.epochs)]


KINDS = ("plain", "own_loss", "flyp")


def train_on_rank(rank: int, out: str, kind: str) -> None:
    torch.manual_seed(0)
    trainer, losses = train(OPT, distributed=True, kind=kind)
    assert trainer.world == 2 and isinstance(trainer.net, DistributedDataParallel)  # every model, own loss or not
    assert (trainer.net.module is trainer.model) == (kind == "plain")  # a model's own loss: DDP wraps a loss module
    torch.save({"losses": losses, "model": trainer.state()["model"]}, f"{out}/{kind}{rank}.pt")


def rank_main(rank: int, port: int, out: str) -> None:
    """One rank of the two that every test below reads: the process group starts once (each start imports torch
    and the harness in two fresh processes) and runs each test's part in turn."""
    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    from harness.core import distributed

    distributed.init_from_env()
    try:
        batch_rows = batches(
            [tiny_part()], PER_RANK_BATCH, torch.Generator().manual_seed(0), torch.device("cpu"), rank=rank, world=2
        )
        torch.save([int(v) for x, _ in batch_rows for v in (x[:, 0, 0, 0] * N).round()], f"{out}/seen{rank}.pt")
        for kind in KINDS:
            train_on_rank(rank, out, kind)
        embed_on_rank(rank, out)
        eval_on_rank(rank, out)  # last: it replaces all_gather_object
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> Path:
    """The folder the two ranks wrote their results to."""
    out = tmp_path_factory.mktemp("ranks")
    torch.multiprocessing.spawn(rank_main, args=(free_port(), str(out)), nprocs=2)
    return out


@pytest.mark.slow
@pytest.mark.xdist_group("ddp-ranks")  # one worker starts the ranks for every test that reads them
@pytest.mark.parametrize("kind", KINDS)
def test_two_ranks_match_one_process_with_the_global_batch(ranks, kind):
    seen = [torch.load(ranks / f"seen{r}.pt") for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == N // 2 and sorted(seen[0] + seen[1]) == list(range(N))
    r0, r1 = (torch.load(ranks / f"{kind}{r}.pt", weights_only=True) for r in (0, 1))
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k  # gradients were averaged: ranks never drift
    torch.manual_seed(0)
    one, losses = train(OptimConfig(**{**vars(OPT), "batch_size": 2 * PER_RANK_BATCH}), False, kind)
    for k, v in one.model.state_dict().items():
        assert torch.allclose(r0["model"][k], v, atol=1e-5), k
    assert r0["losses"] == r1["losses"] and np.allclose(r0["losses"], losses, atol=1e-5)
    before = tiny_model(kind).state_dict()
    assert any(not torch.equal(v, before[k]) for k, v in one.model.state_dict().items())  # it trained


def test_shards_pad_to_equal_length():
    shards = [rank_shard(torch.arange(7), r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3] and set(torch.cat(shards).tolist()) == set(range(7))


QUICK = as_sets([*DIGITS, "train.epochs=2"])  # two epochs: the train/loss steps counted below
METHODS = ["plain", "discl_diverse_to_specific"]  # the DisCL run needs rank 0's scored pool on rank 1 too


@pytest.mark.slow
def test_harness_run_under_torchrun(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "harness.cli",
        "run",
        "--experiment",
        "digits_lt_tiny",
        "--seed",
        "0",
        "--quiet",
        "--workdir",
        str(tmp_path),
        *QUICK,
        *(a for m in METHODS for a in ("--method", m)),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("MLflow runs:") == 1  # only rank 0 reports
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("digits_lt_tiny")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.method != ''")
    assert sorted(r.info.run_name for r in runs) == [f"{m}-seed0" for m in sorted(METHODS)]  # one run each
    for run in runs:
        assert run.info.status == "FINISHED"
        assert {"test/acc", "test/acc_many", "test/acc_medium", "test/acc_few"} <= set(run.data.metrics)
        assert {"taunorm/tau", "taunorm/test/acc"} <= set(run.data.metrics)  # measured on both ranks, rank 0 logs
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [0, 1]
    discl = next(r for r in runs if r.data.tags["method"].startswith("discl"))
    assert client.get_metric_history(discl.info.run_id, "curriculum/synthetic")[0].value > 0  # trained on the pool
    (base,) = (tmp_path / "cache" / "base").iterdir()  # the ranks trained one base model together
    assert (base / "model.safetensors").exists() and not (base / "checkpoint.pt").exists()
    (pool,) = (tmp_path / "cache" / "pool").iterdir()
    shards = sorted(pool.glob("scores-*.shard*.jsonl"))
    keys = [r["key"] for f in shards for r in read_jsonl(f)]
    assert len(shards) == 2 and all(read_jsonl(f) for f in shards)  # each rank scored its block of sources
    assert sorted(keys) == sorted(read_manifest(pool).key)  # every synthetic image scored once


class CountingModel(torch.nn.Module):
    """Scores an image by its pixel values; counts how many images it saw."""

    def __init__(self):
        super().__init__()
        self.seen = 0
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))

    def forward(self, x):
        self.seen += len(x)
        return self.net(x)


def eval_images(n: int = 9) -> TensorImages:
    g = torch.Generator().manual_seed(1)
    return TensorImages(torch.rand(n, 1, 2, 2, generator=g), np.arange(n) % 3, [str(i) for i in range(n)])


def no_pickled_gather(*args, **kwargs):
    raise AssertionError("evaluation outputs are gathered as tensors, not pickled objects")


EVAL_CASES = (("memory", None, 9), ("loader", "identity", 9), ("one image", None, 1))


def eval_on_rank(rank: int, out: str) -> None:
    from torchvision.transforms import v2

    from harness.engine.evaluate import class_probs

    torch.distributed.all_gather_object = no_pickled_gather
    results = {}
    for name, transform, n in EVAL_CASES:
        model = CountingModel()
        transform = v2.Identity() if transform else None
        probs = class_probs(
            model, eval_images(n), torch.device("cpu"), batch_size=2, transform=transform, distributed=True
        )
        results[name] = (probs, model.seen)
    torch.save(results, f"{out}/eval{rank}.pt")


@pytest.mark.slow
@pytest.mark.xdist_group("ddp-ranks")
def test_sharded_evaluation_equals_one_process(ranks):
    """Under torchrun each rank evaluates half of a split (9 images: 5 and 4; 1 image: 1 and 0) and every rank ends
    with the whole split's probabilities, equal to one process's, gathered as tensors (gloo runs
    all_gather_single / all_gather_into_tensor on CPU tensors)."""
    from torchvision.transforms import v2

    from harness.engine.evaluate import class_probs

    results = [torch.load(ranks / f"eval{r}.pt", weights_only=False) for r in (0, 1)]
    for name, transform, n in EVAL_CASES:
        transform = v2.Identity() if transform else None
        one = class_probs(CountingModel(), eval_images(n), torch.device("cpu"), batch_size=2, transform=transform)
        assert sorted(r[name][1] for r in results) == [n // 2, n - n // 2]
        for r in results:
            assert r[name][0].shape == one.shape == (n, 3) and r[name][0].dtype == np.float32
            assert np.allclose(r[name][0], one, atol=1e-6)


# ---- retrieval's embeddings: each rank embeds its own block of the images, every rank gets all of them, in order,
# equal to one process's, and rank 0 writes the cache that a later call (any rank) only reads

EMBED_N = 7  # not a multiple of the world: the last rank's block is short


class PixelScorer:
    """An embedding that says which image it came from: its mean pixel and 1. Counts what it embedded."""

    def __init__(self):
        self.embedded = 0

    def embed_images(self, images):
        self.embedded += len(images)
        return torch.tensor([[float(np.asarray(img).mean()), 1.0] for img in images])


def embed_images() -> TensorImages:
    pixels = torch.arange(EMBED_N, dtype=torch.float32).view(EMBED_N, 1, 1, 1).expand(EMBED_N, 1, 2, 2) / EMBED_N
    return TensorImages(pixels, np.zeros(EMBED_N, np.int64), [str(i) for i in range(EMBED_N)])


def embed_on_rank(rank: int, out: str) -> None:
    from harness.phases.near_duplicates import embed_cached

    scorer, rows, cache = PixelScorer(), np.arange(EMBED_N), Path(out) / "embeddings"
    first = embed_cached(scorer, embed_images(), rows, {"set": "pixels"}, cache, "pixels")
    done_first = scorer.embedded
    again = embed_cached(scorer, embed_images(), rows, {"set": "pixels"}, cache, "pixels")
    result = {"first": first.tolist(), "again": again.tolist(), "embedded": done_first, "after": scorer.embedded}
    (Path(out) / f"embed{rank}.json").write_text(json.dumps(result))


@pytest.mark.slow
@pytest.mark.xdist_group("ddp-ranks")
def test_ranks_embed_a_block_each_and_all_get_one_process_embeddings(ranks):
    from harness.phases.near_duplicates import embed_rows

    alone = embed_rows(PixelScorer(), embed_images(), np.arange(EMBED_N), "pixels")
    results = [json.loads((ranks / f"embed{r}.json").read_text()) for r in (0, 1)]
    for r in results:
        assert np.allclose(r["first"], alone) and np.allclose(r["again"], alone)
        assert r["after"] == r["embedded"], "the second call read the cache"
    assert [r["embedded"] for r in results] == [4, 3], "each rank embedded its own block"
    (cached,) = (ranks / "embeddings" / "retrieval").glob("emb-*.npy")
    assert np.allclose(np.load(cached), alone)
