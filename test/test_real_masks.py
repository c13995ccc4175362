"""Borrowed real NaN masks (perception.real_masks): masks come from real DEMs of the same pitch bin, heights stay."""

from __future__ import annotations

import numpy as np
import pytest

from perception.real_masks import MaskBorrowing, borrow_real_masks, pitch_bins, pitch_change_ahead

SHAPE = (20, 5)


def _real_set(per_bin: int = 30):
    """Real masks that name their pitch bin: nose-up DEMs miss row 0, level ones row 10, nose-down ones row 19."""
    masks, pitch = [], []
    for row, deg in ((0, -25.0), (10, 3.0), (19, 25.0)):
        m = np.zeros((per_bin, *SHAPE), bool)
        m[:, row] = True
        masks.append(m)
        pitch.append(np.radians(np.full(per_bin, deg)))
    return np.concatenate(masks), np.concatenate(pitch)


def _sim(n: int, deg: float, seed: int = 0):
    return np.random.default_rng(seed).normal(0.0, 0.1, (n, *SHAPE)).astype(np.float32), np.radians(np.full(n, deg))


def test_each_dem_wears_a_real_mask_of_its_own_pitch_bin_and_keeps_its_heights():
    masks, real_pitch = _real_set()
    for deg, row in ((-22.0, 0), (7.0, 10), (21.0, 19)):
        heights, pitch = _sim(50, deg)
        out = borrow_real_masks(heights, pitch, masks, real_pitch, np.random.default_rng(1))
        nan = np.isnan(out)
        assert nan[:, row].all() and nan.sum() == 50 * SHAPE[1]  # exactly the bin's row, in every DEM
        np.testing.assert_array_equal(out[~nan], heights[~nan])
        assert not np.isnan(heights).any()  # the input is not modified


def test_share_sets_how_many_dems_borrow():
    masks, real_pitch = _real_set()
    heights, pitch = _sim(2000, 3.0)
    none = borrow_real_masks(heights, pitch, masks, real_pitch, np.random.default_rng(2), MaskBorrowing(share=0.0))
    np.testing.assert_array_equal(none, heights)
    half = borrow_real_masks(heights, pitch, masks, real_pitch, np.random.default_rng(2), MaskBorrowing(share=0.5))
    assert 0.45 < np.isnan(half).any(axis=(1, 2)).mean() < 0.55


def test_a_sparse_bin_draws_from_its_neighbours_and_an_empty_neighbourhood_from_all():
    masks, real_pitch = _real_set()
    heights, pitch = _sim(40, -12.0)  # bin [-20, -10): no real DEM; neighbours [-30, -20) (row 0) and [-10, 0): none
    out = borrow_real_masks(heights, pitch, masks, real_pitch, np.random.default_rng(3))
    assert np.isnan(out[:, 0]).all() and np.isnan(out).sum() == 40 * SHAPE[1]
    far, far_pitch = _sim(300, 80.0)  # nothing near: any real mask
    rows = np.isnan(borrow_real_masks(far, far_pitch, masks, real_pitch, np.random.default_rng(4))).all(axis=2)
    assert {0, 10, 19} == set(np.flatnonzero(rows.any(axis=0)))
    assert pitch_bins(np.radians([-0.1, 0.0, 9.9, 10.0]), 10.0).tolist() == [-1, 0, 0, 1]


def test_the_seed_decides_the_draw():
    masks, real_pitch = _real_set()
    masks[:, 5, 2] = np.arange(len(masks)) % 2 == 0  # two kinds of mask in every bin
    heights, pitch = _sim(200, 3.0)
    a, b, c = (borrow_real_masks(heights, pitch, masks, real_pitch, np.random.default_rng(s)) for s in (7, 7, 8))
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    assert not np.array_equal(np.isnan(a), np.isnan(c))


@pytest.mark.parametrize("change, message", [
    (lambda h, p, m, q: (h[:, :10], p, m, q), "share the DEM geometry"),
    (lambda h, p, m, q: (h, p[:-1], m, q), "one pitch per DEM"),
    (lambda h, p, m, q: (h, p, m[:0], q[:0]), "no real DEM"),
    (lambda h, p, m, q: (np.where(h > 0.1, np.nan, h), p, m, q), "must be finite"),
    (lambda h, p, m, q: (h[0], p, m, q), "3 dimensions"),
])
def test_bad_input_is_named(change, message):
    masks, real_pitch = _real_set()
    heights, pitch = _sim(10, 0.0)
    with pytest.raises(ValueError, match=message):
        borrow_real_masks(*change(heights, pitch, masks, real_pitch), np.random.default_rng(0))


def test_config_is_validated_and_round_trips():
    for bad, field in (({"share": 1.5}, "share"), ({"pitch_bin_deg": 0}, "pitch_bin_deg"), ({"min_pool": 0}, "min_pool"),
                       ({"share": True}, "share"), ({"start_s": -1.0}, "start_s"), ({"start_s": float("nan")}, "start_s")):
        with pytest.raises(ValueError, match=field):
            MaskBorrowing(**bad)
    with pytest.raises(ValueError, match="bin_width"):
        MaskBorrowing.from_dict({"bin_width": 5})
    config = MaskBorrowing(share=0.5, pitch_bin_deg=5.0, min_pool=3, start_s=2.5)
    assert MaskBorrowing.from_dict(config.to_dict()) == config


