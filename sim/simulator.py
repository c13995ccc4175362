"""The ``Simulator`` interface shared by the embedded MuJoCo backend and the Gazebo backend.

A simulator runs one world at a time: ``reset`` places the robot at the world's start, ``step``
applies four flipper targets for ``dt`` seconds while the tracks drive at the world's constant speed,
and ``get_state``/``set_state`` save and restore the complete state (physics, safety monitor, status)
so that a tree planner can branch from any snapshot and replay it bit for bit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from sim.dem import DemSpec
from sim.robot import RobotSpec
from sim.safety import SafetyEvent, SafetyLimits
from sim.world import World

RUNNING, SUCCESS, FAILED = "running", "success", "failed"


@dataclass(frozen=True)
class Observation:
    """What a flipper policy sees (seed 000 section VI), plus bookkeeping for scoring and logging.

    ``dem``: (rows, cols) float32 heights relative to base_link, front-left first (see ``sim.dem``).
    ``pitch``/``roll``: radians, REP 103 (pitch > 0 is nose down). ``flipper_angles``: radians in the
    order of ``sim.robot.FLIPPER_NAMES`` and the convention of ``sim.robot``.
    """

    dem: np.ndarray
    pitch: float
    roll: float
    flipper_angles: np.ndarray
    time: float = 0.0
    progress: float = 0.0  # metres along the course from the world's start line (start noise may offset it)
    lateral: float = 0.0  # sideways offset from the start line

    def proprio(self) -> np.ndarray:
        """The 1D policy inputs: pitch, roll, four flipper angles (float32)."""
        return np.concatenate(([self.pitch, self.roll], self.flipper_angles)).astype(np.float32)


@dataclass(frozen=True)
class SimState:
    """An opaque, complete snapshot of a simulator (restore with ``set_state`` on the same world)."""

    world_key: str
    physics: np.ndarray
    monitor: np.ndarray
    targets: np.ndarray
    events: tuple[SafetyEvent, ...]
    status: str
    extra: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return int(self.physics.nbytes + self.monitor.nbytes + self.targets.nbytes)


class Simulator(ABC):
    """Common interface of every simulator backend.

    Backends also expose the specs they run with, which scoring and the gym environment read.
    """

    world: World | None
    robot: RobotSpec
    dem_spec: DemSpec
    limits: SafetyLimits

    @abstractmethod
    def reset(self, world: World, seed: int = 0, flippers: np.ndarray | None = None) -> Observation:
        """Load ``world`` (if not loaded), apply the seeded noise, place the robot at the start."""

    @abstractmethod
    def step(self, flipper_targets: np.ndarray, dt: float) -> Observation:
        """Drive for ``dt`` seconds towards ``flipper_targets`` (rate- and range-limited)."""

    @abstractmethod
    def observation(self) -> Observation:
        """The current observation."""

    @abstractmethod
    def get_state(self) -> SimState:
        """A complete snapshot of the current state."""

    @abstractmethod
    def set_state(self, state: SimState) -> None:
        """Restore a snapshot taken on the same world."""

    @property
    @abstractmethod
    def status(self) -> str:
        """RUNNING, SUCCESS or FAILED."""

    @property
    @abstractmethod
    def events(self) -> list[SafetyEvent]:
        """Safety events of the current run so far."""

    @property
    @abstractmethod
    def time(self) -> float:
        """Simulated seconds since reset."""
