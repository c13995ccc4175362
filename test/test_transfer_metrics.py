"""Sim-to-real transfer metrics, each checked on sets with a known answer: identical sets (distance 0, classifier
at chance), NaN put into known cells (known map and share distances), heights shifted by a constant (Wasserstein
distance = the shift), trivially separable sets (classifier near 100 %). Same-pose pair metrics: test_paired_metrics.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import gammaln

from perception.dem_sets import dem_features
from perception.transfer_metrics import (
    METRICS,
    closed_share,
    height_distance,
    measured_heights,
    nan_fraction_distance,
    nan_fractions,
    nan_map_distance,
    nan_probability_map,
    sliced_wasserstein_distance,
    transfer_report,
)
from perception.two_sample import ClassifierConfig, classifier_two_sample_test


def _sim_set(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` NaN-free DEMs (heights around the ground at -0.09 m) and their 6 scalars."""
    rng = np.random.default_rng(seed)
    dems = (-0.09 + 0.05 * rng.standard_normal((n, 20, 5))).astype(np.float32)
    return dems, 0.3 * rng.standard_normal((n, 6))


def _realish(dems: np.ndarray) -> np.ndarray:
    """A clearly different set: the 3 front rows unmeasured, everything else 0.2 m higher."""
    out = dems + np.float32(0.2)
    out[:, :3] = np.nan
    return out


def test_identical_sets_are_at_distance_zero():
    dems, scalars = _sim_set(300, 0)
    dems[:, 0, 0] = np.nan  # some NaN, so that the NaN metrics have something to compare
    assert nan_map_distance(dems, dems) == 0.0
    assert nan_fraction_distance(dems, dems) == 0.0
    assert height_distance(dems, dems) == 0.0
    assert sliced_wasserstein_distance(dems, dems) == 0.0
    # one split of positions for both classes: each held-out DEM appears with both labels -> exactly one right
    clf = classifier_two_sample_test(dems, dems, scalars, scalars, seed=3)
    assert clf["accuracy"] == 0.5 and clf["distance"] == 0.0


def test_same_distribution_gives_chance_accuracy():
    a, sa = _sim_set(1000, 1)
    b, sb = _sim_set(1000, 2)
    clf = classifier_two_sample_test(a, b, sa, sb, seed=0)
    # 300 held-out DEMs per class: the accuracy of a chance classifier has a standard deviation of 0.02
    assert abs(clf["accuracy"] - 0.5) < 0.08
    assert clf["p_value"] > 0.001
    assert clf["n_test"] == 300 and clf["n_train"] == 700


def test_obviously_different_sets_are_separated():
    a, sa = _sim_set(600, 4)
    b, sb = _sim_set(600, 5)
    clf = classifier_two_sample_test(a, _realish(b), sa, sb, seed=0)
    assert clf["accuracy"] > 0.9 and clf["p_value"] < 1e-10
    # the classifier is deterministic for a seed, and leaves torch's global RNG and thread count alone
    import torch

    state, threads = torch.get_rng_state(), torch.get_num_threads()
    assert classifier_two_sample_test(a, _realish(b), sa, sb, seed=0) == clf
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads


def test_classifier_balances_unequal_sets():
    a, _ = _sim_set(500, 6)
    b, _ = _sim_set(50, 7)
    clf = classifier_two_sample_test(a, _realish(b), seed=1, config=ClassifierConfig(test_fraction=0.2))
    assert clf["n_train"] == 40 and clf["n_test"] == 10  # the larger set subsampled to the smaller one's 50
    assert clf["accuracy"] > 0.9


def test_nan_in_known_cells_gives_known_map_and_share_distances():
    real, _ = _sim_set(200, 8)
    cand = real.copy()
    cand[:, 0, 0] = np.nan  # in every DEM
    cand[:100, 19, 4] = np.nan  # in half of them
    expected_map = np.zeros((20, 5))
    expected_map[0, 0], expected_map[19, 4] = 1.0, 0.5
    np.testing.assert_allclose(nan_probability_map(cand), expected_map)
    assert nan_map_distance(real, cand) == pytest.approx(1.5 / 100)
    np.testing.assert_allclose(nan_fractions(cand), np.r_[np.full(100, 0.02), np.full(100, 0.01)])
    # W1 between "always 0" and "0.01 or 0.02 with equal weight" is the mean of the latter
    assert nan_fraction_distance(real, cand) == pytest.approx(0.015)
    assert nan_fraction_distance(cand, real) == pytest.approx(0.015)


def test_shifted_heights_give_the_shift_as_wasserstein_distance():
    real, _ = _sim_set(200, 9)
    assert height_distance(real, real + np.float32(0.07)) == pytest.approx(0.07, abs=1e-6)
    # pooled measured cells only: {0, 1} against {3} -> mean |3 - x| = 2.5; the NaN cell takes no part
    assert height_distance(np.array([[[0.0, 1.0]]]), np.array([[[np.nan, 3.0]]])) == pytest.approx(2.5)
    np.testing.assert_array_equal(measured_heights(np.array([[[np.nan, 3.0]]])), [3.0])


