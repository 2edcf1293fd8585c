"""ResNet-10, ResNet-50 and FLYP-CLIP: shapes, weight loading, the zero-shot head, FLYP's contrastive loss with
each sample's template, and FLYP's epoch: one pass over the (image, template) pairs."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torchvision.models.resnet import BasicBlock
from torchvision.transforms import v2

from harness.config import OptimConfig, load_config
from harness.data.base import TensorImages
from harness.engine.train import Part, Trainer
from harness.models.base import build_model
from harness.models.paper import ClipFlyp

NAMES = ["zebra", "wild boar", "tiger", "deer"]


def cfg_for(model, params="{}"):
    return load_config("digits_lt_tiny", [f"model.name={model}", f"model.params={params}"])


def test_resnet10_has_one_basic_block_per_stage():
    model = build_model(cfg_for("resnet10"), num_classes=7, channels=3)
    for stage in (model.net.layer1, model.net.layer2, model.net.layer3, model.net.layer4):
        assert len(stage) == 1 and isinstance(stage[0], BasicBlock)
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 7) and model.features(x).shape == (2, 512)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 7)  # grayscale input is broadcast to RGB
    n_params = sum(p.numel() for p in model.parameters())
    assert 4.8e6 < n_params < 5.0e6  # ResNet-10's 4.9 M parameters (ImageNet-LT's ResNet-10, 7-way head)


def test_resnet50_loads_a_local_trunk_and_keeps_its_own_head(tmp_path):
    from torchvision.models import resnet50

    source = resnet50(num_classes=10)
    save_file(source.state_dict(), str(tmp_path / "r50.safetensors"))
    model = build_model(cfg_for("resnet50", f"{{weights: {tmp_path / 'r50.safetensors'}}}"), 3, 3)
    assert torch.equal(model.net.conv1.weight, source.conv1.weight)
    assert model.head.out_features == 3
    with pytest.raises(FileNotFoundError, match="model.params.weights"):
        build_model(cfg_for("resnet50", f"{{weights: {tmp_path / 'missing.pth'}}}"), 3, 3)


@pytest.fixture(scope="module")
def flyp():
    torch.manual_seed(0)
    return build_model(
        cfg_for("clip_flyp", "{tiny: true, templates: ['a photo of {name}.', '{name} in the wild.']}"),
        len(NAMES),
        3,
        NAMES,
    )


def test_flyp_logits_are_scaled_cosines_to_the_zero_shot_head(flyp):
    flyp.eval()
    x = torch.rand(3, 3, 20, 20)  # any size: resized to CLIP's input inside
    with torch.no_grad():
        logits = flyp(x)
        tok = flyp_tokenizer()
        texts = [[t.format(name=n) for t in flyp.templates] for n in NAMES]
        per_class = []
        for prompts in texts:
            ids = tok(prompts, padding=True, return_tensors="pt")
            emb = F.normalize(flyp.clip.get_text_features(**ids).pooler_output, dim=-1).mean(0)
            per_class.append(F.normalize(emb, dim=0))
        head = torch.stack(per_class)
        pixels = F.interpolate(x, size=32, mode="bicubic", align_corners=False).clamp(0, 1)
        pixels = flyp.normalize(pixels)
        image = F.normalize(flyp.clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    expected = flyp.clip.logit_scale.exp() * image @ head.T
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    assert logits.shape == (3, len(NAMES))


def flyp_tokenizer():
    from harness.weights.tiny import tiny_clip_tokenizer

    return tiny_clip_tokenizer()


def test_flyp_loss_is_the_symmetric_contrastive_loss(flyp):
    single = ClipFlyp(flyp.clip, flyp_tokenizer(), NAMES, ["a photo of {name}."])
    single.train()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        loss = single.loss(x, y)
        ids = flyp_tokenizer()(
            [f"a photo of {NAMES[i]}." for i in y], padding="max_length", max_length=77, return_tensors="pt"
        )
        text = F.normalize(single.clip.get_text_features(**ids).pooler_output, dim=-1)
        logits = single.clip.logit_scale.exp() * single.features(x) @ text.T
        target = torch.arange(4)
        expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


SIX = ["zebra", "wild boar", "tiger", "deer", "fox", "bear"]


def tiny_flyp(templates=("a photo of {name}.", "{name} in the wild.")):
    torch.manual_seed(0)
    return build_model(cfg_for("clip_flyp", f"{{tiny: true, templates: {list(templates)}}}"), len(SIX), 3, SIX)


@pytest.mark.parametrize("transform", [None, v2.Resize(32)])  # in-memory batches | the DataLoader's
def test_flyp_epoch_is_one_pass_over_image_template_pairs(transform):
    """Every image once per template, each sample's template reaching the loss: 2 × 6 pairs at batch 4 is 3 steps
    (the old random template per image: 2). The trainer runs the model's own loss as the forward of the module it
    wraps."""
    flyp = tiny_flyp()
    images = TensorImages((torch.rand(6, 3, 32, 32) * 255).to(torch.uint8), np.arange(6), [str(i) for i in range(6)])
    seen, original = [], flyp.loss
    flyp.loss = lambda x, y, t: seen.append(list(zip(y.tolist(), t.tolist()))) or original(x, y, t)
    opt = OptimConfig(lr=1e-4, batch_size=4, optimizer="adamw", schedule="constant")
    trainer = Trainer(flyp, opt, 1, torch.zeros(6), seed=0, device=torch.device("cpu"), transform=transform)
    assert trainer.own_loss and trainer.net is not flyp
    trainer.train_epoch([Part(images, np.arange(6))], 0)
    del flyp.loss
    assert flyp.templates_per_image == 2
    assert trainer.step == len(seen) == math.ceil(2 * 6 / 4) == 3
    assert Counter(p for batch in seen for p in batch) == Counter((i, t) for i in range(6) for t in (0, 1))


def test_flyp_loss_uses_each_samples_template():
    two = tiny_flyp()
    wild = ClipFlyp(two.clip, flyp_tokenizer(), SIX, ["{name} in the wild."])
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(two.loss(x, y, torch.ones(4, dtype=torch.long)), wild.loss(x, y))
        with pytest.raises(ValueError, match="template index"):
            two.loss(x, y)


@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
def test_trainer_uses_the_model_loss_and_flyp_learns(flyp, tmp_path):
    torch.manual_seed(0)
    images = torch.rand(8, 3, 32, 32)
    labels = np.array([0, 1, 2, 3] * 2)
    images[labels == 0] *= 0.2  # make the classes separable
    images[labels == 1] = images[labels == 1] * 0.2 + 0.8
    part = [Part(TensorImages(images, labels, [str(i) for i in range(8)]), np.arange(8))]
    calls = []
    original = flyp.loss
    flyp.loss = lambda x, y, t: calls.append(len(y)) or original(x, y, t)
    trainer = Trainer(
        flyp,
        OptimConfig(lr=1e-3, batch_size=8, optimizer="adamw", schedule="constant"),
        30,
        torch.zeros(4),
        seed=0,
        device=torch.device("cpu"),
    )
    first = trainer.train_epoch(part, 0)
    for epoch in range(1, 30):
        last = trainer.train_epoch(part, epoch)
    del flyp.loss
    assert calls and calls[0] == 8 and len(calls) == 30 * 2 and last < first * 0.7  # 16 (image, template) pairs
    state = {k: v.contiguous() for k, v in flyp.state_dict().items()}
    assert not any(k.startswith("prompt_") for k in state)  # prompts are rebuilt, not saved
    save_file(state, str(tmp_path / "flyp.safetensors"))
    clone = build_model(cfg_for("clip_flyp", "{tiny: true}"), len(NAMES), 3, NAMES)
    clone.load_state_dict(load_file(str(tmp_path / "flyp.safetensors")))
    flyp.eval(), clone.eval()
    torch.testing.assert_close(flyp(images), clone(images))
