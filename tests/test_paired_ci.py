"""The paired interval's zero-variance branch: identical per-seed differences give no interval, so a table never
marks them as excluding zero."""

import math

import pandas as pd

from reports.tables import excludes_zero, paired_ci, paired_differences


def test_identical_differences_have_no_interval():
    mean, low, high = paired_ci([2.0, 2.0])
    assert mean == 2.0 and math.isnan(low) and math.isnan(high)
    assert not excludes_zero(low, high)
    assert not excludes_zero(*paired_ci([2.0, 2.0 + 1e-13, 2.0])[1:])  # equal up to rounding
    assert excludes_zero(*paired_ci([2.0, 2.5, 3.0])[1:])  # a variance: a real interval


def test_identical_differences_are_not_marked_in_the_table():
    runs = pd.DataFrame(
        {
            "label": ["plain"] * 2 + ["x"] * 2,
            "method": ["plain"] * 2 + ["x"] * 2,
            "loss": "ce",
            "seed": [0, 1, 0, 1],
            "test/acc": [0.50, 0.60, 0.52, 0.62],  # +2 points on both seeds
        }
    )
    (row,) = paired_differences(runs, "plain", ["test/acc"]).itertuples()
    assert row.n == 2 and abs(row.mean_diff - 2.0) < 1e-9
    assert math.isnan(row.ci_low) and math.isnan(row.ci_high)
