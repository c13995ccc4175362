"""What one planning run may do and which expansions it keeps: ``PlannerConfig`` and the schedule and safety rules.

The rules are shared by every planner that searches our problem -- the snapshot RRT (``planning.rrt``) and the OMPL
peer (``planning.ompl_problem``) -- so that both search the same problem: an expansion is unsafe after a new
safety warning (``warn_count``), and slow when the run falls further behind the nominal schedule (``schedule_delay``)
than the world's slack, bounded by ``max_delay_s``, allows (``allowed_delay``, ``behind_schedule``). Loop configs, the
CLI and the trainer node read and check a planner section here without the search behind it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from planning.actions import action_set
from planning.smart_start import SmartStartConfig
from sim.config_io import config_from_mapping, in_section
from sim.safety import SafetyLimits
from sim.simulator import Observation, Simulator
from sim.world import World

__all__ = ["DEFAULT_MAX_DELAY_S", "GUIDE_RANGES", "PlannerConfig", "allowed_delay", "behind_schedule", "schedule_delay",
           "warn_count"]

GUIDE_RANGES = ("robot", "actions", "snap")  # PlannerConfig.guide_range
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
    # its training data (rear flippers straight up, say) cannot turn that posture into a label of the next policy;
    # "snap": the guide's output is never tried itself, only the action set's postures nearest to it first (seed 000's
    # discrete guided planner), so every label is a posture of the set and a habit of the policy between two postures
    # (the rear half pressed on a flight) is not copied into the next policy's labels.
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
    # guided: the share of plans that start where the guide itself drove, not at the world's start. Such a plan first
    # lets the guide drive the world from reset (``record_dt`` per step) and roots the tree at one of the states it
    # passed, drawn uniformly up to where it failed or fell behind schedule; the samples before that state are not
    # recorded. The labels then cover the states the policy reaches on its own, drift and mistakes included, which plans
    # from the start never visit (DAgger's remedy for the imitating policy's covariate shift). 0: every plan from the
    # world's start, and no random draw (plans stay those of a config without the field).
    policy_start: float = 0.0
    # with policy_start: None, the start is drawn from the whole drive; a number of seconds: only a drive that runs
    # into trouble (a failure, a new safety warning, or falling behind schedule) gives a start, drawn from its last
    # this-many seconds before the trouble, where a correction would have had to begin; a clean drive plans from the
    # world's start as usual.
    policy_start_before_s: float | None = None
    smart_start: SmartStartConfig = field(default_factory=SmartStartConfig)

    def __post_init__(self) -> None:
        if isinstance(self.smart_start, dict):
            build = lambda d: config_from_mapping(SmartStartConfig, d, "smart_start config")  # noqa: E731
            object.__setattr__(self, "smart_start", in_section("smart_start", build, self.smart_start))
        action_set(self.action_set)  # validates
        if self.max_expansions < 1 or self.max_cpu_s <= 0 or self.max_tree_mib <= 0:
            raise ValueError("PlannerConfig: max_expansions >= 1, max_cpu_s > 0 and max_tree_mib > 0 are required")
        for name in ("guide_prob", "extend_new", "random_dive", "repeat_prob", "policy_start"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"PlannerConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.guide_range not in GUIDE_RANGES:
            raise ValueError(f"PlannerConfig.guide_range must be one of {', '.join(GUIDE_RANGES)}, got {self.guide_range!r}")
        default_warn = math.degrees(SafetyLimits().pitch_warn)  # a simulator with other limits is checked by _Planner
        if not 0.0 <= self.pitch_margin_deg < default_warn:
            raise ValueError(f"PlannerConfig.pitch_margin_deg must be in [0, {default_warn:g}) degrees, "
                             f"got {self.pitch_margin_deg}")
        for name in ("max_delay_s", "keep_delay_s", "policy_start_before_s"):
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

