"""``spectrum.max_tries``: a sample whose text score is ≤ the threshold is regenerated with the
next description and its own seed, and the best try is kept (the authors' ImageNet-LT gene_img.py)."""

import json

import numpy as np
import pytest
import torch

from harness.config import ConfigError, load_config
from harness.config.keys import pool_key
from harness.data import load_dataset
from harness.engine.seeding import sample_seed
from harness.generators.tiny_ddpm import TinyDDPM, build_unet
from harness.phases.spectrum import generate_spectrum, plan_spectrum, read_all_tries, read_manifest, retry_low_scores


@pytest.fixture
def setup(tiny_cfg, tmp_path):
    data = load_dataset(tiny_cfg)
    names = data.class_names
    desc = tmp_path / "descriptions.json"
    desc.write_text(json.dumps({n: [f"{n} one", f"{n} two", f"{n} three"] for n in names}))
    spec = tiny_cfg.spectrum.model_copy(update={"levels": [0.5], "seeds": 1, "descriptions": str(desc)})
    torch.manual_seed(0)
    gen = TinyDDPM(build_unet(16, 1, 10, [16, 16, 32]), 10, steps=3, guidance_scale=2.0)
    return data, spec, gen


def test_a_failing_try_is_redone_with_the_next_description_and_seed_and_the_best_kept(setup, tmp_path):
    data, spec, gen = setup
    spec = spec.model_copy(update={"max_tries": 3})
    plan = plan_spectrum(data, np.arange(3), spec)
    pool = tmp_path / "pool"
    generate_spectrum(gen, data, plan, pool, batch_size=4, progress=False)
    a, b, c = (p.key for p in plan)
    # a passes at once; b fails, then passes on try 2; c fails every try, its try 1 scoring best
    table = {a: 0.9, b: 0.1, f"{b}|t1": 0.5, c: 0.2, f"{c}|t1": 0.25, f"{c}|t2": 0.05}
    asked = []

    def text_scores(frame):
        asked.append(set(frame.key))
        return {k: table[k] for k in frame.key}

    assert retry_low_scores(gen, data, plan, pool, spec, 0.3, text_scores, batch_size=4) == 3
    tries = read_all_tries(pool).set_index("key")
    assert sorted(tries.index) == sorted(table)
    for p in plan:
        t1 = tries.loc[f"{p.key}|t1"] if f"{p.key}|t1" in tries.index else None
        if p.key == a:
            assert t1 is None
            continue
        assert t1["try"] == 1 and t1.seed == sample_seed(p.source_id, p.lam, p.seed_index, 1) != p.seed
        assert p.prompt.endswith(" one") and t1.prompt.endswith(" two")  # the next description
    assert tries.loc[f"{c}|t2"].prompt.endswith(" three")
    assert f"{b}|t2" not in tries.index  # b passed on its second try
    kept = read_manifest(pool)
    assert list(kept.key) == [a, f"{b}|t1", f"{c}|t1"] and list(kept["try"]) == [0, 1, 1]
    assert all((pool / f).exists() for f in kept.file)
    # done again (a resumed job): nothing new is generated or scored differently
    assert retry_low_scores(gen, data, plan, pool, spec, 0.3, text_scores, batch_size=4) == 3
    assert list(read_manifest(pool).key) == list(kept.key)


def test_one_try_is_todays_pool(setup, tmp_path):
    data, spec, gen = setup
    plan = plan_spectrum(data, np.arange(2), spec)
    assert all(p.try_index == 0 and p.seed == sample_seed(p.source_id, p.lam, p.seed_index) for p in plan)
    assert sample_seed("img-7", 0.3, 2) == sample_seed("img-7", 0.3, 2, 0) != sample_seed("img-7", 0.3, 2, 1)
    generate_spectrum(gen, data, plan, tmp_path / "p", batch_size=4, progress=False)
    frame = read_manifest(tmp_path / "p")
    assert list(frame.key) == [p.key for p in plan] and set(frame["try"]) == {0}


def test_max_tries_config_and_key():
    cfg = load_config("digits_lt_tiny")
    assert cfg.spectrum.max_tries == 1
    more = load_config("digits_lt_tiny", ["spectrum.max_tries=5"])
    assert pool_key(more) != pool_key(cfg)
    # with retries the kept try depends on the scorer's threshold; without, it does not
    assert pool_key(load_config("digits_lt_tiny", ["spectrum.max_tries=5", "filter.threshold=0.2"])) != pool_key(more)
    assert pool_key(load_config("digits_lt_tiny", ["filter.threshold=0.2"])) == pool_key(cfg)
    with pytest.raises(ConfigError, match="max_tries"):
        load_config("digits_lt_tiny", ["spectrum.max_tries=0"])


def authors_generations(scores: list[float], threshold: float = 0.3) -> int:
    """How many images gene_img.py's generate_img makes (lines 101-120): one, then another while the last text
    similarity is ≤ 0.3 and fewer than six were made (``while text_sim <= 0.3 and len(list_generated_img) <= 5``)."""
    made = [scores[0]]
    while made[-1] <= threshold and len(made) <= 5:
        made.append(scores[len(made)])
    return len(made)


def test_six_tries_make_as_many_images_as_the_authors_loop(setup, tmp_path):
    """A sample that always fails gets six generations in their loop; ``max_tries: 6`` makes six, no more."""
    assert authors_generations([0.1] * 10) == 6 and authors_generations([0.1, 0.4] + [0.1] * 8) == 2
    data, spec, gen = setup
    spec = spec.model_copy(update={"max_tries": 6, "descriptions": None})
    plan = plan_spectrum(data, np.arange(1), spec)
    pool = tmp_path / "pool"
    generate_spectrum(gen, data, plan, pool, batch_size=4, progress=False)
    retries = retry_low_scores(gen, data, plan, pool, spec, 0.3, lambda f: dict.fromkeys(f.key, 0.1), batch_size=4)
    assert retries == 5 and sorted(read_all_tries(pool)["try"]) == [0, 1, 2, 3, 4, 5]
