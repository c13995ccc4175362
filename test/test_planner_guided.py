"""How the planner (planning/rrt.py) picks the action to expand: a guide's output first (guide_prob, random_dive,
guide_range), repeat_prob among the random draws. Plans are replayed in a fresh simulator as in test_planner.py."""

from __future__ import annotations

import numpy as np
import pytest
from planner_setup import RECORD_DT, SEED, _replay, _strict, sim_fixture, worlds_fixture  # noqa: F401 - fixtures

from flipper_control.controllers import FixedController, HeuristicController
from planning.actions import COARSE, FINE
from planning.planner_config import PlannerConfig, allowed_delay, behind_schedule
from planning.rrt import _Planner, plan
from sim.mujoco_sim import MujocoSimulator
from sim.simulator import RUNNING, SUCCESS
from sim.world_sets import resolve_world

NEUTRAL = COARSE.array[COARSE.names.index("neutral")]


# ---------------------------------------------------------------------------------------------- guided planning


def test_guide_output_is_tried_first_even_off_the_set(sim, worlds):
    posture = np.array([0.5, 0.5, 0.1, 0.1])  # not one of the coarse actions
    assert not any(np.allclose(posture, a) for a in COARSE.array)
    traj = plan(sim, worlds["flat"], SEED, PlannerConfig(guide_prob=1.0), guide=FixedController(tuple(posture)).act)
    assert traj.success and traj.meta["guided"] is True
    np.testing.assert_array_equal(traj.action[0], posture.astype(np.float32))
    np.testing.assert_array_equal(traj.action, np.tile(posture.astype(np.float32), (len(traj), 1)))
    assert _replay(worlds["flat"], SEED, traj).status == SUCCESS


def test_neutral_guide_keeps_the_path_neutral(sim, worlds):
    guide = FixedController(tuple(NEUTRAL)).act
    strict = plan(sim, worlds["flat"], SEED, PlannerConfig(guide_prob=1.0), guide=guide)
    assert strict.success and np.all(strict.action == NEUTRAL.astype(np.float32))
    # with the default guide_prob some expansions explore, but the path stays mostly the policy's
    loose = plan(sim, worlds["flat"], SEED, PlannerConfig(), guide=guide)
    assert loose.success
    assert np.mean(np.all(loose.action == NEUTRAL.astype(np.float32), axis=1)) >= 0.6


def test_the_first_dive_follows_the_guide_even_with_random_dives(sim, worlds):
    guide = FixedController((0.0, 0.0, 0.0, 0.0)).act  # flat: fine on flat ground
    traj = plan(sim, worlds["flat"], SEED, PlannerConfig(guide_prob=1.0, random_dive=1.0), guide=guide)
    assert traj.success and np.all(traj.action == 0.0), "where the guide is good, the plan is the guide's"


@pytest.mark.parametrize("random_dive, low, high", [(0.0, 0.7, 1.0), (1.0, 0.0, 0.5)])
def test_later_dives_ignore_the_guide_with_probability_random_dive(sim, worlds, random_dive, low, high):
    """A flat-flipper guide gets stuck at the step; after that dive fails, dives either keep returning to the
    guide's posture (random_dive 0) or draw their postures at random (random_dive 1)."""
    guide = FixedController((0.0, 0.0, 0.0, 0.0)).act
    traj = plan(sim, worlds["step_up"], SEED, PlannerConfig(guide_prob=1.0, random_dive=random_dive), guide=guide)
    assert traj.success, traj.reason
    flat = np.all(traj.action == 0.0, axis=1)
    assert flat[0], "the first dive starts with the guide's posture"
    after = flat[int(np.argmin(flat)):]  # from the first deviation from the guide on
    assert low <= after.mean() <= high


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_random_dive_must_be_a_probability(value):
    with pytest.raises(ValueError, match="random_dive"):
        PlannerConfig(random_dive=value)


# ---------------------------------------------------------------------------------------------- repeated actions


def _switches(traj) -> int:
    """How often a plan changes posture between consecutive expansions."""
    per_expansion = traj.action[:: int(round(FINE.dt / RECORD_DT))]
    return int(np.sum(np.any(per_expansion[1:] != per_expansion[:-1], axis=1)))


def test_repeat_prob_holds_the_nodes_posture_through_random_draws(sim, worlds):
    """Unguided fine planning on flat ground goes deep from each new node: uniform draws switch posture at most
    expansions, repeat_prob 1 keeps the first one to the goal (nothing on flat ground rejects it)."""
    uniform = plan(sim, worlds["flat"], SEED, PlannerConfig(action_set="fine"))
    held = plan(sim, worlds["flat"], SEED, PlannerConfig(action_set="fine", repeat_prob=1.0))
    assert uniform.success and held.success
    assert _switches(held) == 0 and np.all(held.action == held.action[0])
    assert _switches(uniform) >= len(uniform) // int(round(FINE.dt / RECORD_DT)) // 2
    assert _replay(worlds["flat"], SEED, held).status == SUCCESS


