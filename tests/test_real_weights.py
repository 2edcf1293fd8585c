"""The real-weights path, which ``tiny: true`` skips: the tiny random pipeline and CLIP saved with
``save_pretrained`` (tests/fake_weights.py) and loaded back by ``load_pipeline`` / ``load_clip`` /
``ClipFlyp.from_config`` from a folder or a Hugging Face hub cache (``HF_HUB_CACHE``, offline), with plain or only
``fp16`` variant file names, and ``imagenet_lt_discl_tiny`` run end to end on them in a fresh process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fake_weights import SDXL_REFINER, save_tiny_clip, save_tiny_sdxl_img2img, write_fake_hub_cache
from fakes import write_fake_imagenet_lt
from quick import IMAGENET_LT

from harness.config import load_config
from harness.data.base import DataError
from harness.generators.base import GenerationItem
from harness.generators.sd_img2img import SDImg2Img, SDImg2ImgParams, load_pipeline
from harness.weights.clip import load_clip

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Plain folders and fp16-only folders of the tiny SDXL img2img pipeline and the tiny CLIP."""
    root = tmp_path_factory.mktemp("weights")
    return {
        "sd": save_tiny_sdxl_img2img(root / "sd"),
        "sd16": save_tiny_sdxl_img2img(root / "sd16", "fp16"),
        "clip": save_tiny_clip(root / "clip"),
        "clip16": save_tiny_clip(root / "clip16", "fp16"),
    }


def source_items(n=2, size=32):
    rng = np.random.default_rng(0)
    from PIL import Image

    return [
        GenerationItem(
            f"img{i}",
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)),
            0,
            "a photo of a cat",
            7 + i,
        )
        for i in range(n)
    ]


def generator_from(params: str, steps=3):
    cfg = load_config("imagenet_lt_discl_tiny", [f"generator.params={params}", f"spectrum.steps={steps}"])
    return SDImg2Img.from_config(cfg, data=None, cache=None, device="cpu")


@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
def test_saved_pipeline_loads_from_a_folder_and_generates_what_the_in_process_one_does(saved):
    from harness.weights.tiny import tiny_sdxl_img2img

    gen = generator_from(f"{{tiny: false, model: '{saved['sd']}', width: 40, height: 27}}")
    assert gen.describe()["model"] == str(saved["sd"]) and gen.describe()["dtype"] == "torch.float32"
    images = gen.generate(source_items(), lam=0.5)
    assert [im.size for im in images] == [(40, 26)] * 2  # height rounded down to the VAE's multiple (2 here)
    gen.pipe = tiny_sdxl_img2img(0, sample_size=32).to("cpu")  # the same weights, built in-process
    gen.pipe.set_progress_bar_config(disable=True)
    gen.posteriors.clear()
    for ours, ref in zip(images, gen.generate(source_items(), lam=0.5)):
        assert np.abs(np.asarray(ours, dtype=np.int16) - np.asarray(ref, dtype=np.int16)).max() <= 1


def test_fp16_variant_files_load_in_float32_on_the_cpu(saved):
    gen = generator_from(f"{{tiny: false, model: '{saved['sd16']}', variant: fp16, width: 32, height: 32}}")
    assert {p.dtype for p in gen.pipe.unet.parameters()} == {torch.float32}  # dtype auto: float32 on the CPU
    assert {p.dtype for p in gen.pipe.vae.parameters()} == {torch.float32}
    assert [im.size for im in gen.generate(source_items(), lam=0.3)] == [(32, 32)] * 2


def test_fp16_only_copy_without_variant_says_to_set_it(saved):
    with pytest.raises(DataError) as err:
        load_pipeline(SDImg2ImgParams(model=str(saved["sd16"])), torch.float32)
    msg = str(err.value)
    assert "\n" not in msg and "generator.params.variant: fp16" in msg and str(saved["sd16"]) in msg
    with pytest.raises(DataError) as err:  # the other way round: a variant the copy lacks
        load_pipeline(SDImg2ImgParams(model=str(saved["sd"]), variant="fp16"), torch.float32)
    assert "\n" not in str(err.value) and "generator.params.variant: null" in str(err.value)


def test_clip_loads_from_folders_plain_and_fp16_variant(saved):
    from harness.weights.tiny import tiny_clip

    ref, _ = tiny_clip(0)
    model, processor = load_clip(str(saved["clip"]))
    assert torch.equal(model.visual_projection.weight, ref.visual_projection.weight)
    assert processor.tokenizer("a photo").input_ids == tiny_clip(0)[1].tokenizer("a photo").input_ids
    model, _ = load_clip(str(saved["clip16"]), variant="fp16")
    assert model.dtype == torch.float32  # transformers ≥ 5 would keep the checkpoint's float16
    assert torch.allclose(model.visual_projection.weight, ref.visual_projection.weight, atol=1e-3)
    with pytest.raises(DataError) as err:
        load_clip(str(saved["clip16"]))
    assert "\n" not in str(err.value) and "scorer.params.variant: fp16" in str(err.value)


