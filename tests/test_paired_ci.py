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


def contrast_runs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "label": ["a"] * 3 + ["b"] * 3 + ["c"] * 2,
            "method": ["a"] * 3 + ["b"] * 3 + ["c"] * 2,
            "loss": "ce",
            "seed": [0, 1, 2, 0, 1, 2, 0, 2],
            "test/acc": [0.60, 0.70, 0.65, 0.50, 0.62, 0.60, 0.61, 0.64],
        }
    )


def test_a_named_contrast_is_a_minus_b_paired_by_seed():
    from reports.tables import contrast_table

    t = contrast_table(contrast_runs(), [("a", "b"), ("a", "c")])
    rows = t.numeric.set_index("label")
    ab = rows.loc["a − b"]
    assert ab.n == 3 and abs(ab.mean_diff - (10 + 8 + 5) / 3) < 1e-9  # seeds 0, 1, 2
    assert ab.excludes_zero and ab.ci_low > 0
    ac = rows.loc["a − c"]
    assert ac.n == 2 and ac.seeds == "0 2"  # only the seeds both have
    assert abs(ac.mean_diff - (-1 + 1) / 2) < 1e-9 and not ac.excludes_zero


def test_a_contrast_naming_an_unknown_method_is_one_line():
    import pytest

    from reports.tables import ContrastError, contrast_table, parse_contrast

    with pytest.raises(ContrastError, match="discl_revrse.*no finished runs"):
        contrast_table(contrast_runs(), [("a", "discl_revrse")])
    with pytest.raises(ContrastError, match="METHOD_A:METHOD_B"):
        parse_contrast("a-b")
    assert parse_contrast("discl_diverse_to_specific:discl_specific_to_diverse") == (
        "discl_diverse_to_specific",
        "discl_specific_to_diverse",
    )