def test_repeat_prob_repeats_only_an_untried_action(sim, worlds):
    """At a node whose own action was already tried, the draw falls back to a uniform one."""
    planner = _Planner(sim, worlds["flat"], SEED, PlannerConfig(action_set="fine", repeat_prob=1.0), None)
    obs = sim.reset(worlds["flat"], seed=SEED)
    planner._add(-1, None, np.zeros((0, *obs.dem.shape), np.float32), np.zeros((0, 6), np.float32), obs)
    own = FINE.array[FINE.names.index("press")]
    planner._add(0, own, np.zeros((0, *obs.dem.shape), np.float32), np.zeros((0, 6), np.float32), obs)
    node = planner.nodes[1]
    np.testing.assert_array_equal(planner._choose_action(node), own)
    drawn = [planner._choose_action(node) for _ in range(len(FINE) - 1)]
    assert not any(np.array_equal(a, own) for a in drawn) and not node.candidates


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_repeat_prob_must_be_a_probability(value):
    with pytest.raises(ValueError, match="repeat_prob"):
        PlannerConfig(repeat_prob=value)


def test_guided_candidates_are_ordered_by_distance_to_the_guide(sim, worlds):
    target = np.array([0.7, 0.7, -0.1, -0.1])
    planner = _Planner(sim, worlds["flat"], SEED, PlannerConfig(), FixedController(tuple(target)).act)
    cands = planner._candidates(sim.reset(worlds["flat"], seed=SEED))
    np.testing.assert_array_equal(cands[0], target)
    dist = [float(np.sum((c - target) ** 2)) for c in cands[1:]]
    assert dist == sorted(dist) and len(cands) == len(COARSE) + 1


def test_guide_range_actions_clips_the_guide_to_the_action_sets_postures(sim, worlds):
    wild = np.array([1.5, -1.0, 1.5, -1.0])  # inside the joint range, outside every coarse posture
    robot = _Planner(sim, worlds["flat"], SEED, PlannerConfig(), FixedController(tuple(wild)).act)
    np.testing.assert_array_equal(robot._candidates(sim.reset(worlds["flat"], seed=SEED))[0], wild)
    clipped = _Planner(sim, worlds["flat"], SEED, PlannerConfig(guide_range="actions"), FixedController(tuple(wild)).act)
    cands = clipped._candidates(sim.reset(worlds["flat"], seed=SEED))
    lo, hi = COARSE.array.min(axis=0), COARSE.array.max(axis=0)
    np.testing.assert_array_equal(cands[0], [hi[0], lo[1], hi[2], lo[3]])
    assert all(np.all(c >= lo) and np.all(c <= hi) for c in cands)
    inside = np.array([0.5, 0.5, -0.1, -0.1])  # a guide inside the range is offered as it is
    within = _Planner(sim, worlds["flat"], SEED, PlannerConfig(guide_range="actions"), FixedController(tuple(inside)).act)
    np.testing.assert_array_equal(within._candidates(sim.reset(worlds["flat"], seed=SEED))[0], inside)
    with pytest.raises(ValueError, match="guide_range must be one of robot, actions, snap"):
        PlannerConfig(guide_range="joints")


def test_guide_range_snap_offers_only_the_sets_postures_nearest_first(sim, worlds):
    """With snap a guide between two postures (the rear half pressed) is never tried itself: the nearest posture
    comes first, so every label of a guided plan is one of the set's postures."""
    between = np.array([0.7, 0.7, -0.08, -0.08])  # nearest coarse posture: climb (0.8, 0.8, -0.2, -0.2)
    snapped = _Planner(sim, worlds["flat"], SEED, PlannerConfig(guide_range="snap"), FixedController(tuple(between)).act)
    cands = snapped._candidates(sim.reset(worlds["flat"], seed=SEED))
    assert len(cands) == len(COARSE)
    np.testing.assert_array_equal(cands[0], COARSE.array[COARSE.names.index("climb")])
    dist = [float(np.sum((c - between) ** 2)) for c in cands]
    assert dist == sorted(dist)
    on_a_posture = COARSE.array[COARSE.names.index("neutral")]  # a guide exactly on a posture: it is offered once
    exact = _Planner(sim, worlds["flat"], SEED, PlannerConfig(guide_range="snap"), FixedController(tuple(on_a_posture)).act)
    cands = exact._candidates(sim.reset(worlds["flat"], seed=SEED))
    assert len(cands) == len(COARSE)
    np.testing.assert_array_equal(cands[0], on_a_posture)
    traj = plan(sim, worlds["step_up"], SEED, PlannerConfig(action_set="fine", guide_range="snap"),
                guide=HeuristicController().act)
    assert traj.success, traj.reason
    postures = {tuple(a) for a in FINE.array.astype(np.float32)}
    assert {tuple(a) for a in traj.action} <= postures


