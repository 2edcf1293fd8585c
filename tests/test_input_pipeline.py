"""The input pipeline: the transforms a config names (checked at load), uint8 decode and transforms in the loader
for real and synthetic images alike and at evaluation, one loader kept across epochs, per-sample seeds so the images
do not depend on the worker count."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from harness.config import ConfigError, OptimConfig, load_config
from harness.data.base import FileImages
from harness.engine.evaluate import class_probs
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


@pytest.mark.parametrize(
    "spec, message",
    [
        ("[{RandomResizedCrp: {size: 16}}]", "did you mean RandomResizedCrop"),
        ("[{RandomResizedCrop: {size: 12}}]", "must end in uint8 images of 16×16"),
        ("[{Resize: {size: 16, interpolation: bicubc}}]", "interpolation 'bicubc'"),
        ("[{CenterCrop: {sise: 16}}]", "CenterCrop"),
    ],
)
def test_bad_transform_is_one_line(spec, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config("digits_lt_tiny", [f"data.train_transform={spec}"])
    assert "\n" not in str(e.value)


def test_real_and_synthetic_training_images_take_the_train_transform(tmp_path):
    """Both parts of an epoch, a real image and a synthetic one, reach the model through the same transform,
    as uint8 before the float conversion."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for name in ("real.jpg", "synthetic.png"):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(tmp_path / name)
        paths.append(tmp_path / name)
    real = FileImages([paths[0]], [0], ["r"], size=16)
    synthetic = FileImages([paths[1]], [1], ["s"], size=16)
    flip_crop = v2.Compose([v2.CenterCrop(16), v2.RandomHorizontalFlip(p=1.0)])
    seen = {}
    for x, y in batches(
        [Part(real, np.array([0])), Part(synthetic, np.array([0]))],
        2,
        torch.Generator(),
        torch.device("cpu"),
        transform=flip_crop,
    ):
        for xi, yi in zip(x, y):
            seen[int(yi)] = xi
    for label, images in ((0, real), (1, synthetic)):
        expected = flip_crop(images.decode(0)).float() / 255
        assert seen[label].dtype == torch.float32 and torch.equal(seen[label], expected)


def test_evaluation_takes_the_eval_transform(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((40, 30, 3), 7, dtype=np.uint8)).save(tmp_path / "a.png")
    images = FileImages([tmp_path / "a.png"], [0], ["a"], size=16)
    inputs = []

    def model(x):
        inputs.append(x)
        return torch.zeros(len(x), 2)

    model.eval = lambda: None
    class_probs(model, images, torch.device("cpu"), transform=v2.Compose([v2.CenterCrop(16)]))
    assert inputs[0].shape == (1, 3, 16, 16) and torch.allclose(inputs[0], torch.full_like(inputs[0], 7 / 255))
