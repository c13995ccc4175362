"""Peer comparison: OMPL's kinodynamic planners (SST, KPIECE1) over the same simulator propagation.

``flipper bench plan --peer ompl`` puts these beside our snapshot RRT (``planning.rrt``). Both search the
same problem with the same moves: a node is a saved MuJoCo state, an expansion restores it, holds one
action of the discrete action set (``planning.actions``) for the set's ``dt`` and keeps the result unless
the safety monitor failed it; the goal is the simulator reporting SUCCESS. Only the search differs.
How the simulator is put under OMPL (states, metric, controls, propagator, validity, goal) is
``planning.ompl_problem``; this module runs one search (its settings, ``OmplConfig``, are the problem's).

Search
------
- **Budget.** ``time_budget_s`` CPU seconds (``time.process_time``) from the start reset on (as in
  ``planning.rrt``), checked by the planner's termination condition every iteration; the search also stops at the first
  exact solution (SST's path-length objective gets an infinite cost threshold, so the first solution
  satisfies it; KPIECE1 stops there by itself), as our RRT does.
- **Seeding.** ``ompl.util.RNG.setSeed`` re-seeds OMPL's generator of per-sampler seeds; every sampler
  and planner of one ``plan_ompl`` call is created after that, so the same seeds give the same search
  (up to where the CPU budget cuts it). OMPL prints an error when the seed is set again in one process
  ("random number generation already started"); the re-seed still takes effect for every generator
  created afterwards, which is all that a call uses, so that message is silenced.

SST and the 2.0.1 bindings
--------------------------
The wheels bind ``ompl.control.SST`` without a constructor; ``planning.ompl_sst`` builds one (see there).
``meta["construction"]`` records which way was used.

Result
------
``plan_ompl`` returns a ``planning.dataset.Trajectory``. On success the found path is replayed from
``reset`` in ``record_dt`` chunks (0.1 s: the control period of ``sim.rollout``), one row per chunk:
DEM, proprio, and the action's targets; the replay must reach SUCCESS again, which also checks the
snapshot bookkeeping. On failure (budget, snapshot cap, approximate only) it returns
``Trajectory.failed`` with the reason; "no solution" never raises.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from planning.dataset import Trajectory
from planning.ompl_problem import PLANNERS, OmplConfig, SnapshotTable, build_problem, ompl_bindings
from planning.ompl_sst import OmplUnavailable, ompl_version
from sim.simulator import RUNNING, SUCCESS, Simulator
from sim.world import World

__all__ = ["OmplConfig", "OmplUnavailable", "PLANNERS", "plan_ompl"]

# ------------------------------------------------------------------------------------------ replay
def _chunks(dt: float, record_dt: float) -> list[float]:
    """Split one control into ``record_dt`` pieces when it is a whole multiple (bit-identical physics:
    the simulator steps round(dt / timestep) times either way); otherwise keep it whole."""
    n = int(round(dt / record_dt))
    return [record_dt] * n if n >= 1 and abs(n * record_dt - dt) < 1e-9 else [dt]


def _replay(sim: Simulator, world: World, seed: int, targets: np.ndarray, controls: list[int], dt: float,
            record_dt: float) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], str]:
    """Run the found controls from reset; one row (DEM, proprio, targets) per chunk while running."""
    obs = sim.reset(world, seed=seed)
    dems, proprio, acts = [], [], []
    for a in controls:
        for piece in _chunks(dt, record_dt):
            if sim.status != RUNNING:
                break
            dems.append(obs.dem)
            proprio.append(obs.proprio())
            acts.append(targets[a])
            obs = sim.step(targets[a], piece)
    return dems, proprio, acts, sim.status


# ------------------------------------------------------------------------------------------ API
def plan_ompl(world: World, seed: int = 0, config: OmplConfig | None = None, sim: Simulator | None = None) -> Trajectory:
    """Plan ``world`` (simulator noise seed ``seed``) with OMPL's ``config.planner`` over simulator snapshots.

    ``sim``: the simulator to search with (default: a new ``MujocoSimulator``); it is reset to ``world``.
    Returns a successful ``Trajectory`` (rows every ``record_dt`` s along the replayed path) or
    ``Trajectory.failed`` with the reason; raises only for a bad configuration or a missing OMPL.

    ``meta``: planner (``ompl-SST`` / ``ompl-KPIECE1``), world, seed, cpu_s (CPU seconds of the start
    reset, problem setup and search, as ``planning.rrt`` counts them), propagations (simulator expansions;
    also as ``expansions``), snapshots (table size), success, solution_exact, stop (solved / budget /
    snapshot_cap), best_progress (m, over states that had not failed), length, action_set, dt, budget_s,
    max_snapshots, snapshot_bytes, ompl_seed, seeded, ompl_version, construction (binding / abi-shim),
    planner_status; on a solution also controls (action indices), action_names, replay_status,
    replay_cpu_s (recording the rows) and total_cpu_s (cpu_s + replay_cpu_s: our RRT records while it
    searches, so this is the figure to put beside its cpu_s).
    """
    config = config or OmplConfig()
    lib = ompl_bindings()
    ou = lib.ou
    if sim is None:
        from sim.mujoco_sim import MujocoSimulator  # deferred: importing this module needs neither MuJoCo nor OMPL

        sim = MujocoSimulator()
    actions = config.actions
    ompl_seed = (int(config.seed if config.seed is not None else seed) % (2**31 - 1)) + 1  # OMPL needs a seed > 0
    label = f"OMPL {config.planner}"

    t0 = time.process_time()  # like planning.rrt: the clock (and the budget) starts before the start reset
    start_obs = sim.reset(world, seed=seed)
    table = SnapshotTable(sim, world, config)
    start_id = table.add(sim.get_state(), start_obs)
    log_level = ou.getLogLevel()
    try:
        ou.setLogLevel(ou.LOG_NONE)  # silence the "seed set again" message (see the module docstring)
        ou.RNG.setSeed(ompl_seed)  # before any OMPL object of this run exists: they all draw from it
        ou.setLogLevel(ou.LOG_WARN)  # OMPL's progress messages would flood benchmark output
        problem = build_problem(lib, table, start_obs, start_id, config)
        deadline = t0 + config.time_budget_s
        ptc = lib.ob.PlannerTerminationCondition(lambda: table.full or time.process_time() >= deadline)
        status = problem.planner.solve(ptc)
        cpu_s = time.process_time() - t0
        exact = bool(problem.pdef.hasExactSolution())
        path = problem.pdef.getSolutionPath() if exact else None
        controls = [table.action_index(path.getControl(i)) for i in range(path.getControlCount())] if exact else []
        construction = problem.construction
        del path, problem  # free OMPL's tree before the replay
    finally:
        ou.setLogLevel(log_level)

    best = table.best_progress
    meta: dict[str, Any] = {
        "planner": f"ompl-{config.planner}", "world": world.name, "seed": int(seed), "cpu_s": round(cpu_s, 4),
        "propagations": table.propagations, "expansions": table.propagations, "snapshots": len(table.states),
        "success": False, "solution_exact": exact, "stop": "solved" if exact else ("snapshot_cap" if table.full else "budget"),
        "best_progress": round(best, 4), "length": world.length, "action_set": actions.name, "dt": actions.dt,
        "budget_s": config.time_budget_s, "max_snapshots": config.max_snapshots,
        "snapshot_bytes": int(sum(s.nbytes for s in table.states)), "ompl_seed": ompl_seed, "seeded": True,
        "ompl_version": ompl_version(), "construction": construction, "planner_status": str(status.asString()),
    }
    table.states.clear()  # the snapshots are not needed for the replay
    dem_shape = tuple(sim.dem_spec.shape)
    if not exact:
        progress = f"best progress {best:.2f} m of {world.length:g} m"
        if table.full:
            reason = (f"{label}: snapshot cap {config.max_snapshots} reached after {cpu_s:.1f} CPU s without an exact "
                      f"solution ({progress})")
        else:
            budget = config.time_budget_s
            shown = f"{budget:.1f}" if round(budget, 1) == budget else f"{budget:g}"  # "20.0", but "0.05" stays
            reason = f"{label}: no exact solution in {shown} CPU s ({progress})"
        return Trajectory.failed(reason, dem_shape, meta)

    meta["controls"] = controls
    meta["action_names"] = [actions.names[a] for a in controls]
    t_replay = time.process_time()
    dems, proprio, acts, replay_status = _replay(sim, world, seed, table.targets, controls, actions.dt, config.record_dt)
    meta["replay_cpu_s"] = round(time.process_time() - t_replay, 4)
    meta["total_cpu_s"] = round(cpu_s + meta["replay_cpu_s"], 4)
    meta["replay_status"] = replay_status
    if replay_status != SUCCESS:
        # MuJoCo replays bit for bit, so this would be a bookkeeping bug, not a planning outcome: say so plainly.
        return Trajectory.failed(f"{label}: the found path of {len(controls)} controls ends {replay_status} when "
                                 f"replayed from reset (expected {SUCCESS})", dem_shape, meta)
    meta["success"] = True
    return Trajectory(np.stack(dems), np.stack(proprio), np.stack(acts), success=True, meta=meta)
