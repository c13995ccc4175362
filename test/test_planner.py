"""The policy-guided RRT (planning/rrt.py) and Smart Start (planning/smart_start.py) searching in the simulator:
unguided plans, determinism, node selection, budgets and warnings. The guide and the draw of actions are in
test_planner_guided.py, behind-schedule rejection in test_planner_schedule.py, the parts that need no search (the Smart
Start grid, the action sets, PlannerConfig) in test_planner_parts.py; the shared fixtures are in planner_setup.py.

Plans are checked by replaying their actions in a fresh simulator: reaching the goal with the recorded observations
proves that snapshots are restored exactly and that the path is extracted in the right order. Budgets are small, so the
whole module runs in a few CPU seconds.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from planner_setup import (
    RECORD_DT,
    SEED,
    _replay,
    _strict,
    coarse_plans_fixture,  # noqa: F401 - a fixture
    sim_fixture,  # noqa: F401 - a fixture
    worlds_fixture,  # noqa: F401 - a fixture
)

from planning.actions import COARSE
from planning.planner_config import PlannerConfig
from planning.rrt import plan, replay
from planning.smart_start import SmartStartConfig
from sim.mujoco_sim import MujocoSimulator
from sim.safety import SafetyLimits
from sim.simulator import SUCCESS
from sim.world import world_from_dict
from sim.world_sets import resolve_world

WARN_SEED = 0  # a seed whose step_up climb warns at 30 degrees of pitch unless the planner avoids it
# a 0.25 m step: climbable with a clean plan even when pitch warns at 30 degrees
STEP_025 = {"name": "step_025", "length": 3.0,
            "terrain": [{"type": "step", "position": [1.2, 0.0], "height": 0.25, "length": 3.0}]}
# four low steps (about 22 degrees): every coarse posture climbs them in time
EASY_STAIRS = {"name": "easy_stairs", "length": 3.4, "terrain": [
    {"type": "stairs", "position": [1.2, 0.0], "direction": "up", "steps": 4, "rise": 0.12, "run": 0.3, "landing": 2.0}]}
# a 0.8 m wall across the course: no posture gets over it
WALL = {"name": "wall", "length": 3.0, "terrain": [{"type": "step", "position": [1.0, 0.0], "height": 0.8, "length": 3.0}]}


# ---------------------------------------------------------------------------------------------- unguided plans


@pytest.mark.parametrize("name", ["flat", "step_up"])
def test_coarse_plan_succeeds_with_consistent_arrays(coarse_plans, name):
    traj = coarse_plans[name]
    assert traj.success and traj.reason == "", traj.reason
    t = len(traj)
    assert t > 0 and traj.dem.shape == (t, 20, 5) and traj.proprio.shape == (t, 6) and traj.action.shape == (t, 4)
    assert traj.dem.dtype == traj.proprio.dtype == traj.action.dtype == np.float32
    assert np.all(np.isfinite(traj.dem)) and np.all(np.isfinite(traj.proprio)) and np.all(np.isfinite(traj.action))


@pytest.mark.parametrize("name", ["flat", "step_up"])
def test_unguided_actions_belong_to_the_set_and_are_held_for_dt(coarse_plans, name):
    traj = coarse_plans[name]
    members = {tuple(a) for a in COARSE.array.astype(np.float32)}
    assert {tuple(a) for a in traj.action} <= members
    # each expansion holds one action for dt = 1 s, i.e. ten consecutive rows (the last one may stop early at the goal)
    per = int(round(COARSE.dt / RECORD_DT))
    for k in range(0, len(traj), per):
        chunk = traj.action[k:k + per]
        assert np.all(chunk == chunk[0]), f"action changes inside the expansion starting at row {k}"


@pytest.mark.parametrize("name", ["flat", "step_up"])
def test_one_sample_per_record_dt(coarse_plans, name):
    traj = coarse_plans[name]
    sim_time = traj.meta["sim_time"]
    assert sim_time >= traj.meta["length"] / 0.3 * 0.9  # the tracks drive at 0.3 m/s: at least ~10 s for 3 m
    assert abs(len(traj) - sim_time / RECORD_DT) <= 1.0
    assert math.ceil(sim_time / RECORD_DT - 1e-6) == len(traj)  # the goal is reached during the last sample


@pytest.mark.parametrize("name", ["flat", "step_up"])
def test_meta_of_a_successful_plan(coarse_plans, name):
    m = coarse_plans[name].meta
    assert m["world"] == name and m["seed"] == SEED and m["success"] is True and m["guided"] is False
    assert m["action_set"] == COARSE.name and m["dt"] == COARSE.dt
    assert m["samples"] == len(coarse_plans[name]) and m["length"] == 3.0
    assert 0 < m["cpu_s"] < 10.0 and m["best_progress"] >= m["length"]
    # every expansion either added a node (the root is not an expansion) or was counted as unsafe
    assert m["expansions"] == m["nodes"] - 1 + sum(m["unsafe_expansions"].values())
    assert m["expansions"] >= len(coarse_plans[name]) // 10  # at least one expansion per second of path


@pytest.mark.parametrize("name", ["flat", "step_up"])
def test_replay_in_a_fresh_simulator_reaches_success(coarse_plans, worlds, name):
    """Snapshot restore and path extraction: the recorded observations are exactly what a fresh simulator sees
    when it applies the recorded actions from reset, and the last sample ends at the goal."""
    traj = coarse_plans[name]
    fresh = _replay(worlds[name], SEED, traj)
    assert fresh.status == SUCCESS
    assert not [e for e in fresh.events if e.severity == "warn"]  # reject_warnings is on by default
    assert replay(MujocoSimulator(), worlds[name], SEED, list(traj.action), RECORD_DT) == SUCCESS


def test_replay_with_another_noise_seed_diverges(coarse_plans, worlds):
    """The seed's noise changes the run, so the exact match of the replay above is no coincidence."""
    traj = coarse_plans["step_up"]
    other = MujocoSimulator()
    obs = other.reset(worlds["step_up"], seed=SEED + 1)
    worst = 0.0
    for k, a in enumerate(traj.action):
        worst = max(worst, float(np.abs(obs.proprio() - traj.proprio[k]).max()))
        obs = other.step(a, RECORD_DT)
    assert worst > 1e-3


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_identical_plan(sim, worlds, coarse_plans):
    again = plan(sim, worlds["step_up"], SEED, PlannerConfig(action_set="coarse"))
    first = coarse_plans["step_up"]
    for name in ("dem", "proprio", "action"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    assert again.meta["expansions"] == first.meta["expansions"] and again.meta["nodes"] == first.meta["nodes"]


def test_fresh_simulator_plans_like_a_reused_one(worlds, coarse_plans):
    """The shared simulator had planned on other worlds before: nothing of that leaks into a plan."""
    fresh = plan(MujocoSimulator(), worlds["flat"], SEED, PlannerConfig(action_set="coarse"))
    np.testing.assert_array_equal(fresh.proprio, coarse_plans["flat"].proprio)
    np.testing.assert_array_equal(fresh.action, coarse_plans["flat"].action)


def test_different_seeds_give_different_plans(sim, worlds, coarse_plans):
    other = plan(sim, worlds["flat"], SEED + 1, PlannerConfig(action_set="coarse"))
    assert other.success and other.meta["seed"] == SEED + 1
    first = coarse_plans["flat"]
    assert first.proprio.shape != other.proprio.shape or not np.array_equal(first.proprio, other.proprio)


# ---------------------------------------------------------------------------------------------- node selection


@pytest.mark.parametrize("eta", [0.0, 1.0], ids=["rrt-only", "smart-start-only"])
def test_either_selection_rule_alone_solves_step_up(sim, worlds, eta):
    """With ``extend_new=0`` every expansion goes through node selection: pure RRT and pure Smart Start both work."""
    cfg = PlannerConfig(extend_new=0.0, max_expansions=300, smart_start=SmartStartConfig(eta=eta))
    traj = plan(sim, worlds["step_up"], SEED, cfg)
    assert traj.success, traj.reason
    assert _replay(worlds["step_up"], SEED, traj).status == SUCCESS


def test_smart_start_goes_for_the_frontier(sim, worlds):
    """Smart Start alone on an easy staircase: almost every expansion extends the path that is finally kept."""
    cfg = PlannerConfig(extend_new=0.0, smart_start=SmartStartConfig(eta=1.0))
    traj = plan(sim, world_from_dict(EASY_STAIRS), SEED, cfg)
    assert traj.success, traj.reason
    path_nodes = math.ceil(len(traj) / int(round(COARSE.dt / RECORD_DT)))
    assert path_nodes <= traj.meta["expansions"] <= path_nodes + 3


def test_smart_start_skips_exhausted_nodes(sim):
    """Blocked by the wall, nodes run out of actions; selection must never return one of them."""
    cfg = PlannerConfig(extend_new=0.0, max_expansions=150, smart_start=SmartStartConfig(eta=1.0))
    traj = plan(sim, world_from_dict(WALL), SEED, cfg)
    assert not traj.success and traj.reason.startswith("expansion budget 150 exhausted")
    assert traj.meta["nodes"] - 1 + sum(traj.meta["unsafe_expansions"].values()) == 150


# ---------------------------------------------------------------------------------------------- budgets and failures


def test_expansion_budget_gives_a_failed_trajectory(sim, worlds):
    world = worlds["stairs_up"]
    traj = plan(sim, world, SEED, PlannerConfig(max_expansions=3))
    assert not traj.success and len(traj) == 0
    assert traj.dem.shape == (0, 20, 5) and traj.proprio.shape == (0, 6) and traj.action.shape == (0, 4)
    assert traj.reason.startswith("expansion budget 3 exhausted; best progress ")
    m = re.search(rf"best progress (\d+\.\d\d) m of {world.length:g} m", traj.reason)
    assert m and float(m.group(1)) > 0.0 and abs(float(m.group(1)) - traj.meta["best_progress"]) < 0.006
    assert traj.reason.endswith("unsafe expansions: none")
    assert traj.meta["success"] is False and traj.meta["expansions"] == 3 and traj.meta["world"] == "stairs_up"
    assert "samples" not in traj.meta and traj.summary()["samples"] == 0


def test_cpu_budget_gives_a_failed_trajectory(sim, worlds):
    world = worlds["stairs_up"]
    traj = plan(sim, world, SEED, PlannerConfig(max_cpu_s=1e-6))
    assert not traj.success and len(traj) == 0
    assert re.fullmatch(rf"CPU budget 1e-06 s exhausted; best progress 0\.0\d m of {world.length:g} m; unsafe expansions: none",
                        traj.reason)
    assert traj.meta["expansions"] == 0 and traj.meta["nodes"] == 1  # only the start (its progress is the start noise)


@pytest.mark.parametrize("mib", [1e-6, 0.05])
def test_memory_budget_gives_a_failed_trajectory(sim, worlds, mib):
    traj = plan(sim, worlds["stairs_up"], SEED, PlannerConfig(max_tree_mib=mib))
    assert not traj.success and len(traj) == 0
    assert traj.reason.startswith(f"tree memory budget {mib:g} MiB exhausted; best progress ")
    assert traj.meta["tree_mib"] >= mib
    if mib == 0.05:  # a few nodes fit: the search ran, and stopped as soon as the tree outgrew the budget
        assert traj.meta["expansions"] > 0 and traj.meta["tree_mib"] < 2 * mib


def test_wall_fails_naming_the_unsafe_expansions(sim):
    wall = world_from_dict(WALL)
    traj = plan(sim, wall, SEED, PlannerConfig(max_expansions=40))
    assert not traj.success and len(traj) == 0
    assert traj.reason.startswith("expansion budget 40 exhausted; best progress ")
    unsafe = traj.meta["unsafe_expansions"]
    assert unsafe and set(unsafe) <= {"pitch", "roll", "accel", "contact", "lateral", "stuck", "blowup", "time", "warning",
                                 "slow"}
    assert traj.meta["best_progress"] < 1.0  # never past the wall's foot
    for kind, n in unsafe.items():
        assert f"{kind} {n}" in traj.reason


def test_no_safe_action_exhausts_the_tree():
    """Limits that every action violates (1 m of progress every 0.5 s): the root's three actions all fail as stuck."""
    traj = plan(_strict(stuck_time=0.5, stuck_distance=1.0), resolve_world("flat"), SEED, PlannerConfig())
    assert not traj.success and len(traj) == 0
    assert traj.reason.startswith("every node's actions are exhausted")
    assert traj.reason.endswith(f"unsafe expansions: stuck {len(COARSE)}")
    assert traj.meta["expansions"] == len(COARSE) and traj.meta["nodes"] == 1


# ---------------------------------------------------------------------------------------------- warnings


def test_warnings_make_expansions_unsafe_only_when_rejected():
    """A pitch warning at any tilt: rejected, nothing is safe; accepted, flat ground is easy."""
    limits = {"pitch_warn": 1e-6, "pitch_fail": 1.0}
    rejected = plan(_strict(**limits), resolve_world("flat"), SEED, PlannerConfig(reject_warnings=True))
    assert not rejected.success and rejected.reason.endswith(f"unsafe expansions: warning {len(COARSE)}")
    accepted = plan(_strict(**limits), resolve_world("flat"), SEED, PlannerConfig(reject_warnings=False))
    assert accepted.success, accepted.reason


def test_rejected_warnings_never_appear_on_the_path(worlds):
    """With a 30 degree pitch warning the climb of a 0.25 m step warns unless the planner avoids it."""
    limits = SafetyLimits(pitch_warn=math.radians(30.0))
    world = world_from_dict(STEP_025)
    planner_sim = MujocoSimulator(limits=limits)
    clean = plan(planner_sim, world, WARN_SEED, PlannerConfig(reject_warnings=True))
    assert clean.success, clean.reason
    assert clean.meta["unsafe_expansions"].get("warning", 0) >= 1  # the planner met a warning and went around it
    end = _replay(world, WARN_SEED, clean, limits)
    assert end.status == SUCCESS and [e for e in end.events if e.severity == "warn"] == []
    # the planner's simulator, left at the goal node, holds that node's events only (none of the rejected sibling's)
    assert planner_sim.status == SUCCESS and list(planner_sim.events) == list(end.events)
    # the contrast: accepting warnings, the same search keeps a path that warns
    sloppy = plan(MujocoSimulator(limits=limits), world, WARN_SEED, PlannerConfig(reject_warnings=False))
    assert sloppy.success
    end = _replay(world, WARN_SEED, sloppy, limits)
    assert end.status == SUCCESS and [e.kind for e in end.events if e.severity == "warn"]


def test_pitch_margin_keeps_every_recorded_pitch_below_the_warning_less_the_margin():
    """The 0.25 m step (noise seed 0) pitches the body to about 33 degrees on the plain plan; with a 15 degree
    margin below the 40 degree warning the planner rejects the steeper expansions and finds a climb under 25."""
    world = world_from_dict(STEP_025)
    plain = plan(MujocoSimulator(), world, WARN_SEED, PlannerConfig())
    assert plain.success and np.degrees(np.abs(plain.proprio[:, 0])).max() > 25.0
    careful = plan(MujocoSimulator(), world, WARN_SEED, PlannerConfig(pitch_margin_deg=15.0))
    assert careful.success, careful.reason
    assert careful.meta["unsafe_expansions"].get("pitch margin", 0) >= 1
    assert np.degrees(np.abs(careful.proprio[:, 0])).max() <= 25.0
    assert _replay(world, WARN_SEED, careful).status == SUCCESS
    # a margin no climb of the step can keep: the search fails and says why
    hopeless = plan(MujocoSimulator(), world, WARN_SEED, PlannerConfig(pitch_margin_deg=30.0, max_expansions=200))
    assert not hopeless.success and "pitch margin" in hopeless.reason
    # a margin as large as a stricter simulator's whole warning level is refused before any search
    with pytest.raises(ValueError, match="pitch_margin_deg 30 leaves no pitch below this simulator's warning at 30 deg"):
        plan(_strict(pitch_warn=math.radians(30.0), pitch_fail=1.0), world, WARN_SEED, PlannerConfig(pitch_margin_deg=30.0))
