"""Unit tests per phase: data → hard samples → spectrum → filter → curriculum → training."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from harness.config import HardConfig
from harness.data import load_dataset
from harness.engine.seeding import sample_seed
from harness.generators.base import GenerationItem, strength_timesteps
from harness.generators.tiny_ddpm import TinyDDPM, build_unet
from harness.models.base import classification_loss
from harness.phases.curriculum import drop_iqr_outliers, stage_of_epoch, summarize_gain
from harness.phases.hard_samples import select_hard
from harness.phases.spectrum import generate_spectrum, plan_spectrum, read_manifest


def test_digits_lt_is_long_tailed_with_disjoint_splits(tiny_cfg):
    data = load_dataset(tiny_cfg)
    counts = data.train_counts
    assert counts[0] == 80 and counts.min() <= 5 and np.all(np.diff(counts) <= 0)
    ids = {name: set(split.ids) for name, split in data.splits.items()}
    names = list(ids)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not ids[a] & ids[b], f"{a} and {b} overlap"
    for split in ("val", "test", "pool"):
        assert len(set(np.bincount(data.splits[split].labels))) == 1, f"{split} is not balanced"
    groups = data.shot_group()
    assert list(groups[counts > 40]) == ["many"] * int((counts > 40).sum())
    assert set(groups[counts < 12]) == {"few"}


def test_sample_seed_is_stable_across_processes():
    here = sample_seed("img-7", 0.3, 2)
    code = "from harness.engine.seeding import sample_seed; print(sample_seed('img-7', 0.3, 2))"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(there) == here
    assert len({sample_seed("img-7", lam, s) for lam in (0.0, 0.1) for s in range(4)}) == 8


def test_hard_sample_rules(tiny_cfg):
    data = load_dataset(tiny_cfg)
    few = select_hard(HardConfig("few_shot"), data, None)
    assert set(data.train.labels[few]) == set(np.flatnonzero(data.shot_group() == "few"))
    n = len(data.train)
    probs = np.full((n, 10), 0.05)
    probs[np.arange(n), data.train.labels] = np.linspace(0.0, 0.55, n)
    low = select_hard(HardConfig("low_prob", threshold=0.25), data, probs)
    assert np.all(probs[low, data.train.labels[low]] < 0.25) and len(low) == int(np.sum(np.linspace(0, 0.55, n) < 0.25))
    assert len(select_hard(HardConfig("k_hardest", k=7), data, probs)) == 7
    wrong = select_hard(HardConfig("misclassified"), data, probs)
    assert np.all(probs[wrong].argmax(1) != data.train.labels[wrong])


def test_curriculum_cutoff_has_no_off_by_one():
    stages = [stage_of_epoch(e, 8, 4) for e in range(12)]
    assert stages == [0, 0, 1, 1, 2, 2, 3, 3, None, None, None, None]


def test_strength_schedule_matches_sdedit():
    ts = torch.arange(50).flip(0)
    assert len(strength_timesteps(ts, 50, 0.0)) == 50
    assert len(strength_timesteps(ts, 50, 0.3)) == 35
    assert len(strength_timesteps(ts, 50, 0.9)) == 5


def test_gain_statistics_and_outliers():
    gains = np.array([0.1, 0.11, 0.09, 0.1, 5.0])
    assert 5.0 not in drop_iqr_outliers(gains)
    assert summarize_gain(gains, "mean", True) == pytest.approx(0.1)
    assert summarize_gain(gains, "mean", False) > 1
    assert summarize_gain(gains, "median", False) == pytest.approx(0.1)


def test_balanced_softmax_shifts_logits_by_the_prior():
    logits, y = torch.zeros(2, 3), torch.tensor([0, 2])
    prior = torch.log(torch.tensor([0.8, 0.1, 0.1]))
    ce = classification_loss(logits, y, "ce")
    bs = classification_loss(logits, y, "balanced_softmax", prior)
    expected = -(torch.log_softmax(prior, 0)[0] + torch.log_softmax(prior, 0)[2]) / 2
    assert ce.item() == pytest.approx(np.log(3))
    assert bs.item() == pytest.approx(expected.item())


def test_generation_is_per_item_deterministic(tiny_cfg):
    data = load_dataset(tiny_cfg)
    torch.manual_seed(0)
    gen = TinyDDPM(build_unet(16, 1, 10, [16, 16, 32]), 10, steps=4, guidance_scale=2.0)
    items = [GenerationItem(f"s{i}", data.train.raw(i), int(data.train.labels[i]), "", 100 + i) for i in range(4)]
    together = gen.generate(items, 0.5)
    alone = gen.generate(items[2:3], 0.5)
    again = gen.generate(items, 0.5)
    assert np.array_equal(np.asarray(together[2]), np.asarray(alone[0]))  # batch-mates do not matter
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(together, again))
    assert not np.array_equal(np.asarray(together[0]), np.asarray(together[1]))


@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
def test_spectrum_resumes_without_duplicates(tiny_cfg, tmp_path):
    data = load_dataset(tiny_cfg)
    torch.manual_seed(0)
    gen = TinyDDPM(build_unet(16, 1, 10, [16, 16, 32]), 10, steps=3, guidance_scale=2.0)
    hard = np.arange(3)
    plan = plan_spectrum(data, hard, tiny_cfg.spectrum)
    assert len(plan) == 3 * len(tiny_cfg.spectrum.levels) * tiny_cfg.spectrum.seeds
    generate_spectrum(gen, data, plan[:5], tmp_path / "a", batch_size=4, progress=False)  # "killed" after 5
    (tmp_path / "a" / "manifest.jsonl").open("a").write('{"key": "torn')  # a torn last line
    made = generate_spectrum(gen, data, plan, tmp_path / "a", batch_size=4, progress=False)
    assert made == len(plan) - 5
    generate_spectrum(gen, data, plan, tmp_path / "b", batch_size=7, progress=False)
    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    assert len(a) == len(plan) == a.key.nunique()
    for fa, fb in zip(a.file, b.file):
        assert (tmp_path / "a" / fa).read_bytes() == (tmp_path / "b" / fb).read_bytes()


def test_prepared_pool_is_scored_and_filtered(tiny_prepared, tiny_cfg):
    pool = tiny_prepared.pool
    n_hard = len(tiny_prepared.hard)
    assert n_hard > 0 and len(pool) == n_hard * len(tiny_cfg.spectrum.levels) * tiny_cfg.spectrum.seeds
    assert pool.text_score.between(0, 1).all() and pool.image_score.between(-1, 1).all()
    assert (pool.keep == (pool.text_score >= tiny_cfg.filter.threshold)).all()
    assert len(tiny_prepared.pool_images) == len(pool)


# --------------------------------------------------------------------------- errors a user can cause: one line, exit 2


def one_error_line(capsys) -> str:
    """The one ``harness: error:`` line, the last of stderr (progress bars may come before it), no traceback."""
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("harness: error:")]
    assert "Traceback" not in err and len(errors) == 1 and err.splitlines()[-1] == errors[0], err[-2000:]
    return errors[0]


def test_a_missing_description_names_file_is_one_line_and_exit_2(cached_workdir, tmp_path, capsys):
    from harness.cli import main

    descriptions = tmp_path / "descriptions.json"
    descriptions.write_text('{"0": ["a handwritten zero"]}')
    absent = tmp_path / "absent.txt"
    sets = ["--set", f"spectrum.descriptions={descriptions}", "--set", f"spectrum.description_names={absent}"]
    # the names are read when the spectrum is planned, after the base model (a copy of the warm one)
    code = main(["generate", "-e", "digits_lt_tiny", *sets, "--workdir", str(cached_workdir), "--quiet"])
    line = one_error_line(capsys)
    assert code == 2 and f"spectrum.description_names: no file {absent}; give a file" in line


def test_a_workdir_without_flock_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    from harness.cli import main

    def no_flock(*args):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    code = main(["generate", "-e", "digits_lt_tiny", "--workdir", str(tmp_path / "work"), "--quiet"])
    line = one_error_line(capsys)
    assert code == 2 and "this file system has no flock() locks" in line and "--workdir on a local disk" in line
