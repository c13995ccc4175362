"""Peer comparison: OMPL's kinodynamic planners (SST, KPIECE1) over the same simulator propagation.

``flipper bench plan --peer ompl`` puts these beside our snapshot RRT (``planning.rrt``). Both search the
same problem with the same moves: a node is a saved MuJoCo state, an expansion restores it, holds one
action of the discrete action set (``planning.actions``) for the set's ``dt`` and keeps the result unless
the safety monitor failed it; the goal is the simulator reporting SUCCESS. Only the search differs.

How the simulator is put under OMPL
-----------------------------------
- **State.** A MuJoCo state cannot be rebuilt from a small vector, so an OMPL state is a compound of
  low-dimensional features (course: progress x and lateral y; attitude: pitch and roll; the four flipper
  angles; time) plus a *snapshot id* indexing a table of ``SimState`` kept by the peer. The id is a
  plain real-vector component, so whatever OMPL does to states (``copyState``, ``cloneState``, the
  solution path) copies the id with the features and it always points at the matching snapshot.
  The id subspace has distance weight 0: OMPL's metrics (SST's nearest neighbours and witnesses) see
  the features only; KPIECE1 uses a projection onto (progress, pitch).
- **Metric.** A weighted sum of the feature groups' distances in units of one nominal control step
  (speed * dt metres of travel). SST's selection / pruning radii stay at their defaults 0.2 / 0.1
  (the 2.0.1 bindings cannot set planner parameters), so without that scaling a fine-set step (6 cm,
  and almost nothing while the robot settles after reset) stays inside the start's pruning radius and
  SST never grows its tree past the start.
- **Control.** The discrete action set as a 1-D real control in [0, K), floored to the action index.
  The uniform control sampler then draws every action with probability 1/K, exactly the move set of our
  RRT. (The alternative, a continuous 4-D flipper target snapped to the nearest action, would draw the
  actions with the volumes of their Voronoi cells in the joint box, an arbitrary bias.)
- **Duration.** The propagation step size is the action set's ``dt`` and the min/max control duration
  is one step, so every OMPL propagation is one expansion of our RRT.
- **Propagator.** Restores the snapshot by id, steps the chosen action for ``dt``, stores the new
  snapshot and writes its features and id. A state whose run already ended (SUCCESS) is copied, not
  stepped. The table only grows; ``max_snapshots`` caps it (the search then stops and says so).
- **Validity.** A state is invalid when its snapshot's status is FAILED (any safety failure, including
  the world's time limit), when the step to it raised a new safety warning or left the run further
  behind the nominal schedule than ``max_delay_s`` allows (the same rules and helpers as
  ``planning.rrt``, so that both search the same problem), or when it has no snapshot (cap reached).
- **Goal.** A goal region whose distance is 0 for a snapshot with status SUCCESS (or progress at least
  the world's length) and the remaining course length otherwise.
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

import functools
import math
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from planning.actions import ActionSet
from planning.actions import action_set as resolve_action_set
from planning.dataset import Trajectory
from planning.ompl_sst import OmplUnavailable, construct_sst, ompl_version
from planning.rrt import DEFAULT_MAX_DELAY_S, allowed_delay, behind_schedule, warn_count
from sim.simulator import FAILED, RUNNING, SUCCESS, Observation, SimState, Simulator
from sim.world import World

__all__ = ["OmplConfig", "OmplUnavailable", "PLANNERS", "plan_ompl"]

PLANNERS = ("SST", "KPIECE1")

# subspaces of the compound state, in order; the snapshot id is last
_COURSE, _ATTITUDE, _FLIPPERS, _TIME, _ID = range(5)
_NO_SNAPSHOT = -1.0  # id written when the snapshot table is full: such a state is invalid


@dataclass(frozen=True)
class OmplConfig:
    """Settings of one OMPL peer run.

    ``planner``: ``SST`` or ``KPIECE1`` (case-insensitive). ``action_set``: ``coarse``, ``fine``,
    ``coarse@0.5`` ... or an ``ActionSet`` (see ``planning.actions.action_set``). ``time_budget_s``: CPU
    seconds for problem setup plus search. ``seed``: OMPL's RNG seed; None uses the ``seed`` given to
    ``plan_ompl``. ``max_snapshots``: cap of the snapshot table (about 4.5 kB each). ``weights``: how
    many metres of course one unit of each feature group counts as in the distance: course (per m),
    attitude (per rad), flipper angles (per rad) and time (per second at the world's speed: 1.0 counts
    one second as speed * 1 s); the sum is then expressed in nominal control steps (module docstring).
    ``kpiece_cells``: KPIECE1 grid cell sizes of progress (m) and pitch (rad). ``record_dt``: seconds per
    recorded row when the found path is replayed.
    """

    planner: str = "SST"
    action_set: str | ActionSet = "coarse"
    time_budget_s: float = 20.0
    seed: int | None = None
    max_snapshots: int = 50_000
    weights: tuple[float, float, float, float] = (1.0, 0.3, 0.1, 1.0)
    kpiece_cells: tuple[float, float] = (0.1, 0.1)
    record_dt: float = 0.1
    # the acceptance rules of planning.rrt.PlannerConfig, with the same defaults and meaning
    reject_warnings: bool = True
    reject_slow: bool = True
    max_delay_s: float | None = DEFAULT_MAX_DELAY_S

    def __post_init__(self) -> None:
        names = {p.lower(): p for p in PLANNERS}
        if str(self.planner).lower() not in names:
            raise ValueError(f"unknown OMPL planner {self.planner!r}; choose one of: {', '.join(PLANNERS)}")
        object.__setattr__(self, "planner", names[str(self.planner).lower()])
        object.__setattr__(self, "action_set", resolve_action_set(self.action_set))
        if not (self.time_budget_s > 0 and math.isfinite(self.time_budget_s)):
            raise ValueError(f"time_budget_s must be a positive number of CPU seconds, got {self.time_budget_s}")
        if int(self.max_snapshots) < 2:
            raise ValueError(f"max_snapshots must be at least 2, got {self.max_snapshots}")
        if len(self.weights) != 4 or min(self.weights) < 0 or self.weights[0] <= 0:
            raise ValueError(f"weights: four non-negative numbers (course > 0), got {self.weights}")
        if len(self.kpiece_cells) != 2 or min(self.kpiece_cells) <= 0:
            raise ValueError(f"kpiece_cells: two positive sizes (progress m, pitch rad), got {self.kpiece_cells}")
        if not self.record_dt > 0:
            raise ValueError(f"record_dt must be > 0, got {self.record_dt}")
        if self.max_delay_s is not None and not self.max_delay_s > 0:
            raise ValueError(f"max_delay_s must be > 0 seconds or None, got {self.max_delay_s}")

    @property
    def actions(self) -> ActionSet:
        """The resolved action set (``action_set`` is resolved on construction)."""
        return self.action_set  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ snapshots
class _SnapshotTable:
    """The simulator side of the search: snapshots by id and the OMPL callbacks that use them.

    It holds no OMPL object: OMPL's C++ objects hold these bound methods, and a reference back from
    here to them would be a cycle that Python's garbage collector cannot see through C++.
    """

    def __init__(self, sim: Simulator, world: World, config: OmplConfig):
        self.sim, self.world = sim, world
        self.reject_warnings = config.reject_warnings
        self.max_delay = allowed_delay(sim, world, config.max_delay_s) if config.reject_slow else math.inf
        self.targets = config.actions.array
        self.k = len(config.actions)
        self.max_snapshots = int(config.max_snapshots)
        self.states: list[SimState] = []
        self.status: list[str] = []  # per id, so that validity and goal checks need not touch the snapshot
        self.rejected: list[bool] = []  # per id: the step to it warned or fell behind schedule
        self.propagations = 0
        self.full = False
        self.best_progress = -math.inf

    def add(self, state: SimState, obs: Observation, rejected: bool = False) -> int:
        self.states.append(state)
        self.status.append(state.status)
        self.rejected.append(rejected)
        if state.status != FAILED and not rejected:
            self.best_progress = max(self.best_progress, obs.progress)
        return len(self.states) - 1

    @staticmethod
    def write(out, obs: Observation, snap_id: float) -> None:
        """Write the features of ``obs`` and ``snap_id`` into the OMPL compound state ``out``."""
        out[_COURSE][0:2] = [obs.progress, obs.lateral]
        out[_ATTITUDE][0:2] = [obs.pitch, obs.roll]
        out[_FLIPPERS][0:4] = [float(v) for v in obs.flipper_angles]
        out[_TIME][0] = obs.time
        out[_ID][0] = snap_id

    def action_index(self, control) -> int:
        return min(self.k - 1, max(0, int(math.floor(control[0]))))

    # ---- OMPL callbacks
    def propagate(self, start, control, duration: float, result) -> None:
        """StatePropagatorFn: restore ``start``'s snapshot, hold the action for ``duration`` s, store."""
        sid = int(start[_ID][0])
        if sid < 0 or self.status[sid] != RUNNING:
            _copy_compound(start, result)  # an ended run does not move (SUCCESS stays SUCCESS)
            return
        if len(self.states) >= self.max_snapshots:
            self.full = True
            _copy_compound(start, result)
            result[_ID][0] = _NO_SNAPSHOT
            return
        self.sim.set_state(self.states[sid])
        n_warn = warn_count(self.sim)
        obs = self.sim.step(self.targets[self.action_index(control)], duration)
        self.propagations += 1
        rejected = ((self.reject_warnings and warn_count(self.sim) > n_warn)
                    or behind_schedule(obs, self.world, self.max_delay))
        self.write(result, obs, self.add(self.sim.get_state(), obs, rejected))

    def is_valid(self, state) -> bool:
        """StateValidityCheckerFn: a stored snapshot whose run has not failed and that was not rejected."""
        sid = int(state[_ID][0])
        return sid >= 0 and self.status[sid] != FAILED and not self.rejected[sid]

    def goal_distance(self, state) -> float:
        """GoalRegion distance: 0 for a run that succeeded (status SUCCESS, or progress >= length without
        a failure), else the remaining course length, kept above OMPL's threshold (machine epsilon)."""
        sid = int(state[_ID][0])
        remaining = self.world.length - state[_COURSE][0]
        if sid >= 0 and not self.rejected[sid] and (
                self.status[sid] == SUCCESS or (remaining <= 0.0 and self.status[sid] != FAILED)):
            return 0.0
        return max(remaining, 1e-6)


