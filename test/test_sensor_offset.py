"""The sensor's height offset from unpaired sets, against the ground under the tracks (``sensor_offset``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flipper_control.learning.paired_eval import collect_pairs
from flipper_control.learning.sensor_offset import (
    LIFT_ANGLE,
    estimate_height_offset,
    ground_readings,
    lift_angle,
    with_estimated_offset,
)
from flipper_control.policy import TRACK_REACH, footprint_heights
from perception.gan_training import GanData, GanTrainConfig
from sim.dem import DemSpec
from sim.robot import RobotSpec

SPEC = DemSpec()


def _on_the_plane(n: int, rng: np.random.Generator, above: float) -> tuple[np.ndarray, np.ndarray]:
    """DEMs whose cells under the tracks lie ``above`` metres over the tracks' contact plane (random pitch and roll),
    with random terrain beyond the tracks and a third of all cells missing."""
    scalars = np.zeros((n, 6), np.float32)
    scalars[:, 0], scalars[:, 1] = rng.uniform(-0.5, 0.5, n), rng.uniform(-0.2, 0.2, n)
    cx, cy = (torch.from_numpy(a.astype(np.float64)) for a in SPEC.cell_centers())
    plane = footprint_heights(torch.from_numpy(scalars[:, 0].astype(np.float64)),
                              torch.from_numpy(scalars[:, 1].astype(np.float64)), cx, cy, RobotSpec.wheel_radius).numpy()
    dems = np.where(np.abs(cx.numpy()) <= TRACK_REACH, plane + above, rng.uniform(-0.5, 0.5, plane.shape))
    dems[rng.random(dems.shape) < 1 / 3] = np.nan
    return dems.astype(np.float32), scalars


def test_the_offset_is_what_one_set_reads_above_the_other_on_the_ground_under_the_tracks():
    rng = np.random.default_rng(0)
    sim = _on_the_plane(200, rng, 0.0)
    real = _on_the_plane(300, rng, 0.013)
    est = estimate_height_offset(*sim, *real)
    assert est.offset_m == pytest.approx(0.013, abs=1e-5) and est.sim_m == pytest.approx(0.0, abs=1e-5)
    assert est.real_dems == 300 and est.sim_dems == 200
    # a fifth of the real DEMs on a rock under the tracks (20 cm): the medians hardly move, a mean would by 4 cm
    rocks = rng.random(300) < 0.2
    under = np.abs(SPEC.cell_centers()[0]) <= TRACK_REACH
    real[0][rocks] += np.where(under, 0.2, 0.0).astype(np.float32)
    assert estimate_height_offset(*sim, *real).offset_m == pytest.approx(0.013, abs=0.002)
    # the GAN's config takes it; nothing else changes
    config, again = with_estimated_offset(GanTrainConfig(lambda_p=3.0), GanData(sim[0], sim[1], np.zeros(200, np.int64)),
                                          GanData(real[0], real[1], np.zeros(300, np.int64)))
    assert config.height_offset == again.offset_m and config.lambda_p == 3.0


def test_states_whose_tracks_do_not_rest_on_level_ground_are_left_out():
    """Half the simulated states on pressed flippers (body lifted 8 cm) and a quarter on stairs (every other row of
    cells under the tracks 15 cm lower): counted, they would pull the simulated reading down by centimetres."""
    rng = np.random.default_rng(2)
    sim_dems, sim_scalars = _on_the_plane(400, rng, 0.0)
    real = _on_the_plane(300, rng, 0.015)
    lifted, stairs = np.arange(400) < 200, (np.arange(400) >= 200) & (np.arange(400) < 300)
    sim_dems[lifted] -= 0.08
    sim_scalars[lifted, 2:6] = -0.4  # every flipper pressed below the tracks' plane
    rows = np.zeros(SPEC.rows, bool)
    rows[::2] = True
    under = np.abs(SPEC.cell_centers()[0]) <= TRACK_REACH
    sim_dems[stairs] -= np.where(under & rows[:, None], 0.15, 0.0).astype(np.float32)
    readings = ground_readings(sim_dems, sim_scalars)
    assert np.isnan(readings[lifted]).all() and np.isnan(readings[stairs]).all()
    assert np.isfinite(readings[300:]).all()
    est = estimate_height_offset(sim_dems, sim_scalars, *real)
    assert est.offset_m == pytest.approx(0.015, abs=1e-5) and est.sim_dems == 100
    # the same lifted states with the flippers at rest would count: the lift angle is what leaves them out
    sim_scalars[lifted, 2:6] = 0.0
    assert np.isfinite(ground_readings(sim_dems, sim_scalars)[lifted]).all()
    # the robot's geometry sets it: a tip wheel as large as the track wheels reaches below the plane at once
    assert LIFT_ANGLE == pytest.approx(-0.1313, abs=1e-4)
    assert lift_angle(RobotSpec(flipper_tip_radius=RobotSpec.wheel_radius)) == 0.0


def test_a_set_with_nothing_measured_under_the_tracks_is_refused_by_name():
    rng = np.random.default_rng(1)
    sim = _on_the_plane(20, rng, 0.0)
    real = _on_the_plane(20, rng, 0.01)
    real[0][:, np.abs(SPEC.cell_centers()[0][:, 0]) <= TRACK_REACH] = np.nan
    assert np.isnan(ground_readings(*real)).all()
    with pytest.raises(ValueError, match="none of the 20 DEMs of the real set shows level ground under the tracks"):
        estimate_height_offset(*sim, *real)
    with pytest.raises(ValueError, match="ground_readings needs DEMs"):
        ground_readings(real[0][0], real[1][:1])
    with pytest.raises(ValueError, match="N rows of 6 scalars"):
        ground_readings(real[0], real[1][:, :2])


def test_on_the_reality_proxy_the_unpaired_estimate_finds_the_lidars_offset_at_the_same_poses():
    """Exact and lidar-built DEMs of heuristic runs, used as two unpaired sets: the estimate lands within half a
    centimetre of how far the proxy's measured cells read above the exact ones at the same poses (+1-2 cm), and the
    exact DEMs lie on the tracks' plane (within a millimetre)."""
    pairs = collect_pairs(2, world_seed=7, seed=0)
    measured = np.isfinite(pairs["proxy"])
    truth = float(np.mean((pairs["proxy"] - pairs["exact"])[measured]))
    est = estimate_height_offset(pairs["exact"], pairs["scalars"], pairs["proxy"], pairs["scalars"])
    assert 0.005 < truth < 0.03
    assert est.offset_m == pytest.approx(truth, abs=0.005)
    assert abs(est.sim_m) < 0.001 and est.sim_dems > 100
