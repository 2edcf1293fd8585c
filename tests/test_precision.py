"""Mixed precision (train.precision) and FLYP's prompt padding: the CUDA paths' logic, run on the CPU."""

import numpy as np
import pytest
import torch

from harness.config import ConfigError, OptimConfig, load_config
from harness.data.base import TensorImages
from harness.engine.train import Part, Trainer, amp_dtype
from harness.models.base import SmallCNN


def tiny_epoch() -> list[Part]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(24, 1, 16, 16, generator=g)
    return [Part(TensorImages(images, np.arange(24) % 3, [str(i) for i in range(24)]), np.arange(24))]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_each_precision_trains_with_fp32_weights(precision):
    torch.manual_seed(0)
    model = SmallCNN(3, 1, width=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, OptimConfig(batch_size=8, precision=precision), 1, None, 0, torch.device("cpu"))
    assert trainer.amp == {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert trainer.scaler.is_enabled() == (precision == "fp16")  # loss scaling only where fp16 needs it
    loss = trainer.train_epoch(tiny_epoch(), 0)
    assert np.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    state = trainer.state()
    assert "scaler" in state


def test_auto_is_bf16_on_cuda_and_fp32_on_cpu():
    assert amp_dtype("auto", torch.device("cpu")) is None
    assert amp_dtype("auto", torch.device("cuda")) == torch.bfloat16


def test_precision_typo_is_refused():
    with pytest.raises(ConfigError, match="train.precision: 'bf61' is not one of auto, bf16, fp16, fp32"):
        load_config("digits_lt_tiny", ["train.precision=bf61"])


def test_flyp_prompts_padded_to_the_longest_give_the_same_embeddings():
    from harness.models.base import build_model
    from harness.models.paper import trim_padding

    cfg = load_config("digits_lt_tiny", ["model.name=clip_flyp", "model.params={tiny: true}", "train.init=base"])
    model = build_model(cfg, 3, 3, ["cat", "dog", "a much longer class name here"]).eval()
    c, t, n = model.prompt_ids.shape
    ids, mask = model.prompt_ids.view(c * t, n), model.prompt_mask.view(c * t, n)
    short_ids, short_mask = trim_padding(ids, mask)
    assert short_ids.shape[1] < n == 77
    with torch.no_grad():
        full = model.text_embeddings(ids, mask)
        short = model.text_embeddings(short_ids, short_mask)
    assert torch.allclose(full, short, atol=1e-5)
