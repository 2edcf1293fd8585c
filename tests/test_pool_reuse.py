"""A pool for a superset of levels (or seeds) generates only the images no pool has made yet,
linking the rest from the content-addressed image store (same pixels)."""

import numpy as np
import pytest
import torch

from harness.config import load_config
from harness.config.keys import image_store_key, pool_key
from harness.data import load_dataset
from harness.generators.tiny_ddpm import TinyDDPM, build_unet
from harness.phases.pipeline import prepare
from harness.phases.spectrum import generate_spectrum, plan_spectrum, read_manifest


def count_generated(monkeypatch) -> list[float]:
    made: list[float] = []
    real = TinyDDPM.generate

    def counting(self, items, lam):
        made.extend([lam] * len(items))
        return real(self, items, lam)

    monkeypatch.setattr(TinyDDPM, "generate", counting)
    return made


def test_store_links_what_it_has_and_generates_the_rest(tiny_cfg, tmp_path, monkeypatch):
    made = count_generated(monkeypatch)
    data = load_dataset(tiny_cfg)
    torch.manual_seed(0)
    gen = TinyDDPM(build_unet(16, 1, 10, [16, 16, 32]), 10, steps=3, guidance_scale=2.0)
    hard, store = np.arange(3), tmp_path / "store"
    small = plan_spectrum(data, hard, tiny_cfg.spectrum.model_copy(update={"levels": [0.5], "seeds": 1}))
    big = plan_spectrum(data, hard, tiny_cfg.spectrum.model_copy(update={"levels": [0.3, 0.5], "seeds": 2}))
    generate_spectrum(gen, data, small, tmp_path / "a", batch_size=4, progress=False, store=store)
    assert len(made) == 3
    made.clear()
    assert generate_spectrum(gen, data, big, tmp_path / "b", batch_size=4, progress=False, store=store) == 12
    assert len(made) == 12 - 3 and made.count(0.3) == 6  # λ = 0.3 (both seeds) and seed 1 of λ = 0.5
    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    assert len(b) == 12 and set(a.key) <= set(b.key)
    for f in a.file:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
        assert (tmp_path / "a" / f).stat().st_ino == (tmp_path / "b" / f).stat().st_ino
    # without the store the same plan makes the same pixels
    generate_spectrum(gen, data, big, tmp_path / "c", batch_size=5, progress=False)
    for f in b.file:
        assert (tmp_path / "b" / f).read_bytes() == (tmp_path / "c" / f).read_bytes()


@pytest.mark.slow
def test_superset_of_levels_generates_only_the_new_level(tmp_path, monkeypatch):
    made = count_generated(monkeypatch)
    curriculum = ["curriculum.levels=[0.5,0.9]", "curriculum.adaptive_levels=[0.5,0.9]"]
    small = load_config("digits_lt_tiny", [*curriculum, "spectrum.levels=[0.5,0.9]", "spectrum.seeds=1"])
    big = load_config("digits_lt_tiny", [*curriculum, "spectrum.levels=[0.0,0.5,0.9]", "spectrum.seeds=2"])
    assert pool_key(small) != pool_key(big) and image_store_key(small) == image_store_key(big)

    a = prepare(small, tmp_path, methods=["discl_diverse_to_specific"], progress=False)
    n_hard = len(a.hard)
    assert n_hard > 0 and len(made) == len(a.pool) == n_hard * 2
    made.clear()
    b = prepare(big, tmp_path, methods=["discl_diverse_to_specific"], progress=False)
    assert len(b.pool) == n_hard * 3 * 2
    # only λ = 0 (every seed) and the second seed of the old levels are new
    assert len(made) == n_hard * (2 + 2 * 1)
    assert sorted(set(made)) == [0.0, 0.5, 0.9] and made.count(0.0) == n_hard * 2

    shared = read_manifest(a.pool_dir).merge(read_manifest(b.pool_dir), on="key", suffixes=("_a", "_b"))
    assert len(shared) == n_hard * 2
    for fa, fb in zip(shared.file_a, shared.file_b):
        pa, pb = a.pool_dir / fa, b.pool_dir / fb
        assert pa.read_bytes() == pb.read_bytes()
        assert pa.stat().st_ino == pb.stat().st_ino  # one copy on disk: both are links to the store's file
    # the shared images score the same in both pools (same pixels, same prompt)
    sa = a.pool.set_index("key").text_score
    sb = b.pool.set_index("key").text_score
    assert np.allclose(sa.loc[shared.key], sb.loc[shared.key])

    made.clear()
    again = prepare(big, tmp_path, methods=["discl_diverse_to_specific"], progress=False)
    assert made == [] and len(again.pool) == len(b.pool)  # a complete pool is reused as before
