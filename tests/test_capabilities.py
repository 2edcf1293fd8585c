"""What the harness reads off its components is declared on their base classes and read directly: every registered
model inherits ``HarnessModel``'s capabilities (the registry refuses one that does not), the trainer acts on them,
and a generator or scorer reads the experiment config only in its ``from_config`` adapter."""

import inspect

import numpy as np
import pytest
import torch

from harness.config import OptimConfig, load_config
from harness.core import registry
from harness.core.registry import RegistrationError, Registry
from harness.data.base import TensorImages
from harness.engine.train import Part, Trainer
from harness.generators.base import Sampling
from harness.generators.sd_img2img import SDImg2Img, SDImg2ImgParams
from harness.models.base import CAPABILITY_FLAGS, Classifier, HarnessModel, build_model
from harness.plan.epochs import rows_per_image
from harness.scorers.clip import ClipParams, ClipScorer

# model.params that build each registered model cheaply on a CPU (a new model: add its cheapest params here)
TINY_PARAMS = {"small_cnn": "{}", "resnet10": "{}", "resnet50": "{}", "clip_flyp": "{tiny: true}"}


def model_cfg(name: str):
    assert name in TINY_PARAMS, f"model {name!r}: add its cheapest model.params to TINY_PARAMS"
    return load_config("digits_lt_tiny", [f"model.name={name}", f"model.params={TINY_PARAMS[name]}"])


@pytest.mark.parametrize("name", registry.list_models())
def test_every_registered_model_declares_its_capabilities(name):
    cls = registry.get_model(name)
    assert issubclass(cls, HarnessModel)
    for flag in CAPABILITY_FLAGS:
        assert isinstance(getattr(cls, flag), bool), (name, flag)
    assert cls.own_loss == (cls.loss is not HarnessModel.loss), name  # a model with its own loss says so
    cfg = model_cfg(name)
    rows = cls.rows_per_image(cfg)
    assert type(rows) is int and rows >= 1 and rows_per_image(cfg) == rows
    assert isinstance(cls.has_pretrained(cfg), bool)
    model = build_model(cfg, 3, 3, ["cat", "dog", "fox"])
    assert type(model.templates_per_image) is int and model.templates_per_image == rows  # plan and trainer agree


class Plain(torch.nn.Module):
    def forward(self, x):
        return x


def test_a_model_class_without_the_base_is_refused_at_registration():
    models = Registry("model", "discl_harness.models", base="harness.models.base:HarnessModel")
    with pytest.raises(RegistrationError) as err:
        models.register("plain_module")(Plain)
    msg = str(err.value)
    assert "\n" not in msg and "'plain_module'" in msg and "HarnessModel" in msg and "Plain" in msg
    assert "plain_module" not in models._entries
    with pytest.raises(RegistrationError, match="HarnessModel"):
        registry.register_model("plain_module")(Plain)  # the harness's own model registry checks too

    class Tiny(Classifier):
        pass

    assert models.register("tiny_classifier")(Tiny) is Tiny


def test_a_loss_must_be_declared_with_own_loss():
    with pytest.raises(TypeError, match="own_loss is False but the class defines loss"):

        class Undeclared(HarnessModel, torch.nn.Module):
            def loss(self, x, y, templates):
                return x.sum()

    with pytest.raises(TypeError, match="own_loss is True but the class does not define loss"):

        class Missing(HarnessModel, torch.nn.Module):
            own_loss = True

    with pytest.raises(TypeError, match="channels_last must be a bool"):

        class Wrong(HarnessModel, torch.nn.Module):
            channels_last = "yes"


class Conv(HarnessModel, torch.nn.Module):
    """A conv net that records what the trainer hands its loss."""

    def __init__(self):
        super().__init__()
        self.conv, self.calls = torch.nn.Conv2d(2, 3, 3, padding=1), []

    def forward(self, x):
        return self.conv(x).mean((2, 3))


class ChannelsLastConv(Conv):
    channels_last = True


def part(n: int = 4) -> Part:
    x = torch.rand(n, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    return Part(TensorImages(x, np.arange(n) % 3, [str(i) for i in range(n)]), np.arange(n))


def trainer(model, device="cpu") -> Trainer:
    opt = OptimConfig(batch_size=16, precision="fp32")
    return Trainer(model, opt, 1, torch.zeros(3), 0, torch.device(device))


def test_the_trainer_keeps_a_channels_last_model_contiguous_on_a_cpu():
    model = ChannelsLastConv()
    t = trainer(model)
    assert not t.channels_last and not t.own_loss and t.net is model
    assert not model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    t.train_epoch([part()], 0)
    assert not model.conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="channels-last applies on a GPU only")
def test_the_trainer_makes_a_channels_last_model_channels_last_on_a_gpu():
    model, plain = ChannelsLastConv(), Conv()
    assert trainer(model, "cuda").channels_last and model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not trainer(plain, "cuda").channels_last
    assert not plain.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_the_trainer_refuses_a_model_without_the_base():
    with pytest.raises(TypeError, match="does not inherit harness.api.HarnessModel"):
        trainer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)))


def test_sd_img2img_loads_from_explicit_inputs():
    """``load`` takes the typed params and the sampler settings; ``from_config`` only adapts the config to them."""
    p = SDImg2ImgParams(tiny=True, width=32, height=32)
    direct = SDImg2Img.load(p, Sampling(steps=4, guidance_scale=3.0, scheduler="euler"), "cpu")
    assert type(direct.pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert direct.steps == 4 and direct.guidance_scale == 3.0
    cfg = load_config(
        "digits_lt_tiny",
        [
            "generator.name=sd_img2img",
            "generator.params={tiny: true, width: 32, height: 32}",
            "spectrum.scheduler=euler",
            "spectrum.steps=4",
            "spectrum.guidance_scale=3",
        ],
    )
    assert SDImg2Img.from_config(cfg, None, None, "cpu").describe() == direct.describe()
    assert Sampling.from_config(cfg) == Sampling(4, 3.0, "euler")


def test_clip_scorer_loads_from_explicit_inputs():
    s = ClipScorer.load(ClipParams(tiny=True, prompt="a photo of {name}"), ["cat", "dog"], "cpu")
    assert s.filter_prompts(["?"], [1]) == ["a photo of dog"]


@pytest.mark.parametrize("cls", [SDImg2Img, ClipScorer])
def test_only_the_adapter_reads_the_config(cls):
    """The rest of the class gets typed params and explicit inputs: no other method takes or reads ``cfg``."""
    for name, member in vars(cls).items():
        fn = getattr(member, "__func__", member)
        if name in ("from_config", "output_size") or not inspect.isfunction(fn):  # the adapters from a config
            continue
        assert "cfg" not in inspect.getsource(fn), f"{cls.__name__}.{name} reads cfg"
