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

The path is recorded every ``record_dt`` seconds (the policy's control period), so a 1000 ms action
gives ten (state, action) samples for imitation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from planning.actions import ActionSet, action_set
from planning.dataset import Trajectory
from planning.smart_start import SmartStartConfig, SmartStartGrid
from sim.config_io import config_from_mapping, in_section
from sim.safety import SafetyLimits
from sim.simulator import FAILED, RUNNING, SUCCESS, Observation, Simulator
from sim.world import World

__all__ = ["PlannerConfig", "plan", "Guide", "DEFAULT_MAX_DELAY_S", "allowed_delay", "behind_schedule", "schedule_delay",
           "warn_count"]

Guide = Callable[[Observation], np.ndarray]  # a policy: observation -> four flipper targets

GUIDE_RANGES = ("robot", "actions")  # PlannerConfig.guide_range
DEFAULT_MAX_DELAY_S = 3.5  # PlannerConfig.max_delay_s; the OMPL peer and the bench use the same default


@dataclass(frozen=True)
class PlannerConfig:
    """Budgets and search parameters of one planning run."""

    action_set: str = "coarse"  # see planning.actions.action_set: coarse, fine, coarse@0.2, ...
    max_expansions: int = 3000
    max_cpu_s: float = 60.0  # CPU seconds (process time) per trajectory
    max_tree_mib: float = 1024.0  # snapshots + recorded samples; keeps a worker far below 2 GiB
    record_dt: float = 0.1  # s between recorded samples (the policy's control period)
    reject_warnings: bool = True  # a new safety warning makes an expansion unsafe
    # Degrees below the safety's pitch warning (40 deg) that the body's pitch must stay at every recorded sample
    # of an expansion, else it is rejected ("pitch margin"); 0: only the warning itself bounds the pitch. Meant to
    # leave a policy imitating the plans room for its own error where the learned policies lose step_down on the
    # reality proxy at 40-41 deg; measured over eight demo loops at 3 deg it did not (step_down unchanged,
    # stairs_down worse: docs/sim2real_experiments.md, "A pitch margin in the plans"), so it is off.
    pitch_margin_deg: float = 0.0
    # An expansion after which the goal cannot be reached within the scoring's "slow" limit (slow_factor x
    # the nominal time), even at the commanded speed from there on, is rejected as behind schedule: such a
    # plan would be judged unclear ("slow"), and slipping on stairs with a poor posture is what makes it slow.
    reject_slow: bool = True
    # the most the plan may fall behind the nominal schedule (time - progress / speed), in seconds; None: only
    # the world's own slack ((slow_factor - 1) x its nominal time). A long training world has more slack than a
    # short test world with the same obstacle, so without a bound its plans may crawl over a staircase that the
    # test course allows only a brisk climb on, and a policy imitating them learns to crawl. The default keeps
    # within the slack of the test course's one-obstacle worlds (3.0 s for 3 m, 3.7 s for the 3.7 m stairs).
    max_delay_s: float | None = DEFAULT_MAX_DELAY_S
    guide_prob: float = 0.8  # guided: probability of taking the most policy-like untried action
    extend_new: float = 1.0  # probability of expanding the node just added (go deep until blocked)
    # guided: probability that a dive (the expansions from a selected node, going deep from each new node)
    # ignores the guide and draws its actions at random, so that a guide that is wrong on a stretch cannot
    # make the search much slower than unguided planning. The first dive always follows the guide: where the
    # guide is good, the plan is the guide's and costs about the path length.
    random_dive: float = 0.5
    # guided: where the guide's own output may lie. "robot": anywhere in the joint range (the policy's); "actions":
    # clipped per joint to the range of the action set's postures, so that a guide extrapolating on a state unlike
    # its training data (rear flippers straight up, say) cannot turn that posture into a label of the next policy.
    guide_range: str = "robot"
    # probability that an action drawn at random (unguided planning, a random dive, the 1 - guide_prob draw)
    # repeats the action that led to the node, while it is untried there. Uniform draws switch posture every
    # dt, so a posture held through a whole obstacle (the rear pressed down over a 3 s flight of stairs, which
    # is what keeps a climb brisk) needs many lucky draws in a row with the 200 ms fine set; 0: uniform draws.
    repeat_prob: float = 0.0
    # a plan whose path falls more than this many seconds behind the nominal schedule is discarded: the search still
    # stops at its first plan, which is returned as failed ("behind schedule"), so that a policy imitating the plans
    # learns only brisk ones. Unlike a tighter max_delay_s, which prunes slow nodes and searches on for a brisk plan
    # (more failed searches, each spending its whole budget), this costs no search time; None: every plan is kept.
    keep_delay_s: float | None = None
    smart_start: SmartStartConfig = field(default_factory=SmartStartConfig)

    def __post_init__(self) -> None:
        if isinstance(self.smart_start, dict):
            build = lambda d: config_from_mapping(SmartStartConfig, d, "smart_start config")  # noqa: E731
            object.__setattr__(self, "smart_start", in_section("smart_start", build, self.smart_start))
        action_set(self.action_set)  # validates
        if self.max_expansions < 1 or self.max_cpu_s <= 0 or self.max_tree_mib <= 0:
            raise ValueError("PlannerConfig: max_expansions >= 1, max_cpu_s > 0 and max_tree_mib > 0 are required")
        for name in ("guide_prob", "extend_new", "random_dive", "repeat_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"PlannerConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.guide_range not in GUIDE_RANGES:
            raise ValueError(f"PlannerConfig.guide_range must be one of {', '.join(GUIDE_RANGES)}, got {self.guide_range!r}")
        default_warn = math.degrees(SafetyLimits().pitch_warn)  # a simulator with other limits is checked by _Planner
        if not 0.0 <= self.pitch_margin_deg < default_warn:
            raise ValueError(f"PlannerConfig.pitch_margin_deg must be in [0, {default_warn:g}) degrees, "
                             f"got {self.pitch_margin_deg}")
        for name in ("max_delay_s", "keep_delay_s"):
            value = getattr(self, name)
            if value is not None and not value > 0.0:
                raise ValueError(f"PlannerConfig.{name} must be > 0 seconds or null, got {value}")
        if not 0.0 < self.record_dt:
            raise ValueError(f"PlannerConfig.record_dt must be > 0, got {self.record_dt}")
        dt = action_set(self.action_set).dt
        ratio = dt / self.record_dt
        if ratio < 1.0 - 1e-9 or abs(ratio - round(ratio)) > 1e-6:
            raise ValueError(f"PlannerConfig: the action set's dt {dt:g} s must be a whole multiple of record_dt "
                             f"{self.record_dt:g} s (one sample is recorded per record_dt)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PlannerConfig:
        return config_from_mapping(cls, data, "planner config")


def allowed_delay(sim: Simulator, world: World, max_delay_s: float | None) -> float:
    """Seconds a plan may fall behind the nominal schedule on ``world``: the scoring's slack ((slow_factor - 1)
    x nominal time), bounded by ``max_delay_s`` where given. Shared with the OMPL peer (same problem)."""
    delay = (sim.limits.slow_factor - 1.0) * world.length / world.speed
    return delay if max_delay_s is None else min(delay, max_delay_s)


def schedule_delay(obs: Observation, world: World) -> float:
    """Seconds the run at ``obs`` is behind the nominal time of its progress (negative: ahead)."""
    return obs.time - min(obs.progress, world.length) / world.speed


def behind_schedule(obs: Observation, world: World, max_delay: float) -> bool:
    """The run at ``obs`` is more than ``max_delay`` seconds behind the nominal time of its progress."""
    return schedule_delay(obs, world) > max_delay


def warn_count(sim: Simulator) -> int:
    """Safety warnings so far in the simulator's run (a new one makes an expansion unsafe by default)."""
    return sum(e.severity == "warn" for e in sim.events)


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
        acts = [a for a in acts if not np.array_equal(a, target)]  # the guide's own output is offered once
        order = np.argsort([float(np.sum((a - target) ** 2)) for a in acts], kind="stable")
        return [target] + [acts[i] for i in order]

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

