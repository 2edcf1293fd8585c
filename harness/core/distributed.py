"""The one place for distributed state, on ``torch.distributed``: which rank this process is, its device, and the
collectives the phases use (``barrier``, ``share``). Training under ``torchrun`` (DDP) joins a process group
(``init_from_env``); in a one-process run every helper is a no-op. Sharded generation needs no process group: its
shards meet through the pool folder (``phases.spectrum``), so ``rank_world`` reads torchrun's variables directly.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import torch

log = logging.getLogger("harness")

# Ranks > 0 wait in a barrier while rank 0 scores the synthetic pool, which can take hours at paper scale.
PROCESS_GROUP_TIMEOUT = timedelta(hours=12)


def init_from_env() -> None:
    """Join torchrun's process group (nccl on GPUs, gloo on CPUs) when WORLD_SIZE > 1; a no-op otherwise."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=PROCESS_GROUP_TIMEOUT)


def active() -> bool:
    """Whether this process trains as one rank of several."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return torch.distributed.get_rank() if active() else 0


def world() -> int:
    return torch.distributed.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        torch.distributed.barrier()


def share(obj):
    """Rank 0's ``obj`` on every rank (any picklable value)."""
    if not active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather_padded(local: torch.Tensor, length: int) -> torch.Tensor:
    """Every rank's ``local`` (its rows along dim 0, at most ``length``) as one tensor of shape
    ``(world, length, *local.shape[1:])``, rank r's rows first in ``[r]`` and zeros after them. One collective
    over a flat buffer (``all_gather_single``, or ``all_gather_into_tensor`` on a torch without it; gloo and
    nccl both run it), not pickled objects: a 115,846 × 1000 probability matrix is 463 MB. ``local`` must be on the
    backend's device (a GPU under nccl)."""
    padded = local.new_zeros((length, *local.shape[1:]))
    padded[: len(local)] = local
    out = local.new_empty((world() * length, *local.shape[1:]))
    gather = getattr(torch.distributed, "all_gather_single", None) or torch.distributed.all_gather_into_tensor
    gather(out, padded.contiguous())
    return out.view(world(), length, *local.shape[1:])


def rank_world() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) as torchrun and accelerate set them; (0, 1) otherwise."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return rank, world


def local_device(device: torch.device) -> torch.device:
    """Each process on a node takes its own GPU (LOCAL_RANK) when the config says plain ``cuda``."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        index = int(os.environ["LOCAL_RANK"]) % max(1, torch.cuda.device_count())
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return device


def pick_device(cfg) -> torch.device:
    """``cfg.device`` (``auto``: CUDA when there is one); on CUDA, TF32 for what fp32 work remains."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # what fp32 work remains (outside autocast) runs in TF32
        torch.backends.cudnn.allow_tf32 = True
    return device