def _copy_compound(src, dst) -> None:
    for sub, dim in ((_COURSE, 2), (_ATTITUDE, 2), (_FLIPPERS, 4), (_TIME, 1), (_ID, 1)):
        dst[sub][0:dim] = src[sub][0:dim]


# ------------------------------------------------------------------------------------------ OMPL
@functools.cache
def _ompl() -> SimpleNamespace:
    """Import OMPL (only when planning) and define the two subclasses this module needs, once: a new
    nanobind-derived type per run would pile up in nanobind's type registry."""
    try:
        from ompl import base as ob
        from ompl import control as oc
        from ompl import util as ou
    except ImportError as exc:  # pinned in requirements.txt, but keep the message useful
        raise OmplUnavailable(f"the OMPL peer needs the 'ompl' package (pip install ompl==2.0.1): {exc}") from exc

    class ProgressPitch(ob.ProjectionEvaluator):
        """KPIECE1's grid: progress along the course and pitch."""

        def getDimension(self):  # noqa: N802 (OMPL's name)
            return 2

        def project(self, state, projection):
            projection[0] = state[_COURSE][0]
            projection[1] = state[_ATTITUDE][0]

    class SimGoal(ob.GoalRegion):
        """Reached when the snapshot's run succeeded (see ``_SnapshotTable.goal_distance``)."""

        def __init__(self, si, table: _SnapshotTable):
            super().__init__(si)
            self.table = table

        def distanceGoal(self, state):  # noqa: N802 (OMPL's name)
            return self.table.goal_distance(state)

    return SimpleNamespace(ob=ob, oc=oc, ou=ou, ProgressPitch=ProgressPitch, SimGoal=SimGoal)


