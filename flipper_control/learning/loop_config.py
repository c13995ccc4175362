"""What a learning-loop run depends on: ``LoopConfig``, its YAML loader, the embedded demo config, and the seeds
derived from it (training worlds and selection runs per iteration). ``loop`` runs it; the CLI and the planner and
trainer nodes load it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flipper_control.controllers import make_controller
from flipper_control.learning.executors import EXECUTOR_KINDS
from flipper_control.learning.imitation_config import ImitationConfig
from flipper_control.learning.transfer_config import TransferConfig
from planning.planner_config import PlannerConfig
from sim.config_io import config_from_mapping, in_section
from sim.world_sets import GENERATED_SETS, resolve_worlds

__all__ = ["DEMO_CONFIG", "FIRST_GUIDES", "LoopConfig", "demo_config", "load_loop_config", "selection_seed",
           "training_world_seed"]


FIRST_GUIDES = (None, "heuristic")  # LoopConfig.first_guide


def _coarse() -> PlannerConfig:
    return PlannerConfig(action_set="coarse", max_expansions=800, max_cpu_s=30.0)


def _guided() -> PlannerConfig:
    return PlannerConfig(action_set="fine", max_expansions=3000, max_cpu_s=60.0)


@dataclass(frozen=True)
class LoopConfig:
    """Everything a loop run depends on; loaded from YAML (``load_loop_config``) and recorded in ``out``."""

    seed: int = 0
    iterations: int = 4
    executor: str = "process"  # serial, process or ray
    workers: int | None = None  # default: the CPUs this process may use
    ray_address: str | None = None  # an existing Ray cluster (default: start a local instance)
    training_worlds: int = 16  # new random training worlds planned per iteration
    training_set: str = "training"  # the generator they come from: training, steep or half_steep (sim.world_sets)
    plans_per_world: int = 1  # planning runs (noise seeds) per training world
    coarse: PlannerConfig = field(default_factory=_coarse)  # iteration 1: unguided
    # iteration 1's guide: None plans unguided with ``coarse`` (seed 000); "heuristic" plans guided by the hand-written
    # rule (``controllers.HeuristicController``, on the simulator's exact DEMs) with the ``guided`` planner, so that pi_1
    # imitates plans that begin as the rule's own runs and depart from them where the rule fails (``coarse`` is then
    # unused)
    first_guide: str | None = None
    guided: PlannerConfig = field(default_factory=_guided)  # iterations 2+: guided by the last policy
    imitation: ImitationConfig = field(default_factory=ImitationConfig)
    candidates: int = 4  # policies trained per iteration (seed 000: 10)
    carry_best: bool = True  # the previous iteration's policy competes in the selection (it stays unless beaten)
    # the iteration's new policy is the mean of all its candidates (``policy.ensemble_of``), scored as one candidate;
    # false: the best candidate by score (seed 000)
    ensemble: bool = False
    selection_worlds: tuple[str, ...] = ("test",)  # scored to pick the best candidate (seed 000: the test worlds)
    selection_runs: int = 1
    selection_seed: int = 1000  # noise seeds differ from the evaluation's; each iteration draws fresh ones
    eval_worlds: tuple[str, ...] = ("test",)
    eval_runs: int = 3
    eval_seed: int = 0
    baselines: tuple[str, ...] = ("heuristic", "fixed:flat")  # evaluated once, for the report's context
    transfer: TransferConfig | None = None  # the sim-to-real half of Algorithm 1 (learning.transfer); None: sim only

    def __post_init__(self) -> None:
        # a planner section names only what it changes: the rest is that section's default (the guided planner's
        # fine action set must not fall back to PlannerConfig's coarse one because one other field was given)
        conv = {"coarse": lambda d: PlannerConfig.from_dict({**_coarse().to_dict(), **d}),
                "guided": lambda d: PlannerConfig.from_dict({**_guided().to_dict(), **d}),
                "imitation": ImitationConfig.from_dict, "transfer": TransferConfig.from_dict}
        for name, fn in conv.items():
            if isinstance(getattr(self, name), dict):
                object.__setattr__(self, name, in_section(name, fn, getattr(self, name)))
        for name in ("selection_worlds", "eval_worlds", "baselines"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        problems = []
        for name, kind in (("coarse", PlannerConfig), ("guided", PlannerConfig), ("imitation", ImitationConfig)):
            if not isinstance(getattr(self, name), kind):
                problems.append(f"{name} must be a mapping of {kind.__name__} fields, got {type(getattr(self, name)).__name__}")
        if isinstance(self.coarse, PlannerConfig) and self.coarse.policy_start > 0.0:
            problems.append(f"coarse.policy_start must be 0 (iteration 1 plans without a guide to start from), "
                            f"got {self.coarse.policy_start}; set it under guided")
        if self.first_guide not in FIRST_GUIDES:
            problems.append(f"first_guide must be one of {', '.join(map(str, FIRST_GUIDES))}, got {self.first_guide!r}")
        for name in ("seed", "selection_seed", "eval_seed"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
                problems.append(f"{name} must be an integer >= 0, got {v!r}")
        for name in ("carry_best", "ensemble"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.training_set not in GENERATED_SETS:
            problems.append(f"training_set must be one of {', '.join(GENERATED_SETS)}, got {self.training_set!r}")
        if self.executor not in EXECUTOR_KINDS:
            problems.append(f"executor must be one of {', '.join(EXECUTOR_KINDS)}, got {self.executor!r}")
        for name in ("iterations", "training_worlds", "plans_per_world", "candidates", "selection_runs", "eval_runs"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                problems.append(f"{name} must be an integer >= 1, got {v!r}")
        if self.workers is not None and not (isinstance(self.workers, int) and self.workers >= 1):
            problems.append(f"workers must be an integer >= 1 or null, got {self.workers!r}")
        for b in self.baselines:
            kind, _, posture = b.partition(":")
            try:  # the controller is built here already, so that a bad posture stops the run before any work
                make_controller(kind, posture or None)
            except ValueError as exc:
                problems.append(f"baseline {b!r}: {exc} (use heuristic, heuristic:VERSION or fixed:POSTURE)")
        if self.transfer is not None and not isinstance(self.transfer, TransferConfig):
            problems.append(f"transfer must be a mapping of TransferConfig fields or null, got {type(self.transfer).__name__}")
        if problems:
            raise ValueError("loop config: " + "; ".join(problems))
        resolve_worlds(list(self.selection_worlds))  # unknown world names fail here, before any work
        resolve_worlds(list(self.eval_worlds))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["imitation"] = self.imitation.to_dict()
        d["transfer"] = self.transfer.to_dict() if self.transfer is not None else None
        for name in ("selection_worlds", "eval_worlds", "baselines"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopConfig:
        return config_from_mapping(cls, data, "loop config")


def load_loop_config(path: str | Path) -> LoopConfig:
    """Read a loop config YAML (safe_load); errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return LoopConfig.from_dict(data)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such loop config file") from None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None


