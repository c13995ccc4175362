"""The policy-guided RRT over simulator snapshots (seed 000 section V).

Each tree node holds a complete simulator snapshot. An expansion picks a node, restores its snapshot,
applies one action (a target flipper configuration) for the action set's ``dt`` and keeps the resulting
state as a new node when it is safe (no safety failure, and by default no warning either: guiding
trajectories should be clean examples) and not behind schedule: no further behind the nominal time
(length / commanded speed) than the scoring's "slow" limit allows on that world, and by default no more
than ``max_delay_s`` (3.5 s) on any world, so that plans on long training worlds climb as briskly as the
short test worlds demand. The search ends when an expansion reaches the world's goal (the required
length within the time limit), or when its budget of expansions, CPU seconds or tree memory runs out;
then the result is a failed trajectory that says why.

Node selection mixes two rules. With probability ``eta`` it is Smart Start (``planning.smart_start``):
the node of the coarse state cell with the best upper-confidence score. Otherwise it is the RRT rule:
the node nearest to a random sample of the feature space (progress, pitch, flipper angles), which
spreads the tree over what has not been reached (Voronoi bias).

Guided planning (seed 000: "keeping planned actions as close to actions of pi as possible") offers the
policy's own output first and then the discrete actions in order of their distance to it; with
probability ``1 - guide_prob`` an untried action is drawn at random instead, which keeps exploring where
the policy is wrong. After the first dive (the greedy run along the guide until an expansion is rejected),
each new dive ignores the guide with probability ``random_dive``: a guide that is systematically wrong on
a stretch (too slow on steep stairs, say) would otherwise send every dive back onto the same wrong
postures, and guided planning would cost more than unguided. Unguided planning draws untried actions
uniformly, or with probability ``repeat_prob`` repeats the node's own action (a posture held over several
expansions, as a flight of stairs needs).

With ``policy_start`` a guided plan may begin where the guide itself drove: the guide first drives the world from
reset, and the tree is rooted at one of the states it passed, or with ``policy_start_before_s`` at one of the last
states before the drive's first failure, warning or schedule slip. These are DAgger's states: where the imitating
policy goes, drift and mistakes included, rather than only where plans from the start go.

The path is recorded every ``record_dt`` seconds (the policy's control period), so a 1000 ms action
gives ten (state, action) samples for imitation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from planning.actions import ActionSet, action_set
from planning.dataset import Trajectory
from planning.planner_config import PlannerConfig, allowed_delay, behind_schedule, schedule_delay, warn_count
from planning.smart_start import SmartStartGrid
from sim.safety import SafetyLimits
from sim.simulator import FAILED, RUNNING, SUCCESS, Observation, Simulator
from sim.world import World

__all__ = ["plan", "replay", "Guide"]

Guide = Callable[[Observation], np.ndarray]  # a policy: observation -> four flipper targets

@dataclass
class _Node:
    state: object  # SimState
    parent: int
    action: np.ndarray | None  # the action that led here from the parent
    dem: np.ndarray  # (k, rows, cols) samples recorded on the way from the parent
    proprio: np.ndarray  # (k, 6)
    obs: Observation  # the observation at this node
    cell: tuple[int, ...]
    candidates: list[np.ndarray]  # untried actions, best first for guided planning
    nbytes: int = 0


def _features(obs: Observation) -> np.ndarray:
    return np.array([obs.progress, obs.pitch, *obs.flipper_angles])


def _fail_reason(sim: Simulator) -> str:
    ev = [e for e in sim.events if e.severity == "fail"] or list(sim.events)
    return ev[-1].kind if ev else "unknown"


class _Planner:
    def __init__(self, sim: Simulator, world: World, seed: int, config: PlannerConfig, guide: Guide | None):
        self.sim, self.world, self.config, self.guide = sim, world, config, guide
        self.actions: ActionSet = action_set(config.action_set)
        postures = self.actions.array
        self._guide_bounds = (postures.min(axis=0), postures.max(axis=0))  # guide_range "actions": per joint
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.nodes: list[_Node] = []
        self.open: list[int] = []  # nodes with untried actions (for the RRT rule)
        self.grid = SmartStartGrid(config.smart_start, world.length)
        self.failures: dict[str, int] = {}
        self.tree_bytes = 0
        self.best_progress = 0.0
        self.random_dive = False  # the current dive ignores the guide
        # arriving later than nominal + the world's slack scores "slow"; max_delay_s bounds it further
        self.max_delay = allowed_delay(sim, world, config.max_delay_s)
        # the pitch (rad) an expansion may not pass: the simulator's warning level less the margin; none at 0
        limits = getattr(sim, "limits", None) or SafetyLimits()
        self.pitch_bound = limits.pitch_warn - math.radians(config.pitch_margin_deg) if config.pitch_margin_deg else math.inf
        if self.pitch_bound <= 0.0:
            raise ValueError(f"PlannerConfig.pitch_margin_deg {config.pitch_margin_deg:g} leaves no pitch below this "
                             f"simulator's warning at {math.degrees(limits.pitch_warn):g} deg")
        # the feature box sampled by the RRT rule: progress, pitch, four flipper angles
        lo, hi = sim.robot.flipper_lower, sim.robot.flipper_upper
        self.sample_lo = np.array([0.0, -0.8, lo, lo, lo, lo])
        self.sample_hi = np.array([world.length, 0.8, hi, hi, hi, hi])
        self.feature_scale = np.array([1.0 / 0.5, 1.0 / 0.3, *(1.0 / 1.5,) * 4])  # metres vs radians

    # -------------------------------------------------------------- tree bookkeeping
    def _candidates(self, obs: Observation) -> list[np.ndarray]:
        acts = [a for a in self.actions.array]
        if self.guide is None:
            order = self.rng.permutation(len(acts))
            return [acts[i] for i in order]
        target = np.asarray(self.guide(obs), dtype=float)
        if self.config.guide_range == "actions":
            target = np.clip(target, *self._guide_bounds)
        order = np.argsort([float(np.sum((a - target) ** 2)) for a in acts], kind="stable")
        nearest_first = [acts[i] for i in order]
        if self.config.guide_range == "snap":  # the set's postures only: the nearest comes first instead of the guide
            return nearest_first
        # the guide's own output first, and once (a posture equal to it is not offered again)
        return [target] + [a for a in nearest_first if not np.array_equal(a, target)]

    def _add(self, parent: int, action, dem, proprio, obs: Observation) -> int:
        i = len(self.nodes)
        state = self.sim.get_state()
        cell = self.grid.cell(obs.progress, obs.pitch, obs.flipper_angles)
        node = _Node(state, parent, action, dem, proprio, obs, cell, self._candidates(obs))
        node.nbytes = state.nbytes + dem.nbytes + proprio.nbytes + obs.dem.nbytes + 512  # 512: Python objects
        self.tree_bytes += node.nbytes
        self.nodes.append(node)
        self.open.append(i)
        self.grid.add(i, cell, obs.progress)
        self.best_progress = max(self.best_progress, obs.progress)
        return i

    def _exhaust(self, i: int) -> None:
        node = self.nodes[i]
        self.grid.remove(i, node.cell)
        self.open.remove(i)

    # -------------------------------------------------------------- selection
    def _select(self, last_new: int | None) -> int | None:
        if not self.open:
            return None
        if last_new is not None and self.nodes[last_new].candidates and self.rng.random() < self.config.extend_new:
            return last_new
        if self.guide is not None and self.config.random_dive > 0.0 and len(self.nodes) > 1:  # a later dive starts
            self.random_dive = self.rng.random() < self.config.random_dive
        if self.rng.random() < self.config.smart_start.eta:
            cell = self.grid.best_cell()
            if cell is not None:
                members = self.grid.members[cell]
                # the most promising member: the furthest along, then the one with most untried actions
                return max(members, key=lambda j: (self.nodes[j].obs.progress, len(self.nodes[j].candidates)))
        sample = self.rng.uniform(self.sample_lo, self.sample_hi)
        sample[0] = self.rng.uniform(0.0, min(self.world.length, self.best_progress + 0.5))
        feats = np.array([_features(self.nodes[j].obs) for j in self.open])
        d = np.sum(((feats - sample) * self.feature_scale) ** 2, axis=1)
        return self.open[int(np.argmin(d))]

    def _choose_action(self, node: _Node) -> np.ndarray:
        cands = node.candidates
        if self.guide is not None and not self.random_dive and self.rng.random() < self.config.guide_prob:
            return cands.pop(0)
        # (no draw at repeat_prob 0, so that plans stay those of a config without the field)
        if self.config.repeat_prob > 0.0 and node.action is not None and self.rng.random() < self.config.repeat_prob:
            for k, a in enumerate(cands):
                if np.array_equal(a, node.action):
                    return cands.pop(k)
        return cands.pop(int(self.rng.integers(len(cands))))

    # -------------------------------------------------------------- expansion
    def _expand(self, i: int, action: np.ndarray) -> tuple[str, int | None]:
        """Restore node i, apply ``action`` for dt, recording samples; returns (status, new node or None)."""
        sim, node = self.sim, self.nodes[i]
        sim.set_state(node.state)
        n_warn = warn_count(sim)
        steps = max(1, int(round(self.actions.dt / self.config.record_dt)))
        sub_dt = self.actions.dt / steps
        dems, props = [], []
        obs = node.obs
        max_pitch = 0.0
        for _ in range(steps):
            dems.append(obs.dem)
            props.append(obs.proprio())
            obs = sim.step(action, sub_dt)
            max_pitch = max(max_pitch, abs(obs.pitch))
            if sim.status != RUNNING:
                break
        dem, proprio = np.stack(dems), np.stack(props)
        if sim.status == FAILED:
            return FAILED, None
        if self.config.reject_warnings and warn_count(sim) > n_warn:
            return "warned", None
        if max_pitch > self.pitch_bound:
            return "pitch_margin", None
        if self.config.reject_slow and behind_schedule(obs, self.world, self.max_delay):
            return "slow", None
        return sim.status, self._add(i, action, dem, proprio, obs)

    def _path(self, leaf: int) -> Trajectory:
        chain = []
        j = leaf
        while j > 0:
            chain.append(self.nodes[j])
            j = self.nodes[j].parent
        chain.reverse()
        dem = np.concatenate([n.dem for n in chain])
        proprio = np.concatenate([n.proprio for n in chain])
        action = np.concatenate([np.repeat(n.action[None].astype(np.float32), len(n.dem), axis=0) for n in chain])
        return Trajectory(dem, proprio, action, success=True)

    # -------------------------------------------------------------- search
    def run(self) -> Trajectory:
        sim, cfg, world = self.sim, self.config, self.world
        cpu0 = time.process_time()
        obs = sim.reset(world, seed=self.seed)
        start_s = None
        if self.guide is not None and cfg.policy_start > 0.0 and self.rng.random() < cfg.policy_start:
            started = self._guide_prefix(obs)
            if started is None:  # a clean drive: plan from the world's start
                obs = sim.reset(world, seed=self.seed)
            else:
                obs, start_s = started, sim.time
        self._add(-1, None, np.zeros((0, *obs.dem.shape), np.float32), np.zeros((0, 6), np.float32), obs)
        expansions, result, reason, new = 0, None, "", None
        while True:
            if expansions >= cfg.max_expansions:
                reason = f"expansion budget {cfg.max_expansions} exhausted"
                break
            cpu = time.process_time() - cpu0
            if cpu >= cfg.max_cpu_s:
                reason = f"CPU budget {cfg.max_cpu_s:g} s exhausted"
                break
            if self.tree_bytes > cfg.max_tree_mib * 2**20:
                reason = f"tree memory budget {cfg.max_tree_mib:g} MiB exhausted"
                break
            i = self._select(new)
            if i is None:
                reason = "every node's actions are exhausted (no safe continuation found)"
                break
            node = self.nodes[i]
            action = self._choose_action(node)
            if not node.candidates:
                self._exhaust(i)
            self.grid.visit(node.cell)
            expansions += 1
            status, new = self._expand(i, action)
            if status == SUCCESS:
                result = new
                break
            if new is None:
                kind = {"warned": "warning", "slow": "slow", "pitch_margin": "pitch margin"}.get(status) or _fail_reason(sim)
                self.failures[kind] = self.failures.get(kind, 0) + 1
        meta = {
            "world": world.name, "seed": self.seed, "action_set": self.actions.name, "dt": self.actions.dt,
            "guided": self.guide is not None, "cpu_s": round(time.process_time() - cpu0, 4), "expansions": expansions,
            "nodes": len(self.nodes), "tree_mib": round(self.tree_bytes / 2**20, 3),
            "best_progress": round(self.best_progress, 3), "length": world.length,
            "unsafe_expansions": dict(sorted(self.failures.items())),
        }
        if start_s is not None:  # rooted where the guide drove: the plan covers the run from there on
            meta["policy_start_s"] = round(start_s, 3)
        if result is None:
            unsafe = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items(), key=lambda kv: -kv[1])) or "none"
            why = f"{reason}; best progress {self.best_progress:.2f} m of {world.length:g} m; unsafe expansions: {unsafe}"
            meta["success"] = False
            return Trajectory.failed(why, obs.dem.shape, meta)
        delay = self._path_delay(result)
        meta["delay_s"] = round(delay, 3)
        if cfg.keep_delay_s is not None and delay > cfg.keep_delay_s:
            meta["success"] = False
            why = (f"behind schedule: the plan found falls {delay:.2f} s behind the nominal schedule, more than "
                   f"keep_delay_s {cfg.keep_delay_s:g} s (discarded, not imitated)")
            return Trajectory.failed(why, obs.dem.shape, meta)
        traj = self._path(result)
        meta.update(success=True, samples=len(traj), sim_time=round(sim.time, 3))
        traj.meta = meta
        return traj

    def _guide_prefix(self, obs: Observation) -> Observation | None:
        """Let the guide drive from reset and restore one of the states it passed, drawn uniformly; returns that
        state's observation. The drive stops where it fails, succeeds, or falls behind schedule: a tree rooted past
        that point could only be pruned as slow. With ``policy_start_before_s`` it also stops at a new warning, and
        only such trouble gives a start, from its last seconds; a clean drive returns None (plan from reset)."""
        sim, dt, before = self.sim, self.config.record_dt, self.config.policy_start_before_s
        passed = [(sim.get_state(), obs)]
        n_warn, trouble = warn_count(sim), False
        while True:
            obs = sim.step(np.asarray(self.guide(obs), dtype=float), dt)
            if sim.status == FAILED or behind_schedule(obs, self.world, self.max_delay) or (
                    before is not None and warn_count(sim) > n_warn):
                trouble = True
                break
            if sim.status != RUNNING:
                break
            passed.append((sim.get_state(), obs))
        if before is not None:
            if not trouble:
                return None
            passed = passed[-max(1, int(round(before / dt))):]
        state, obs = passed[int(self.rng.integers(len(passed)))]
        sim.set_state(state)
        return obs

    def _path_delay(self, leaf: int) -> float:
        """The most the path to ``leaf`` falls behind the nominal schedule at any of its nodes, in seconds."""
        delay, j = 0.0, leaf
        while j >= 0:
            delay = max(delay, schedule_delay(self.nodes[j].obs, self.world))
            j = self.nodes[j].parent
        return delay


def plan(sim: Simulator, world: World, seed: int = 0, config: PlannerConfig | None = None,
         guide: Guide | None = None) -> Trajectory:
    """Plan a guiding trajectory on ``world`` (noise seed ``seed`` for the simulator and the search).

    Never raises for "no path": a planner that finds nothing returns ``Trajectory.failed`` with the
    reason (budget, best progress reached, and which safety checks rejected expansions).
    """
    return _Planner(sim, world, seed, config or PlannerConfig(), guide).run()


def replay(sim: Simulator, world: World, seed: int, actions: list[np.ndarray], dt: float) -> str:
    """Apply a sequence of actions from reset (for checking a plan); returns the final status."""
    sim.reset(world, seed=seed)
    for a in actions:
        sim.step(a, dt)
        if sim.status != RUNNING:
            break
    return sim.status

