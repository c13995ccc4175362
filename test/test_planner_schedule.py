"""Behind-schedule rejection of the planner (planning/rrt.py): the world's own "slow" limit, ``max_delay_s`` and
``keep_delay_s``, and the delay a plan records.

Plans are replayed in a fresh simulator to check that they really arrive in time.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from planner_setup import SEED, _replay, coarse_plans_fixture, sim_fixture, worlds_fixture  # noqa: F401 - fixtures

from planning.planner_config import PlannerConfig
from planning.rrt import plan
from sim.simulator import SUCCESS


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


def test_plans_record_their_largest_delay_behind_the_schedule(coarse_plans, worlds):
    """meta delay_s: the most the path falls behind nominal time (progress / speed) at any node; at the goal node
    the delay is the plan's duration past the nominal one, so delay_s is at least that."""
    for name, traj in coarse_plans.items():
        world = worlds[name]
        at_goal = traj.meta["sim_time"] - world.length / world.speed
        assert traj.meta["delay_s"] >= at_goal - 1e-3 and traj.meta["delay_s"] >= 0.0


def test_keep_delay_s_discards_a_slower_plan_without_searching_more(sim, worlds, coarse_plans):
    """A bound below the found plan's delay turns it into a failed trajectory after the same search (same
    expansions, the reason names the delay); a bound above it keeps the very same plan."""
    kept = coarse_plans["step_up"]
    delay = kept.meta["delay_s"]
    assert delay > 0.1  # the climb costs time, so a bound below it exists
    tight = plan(sim, worlds["step_up"], SEED, PlannerConfig(action_set="coarse", keep_delay_s=delay - 0.05))
    assert not tight.success and len(tight) == 0
    assert tight.meta["expansions"] == kept.meta["expansions"] and tight.meta["delay_s"] == delay
    assert re.search(r"behind schedule: .* more than keep_delay_s", tight.reason), tight.reason
    loose = plan(sim, worlds["step_up"], SEED, PlannerConfig(action_set="coarse", keep_delay_s=delay + 0.05))
    assert loose.success and np.array_equal(loose.action, kept.action) and np.array_equal(loose.dem, kept.dem)


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_max_delay_must_be_positive(value):
    with pytest.raises(ValueError, match="max_delay_s"):
        PlannerConfig(max_delay_s=value)
