"""Behind-schedule rejection of the planner (planning/rrt.py): the world's own "slow" limit and ``max_delay_s``.

Plans are replayed in a fresh simulator to check that they really arrive in time.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_planner import _replay  # replays a plan in a fresh simulator, checking its recorded observations

from planning.planner_config import PlannerConfig
from planning.rrt import plan
from sim.mujoco_sim import MujocoSimulator
from sim.simulator import SUCCESS
from sim.world_sets import resolve_world


@pytest.fixture(scope="module")
def sim():
    return MujocoSimulator()


@pytest.fixture(scope="module")
def worlds():
    return {name: resolve_world(name) for name in ("step_up", "stairs_up")}


def test_plans_behind_schedule_are_rejected(sim, worlds):
    """On the 34-degree stairs a careless climb slips and would be judged slow; the planner must not keep it."""
    world = worlds["stairs_up"]
    deadline = sim.limits.slow_factor * world.length / world.speed
    careless = plan(sim, world, 0, PlannerConfig(reject_slow=False))
    assert careless.success and careless.meta["sim_time"] > deadline  # the cheap plan is a slow one
    timely = plan(sim, world, 0, PlannerConfig(reject_slow=True))
    assert timely.success, timely.reason
    assert timely.meta["sim_time"] <= deadline
    assert timely.meta["unsafe_expansions"].get("slow", 0) >= 1  # it met the schedule only by rejecting
    end = _replay(world, 0, timely)
    assert end.status == SUCCESS and end.time <= deadline


def test_max_delay_bounds_how_far_a_plan_falls_behind_schedule(sim, worlds):
    """``max_delay_s`` below the world's own slack: expansions that fall further behind the nominal schedule
    are rejected as slow, and the plan arrives within nominal time + max_delay_s."""
    world = worlds["step_up"]
    nominal = world.length / world.speed
    loose = plan(sim, world, 0, PlannerConfig(max_delay_s=None))
    assert loose.success and loose.meta["sim_time"] - nominal > 2.0  # the world's slack (3 s) lets it dawdle
    brisk = plan(sim, world, 0, PlannerConfig(max_delay_s=2.0))
    assert brisk.success, brisk.reason
    assert brisk.meta["sim_time"] - nominal <= 2.0 and brisk.meta["unsafe_expansions"].get("slow", 0) >= 1
    assert _replay(world, 0, brisk).time - nominal <= 2.0


def test_max_delay_above_the_world_slack_changes_nothing(sim, worlds):
    world = worlds["step_up"]  # slack (1.3 - 1) x 10 s = 3 s
    a, b = plan(sim, world, 0, PlannerConfig(max_delay_s=None)), plan(sim, world, 0, PlannerConfig(max_delay_s=5.0))
    np.testing.assert_array_equal(a.action, b.action)


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_max_delay_must_be_positive(value):
    with pytest.raises(ValueError, match="max_delay_s"):
        PlannerConfig(max_delay_s=value)
