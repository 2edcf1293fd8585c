"""The clip scorer on a tiny random CLIP: batched cosines equal CLIP's own similarity, prompts come from the
filter template, and a missing model is a one-line error."""

import numpy as np
import pytest
import torch
from PIL import Image

from harness.config import load_config
from harness.data.base import DataError
from harness.phases.filter import apply_filter
from harness.scorers.clip import ClipParams, ClipScorer, load_clip

NAMES = ["zebra", "wild boar", "tiger"]


class Data:
    class_names = NAMES


def scorer(**params):
    p = ClipParams(tiny=True, **params)
    model, processor = load_clip(p.model, tiny=True)
    return ClipScorer(model, processor, NAMES, p)


def pictures(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


def test_text_score_is_clips_cosine_and_batching_does_not_matter():
    s = scorer(batch_size=2)
    images, sources = pictures(5), pictures(5, seed=1)
    prompts = [f"a photo of {n}" for n in NAMES + NAMES[:2]]
    text, image = s.score(images, prompts, [0, 1, 2, 0, 1], sources)
    inputs = s.processor(text=prompts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = s.model(**inputs)
        expected = (out.logits_per_image / s.model.logit_scale.exp()).diagonal().numpy()
    np.testing.assert_allclose(text, expected, atol=1e-5)
    text_big, image_big = scorer(batch_size=64).score(images, prompts, [0, 1, 2, 0, 1], sources)
    np.testing.assert_allclose(text, text_big, atol=1e-5)
    np.testing.assert_allclose(image, image_big, atol=1e-5)
    assert np.all(np.abs(image) <= 1 + 1e-6) and np.ptp(text) > 0


def test_image_score_is_one_against_itself():
    images = pictures(3)
    _, image = scorer().score(images, ["x"] * 3, [0, 1, 2], images)
    np.testing.assert_allclose(image, 1.0, atol=1e-5)


def test_filter_prompt_template_replaces_generation_prompt():
    images = pictures(3)
    descriptions = ["a 8k real photo: a striped horse grazing", "a 8k real photo: a boar", "a 8k real photo: a cat"]
    templated, _ = scorer(prompt="a photo of {name} in the wild").score(images, descriptions, [0, 1, 2], images)
    direct, _ = scorer().score(images, [f"a photo of {n} in the wild" for n in NAMES], [0, 1, 2], images)
    by_description, _ = scorer().score(images, descriptions, [0, 1, 2], images)
    np.testing.assert_allclose(templated, direct, atol=1e-6)
    assert np.abs(templated - by_description).max() > 1e-4


def test_from_config_and_threshold():
    cfg = load_config(
        "digits_lt_tiny",
        ["scorer.name=clip", "scorer.params={tiny: true, prompt: 'a photo of {name}'}", "filter.threshold=0.25"],
    )
    s = ClipScorer.from_config(cfg, Data, None, "cpu")
    assert s.p.prompt == "a photo of {name}" and s.filter_prompts(["?"], [2]) == ["a photo of tiger"]
    import pandas as pd

    kept = apply_filter(pd.DataFrame({"text_score": [0.2, 0.25, 0.31]}), cfg.filter.threshold).keep.tolist()
    assert kept == [False, True, True]


def test_missing_model_is_one_line_error(tmp_path):
    with pytest.raises(DataError) as err:
        load_clip(str(tmp_path / "no-clip-here"))
    assert "\n" not in str(err.value) and "no-clip-here" in str(err.value) and "download" in str(err.value)


def test_repeated_sources_score_against_their_own_image():
    """Sources come in runs (8 seeds of one real image): each synthetic image is compared with its own source,
    exactly as when scored alone; mixed sizes take the unbatched path with the same result."""
    s = scorer(batch_size=4)
    real = pictures(3, seed=2)
    images = pictures(9, seed=3) + [Image.new("RGB", (30, 20), (200, 10, 10))]
    sources = [real[i // 3] for i in range(9)] + [real[0]]
    labels, prompts = [i % 3 for i in range(10)], ["a photo"] * 10
    text, image = s.score(images, prompts, labels, sources)
    for i in range(10):
        t1, i1 = s.score(images[i : i + 1], prompts[i : i + 1], labels[i : i + 1], sources[i : i + 1])
        np.testing.assert_allclose([text[i], image[i]], [t1[0], i1[0]], atol=1e-5)
    assert len({round(v, 4) for v in image}) > 3


def test_fp32_scores_in_float32_on_cuda_too_and_an_unknown_dtype_is_a_config_error():
    from harness.config import ConfigError
    from harness.scorers.clip import scorer_dtype

    cuda = torch.device("cuda")
    assert scorer_dtype("auto", cuda) == torch.float16  # today's default on a GPU
    assert scorer_dtype("fp32", cuda) == scorer_dtype("float32", cuda) == torch.float32  # the authors'
    assert scorer_dtype("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(ConfigError, match="scorer.params.dtype"):
        scorer_dtype("half", cuda)


def test_folder_prompt_names_keep_the_authors_underscores():
    from harness.config import ConfigError
    from harness.scorers.clip import folder_name

    assert scorer(prompt="a photo of {name}").filter_prompts(["x"], [1]) == ["a photo of wild boar"]
    assert scorer(prompt="a photo of {name}", prompt_names="folder").filter_prompts(["x"], [1]) == [
        "a photo of wild_boar"
    ]
    assert folder_name("baluster / handrail") == "baluster_"  # their folder OUT/baluster_/_handrail/
    with pytest.raises(ConfigError, match="prompt_names"):
        scorer(prompt_names="underscores")
