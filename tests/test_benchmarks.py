"""The benchmark suite runs and its JSON rows follow the schema run_all.py promises (correctness only, no timing
assertions)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from common import FIELDS, row, spread  # noqa: E402


def check_rows(rows):
    assert rows and isinstance(rows, list)
    names = [r["name"] for r in rows]
    assert len(set(names)) == len(names), names
    for r in rows:
        assert tuple(r) == FIELDS
        assert isinstance(r["name"], str) and r["name"] and " " not in r["name"]  # a short stable id
        assert isinstance(r["detail"], str) and isinstance(r["unit"], str)
        assert r["better"] in ("higher", "lower")
        assert isinstance(r["harness"], (int, float)) and r["harness"] >= 0
        assert r["spread"] is None or r["spread"] >= 0
        if r["ratio"] is not None:  # always harness / reference; `better` says which side of 1 is good
            assert r["ratio"] == pytest.approx(r["harness"] / r["reference"], rel=1e-6)


def run_script(script, *args, timeout=600):
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args], check=False, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def test_spread_is_the_range_of_the_per_repeat_ratios():
    assert spread([1.0], [1.0]) is None
    assert spread([1.0, 1.1, 1.2], [1.0, 1.0, 1.0]) == pytest.approx(100 * 0.2 / 1.1)
    with pytest.raises(AssertionError, match="short ids"):
        row("a name with spaces", "", "s", 1, 1, 1, None, "lower")


@pytest.mark.slow
def test_run_all_writes_schema_rows(tmp_path):
    out = tmp_path / "rows.json"
    gpu = tmp_path / "gpu.json"
    gpu.write_text(
        json.dumps(
            [
                {
                    "name": "unet_fp16_sdpa",
                    "unit": "ms",
                    "harness": 2.0,
                    "reference": 1.0,
                    "ratio": 2.0,
                    "target": None,
                    "better": "lower",
                }
            ]
        )
    )  # an older file: no detail
    done = run_script(
        "run_all.py",
        "--quick",
        "--repeats",
        "3",
        "--only",
        "bench_training.py",
        "--json",
        str(out),
        "--gpu-json",
        str(gpu),
        "--compare",
        str(gpu),
    )
    rows = json.loads(out.read_text())
    check_rows(rows)
    assert rows[-1]["name"] == "unet_fp16_sdpa@gpu" and "gpu.json" in rows[-1]["detail"]
    assert {"train_overhead", "pool_cache_read", "pool_decode_once"} <= {r["name"] for r in rows}
    assert "spread" in done.stdout and "train_overhead" in done.stdout and "load average" in done.stdout


@pytest.mark.slow
def test_scoring_rows_in_process():
    import bench_scoring

    rows = bench_scoring.measure(quick=True, n_images=8, repeats=1)
    check_rows(rows)
    assert rows[0]["name"] == "clip_scoring" and rows[0]["better"] == "higher" and rows[0]["target"] == 5.0


@pytest.mark.slow
def test_ddp_eval_shards_half_per_rank_and_gathers_one_process_predictions(tmp_path):
    """2 gloo ranks: each evaluates half of the split, and the gathered predictions equal one process's (the
    script fails otherwise)."""
    out = tmp_path / "rows.json"
    run_script("bench_ddp_eval.py", "--quick", "--repeats", "1", "--json", str(out))
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    check_rows(list(rows.values()))
    assert {"ddp_eval", "ddp_eval_wall", "ddp_eval_wall_1thread", "ddp_eval_max_diff"} <= set(rows)
    assert rows["ddp_eval"]["harness"] * 2 == rows["ddp_eval"]["reference"] and rows["ddp_eval"]["ratio"] == 0.5
    assert rows["ddp_eval_max_diff"]["harness"] <= 1e-4


@pytest.mark.slow
def test_train_step_rows(tmp_path):
    """Every variant of both models trains a step (tiny batches and --smoke shapes here; the benchmark's own are
    larger)."""
    out = tmp_path / "rows.json"
    run_script(
        "bench_train_step.py",
        "--quick",
        "--smoke",
        "--resnet-batch",
        "2",
        "--clip-batch",
        "1",
        "--repeats",
        "1",
        "--no-compile",
        "--json",
        str(out),
    )
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    check_rows(list(rows.values()))
    for name in (
        "resnet10_fp32",
        "resnet10_bf16",
        "resnet10_channels_last",
        "resnet10_bf16_channels_last",
        "clip_vitb16_fp32",
        "clip_vitb16_bf16",
    ):
        assert f"train_step_{name}" in rows
    assert rows["train_step_resnet10_bf16"]["reference"] == rows["train_step_resnet10_fp32"]["harness"]
    assert (
        "batch 2" in rows["train_step_resnet10_bf16"]["detail"]
        and "32 px" in rows["train_step_resnet10_bf16"]["detail"]
    )
    assert "4 iWildCam classes" in rows["train_step_clip_vitb16_bf16"]["detail"]
    assert rows["train_step_resnet10_fp32"]["ratio"] is None


@pytest.mark.slow
def test_train_step_compile_reports_its_compile_time():
    import bench_train_step

    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch.compile of ResNet-10 on 2 CPU cores takes about a minute; run_all --quick covers it")
    rows = {r["name"]: r for r in bench_train_step.measure(True, 8, repeats=1, models=("resnet10",))}
    assert {"train_step_resnet10_compile", "train_step_resnet10_compile_time"} <= set(rows)