def test_clip_flyp_loads_a_saved_clip(saved):
    from harness.models.base import build_model

    names = ["cat", "dog", "zebra"]
    built = {}
    for params in (f"{{tiny: false, model: '{saved['clip']}'}}", "{tiny: true}"):
        cfg = load_config("digits_lt_tiny", ["model.name=clip_flyp", f"model.params={params}"])
        built[params] = build_model(cfg, num_classes=3, channels=3, class_names=names).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loaded, tiny = (m(x) for m in built.values())
    assert loaded.shape == (2, 3) and torch.allclose(loaded, tiny, atol=1e-5)
    cfg = load_config("digits_lt_tiny", ["model.name=clip_flyp", f"model.params={{model: '{saved['clip16']}'}}"])
    with pytest.raises(DataError, match="model.params.variant: fp16"):
        build_model(cfg, num_classes=3, channels=3, class_names=names)


def test_weight_variants_are_read_from_file_names(tmp_path):
    from harness.weights.local import weight_variants

    for name in (
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder_2/model.fp16-00001-of-00002.safetensors",
        "vae/diffusion_pytorch_model-00001-of-00002.bf16.safetensors",
        "model.safetensors.index.fp16.json",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert weight_variants(tmp_path) == ({"fp16", "bf16"}, False)
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"")  # plain at the top, not in unet/ and the rest
    assert weight_variants(tmp_path) == ({"fp16", "bf16"}, False)
    for part in ("unet", "text_encoder_2", "vae"):
        (tmp_path / part / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert weight_variants(tmp_path) == ({"fp16", "bf16"}, True)


# ---- imagenet_lt_discl_tiny through the real loading code, in fresh processes (HF_HUB_CACHE is read at import)

# two levels and one try per image: what these tests check is that the weights load, not the spectrum's size
QUICK = [
    *IMAGENET_LT,
    "generator.params.tiny=false",
    "scorer.params.tiny=false",
    "spectrum.levels=[0.0, 0.5]",
    "curriculum.levels=[0.0, 0.5]",
    "spectrum.max_tries=1",
]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """Runs ``harness generate`` in a subprocess on one fake ImageNet-LT and one workdir (the base model is trained
    once and reused); returns (completed process, the pool's complete.json and scores for the generator)."""
    root = tmp_path_factory.mktemp("real")
    data = write_fake_imagenet_lt(root / "imagenet", counts=(25, 22, 12, 10, 6, 3), image_size=32)
    workdir = root / "wd"

    def run(hub, *overrides):
        cmd = [
            sys.executable,
            "-m",
            "harness.cli",
            "generate",  # the phases that load the weights: base, spectrum, scores (no fine-tuning)
            "--experiment",
            "imagenet_lt_discl_tiny",
            "--workdir",
            str(workdir),
            "--quiet",
        ]
        for o in [f"data.root={data}", *QUICK, *overrides]:
            cmd += ["--set", o]
        env = {
            **os.environ,
            "HF_HUB_CACHE": str(hub),
            "HF_HUB_OFFLINE": "1",
            "TQDM_DISABLE": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
        pools = {}
        for complete in (workdir / "cache" / "pool").glob("*/complete.json"):
            info = json.loads(complete.read_text())
            pools[info["generator"]["model"]] = (info, next(complete.parent.glob("scores-*.jsonl"), None))
        return done, pools

    return root, run


@pytest.mark.slow
def test_imagenet_lt_tiny_runs_on_repo_ids_found_in_a_hub_cache(real_run):
    root, run = real_run
    hub = write_fake_hub_cache(root / "hub")
    done, pools = run(hub)
    assert done.returncode == 0, done.stderr[-2000:]
    info, scores = pools[SDXL_REFINER]  # the default model ids, as the paper's config names them
    assert info["generator"]["dtype"] == "torch.float32" and info["generator"]["size"] == [32, 32]
    assert info["images"] == (6 + 3) * 2  # few-shot images × levels × seeds
    assert pd.read_json(scores, lines=True).text_score.between(-1, 1).all()


@pytest.mark.slow
def test_imagenet_lt_tiny_runs_on_fp16_only_copies_with_variant_set(real_run):
    root, run = real_run
    hub16 = write_fake_hub_cache(root / "hub16", variant="fp16")  # CLIP from here, the pipeline from a folder
    folder = save_tiny_sdxl_img2img(root / "sd16", variant="fp16")
    done, pools = run(
        hub16, f"generator.params.model={folder}", "generator.params.variant=fp16", "scorer.params.variant=fp16"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    info, scores = pools[str(folder)]
    assert info["generator"]["dtype"] == "torch.float32" and info["images"] == (6 + 3) * 2
    assert pd.read_json(scores, lines=True).text_score.between(-1, 1).all()

    done, _ = run(hub16, "generator.params.variant=null", "scorer.params.variant=fp16")  # repo id, no variant
    assert done.returncode == 2
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("harness: error:")]
    assert "generator.params.variant: fp16" in line and SDXL_REFINER in line