def _real_runs(runs: int = 4, steps: int = 60):
    """Real runs whose masks name the second of the run they were taken in: row 19 - second (level pitch)."""
    masks = np.zeros((runs * steps, *SHAPE), bool)
    step = np.tile(np.arange(steps), runs)
    masks[np.arange(len(step)), 19 - step // 10] = True
    return masks, np.zeros(len(step)), step


def test_the_start_window_borrows_from_the_same_second_of_the_real_runs_and_only_there():
    masks, real_pitch, real_step = _real_runs()
    heights, pitch = _sim(100, 0.0)
    step = np.arange(100)  # one trajectory of 10 s
    out = borrow_real_masks(heights, pitch, masks, real_pitch, np.random.default_rng(5), MaskBorrowing(share=0.0, start_s=3.0),
                            step=step, real_step=real_step)
    nan = np.isnan(out)
    for s in range(3):  # seconds 0-2: every DEM wears a mask of its own second (row 19, 18, 17)
        assert nan[s * 10:(s + 1) * 10, 19 - s].all() and nan[s * 10:(s + 1) * 10].sum() == 10 * SHAPE[1]
    assert not nan[30:].any()  # after the window share 0 holds: G's (here: exact) DEMs stay as they are
    np.testing.assert_array_equal(out[~nan], heights[~nan])
    # without a window the pitch decides as before, and the steps change nothing
    plain = borrow_real_masks(heights, pitch, masks, real_pitch, np.random.default_rng(5), MaskBorrowing(share=0.5))
    same = borrow_real_masks(heights, pitch, masks, real_pitch, np.random.default_rng(5), MaskBorrowing(share=0.5),
                             step=step, real_step=real_step)
    np.testing.assert_array_equal(np.isnan(plain), np.isnan(same))
    with pytest.raises(ValueError, match="start_s needs each DEM's step"):
        borrow_real_masks(heights, pitch, masks, real_pitch, np.random.default_rng(5), MaskBorrowing(start_s=3.0))
    with pytest.raises(ValueError, match="one step per DEM"):
        borrow_real_masks(heights, pitch, masks, real_pitch, np.random.default_rng(5), MaskBorrowing(start_s=3.0),
                          step=step[:50], real_step=real_step)


def test_pitch_change_ahead_is_the_largest_signed_change_within_the_own_trajectory():
    pitch = np.radians([0.0, 0.0, -5.0, 10.0, 0.0, 30.0, 30.0])
    traj = np.array([1, 1, 1, 1, 2, 2, 2])
    got = np.degrees(pitch_change_ahead(pitch, traj, 2))
    # sample 1 sees -5 and +10 ahead: +10 is the larger; sample 3 is its trajectory's last; 4 sees the next one's +30
    np.testing.assert_allclose(got, [-5.0, 10.0, 15.0, 0.0, 30.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(np.degrees(pitch_change_ahead(pitch, traj, 1)), [0.0, -5.0, 15.0, 0.0, 30.0, 0.0, 0.0],
                               atol=1e-9)
    assert not pitch_change_ahead(pitch, traj, 0).any()
    with pytest.raises(ValueError, match="equal 1-d shapes"):
        pitch_change_ahead(pitch, traj[:-1], 2)


def test_the_change_ahead_picks_real_masks_of_the_same_stage_of_a_manoeuvre():
    """Level real DEMs before a nose-down change miss row 3, those before a level stretch row 15: a level simulated
    DEM wears the mask of its own stage, which the pitch alone cannot tell apart."""
    masks = np.zeros((80, *SHAPE), bool)
    masks[:40, 3] = True
    masks[40:, 15] = True
    real_pitch, real_ahead = np.zeros(80), np.radians(np.r_[np.full(40, 25.0), np.full(40, 1.0)])
    heights, pitch = _sim(60, 2.0)
    ahead = np.radians(np.r_[np.full(30, 22.0), np.full(30, -2.0)])
    config = MaskBorrowing(ahead_s=2.0)
    out = borrow_real_masks(heights, pitch, masks, real_pitch, np.random.default_rng(3), config, ahead=ahead,
                            real_ahead=real_ahead)
    nan = np.isnan(out)
    assert nan[:30, 3].all() and not nan[:30, 15].any()
    assert nan[30:, 15].all() and not nan[30:, 3].any()
    np.testing.assert_array_equal(out[~nan], heights[~nan])
    # a change ahead no real run showed (-30 deg): the pitch's own pool, as without the option
    far = borrow_real_masks(heights, pitch, masks, real_pitch, np.random.default_rng(3), config,
                            ahead=np.radians(np.full(60, -30.0)), real_ahead=real_ahead)
    assert np.isnan(far[:, 3]).any() and np.isnan(far[:, 15]).any()
    with pytest.raises(ValueError, match="ahead_s needs each DEM's pitch change ahead"):
        borrow_real_masks(heights, pitch, masks, real_pitch, np.random.default_rng(3), config)
    with pytest.raises(ValueError, match="one change per DEM"):
        borrow_real_masks(heights, pitch, masks, real_pitch, np.random.default_rng(3), config, ahead=ahead[:5],
                          real_ahead=real_ahead)
    for bad in ({"ahead_s": -1.0}, {"ahead_s": 11.0}, {"ahead_bin_deg": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            MaskBorrowing(**bad)
