"""The input pipeline: uint8 decode and transforms in the loader, one loader kept across epochs, per-sample seeds
so the images do not depend on the worker count."""

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from harness.config import OptimConfig
from harness.data.base import FileImages
from harness.engine.train import EpochLoader, Part, Trainer, batches
from harness.models.base import HarnessModel


class Net(HarnessModel, torch.nn.Sequential):
    """A plain classifier with the trainer's capability defaults."""


def folder_of_images(tmp_path, n=6):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (30 + i, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return FileImages(paths, np.arange(n) % 2, [str(i) for i in range(n)], size=16)


AUGMENT = v2.Compose([v2.RandomResizedCrop(16), v2.RandomHorizontalFlip(), v2.ColorJitter(0.4, 0.4, 0.4)])


def epoch_images(images, workers, epochs=2):
    g = torch.Generator().manual_seed(0)
    loader = EpochLoader(4, workers, torch.device("cpu"), AUGMENT)
    parts = [Part(images, np.arange(len(images))), Part(images, np.array([0, 0, 1]))]
    out = [
        torch.cat([x for x, _ in batches(parts, 4, g, torch.device("cpu"), workers, transform=AUGMENT, loader=loader)])
        for _ in range(epochs)
    ]
    return out, loader


def test_random_transforms_do_not_depend_on_the_worker_count(tmp_path):
    images = folder_of_images(tmp_path)
    alone, _ = epoch_images(images, workers=0)
    with_workers, loader = epoch_images(images, workers=2)
    assert all(a.shape == (9, 3, 16, 16) and a.dtype == torch.float32 for a in alone)
    assert all(torch.equal(a, b) for a, b in zip(alone, with_workers))
    assert not torch.equal(alone[0], alone[1])  # a fresh draw each epoch
    assert loader.loader.persistent_workers and loader.loader.num_workers == 2


def test_the_trainer_keeps_one_loader_for_the_run(tmp_path):
    images = folder_of_images(tmp_path)
    torch.manual_seed(0)
    model = Net(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))
    trainer = Trainer(model, OptimConfig(batch_size=4), 2, None, 0, torch.device("cpu"), transform=AUGMENT)
    trainer.train_epoch([Part(images, np.arange(6))], 0)
    first = trainer.loader.loader
    trainer.train_epoch([Part(images, np.arange(3))], 1, max_steps=1)
    trainer.train_epoch([Part(images, np.arange(6))], 1)
    assert trainer.loader.loader is first and len(trainer.loader.splits) == 1


def test_short_shared_memory_gets_a_clear_error():
    import pytest

    from harness.data.base import DataError
    from harness.engine.train import clear_shm_errors

    with pytest.raises(DataError, match="ran out of shared memory.*--shm-size.*num_workers: 0"):
        with clear_shm_errors():
            raise RuntimeError(
                "DataLoader worker (pid 123) is killed by signal: Bus error. It is possible that "
                "dataloader's workers are out of shared memory."
            )
    with pytest.raises(RuntimeError, match="something else"):
        with clear_shm_errors():
            raise RuntimeError("something else")


def test_worker_count_defaults_to_this_process_share_of_the_cores(monkeypatch):
    import os

    from harness.data.base import default_workers

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_workers() == cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * cores))
    assert default_workers() == 1