def test_sliced_wasserstein_on_a_translated_set():
    real, _ = _sim_set(300, 10)
    shifted = real + np.float32(0.07)
    # along each height axis the sets differ by a translation of 0.07: W1 = 0.07 exactly
    axes = np.eye(200)[:100]
    assert sliced_wasserstein_distance(real, shifted, projections=axes) == pytest.approx(0.07, abs=1e-6)
    # along a random unit direction theta, W1 = |theta . delta| with |delta| = 0.07 sqrt(100); over the sphere in
    # D = 200 dimensions E|theta_1| = Gamma(D/2) / (sqrt(pi) Gamma((D+1)/2)); 256 directions: about 5 % noise
    e_abs = math.exp(gammaln(100) - gammaln(100.5)) / math.sqrt(math.pi)
    d = sliced_wasserstein_distance(real, shifted, n_projections=256, seed=0)
    assert d == pytest.approx(0.7 * e_abs, rel=0.2)
    assert sliced_wasserstein_distance(real, shifted, n_projections=256, seed=0) == d


def test_dem_features_encoding():
    dems = np.array([[[0.5, np.nan]]])
    np.testing.assert_array_equal(dem_features(dems, np.array([[0.1, 0.2]])), [[0.5, 0.0, 1.0, -1.0, 0.1, 0.2]])


def test_closed_share():
    assert closed_share(0.25, 1.0) == pytest.approx(0.75)
    assert closed_share(2.0, 1.0) == pytest.approx(-1.0)
    assert closed_share(0.0, 0.0) is None


def test_transfer_report_closed_shares():
    sim, s_sim = _sim_set(400, 11)
    real_dems, s_real = _sim_set(400, 12)
    real = _realish(real_dems)
    report = transfer_report((real, s_real), {"identity": (sim, s_sim), "perfect": (real.copy(), s_real.copy())},
                             seed=0)
    json.dumps(report)  # JSON-ready
    ident, perfect = report["candidates"]["identity"], report["candidates"]["perfect"]
    assert set(ident["distances"]) == set(METRICS)
    assert all(ident["distances"][m] > 0 for m in METRICS)
    assert ident["closed_share"] == {m: 0.0 for m in METRICS}
    assert perfect["closed_share"] == {m: 1.0 for m in METRICS}
    assert perfect["meets_target"] is True and ident["meets_target"] is False
    assert ident["distances"]["nan_map"] == pytest.approx(0.15)  # 3 rows of 20 always NaN in real, never in sim
    assert ident["distances"]["height"] == pytest.approx(0.2, abs=0.01)  # heights shifted by 0.2 m
    assert ident["classifier"]["accuracy"] > 0.9 and perfect["classifier"]["accuracy"] == 0.5
    assert report["real"] == {"n": 400, "nan_share": pytest.approx(0.15)}
    # a candidate halfway in NaN only: shares between 0 and 1 on the NaN metrics
    half = sim.copy()
    half[:200, :3] = np.nan
    r2 = transfer_report((real, s_real), {"identity": (sim, s_sim), "half": (half, s_sim)}, seed=0)
    assert r2["candidates"]["half"]["closed_share"]["nan_map"] == pytest.approx(0.5)
    assert r2["candidates"]["half"]["closed_share"]["nan_fraction"] == pytest.approx(0.5)


def test_bad_inputs_raise():
    dems, scalars = _sim_set(20, 13)
    with pytest.raises(ValueError, match=r"shape \(N, rows, cols\)"):
        nan_probability_map(dems[0])
    with pytest.raises(ValueError, match="same grid"):
        nan_map_distance(dems, dems[:, :10])
    with pytest.raises(ValueError, match="infinite"):
        height_distance(np.full((1, 20, 5), np.inf), dems)
    with pytest.raises(ValueError, match="no measured cell"):
        height_distance(dems, np.full((3, 20, 5), np.nan))
    with pytest.raises(ValueError, match=r"shape \(20, S\)"):
        classifier_two_sample_test(dems, dems, scalars[:5], scalars)
    with pytest.raises(ValueError, match="at least 10 DEMs per set"):
        classifier_two_sample_test(dems[:5], dems)
    with pytest.raises(ValueError, match="baseline 'identity' is not among"):
        transfer_report((dems, scalars), {"g": (dems, scalars)})
    with pytest.raises(ValueError, match="has 5 scalars per DEM, the real set 6"):
        transfer_report((dems, scalars), {"identity": (dems, scalars[:, :5])})
    with pytest.raises(ValueError, match="seed must be an integer"):
        transfer_report((dems, scalars), {"identity": (dems, scalars)}, seed=np.random.default_rng(0))
    with pytest.raises(ValueError, match="non-empty"):
        transfer_report((dems, scalars), {})
    with pytest.raises(ValueError, match="no measured cell"):
        transfer_report((np.full((20, 20, 5), np.nan), scalars), {"identity": (dems, scalars)})
    with pytest.raises(ValueError, match="projections must have shape"):
        sliced_wasserstein_distance(dems, dems, projections=np.ones((2, 7)))
    with pytest.raises(ValueError, match="test_fraction"):
        ClassifierConfig(test_fraction=1.0)
    with pytest.raises(ValueError, match="unknown field"):
        ClassifierConfig.from_dict({"epoch": 3})
    assert ClassifierConfig.from_dict(ClassifierConfig(epochs=5).to_dict()) == ClassifierConfig(epochs=5)
