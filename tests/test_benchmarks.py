"""The benchmark suite runs and its JSON rows follow the schema run_all.py promises (no timing assertions)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from common import FIELDS  # noqa: E402


def check_rows(rows):
    assert rows and isinstance(rows, list)
    for r in rows:
        assert tuple(r) == FIELDS
        assert isinstance(r["name"], str) and r["name"] and isinstance(r["unit"], str)
        assert r["better"] in ("higher", "lower")
        assert isinstance(r["harness"], (int, float)) and r["harness"] >= 0
        if r["ratio"] is not None:  # always harness / reference; `better` says which side of 1 is good
            assert r["ratio"] == pytest.approx(r["harness"] / r["reference"], rel=1e-6)


def test_run_all_writes_schema_rows(tmp_path):
    out = tmp_path / "rows.json"
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps([{"name": "UNet step", "unit": "ms", "harness": 2.0, "reference": 1.0, "ratio": 2.0,
                                "target": None, "better": "lower"}]))
    done = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--only", "bench_training.py",
                           "--json", str(out), "--gpu-json", str(gpu)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    check_rows(rows)
    assert rows[-1]["name"] == "UNet step (GPU file)"
    assert any(r["name"].startswith("training epoch") for r in rows)
    assert "ratio" in done.stdout and "training epoch" in done.stdout


def test_scoring_rows_in_process():
    import bench_scoring

    rows = bench_scoring.measure(quick=True, n_images=8, repeats=1)
    check_rows(rows)
    assert rows[0]["better"] == "higher" and rows[0]["target"] == 5.0
