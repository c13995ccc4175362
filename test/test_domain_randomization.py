"""Domain randomisation of simulated DEMs: occlusion geometry against hand-computed lines of sight, each
effect's share of NaN against its known expectation, determinism, and an untouched input.

Synthetic DEMs are height profiles along x repeated over the 5 columns, on the default geometry: row i's
centre lies at x = 1.25 - 0.1 i (front edge 1.3 m ahead of base_link, 0.1 m cells); flat ground sits at
-0.09 m (base_link rides a wheel radius above the ground). The lidar is at x = 0.10 m, z = 0.39 m.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception.domain_randomization import (
    LIDAR_X,
    LIDAR_Z,
    DomainRandomization,
    geometric_occlusion,
    occlusion_mask,
    randomize,
)

XC = 1.3 - (np.arange(20) + 0.5) * 0.1  # row centres, metres ahead of base_link
GROUND = -0.09


def _dem(profile, n: int = 1) -> np.ndarray:
    """(n, 20, 5) float32 DEMs with the row heights ``profile`` (20,) in every column."""
    one = np.repeat(np.asarray(profile, dtype=np.float32)[None, :, None], 5, axis=2)
    return np.repeat(one, n, axis=0)


FLAT = np.full(20, GROUND)
STEP_DOWN = np.where(XC > 0.5, GROUND - 0.4, GROUND)  # a 0.4 m drop at x = 0.5 (between rows 7 and 8)
STEP_UP = np.where(XC > 0.8, GROUND + 0.2, GROUND)  # a 0.2 m step at x = 0.8: its top stays below the lidar
WALL = np.where(XC > 0.8, GROUND + 0.6, GROUND)  # 0.6 m: its top (0.51) stands above the lidar (0.39)
STAIRS_UP = GROUND + 0.18 * np.ceil(np.clip((XC - 0.3) / 0.27, 0.0, None))  # 0.18 m rises, 0.27 m runs from x = 0.3

ONLY_OCCLUSION = DomainRandomization(**{**DomainRandomization.off().to_dict(), "occlusion_prob": 1.0,
                                        "sensor_z_jitter": 0.0})


def _only(**fields) -> DomainRandomization:
    return DomainRandomization(**{**DomainRandomization.off().to_dict(), **fields})


def test_lidar_mount_is_sim_lidars_default():
    # sim.lidar mounts the scanner 6 cm above the mast top: 0.05 + 0.16 / 2 + 0.20 + 0.06 above base_link
    assert LIDAR_X == pytest.approx(0.10)
    assert LIDAR_Z == pytest.approx(0.39)


def test_input_untouched_and_copy_returned():
    dems = _dem(STAIRS_UP, 50)
    dems[3, 2, 1] = np.nan
    before = dems.copy()
    out = randomize(dems, np.random.default_rng(0))
    np.testing.assert_array_equal(dems, before)  # NaN compare equal here
    assert out is not dems and not np.shares_memory(out, dems)
    assert out.dtype == np.float32 and out.shape == dems.shape
    assert np.isnan(out[3, 2, 1])  # NaN that was there stays


def test_deterministic_for_a_seed():
    dems = _dem(STAIRS_UP, 200)
    a = randomize(dems, np.random.default_rng(7))
    b = randomize(dems, np.random.default_rng(7))
    c = randomize(dems, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.isnan(a), np.isnan(c))


def test_zero_config_is_identity():
    dems = _dem(STAIRS_UP, 20)
    dems[0, 0, 0] = np.nan
    out = randomize(dems, np.random.default_rng(0), DomainRandomization.off())
    np.testing.assert_array_equal(out, dems)
    assert out.dtype == dems.dtype


def test_occlusion_behind_a_drop():
    # Line from the lidar (0.10, 0.39) over the drop's edge (0.5, -0.09): slope -0.48 / 0.4 = -1.2 per metre, so
    # the lower floor (-0.49) is in view only where -0.49 >= -0.09 - 1.2 (x - 0.5), i.e. x >= 0.833: rows 0-4
    # (centres 1.25 .. 0.85) are seen again, rows 5-7 (0.75 .. 0.55) right behind the edge are hidden.
    out = randomize(_dem(STEP_DOWN), np.random.default_rng(0), ONLY_OCCLUSION)[0]
    hidden_rows = np.flatnonzero(np.isnan(out).all(axis=1))
    assert hidden_rows.tolist() == [5, 6, 7]
    assert not np.isnan(out[[0, 1, 2, 3, 4] + list(range(8, 20))]).any()
    # Nose up by 0.3 rad (pitch < 0): the mast leans back to x = 0.1 cos 0.3 - 0.39 sin 0.3 = -0.0197, z =
    # 0.1 sin 0.3 + 0.39 cos 0.3 = 0.4021; the slope over the edge is -0.4921 / 0.5197 = -0.947, so the floor
    # is seen only from x >= 0.5 + 0.4 / 0.947 = 0.922: row 4 (0.85) is hidden too.
    up = randomize(_dem(STEP_DOWN), np.random.default_rng(0), ONLY_OCCLUSION, pitch=np.array([-0.3]))[0]
    assert np.flatnonzero(np.isnan(up).all(axis=1)).tolist() == [4, 5, 6, 7]
    # a set larger than one chunk of the computation (4096 DEMs) gives every DEM the same answer
    big = occlusion_mask(_dem(STEP_DOWN, 4100), LIDAR_X, LIDAR_Z, ONLY_OCCLUSION)
    assert (big == big[0]).all() and np.flatnonzero(big[-1].all(axis=1)).tolist() == [5, 6, 7]


def test_geometric_occlusion_is_the_nominal_mounts_shadow_turned_by_the_pitch():
    """The CycleGAN's hint: the same shadow as above, without jitter or randomness, per DEM's pitch."""
    dems = _dem(STEP_DOWN, 3)
    hidden = geometric_occlusion(dems, np.array([0.0, -0.3, 0.0]))
    assert [np.flatnonzero(h.all(axis=1)).tolist() for h in hidden] == [[5, 6, 7], [4, 5, 6, 7], [5, 6, 7]]
    np.testing.assert_array_equal(geometric_occlusion(dems), geometric_occlusion(dems, np.zeros(3)))
    assert not geometric_occlusion(_dem(FLAT, 2)).any()
    with pytest.raises(ValueError, match="pitch must be 3 finite angles"):
        geometric_occlusion(dems, np.array([0.0, np.nan, 0.0]))


def test_occlusion_keeps_a_step_up_in_view_and_hides_behind_a_wall():
    # A 0.2 m step (top at 0.11, below the lidar at 0.39): its front and its top are seen from above.
    out = randomize(_dem(STEP_UP), np.random.default_rng(0), ONLY_OCCLUSION)[0]
    assert not np.isnan(out).any()
    # A wall whose top (0.51) stands above the lidar: the ray to row 3's top (0.95, 0.51) rises 0.12 over 0.85 m
    # and passes the wall's first row (front edge x = 0.8) at 0.39 + 0.141 x 0.7 = 0.489 < 0.51 -> hidden; the
    # first wall row itself (row 4, the face the lidar looks at) and everything in front of it are seen.
    hidden = occlusion_mask(_dem(WALL), LIDAR_X, LIDAR_Z, ONLY_OCCLUSION)[0]
    assert np.flatnonzero(hidden.all(axis=1)).tolist() == [0, 1, 2, 3]
    assert not hidden[4:].any()
    # Flat ground is never hidden, ahead of or behind the sensor.
    assert not occlusion_mask(_dem(FLAT), LIDAR_X, LIDAR_Z).any()


def test_occlusion_ignores_and_keeps_existing_nan():
    profile = STEP_DOWN.copy()
    dems = _dem(profile)
    dems[0, 8, :] = np.nan  # the edge row unmeasured: nothing left to occlude rows 5-7 at this height
    out = randomize(dems, np.random.default_rng(0), ONLY_OCCLUSION)[0]
    assert np.isnan(out[8]).all()
    # row 9 (x 0.3-0.4, at -0.09) still occludes rows 5-7: the line over its front edge (0.4, -0.09) has slope
    # -1.6, so the floor is seen only from x >= 0.4 + 0.25 = 0.65: rows 5 (0.75) and 6 (0.65, on the line)
    # are seen, row 7 (0.55) is hidden.
    assert np.isnan(out[7]).all()
    assert not np.isnan(out[[0, 1, 2, 3, 4, 5]]).any()


def test_each_effect_gives_its_expected_nan_share():
    n = 4000
    flat = _dem(FLAT, n)
    drop = randomize(flat, np.random.default_rng(1), _only(dropout=0.2))
    assert np.isnan(drop).mean() == pytest.approx(0.2, abs=0.005)
    # front rows: 1..4 rows with probability 1 -> 2.5 rows of 20 on average, never row 4 or behind
    front = randomize(flat, np.random.default_rng(2), _only(front_prob=1.0, front_rows_max=4))
    assert np.isnan(front).mean() == pytest.approx(2.5 / 20, abs=0.005)
    assert np.isnan(front[:, 0]).all() and not np.isnan(front[:, 4:]).any()
    # rear block: its front edge e ~ U[-0.6, 0.4]; the row centred at c is NaN when c < e, with probability
    # (0.4 - c) / 1.0 for c in [-0.6, 0.4]: rows centred -0.65 .. 0.35 give 1 + 0.95 + 0.85 + ... + 0.05 = 6 rows
    rear = randomize(flat, np.random.default_rng(3), _only(rear_prob=1.0))
    assert np.isnan(rear).mean() == pytest.approx(6.0 / 20, abs=0.008)
    assert np.isnan(rear[:, 19]).all() and not np.isnan(rear[:, :9]).any()  # row 8 is centred at 0.45
    half = randomize(flat, np.random.default_rng(4), _only(rear_prob=0.5))
    assert np.isnan(half).mean() == pytest.approx(3.0 / 20, abs=0.008)


def test_noise_and_bias():
    n = 2000
    flat = _dem(FLAT, n)
    noisy = randomize(flat, np.random.default_rng(5), _only(noise_sigma=0.01))
    diff = (noisy - flat).astype(np.float64)
    assert abs(diff.mean()) < 5e-4 and diff.std() == pytest.approx(0.01, rel=0.02)
    biased = randomize(flat, np.random.default_rng(6), _only(noise_bias=0.02))
    per_dem = (biased - flat).astype(np.float64).mean(axis=(1, 2))
    assert per_dem.mean() == pytest.approx(0.01, abs=5e-4)  # U[0, 0.02]: mean 0.01, one offset per DEM
    assert per_dem.min() >= -1e-6 and per_dem.max() <= 0.02 + 1e-6
    assert np.allclose(biased - flat, per_dem[:, None, None], atol=1e-6)


def test_edge_smear_raises_the_cell_next_to_an_edge():
    # A step up between rows 4 (high) and 5 (low): with every cell smeared, a DEM drifted "ahead" reads row 5
    # from row 4 (high), one drifted "behind" reads row 4 from row 5 (max keeps it high): row 5 is the only
    # change, in about half the DEMs.
    n = 400
    dems = _dem(STEP_UP, n)
    out = randomize(dems, np.random.default_rng(9), _only(smear_prob=1.0))
    changed = out != dems
    assert not changed[:, [r for r in range(20) if r != 5]].any()
    raised = changed[:, 5].all(axis=1)
    assert np.array_equal(raised, changed[:, 5].any(axis=1))  # the whole row or nothing
    np.testing.assert_allclose(out[raised, 5], GROUND + 0.2)
    assert 0.4 < raised.mean() < 0.6


@pytest.mark.parametrize("profile", [FLAT, STAIRS_UP], ids=["flat", "stairs_up"])
def test_default_nan_share_in_documented_range(profile):
    n = 3000
    out = randomize(_dem(profile, n), np.random.default_rng(11))
    share = float(np.isnan(out).mean())
    assert 0.10 <= share <= 0.40
    # the documented values: 12.5 % on flat ground (no occlusion), 21-22 % on stairs up
    expected = 0.125 if profile is FLAT else 0.215
    assert share == pytest.approx(expected, abs=0.015)


def test_config_round_trip_and_bad_input():
    cfg = DomainRandomization(dropout=0.05, front_rows_max=2)
    assert DomainRandomization.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown field"):
        DomainRandomization.from_dict({"dropuot": 0.1})
    with pytest.raises(ValueError, match="dropout must be a probability"):
        DomainRandomization(dropout=1.5)
    with pytest.raises(ValueError, match="noise_sigma must be >= 0"):
        DomainRandomization(noise_sigma=-0.01)
    with pytest.raises(ValueError, match="rear_x_min"):
        DomainRandomization(rear_x_min=0.5, rear_x_max=0.0)
    with pytest.raises(ValueError, match="finite"):
        DomainRandomization(sensor_z=math.nan)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"shape \(N, rows, cols\)"):
        randomize(FLAT.reshape(20, 1), rng)
    with pytest.raises(ValueError, match="numpy.random.Generator"):
        randomize(_dem(FLAT), 0)
    with pytest.raises(ValueError, match="pitch must be 2"):
        randomize(_dem(FLAT, 2), rng, pitch=np.zeros(3))
    with pytest.raises(ValueError, match="infinite"):
        randomize(_dem(np.where(XC > 0, np.inf, 0.0)), rng)
    with pytest.raises(ValueError, match="one per DEM"):
        occlusion_mask(_dem(FLAT, 3), np.zeros(2), LIDAR_Z)
