"""Smart Start node selection (seed 001) for the tree planner.

Smart Start picks where exploration should begin: the visited state that maximises
``V(s) + sqrt(c_ss * ln(sum C) / C(s))``, an upper-confidence score over visit counts ``C`` of a
count-based model. In the planner the "states" are the cells of a coarse grid over the nodes' features
(progress along the course, pitch, front and rear flipper angles), ``C`` counts the expansions started
from or arriving in each cell, and ``V`` favours progress (the fraction of the course a cell's best node
has covered). Among equally rarely visited cells the one furthest along wins, so the tree's frontier is
tried first; cells tried often without success lose their bonus and the planner backs up to rarely
visited ones.

Seed 001 reaches the chosen state by value iteration on the learned model; a tree planner does not need
that step because every node holds a simulator snapshot it can restore directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SmartStartConfig", "SmartStartGrid"]


@dataclass(frozen=True)
class SmartStartConfig:
    """Cell sizes of the count grid and the UCB constant (seed 001 defaults: c_ss 2.0, eta 0.5)."""

    c_ss: float = 2.0  # exploration constant of the UCB bonus
    eta: float = 0.5  # probability of a Smart Start selection (otherwise RRT's nearest-to-random-sample)
    progress_cell: float = 0.25  # m
    pitch_cell: float = 0.15  # rad
    flipper_cell: float = 0.4  # rad, front pair and rear pair (means)
    value_weight: float = 1.0  # weight of V (progress fraction) against the bonus

    def __post_init__(self) -> None:
        for name in ("c_ss", "progress_cell", "pitch_cell", "flipper_cell"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SmartStartConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"SmartStartConfig.eta must be in [0, 1], got {self.eta}")


class SmartStartGrid:
    """Visit counts and values per coarse cell; selects the cell with the best UCB score."""

    def __init__(self, config: SmartStartConfig, length: float):
        self.config = config
        self.length = max(length, 1e-6)
        self.counts: dict[tuple[int, ...], int] = {}
        self.values: dict[tuple[int, ...], float] = {}
        self.members: dict[tuple[int, ...], list[int]] = {}
        self.total = 0

    def cell(self, progress: float, pitch: float, flippers: np.ndarray) -> tuple[int, ...]:
        c = self.config
        front = 0.5 * (flippers[0] + flippers[1])
        rear = 0.5 * (flippers[2] + flippers[3])
        return (math.floor(progress / c.progress_cell), math.floor(pitch / c.pitch_cell),
                math.floor(front / c.flipper_cell), math.floor(rear / c.flipper_cell))

    def add(self, node: int, cell: tuple[int, ...], progress: float) -> None:
        """Register a node in its cell (arriving counts as a visit); V(cell) is its best progress fraction."""
        self.members.setdefault(cell, []).append(node)
        self.values[cell] = max(self.values.get(cell, 0.0), progress / self.length)
        self.visit(cell)

    def visit(self, cell: tuple[int, ...]) -> None:
        """Count one expansion started from ``cell``."""
        self.counts[cell] = self.counts.get(cell, 0) + 1
        self.total += 1

    def remove(self, node: int, cell: tuple[int, ...]) -> None:
        """Drop an exhausted node (every action tried) from its cell's candidates."""
        members = self.members.get(cell)
        if members and node in members:
            members.remove(node)

    def score(self, cell: tuple[int, ...]) -> float:
        c = self.counts.get(cell, 0)
        if c == 0:
            return math.inf  # cannot happen for a registered cell; kept for direct use
        bonus = math.sqrt(self.config.c_ss * math.log(max(self.total, 1)) / c)
        return self.config.value_weight * self.values.get(cell, 0.0) + bonus

    def best_cell(self) -> tuple[int, ...] | None:
        """The cell with expandable nodes and the highest score; ties go to the higher value (progress)."""
        best, best_key = None, None
        for cell, members in self.members.items():
            if not members:
                continue
            key = (self.score(cell), self.values[cell])
            if best_key is None or key > best_key:
                best, best_key = cell, key
        return best