# The embedded default of `flipper demo` (configs/demo.yaml is the same, for reading and copying; a test
# keeps the two equal): Algorithm 1 at a small scale, sized on the slowest 2-core machine measured: `make demo` 23.2
# minutes there from a fresh clone (README).
DEMO_CONFIG: dict[str, Any] = {
    "seed": 0,
    "iterations": 4,
    "training_worlds": 20,
    "candidates": 2,  # one round of training on 2 workers; the carried policy competes too
    "selection_runs": 2,
    "eval_runs": 5,
    # a fresh random 5,000 samples per epoch: imitation costs the same in every iteration as the data grows
    "imitation": {"epochs": 50, "samples_per_epoch": 5000, "policy": {"hidden": [128]}},
    # Algorithm 1: real trajectories on the reality proxy, the CycleGAN, Table II; 300 GAN steps per update; half of
    # imitation's DEMs domain-randomised instead of through G (eight seeds: proxy test worlds 6.81 against 6.66)
    "transfer": {"mode": "gan", "gan": {"epochs": 20, "steps_per_epoch": 15}, "randomize_share": 0.5},
    # guided planning with the rear pressed in neutral and approach: over eight seeds the proxy course 7.50 against the
    # fine set's 6.49, test worlds 6.66 against 6.53, at the same planning cost (docs/sim2real_experiments.md)
    "guided": {"action_set": "fine_rear"},
    # iteration 1 plans guided by the hand-written rule, the pi_0 that drives line 2's real runs (eight seeds, with the
    # first rule: proxy test worlds 7.10 against unguided coarse planning's 6.89, paired +0.21 +- 0.11; with today's
    # rule, whose descent reaches lower: 7.45; docs/sim2real_experiments.md)
    "first_guide": "heuristic",
}


def demo_config() -> LoopConfig:
    """The configuration ``flipper demo`` (and ``make demo``) runs."""
    return LoopConfig.from_dict(DEMO_CONFIG)


def training_world_seed(c: LoopConfig, k: int) -> int:
    """The generator seed of iteration ``k``'s new training worlds."""
    return c.seed * 1000 + k


def selection_seed(c: LoopConfig, k: int) -> int:
    """The first noise seed of iteration ``k``'s selection runs (seeds ``seed .. seed + selection_runs - 1``);
    iterations never share a seed."""
    return c.selection_seed + (k - 1) * max(1000, c.selection_runs)


