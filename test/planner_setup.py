"""What the planner's search tests share (test_planner.py, test_planner_guided.py, test_planner_schedule.py): the
seed, the simulator and world fixtures, unguided coarse plans and the replay check; not a test module.

The fixtures are registered under their short names (``sim``, ``worlds``, ``coarse_plans``); a test module imports
them by the function's name (``sim_fixture``, ...) with ``# noqa: F401``, so that a test's parameter ``sim``
does not shadow an import (F811).
"""

from __future__ import annotations

import numpy as np
import pytest

from planning.planner_config import PlannerConfig
from planning.rrt import plan
from sim.mujoco_sim import MujocoSimulator
from sim.safety import SafetyLimits
from sim.simulator import RUNNING
from sim.world_sets import resolve_world

SEED = 3
RECORD_DT = PlannerConfig().record_dt


@pytest.fixture(scope="module", name="sim")
def sim_fixture():
    """One simulator (with its default seeded noise) shared by the module; ``plan`` resets it."""
    return MujocoSimulator()


@pytest.fixture(scope="module", name="worlds")
def worlds_fixture():
    return {name: resolve_world(name) for name in ("flat", "step_up", "stairs_up")}


@pytest.fixture(scope="module", name="coarse_plans")
def coarse_plans_fixture(sim, worlds):
    """Unguided coarse-set plans on flat and step_up (about 0.15 CPU s each)."""
    return {name: plan(sim, worlds[name], SEED, PlannerConfig(action_set="coarse")) for name in ("flat", "step_up")}


def _replay(world, seed: int, traj, limits: SafetyLimits | None = None, lead=None) -> MujocoSimulator:
    """Step every recorded action for one record_dt from reset in a fresh simulator, checking the recorded
    observations on the way; returns the simulator at the end. ``lead``: (controller, steps) driven first, for a plan
    rooted where that controller drove (``PlannerConfig.policy_start``)."""
    fresh = MujocoSimulator(limits=limits)
    obs = fresh.reset(world, seed=seed)
    if lead is not None:
        controller, steps = lead
        controller.reset()
        for _ in range(steps):
            obs = fresh.step(controller.act(obs), RECORD_DT)
    for k, a in enumerate(traj.action):
        assert fresh.status == RUNNING, f"replay ended ({fresh.status}) at sample {k} of {len(traj)}"
        np.testing.assert_allclose(traj.proprio[k], obs.proprio(), atol=1e-5, err_msg=f"proprio of sample {k}")
        np.testing.assert_allclose(traj.dem[k], obs.dem, atol=1e-5, err_msg=f"DEM of sample {k}")
        obs = fresh.step(a, RECORD_DT)
    return fresh


def _strict(**limits) -> MujocoSimulator:
    return MujocoSimulator(limits=SafetyLimits(**limits))
