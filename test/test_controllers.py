"""Reference controllers: the heuristic's DEM features, and that flippers matter in the physics."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pytest

from flipper_control.controllers import (
    HEURISTIC_VERSIONS,
    POSTURES,
    FixedController,
    HeuristicConfig,
    HeuristicController,
    _median,
    make_controller,
    rule_record,
)
from sim.dem import DemSpec
from sim.mujoco_sim import MujocoSimulator, SimNoise
from sim.rollout import run_episode
from sim.simulator import Observation
from sim.world_sets import load_set, resolve_world


def _obs(dem: np.ndarray, pitch: float = 0.0) -> Observation:
    return Observation(dem=dem.astype(np.float32), pitch=pitch, roll=0.0, flipper_angles=np.zeros(4))


def _dem_with_block(x_from: float, height: float) -> np.ndarray:
    spec = DemSpec()
    xs, _ = spec.cell_centers()
    ground = -0.089  # flat ground seen from base_link on the wheel axle
    return np.where(xs >= x_from, ground + height, ground)


def test_heuristic_features_measure_rise_and_drop():
    ctrl = HeuristicController()
    rise, drop = ctrl.features(_obs(_dem_with_block(0.5, 0.2)))
    assert rise == pytest.approx(0.2, abs=1e-6) and drop == pytest.approx(0.0, abs=1e-6)
    rise, drop = ctrl.features(_obs(_dem_with_block(0.5, -0.3)))
    assert drop == pytest.approx(0.3, abs=1e-6) and rise == pytest.approx(0.0, abs=1e-6)


def test_heuristic_features_ignore_unseen_cells():
    """Lidar-built DEMs have NaN cells: they must neither hide an obstacle nor turn into one."""
    ctrl = HeuristicController()
    dem = _dem_with_block(0.5, 0.2)
    xs, _ = DemSpec().cell_centers()
    holey = dem.copy()
    holey[::3, 1] = np.nan  # a few unseen cells under the robot and ahead
    assert ctrl.features(_obs(holey)) == pytest.approx(ctrl.features(_obs(dem)), abs=1e-6)
    blind = dem.copy()
    blind[(xs >= 0.3)] = np.nan  # nothing seen ahead: no obstacle to react to
    assert ctrl.features(_obs(blind)) == (0.0, 0.0)
    assert np.all(np.isfinite(ctrl.act(_obs(np.full_like(dem, np.nan)))))


def test_heuristic_raises_front_flippers_for_obstacles_and_lowers_them_for_descents():
    ctrl = HeuristicController()
    flat = ctrl.act(_obs(_dem_with_block(0.5, 0.0)))
    up = ctrl.act(_obs(_dem_with_block(0.5, 0.2)))
    down = ctrl.act(_obs(_dem_with_block(0.5, -0.3)))
    assert up[0] > flat[0] > down[0]
    assert up[0] == up[1] and up[2] == up[3]


def test_heuristic_holds_front_flippers_in_the_gravity_frame():
    ctrl = HeuristicController()
    level = ctrl.act(_obs(_dem_with_block(0.5, 0.2)))
    nose_up = ctrl.act(_obs(_dem_with_block(0.5, 0.2), pitch=-0.3))  # REP 103: negative pitch = nose up
    assert nose_up[0] == pytest.approx(level[0] - 0.3)
    assert nose_up[2] < 0  # climbing: rear flippers press down


def test_fixed_controller_postures_and_errors():
    assert np.array_equal(FixedController("approach").act(None), np.array(POSTURES["approach"]))
    assert np.array_equal(FixedController((0.1, 0.2, 0.3, 0.4)).act(None), [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="unknown posture"):
        FixedController("sideways")
    with pytest.raises(ValueError, match="four angles"):
        FixedController((0.1, 0.2))
    with pytest.raises(ValueError, match="allowed: fixed, heuristic"):
        make_controller("magic")


@pytest.fixture(scope="module")
def test_world_levels():
    """One noise-free run of each reference controller on every test world."""
    sim = MujocoSimulator(noise=SimNoise(enabled=False))
    worlds = load_set("test")
    return {
        label: {w.name: run_episode(sim, w, factory()).level for w in worlds}
        for label, factory in (("flat", lambda: FixedController("flat")), ("heuristic", HeuristicController))
    }


def test_flippers_matter_fixed_flat_fails_on_climbs(test_world_levels):
    levels = test_world_levels["flat"]
    failed = [name for name, level in levels.items() if level == "fail"]
    assert len(failed) >= 2, levels
    assert {"pallet", "stairs_up", "step_up"} <= set(failed)  # nothing higher than the track wheels is climbable
    assert levels["flat"] == "good"


def test_heuristic_traverses_every_test_world(test_world_levels):
    levels = test_world_levels["heuristic"]
    assert set(levels.values()) == {"good"}, levels


def test_the_first_rule_reached_too_little_down_on_the_staircase_descent():
    """``heuristic:v1`` (front flippers 0.15 rad below horizontal towards a descent) pitches past the 40-degree
    warning on the 34-degree stairs: the reason today's rule reaches 0.5 rad down. Only that angle differs."""
    v1, v2 = make_controller("heuristic", "v1"), make_controller("heuristic")
    assert v1.config.front_descend == -0.15 and v2.config.front_descend == -0.5
    assert replace(v1.config, front_descend=v2.config.front_descend) == v2.config
    sim = MujocoSimulator(noise=SimNoise(enabled=False))
    stairs_down = resolve_world("stairs_down")
    assert run_episode(sim, stairs_down, v1).level == "unclear"
    assert run_episode(sim, stairs_down, v2).level == "good"
    down = _obs(_dem_with_block(0.5, -0.3))
    assert v1.act(down)[0] == pytest.approx(-0.15) and v2.act(down)[0] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="unknown heuristic version 'v9'; allowed: v2, v1"):
        make_controller("heuristic", "v9")


def test_the_newest_rule_version_is_the_default():
    """Plain ``heuristic`` is the newest version; a change of ``HeuristicConfig``'s defaults without a new version would
    silently change what ``heuristic:v2`` (and every figure recorded under it) means."""
    newest = list(HEURISTIC_VERSIONS)[0]
    assert HEURISTIC_VERSIONS[newest] == HeuristicConfig(), f"HeuristicConfig's defaults differ from {newest}: add a version"
    assert make_controller("heuristic").config == make_controller("heuristic", newest).config
    # what a report records of a reference name: the rule's version and parameters; nothing for a fixed posture
    assert rule_record("heuristic") == {"version": newest} | asdict(HEURISTIC_VERSIONS[newest])
    assert rule_record("heuristic:v1")["front_descend"] == -0.15 and rule_record("fixed:flat") is None
    with pytest.raises(ValueError, match="unknown heuristic version 'v9'"):
        rule_record("heuristic:v9")


def test_the_rules_median_is_numpys_to_the_bit():
    """The ground under the tracks is a median on every decision; the rule's own is numpy's for every count, odd and
    even, in both float widths (a changed bit could move a threshold and a baseline's score)."""
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for n in range(1, 31):
            for _ in range(50):
                values = rng.normal(0.0, 0.3, n).astype(dtype)
                assert _median(values) == float(np.median(values)), (dtype, n)
