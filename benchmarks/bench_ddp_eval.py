"""Sharded evaluation: ``evaluate.class_probs(..., distributed=True)`` under 2 gloo ranks on the CPU against
one process evaluating the whole split.

    python benchmarks/bench_ddp_eval.py [--quick] [--repeats R] [--json FILE]

A fixed model (ResNet-10, random weights, seed 0, 100 classes) and a fixed in-memory split (``TensorImages``,
seeded). Two rank processes (1 intra-op thread each) stay up for the whole run and evaluate on a signal from this
process, which in between evaluates the whole split itself, alternately with 2 threads (the same cores as the two
ranks: the fair comparison) and with 1 thread (one rank's share: the ideal is half its time). Each rank times its
call from a barrier to the end of the gather; the wall time of a sharded evaluation is the slower rank's.

Rows: ``ddp_eval`` images evaluated per rank (the busier rank) against one process (target 0.5);
``ddp_eval_wall`` 2 ranks × 1 thread against 1 process × 2 threads; ``ddp_eval_wall_1thread`` against 1 process
× 1 thread; ``ddp_eval_max_diff`` the largest difference between the gathered probabilities and one process's
(the run fails if the predictions differ).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import print_table, row, spread, write_json  # noqa: E402

WORLD = 2


def fixture(n: int, size: int):
    """The model and split every process builds alike: ResNet-10 with seeded random weights, seeded images."""
    from torchvision.models.resnet import BasicBlock, ResNet

    from harness.data.base import TensorImages
    from harness.models.paper import ResNet10

    torch.manual_seed(0)
    model = ResNet10(ResNet(BasicBlock, [1, 1, 1, 1], num_classes=100)).eval()
    g = torch.Generator().manual_seed(1)
    images = TensorImages(torch.rand(n, 3, size, size, generator=g), np.arange(n) % 100, [str(i) for i in range(n)])
    seen = [0]
    model.register_forward_pre_hook(lambda _, args: seen.__setitem__(0, seen[0] + len(args[0])))
    return model, images, seen


def rank_main(rank: int, port: int, n: int, size: int, batch: int, go, results) -> None:
    """One rank: join the gloo group, then evaluate the split sharded each time ``go`` says so."""
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    from harness.core import distributed
    from harness.engine.evaluate import class_probs

    distributed.init_from_env()
    model, images, seen = fixture(n, size)
    while True:
        command = go[rank].get()  # blocks without spinning while the one-process reference runs
        if command is None:
            break
        seen[0] = 0
        torch.distributed.barrier()
        start = time.perf_counter()
        probs = class_probs(model, images, torch.device("cpu"), batch_size=batch, distributed=True)
        elapsed = time.perf_counter() - start
        results.put((rank, elapsed, seen[0], probs if rank == 0 else None))
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(quick: bool, repeats: int | None = None) -> list[dict]:
    from harness.engine.evaluate import class_probs

    n, size, batch = (256, 64, 64) if quick else (512, 128, 64)
    repeats = repeats or 7
    ctx = torch.multiprocessing.get_context("spawn")
    go, results = [ctx.Queue() for _ in range(WORLD)], ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=rank_main, args=(r, port, n, size, batch, go, results), daemon=True) for r in range(WORLD)
    ]
    for p in procs:
        p.start()
    model, images, seen = fixture(n, size)
    threads = torch.get_num_threads()

    def sharded():
        for q in go:
            q.put("eval")
        got = sorted((results.get(timeout=600) for _ in range(WORLD)), key=lambda r: r[0])
        return max(r[1] for r in got), [r[2] for r in got], got[0][3]

    def one_process(n_threads: int):
        torch.set_num_threads(n_threads)
        seen[0] = 0
        start = time.perf_counter()
        probs = class_probs(model, images, torch.device("cpu"), batch_size=batch)
        elapsed = time.perf_counter() - start
        torch.set_num_threads(threads)
        return elapsed, seen[0], probs

    try:
        sharded(), one_process(WORLD), one_process(1)  # warm-up
        t_ranks, t_two, t_one, per_rank, diffs = [], [], [], [], []
        for i in range(repeats):  # interleaved, the order rotating
            for step in [("ranks", "two", "one"), ("two", "one", "ranks"), ("one", "ranks", "two")][i % 3]:
                if step == "ranks":
                    t, counts, gathered = sharded()
                    t_ranks.append(t)
                    per_rank.append(counts)
                elif step == "two":
                    t, total, single = one_process(WORLD)
                    t_two.append(t)
                else:
                    t_one.append(one_process(1)[0])
            diffs.append(float(np.abs(gathered - single).max()))
            if not (gathered.argmax(1) == single.argmax(1)).all() or diffs[-1] > 1e-4:
                raise AssertionError(f"the gathered predictions differ from one process's (max {diffs[-1]:.2e})")
    finally:
        for q in go:
            q.put(None)
        for p in procs:
            p.join(timeout=60)
    if any(sorted(c) != [n // WORLD] * WORLD for c in per_rank) or total != n:
        raise AssertionError(f"images per rank {per_rank} of {n} (one process: {total})")
    busiest = max(max(c) for c in per_rank)
    what = f"ResNet-10 random weights, {n} in-memory images {size}px, batch {batch}, {repeats} interleaved repeats"
    med = statistics.median
    return [
        row(
            "ddp_eval",
            f"images evaluated per rank, 2 gloo ranks vs one process ({what})",
            "images",
            busiest,
            n,
            busiest / n,
            0.5,
            "lower",
        ),
        row(
            "ddp_eval_wall",
            "sharded evaluation wall time, 2 ranks × 1 thread vs 1 process × 2 threads (the same "
            "2 cores; slower rank, barrier to end of gather)",
            "s",
            med(t_ranks),
            med(t_two),
            med(t_ranks) / med(t_two),
            1.0,
            "lower",
            spread(t_ranks, t_two),
        ),
        row(
            "ddp_eval_wall_1thread",
            "sharded evaluation wall time, 2 ranks × 1 thread vs 1 process × 1 thread "
            "(one rank's share of the cores; ideal 0.5)",
            "s",
            med(t_ranks),
            med(t_one),
            med(t_ranks) / med(t_one),
            0.6,
            "lower",
            spread(t_ranks, t_one),
        ),
        row(
            "ddp_eval_max_diff",
            "max |p| difference, gathered probabilities vs one process's (argmax equal)",
            "prob",
            max(diffs),
            0,
            None,
            None,
            "lower",
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = measure(args.quick, args.repeats)
    print_table(rows)
    write_json(rows, args.json)


if __name__ == "__main__":
    main()
