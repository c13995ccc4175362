"""The OMPL peer (planning.ompl_peer, planning.ompl_problem): SST and KPIECE1 over simulator snapshots, checked by replay."""

from __future__ import annotations

import numpy as np
import pytest

from planning.actions import COARSE
from planning.ompl_peer import PLANNERS, OmplConfig, _chunks, plan_ompl
from sim.mujoco_sim import MujocoSimulator
from sim.simulator import SUCCESS
from sim.world_sets import resolve_world

pytest.importorskip("ompl")  # planning.ompl_problem imports it only when planning

SEED = 3


@pytest.fixture(scope="module")
def flat():
    return resolve_world("flat")


@pytest.fixture(scope="module")
def solved(flat):
    """One coarse-set solution per planner on ``flat`` (KPIECE1 needs about 2 CPU s, SST well under 1)."""
    return {p: plan_ompl(flat, SEED, OmplConfig(planner=p, action_set="coarse", time_budget_s=20.0)) for p in PLANNERS}


@pytest.mark.parametrize("planner", PLANNERS)
def test_solves_flat_with_coarse_set(solved, flat, planner):
    traj = solved[planner]
    assert traj.success, traj.reason
    m = traj.meta
    assert m["planner"] == f"ompl-{planner}" and m["world"] == "flat" and m["seed"] == SEED
    assert m["success"] and m["solution_exact"] and m["stop"] == "solved" and m["replay_status"] == SUCCESS
    assert 0 < m["cpu_s"] < 20.0
    assert m["propagations"] >= len(m["controls"]) and m["snapshots"] == m["propagations"] + 1
    # 3 m at 0.3 m/s: about ten one-second controls; rows every 0.1 s until the goal is reached
    assert 9 <= len(m["controls"]) <= 12
    assert 10 * (len(m["controls"]) - 1) < len(traj) <= 10 * len(m["controls"])
    assert traj.dem.shape[1:] == (20, 5) and traj.proprio.shape == (len(traj), 6) and traj.action.shape == (len(traj), 4)
    assert np.all(np.isfinite(traj.proprio)) and np.all(np.isfinite(traj.action))
    # each control's targets fill its ten rows
    expected = np.repeat(COARSE.array[m["controls"]], 10, axis=0)[: len(traj)].astype(np.float32)
    np.testing.assert_array_equal(traj.action, expected)


@pytest.mark.parametrize("planner", PLANNERS)
def test_found_path_replays_to_success_in_a_fresh_simulator(solved, flat, planner):
    """Same seed, same actions at the set's dt, a simulator that never saw the search: reaching SUCCESS
    proves each OMPL state's snapshot id pointed at the snapshot its path really produced."""
    controls = solved[planner].meta["controls"]
    sim = MujocoSimulator()
    first = sim.reset(flat, seed=SEED)
    np.testing.assert_allclose(solved[planner].proprio[0], first.proprio(), atol=1e-6)
    for i, a in enumerate(controls):
        assert sim.status != SUCCESS, f"reached the goal before the last control ({i} of {len(controls)})"
        sim.step(COARSE.array[a], COARSE.dt)
    assert sim.status == SUCCESS


def test_same_seed_same_search(flat, solved):
    again = plan_ompl(flat, SEED, OmplConfig(planner="SST", time_budget_s=20.0))
    assert again.meta["controls"] == solved["SST"].meta["controls"]
    assert again.meta["propagations"] == solved["SST"].meta["propagations"]


def test_tiny_budget_on_a_hard_world_fails_with_a_reason():
    world = resolve_world("stairs_up")
    traj = plan_ompl(world, 0, OmplConfig(planner="SST", time_budget_s=0.05))
    assert not traj.success and len(traj) == 0
    assert traj.reason.startswith("OMPL SST: no exact solution in 0.05 CPU s (best progress ")
    assert traj.reason.endswith(f"m of {world.length:g} m)")
    assert traj.meta["success"] is False and traj.meta["solution_exact"] is False and traj.meta["stop"] == "budget"


def test_snapshot_cap_stops_the_search(flat):
    traj = plan_ompl(flat, 0, OmplConfig(planner="KPIECE1", time_budget_s=20.0, max_snapshots=6))
    assert not traj.success and "snapshot cap 6 reached" in traj.reason
    assert traj.meta["snapshots"] == 6 and traj.meta["stop"] == "snapshot_cap"


def _propagate_once(world, config: OmplConfig, action: int = 0, duration: float = 1.0):
    """One propagation of the peer's snapshot table from the start, with plain lists as the OMPL states."""
    from planning.ompl_problem import SnapshotTable

    sim = MujocoSimulator()
    obs = sim.reset(world, seed=0)
    table = SnapshotTable(sim, world, config)
    start = [[0.0] * 2, [0.0] * 2, [0.0] * 4, [0.0], [0.0]]
    table.write(start, obs, float(table.add(sim.get_state(), obs)))
    result = [[0.0] * 2, [0.0] * 2, [0.0] * 4, [0.0], [0.0]]
    table.propagate(start, [action + 0.5], duration, result)
    return table, result


def test_a_step_behind_schedule_is_invalid_as_in_our_planner(flat):
    """The peer searches our planner's problem: a step that leaves the robot further behind the nominal
    schedule than max_delay_s allows is not a valid state (the robot starts at rest, so after one second it
    is a little behind); with the default bound the same step is valid."""
    from planning.planner_config import allowed_delay

    table, result = _propagate_once(flat, OmplConfig(max_delay_s=0.01))
    assert not table.is_valid(result) and table.goal_distance(result) > 0
    lag = result[3][0] - result[0][0] / flat.speed  # time - progress / speed of the new state
    assert lag > 0.01
    table, result = _propagate_once(flat, OmplConfig())
    assert table.is_valid(result) and lag < allowed_delay(table.sim, flat, OmplConfig().max_delay_s)
    table, result = _propagate_once(flat, OmplConfig(max_delay_s=0.01, reject_slow=False))
    assert table.is_valid(result)


def test_config_validation():
    with pytest.raises(ValueError, match="SST, KPIECE1"):
        OmplConfig(planner="RRTstar")
    assert OmplConfig(planner="kpiece1").planner == "KPIECE1"
    assert OmplConfig(action_set="fine").actions.dt == pytest.approx(0.2)
    with pytest.raises(ValueError, match="time_budget_s"):
        OmplConfig(time_budget_s=0)
    with pytest.raises(ValueError, match="max_delay_s"):
        OmplConfig(max_delay_s=0.0)


def test_replay_chunks_keep_the_physics_step_count():
    assert _chunks(1.0, 0.1) == [0.1] * 10
    assert _chunks(0.2, 0.1) == [0.1] * 2
    assert _chunks(0.25, 0.1) == [0.25]  # not a whole multiple: one row for the control
