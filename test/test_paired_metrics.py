"""Metrics on same-pose DEM pairs, checked on hand-made pairs with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perception.paired_metrics import height_change, paired_nan_agreement


def test_paired_nan_agreement_on_hand_made_masks():
    # Two pairs of 2 x 2 DEMs. Predicted NaN: (0,0) in both DEMs and (0,1) in the first; real NaN: (0,0) and
    # (1,1) in the first, (0,0) in the second.
    t = np.array([[[np.nan, np.nan], [1.0, 2.0]], [[np.nan, 0.0], [1.0, 2.0]]])
    r = np.array([[[np.nan, 0.5], [1.5, np.nan]], [[np.nan, 0.0], [1.0, 3.0]]])
    out = paired_nan_agreement(t, r)
    # per cell: (0,0) agrees in both; (0,1) disagrees in pair 1; (1,0) agrees twice; (1,1) disagrees in pair 1
    assert out["agreement_map"] == [[1.0, 0.5], [1.0, 0.5]]
    assert out["agreement"] == pytest.approx(6 / 8)
    assert out["precision"] == pytest.approx(2 / 3)  # 3 predicted NaN, 2 of them real
    assert out["recall"] == pytest.approx(2 / 3)  # 3 real NaN, 2 of them predicted
    assert out["f1"] == pytest.approx(2 / 3)
    assert out["predicted_nan_share"] == pytest.approx(3 / 8) and out["real_nan_share"] == pytest.approx(3 / 8)
    # measured in both: (1,0) of pair 1 (|1 - 1.5|), (0,1), (1,0), (1,1) of pair 2 (0, 0, 1): mean 1.5 / 4
    assert out["height_mae"] == pytest.approx(1.5 / 4)
    assert out["n_pairs"] == 2
    json.dumps(out)
    # no NaN predicted and none real: precision and recall undefined, full agreement
    none = paired_nan_agreement(np.zeros((1, 2, 2)), np.ones((1, 2, 2)))
    assert none["precision"] is None and none["recall"] is None and none["agreement"] == 1.0


def test_height_change_counts_kept_cells_only():
    exact = np.zeros((2, 2, 2))
    # pair 1: one cell raised 0.2 m, one hidden; pair 2: one cell lowered 0.01 m
    dems = np.array([[[0.2, np.nan], [0.0, 0.0]], [[0.0, -0.01], [0.0, 0.0]]])
    out = height_change(dems, exact, threshold_m=0.05)
    assert out["cells"] == 7  # the hidden cell is not a change of height
    assert out["mean_m"] == pytest.approx((0.2 - 0.01) / 7)
    assert out["mean_abs_m"] == pytest.approx(0.21 / 7)
    assert out["share_over"] == pytest.approx(1 / 7)  # only the 0.2 m cell moved past 5 cm
    json.dumps(out)
    # the exact DEMs against themselves: nothing moved
    same = height_change(exact, exact)
    assert same["mean_abs_m"] == 0.0 and same["share_over"] == 0.0 and same["p95_abs_m"] == 0.0
    # everything hidden: nothing to compare, said as None rather than 0
    hidden = height_change(np.full((1, 2, 2), np.nan), exact[:1])
    assert hidden["cells"] == 0 and hidden["mean_abs_m"] is None


def test_paired_metrics_refuse_bad_pairs():
    dems = np.zeros((4, 20, 5))
    with pytest.raises(ValueError, match="pairs"):
        paired_nan_agreement(dems, dems[:3])
    with pytest.raises(ValueError, match="pairs"):
        height_change(dems, dems[:3])
    with pytest.raises(ValueError, match="same grid"):
        height_change(dems, dems[:, :10])
    with pytest.raises(ValueError, match="exact_dems must be complete"):
        height_change(dems, np.where(dems == 0, np.nan, dems))
    with pytest.raises(ValueError, match="threshold_m"):
        height_change(dems, dems, threshold_m=0.0)