@dataclass
class _Problem:
    """Every OMPL object of one run, kept alive together (OMPL holds raw pointers between some of them)."""

    space: Any
    si: Any
    pdef: Any
    planner: Any
    goal: Any
    projection: Any
    objective: Any
    start: Any
    construction: str


def _build_problem(lib: SimpleNamespace, table: _SnapshotTable, start_obs: Observation, start_id: int,
                   config: OmplConfig) -> _Problem:
    ob, oc = lib.ob, lib.oc
    sim, world, actions = table.sim, table.world, config.actions
    lim, robot = sim.limits, sim.robot

    def box(lows, highs):
        sub = ob.RealVectorStateSpace(len(lows))
        bounds = ob.RealVectorBounds(len(lows))
        for i, (lo, hi) in enumerate(zip(lows, highs, strict=True)):
            bounds.setLow(i, float(lo))
            bounds.setHigh(i, float(hi))
        sub.setBounds(bounds)
        return sub

    # The bounds only shape SST's uniform state samples (and KPIECE1's first cell-size guess); states
    # outside them stay valid: validity is the simulator's verdict alone.
    lateral = lim.lateral_fail + 0.1
    # Distances count nominal control steps (speed * dt metres of travel): SST's radii, fixed at 0.2 / 0.1
    # (the bindings do not reach its parameters), then mean a fifth / a tenth of a step for every action set.
    step = world.speed * actions.dt
    w_course, w_att, w_flip, w_time = config.weights
    space = ob.CompoundStateSpace()
    space.addSubspace(box([-1.0, -lateral], [world.length + 1.0, lateral]), w_course / step)
    space.addSubspace(box([-lim.pitch_fail, -lim.roll_fail], [lim.pitch_fail, lim.roll_fail]), w_att / step)
    space.addSubspace(box([robot.flipper_lower] * 4, [robot.flipper_upper] * 4), w_flip / step)
    space.addSubspace(box([0.0], [world.effective_time_limit + actions.dt]), w_time * world.speed / step)
    space.addSubspace(box([_NO_SNAPSHOT], [float(config.max_snapshots)]), 0.0)  # the id: in no distance
    projection = lib.ProgressPitch(space)
    space.registerDefaultProjection(projection)

    cspace = oc.RealVectorControlSpace(space, 1)
    cbounds = ob.RealVectorBounds(1)
    cbounds.setLow(0.0)
    cbounds.setHigh(float(len(actions)))
    cspace.setBounds(cbounds)

    si = oc.SpaceInformation(space, cspace)
    si.setStatePropagator(table.propagate)
    si.setStateValidityChecker(table.is_valid)
    si.setPropagationStepSize(actions.dt)
    si.setMinMaxControlDuration(1, 1)
    si.setup()
    # Per-dimension cell sizes can be set only once setup has sized them (by sampling the bounds).
    projection.setCellSizes(0, float(config.kpiece_cells[0]))
    projection.setCellSizes(1, float(config.kpiece_cells[1]))

    goal = lib.SimGoal(si, table)
    start = space.allocState()
    table.write(start, start_obs, float(start_id))
    pdef = ob.ProblemDefinition(si)
    pdef.addStartState(start)
    pdef.setGoal(goal)
    # Stop at the first solution, as our RRT does: every finite cost satisfies an infinite threshold.
    objective = ob.PathLengthOptimizationObjective(si)
    objective.setCostThreshold(ob.Cost(math.inf))
    pdef.setOptimizationObjective(objective)

    if config.planner == "SST":
        planner, construction = construct_sst(oc, si)
    else:
        planner, construction = oc.KPIECE1(si), "binding"
    planner.setProblemDefinition(pdef)
    planner.setup()
    return _Problem(space, si, pdef, planner, goal, projection, objective, start, construction)


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
    lib = _ompl()
    ou = lib.ou
    if sim is None:
        from sim.mujoco_sim import MujocoSimulator  # deferred: importing this module needs neither MuJoCo nor OMPL

        sim = MujocoSimulator()
    actions = config.actions
    ompl_seed = (int(config.seed if config.seed is not None else seed) % (2**31 - 1)) + 1  # OMPL needs a seed > 0
    label = f"OMPL {config.planner}"

    t0 = time.process_time()  # like planning.rrt: the clock (and the budget) starts before the start reset
    start_obs = sim.reset(world, seed=seed)
    table = _SnapshotTable(sim, world, config)
    start_id = table.add(sim.get_state(), start_obs)
    log_level = ou.getLogLevel()
    try:
        ou.setLogLevel(ou.LOG_NONE)  # silence the "seed set again" message (see the module docstring)
        ou.RNG.setSeed(ompl_seed)  # before any OMPL object of this run exists: they all draw from it
        ou.setLogLevel(ou.LOG_WARN)  # OMPL's progress messages would flood benchmark output
        problem = _build_problem(lib, table, start_obs, start_id, config)
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
