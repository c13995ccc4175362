"""Closed-loop runs: a controller drives a simulator over a world until it succeeds or fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sim.scoring import RunResult, judge_run
from sim.simulator import RUNNING, Observation, Simulator
from sim.world import World


class Controller(Protocol):
    """Anything that maps an observation to four flipper targets."""

    def reset(self) -> None: ...

    def act(self, obs: Observation) -> np.ndarray: ...


@dataclass
class Trace:
    """Per control step: observations and the targets chosen (for datasets, plots, GAN training)."""

    observations: list[Observation] = field(default_factory=list)
    targets: list[np.ndarray] = field(default_factory=list)


def run_episode(sim: Simulator, world: World, controller: Controller, seed: int = 0, control_dt: float = 0.1,
                trace: Trace | None = None, initial_flippers: np.ndarray | None = None) -> RunResult:
    """Run ``controller`` on ``world`` with noise seed ``seed``; returns the judged run."""
    controller.reset()
    obs = sim.reset(world, seed=seed, flippers=initial_flippers)
    while sim.status == RUNNING:
        targets = np.asarray(controller.act(obs), dtype=float)
        if trace is not None:
            trace.observations.append(obs)
            trace.targets.append(targets)
        obs = sim.step(targets, control_dt)
    return judge_run(world, sim.status, sim.events, sim.time, obs.progress, sim.limits, seed=seed)