def test_guide_equal_to_a_set_action_is_not_tried_twice():
    """Every expansion from the root fails: the root should be exhausted after one try per distinct action."""
    sim = _strict(stuck_time=0.5, stuck_distance=1.0)
    traj = plan(sim, resolve_world("flat"), SEED, PlannerConfig(guide_prob=1.0), guide=FixedController(tuple(NEUTRAL)).act)
    assert not traj.success and traj.meta["expansions"] == len(COARSE)


def test_heuristic_guide_solves_step_up(sim, worlds):
    world = worlds["step_up"]
    heuristic = HeuristicController()
    traj = plan(sim, world, SEED, PlannerConfig(action_set="fine"), guide=heuristic.act)
    assert traj.success, traj.reason
    assert traj.meta["guided"] is True and traj.meta["action_set"] == FINE.name
    assert abs(len(traj) - traj.meta["sim_time"] / RECORD_DT) <= 1.0
    assert _replay(world, SEED, traj).status == SUCCESS
    # guide_prob 1: the first expansion applies the heuristic's own output at the start
    first = plan(sim, world, SEED, PlannerConfig(action_set="fine", guide_prob=1.0), guide=heuristic.act)
    assert first.success
    start = MujocoSimulator().reset(world, seed=SEED)
    np.testing.assert_allclose(first.action[0], heuristic.act(start), atol=1e-6)


# ---------------------------------------------------------------------------------------------- policy_start


def test_policy_start_roots_the_plan_where_the_guide_drove(sim, worlds):
    """policy_start 1: the guide drives from reset, and the plan starts at a state it passed. Replaying the guide's
    own steps up to the recorded start and then the plan's actions must see the plan's recorded observations and
    reach the goal; the plan holds only the samples from the start on."""
    world = worlds["step_up"]
    heuristic = HeuristicController()
    whole = plan(sim, world, SEED, PlannerConfig(action_set="fine"), guide=heuristic.act)
    starts = []
    for seed in (SEED, SEED + 1, SEED + 2):
        traj = plan(sim, world, seed, PlannerConfig(action_set="fine", policy_start=1.0), guide=heuristic.act)
        assert traj.success, traj.reason
        start_s = traj.meta["policy_start_s"]
        n = int(round(start_s / RECORD_DT))
        assert abs(n * RECORD_DT - start_s) < 1e-6, "the start is one of the guide's control steps"
        assert _replay(world, seed, traj, lead=(heuristic, n)).status == SUCCESS
        assert abs(len(traj) + n - traj.meta["sim_time"] / RECORD_DT) <= 1.0, "only the samples after the start"
        starts.append(start_s)
    assert len(set(starts)) == 3 and max(starts) > 0.0, "each seed draws its own start along the guide's run"
    assert "policy_start_s" not in whole.meta


def test_policy_start_is_ignored_without_a_guide(sim, worlds):
    """Unguided plans ignore policy_start (there is no guide to drive) without drawing for it: the plan equals that of
    a config without the field."""
    world = worlds["step_up"]
    base = plan(sim, world, SEED, PlannerConfig(action_set="coarse"))
    unguided = plan(sim, world, SEED, PlannerConfig(action_set="coarse", policy_start=1.0))
    np.testing.assert_array_equal(base.action, unguided.action)
    assert "policy_start_s" not in unguided.meta


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_policy_start_must_be_a_share(value):
    with pytest.raises(ValueError, match="policy_start"):
        PlannerConfig(policy_start=value)


def test_policy_start_before_trouble_starts_only_where_the_guide_got_into_trouble(sim, worlds):
    """policy_start_before_s: a guide that drives the world cleanly (the heuristic on step_up) leaves the plan at the
    world's start; one that gets stuck (flat flippers at the step) roots it within the last seconds before its
    drive fell behind schedule."""
    world = worlds["step_up"]
    config = PlannerConfig(action_set="fine", policy_start=1.0, policy_start_before_s=2.0, max_expansions=200)
    clean = plan(sim, world, SEED, config, guide=HeuristicController().act)
    assert clean.success and "policy_start_s" not in clean.meta
    flat = FixedController((0.0, 0.0, 0.0, 0.0))
    stuck = plan(sim, world, SEED, config, guide=flat.act)
    # where the flat drive falls behind schedule, in a fresh simulator
    fresh = MujocoSimulator()
    obs = fresh.reset(world, seed=SEED)
    max_delay = allowed_delay(fresh, world, config.max_delay_s)
    while fresh.status == RUNNING and not behind_schedule(obs, world, max_delay):
        obs = fresh.step(flat.act(obs), RECORD_DT)
    assert fresh.status == RUNNING, "the flat drive should stall at the step, not end"
    slip = fresh.time
    assert slip - 2.0 - 1e-6 <= stuck.meta["policy_start_s"] < slip
