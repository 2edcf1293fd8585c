"""Issue 19: the recipe as a checked table (`harness recipe`), and the items it checks that change our settings:
iWildCam's train crop (6), ImageNet-LT's weight decay (9) and FLYP's fp32 logits under autocast (10)."""

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode, v2

from harness.config import load_config
from harness.transforms import build_transform

# --------------------------------------------------------------------------- item 6: iWildCam's train crop


@pytest.mark.parametrize("experiment", ["iwildcam_discl", "iwildcam_suite"])
def test_iwildcam_trains_on_flyps_random_resized_crop(experiment):
    cfg = load_config(experiment)
    train = build_transform(cfg.data.train_transform, cfg.data.image_size)
    crops = [t for t in train.transforms if isinstance(t, v2.RandomResizedCrop)]
    assert len(crops) == 1 and not any(isinstance(t, v2.CenterCrop) for t in train.transforms)
    crop = crops[0]
    assert tuple(crop.size) == (224, 224)
    assert tuple(crop.scale) == (0.9, 1.0)
    assert crop.interpolation == InterpolationMode.BICUBIC
    # a 4:3 image (a 16:9 one is outside the crop's ratio range at scale ≥ 0.9, and torchvision then takes the
    # same fixed 4:3 centre crop every time, in FLYP's code too)
    image = torch.randint(0, 255, (3, 300, 400), dtype=torch.uint8)
    torch.manual_seed(0)
    a, b = train(image), train(image)
    assert a.shape == b.shape == (3, 224, 224) and a.dtype == torch.uint8
    assert not torch.equal(a, b)  # random, unlike the eval centre crop
    evaluate = build_transform(cfg.data.eval_transform, cfg.data.image_size)
    assert torch.equal(evaluate(image), evaluate(image))


# --------------------------------------------------------------------------- item 9: ImageNet-LT's optimizer


@pytest.mark.parametrize("experiment", ["imagenet_lt_discl", "imagenet_lt_suite", "imagenet_lt_bs_suite"])
def test_imagenet_lt_fine_tunes_with_adam_and_weight_decay_1e_5(experiment):
    from harness.train import make_optimizer

    cfg = load_config(experiment)
    optimizer = make_optimizer(torch.nn.Linear(3, 2), cfg.train)
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(1e-5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


# --------------------------------------------------------------------------- item 10: FLYP's logits in fp32


def tiny_flyp():
    from harness.models import build_model

    cfg = load_config("digits_lt_tiny", ["model.name=clip_flyp", "model.params={tiny: true}", "train.init=base"])
    return build_model(cfg, 3, 3, ["cat", "dog", "bird"])


def test_flyp_logits_loss_and_probe_are_fp32_under_bf16_autocast():
    from harness.data.base import TensorImages
    from harness.evaluate import class_probs

    model = tiny_flyp()
    x = torch.rand(4, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.train()
        loss = model.loss(x, y)
        model.eval()
        logits = model(x)
    assert logits.dtype == torch.float32
    assert loss.dtype == torch.float32
    with torch.no_grad():
        reference = model(x)  # fp32 throughout
    # the features still come from bf16 matmuls; the scaled cosines themselves lose no digits to bf16
    assert torch.allclose(logits.detach(), reference, atol=0.5)
    probs = class_probs(
        model, TensorImages(x, np.array([0, 1, 2, 0]), list("abcd")), torch.device("cpu"), amp=torch.bfloat16
    )
    assert probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
