"""Grid mazes of seed 001 (Smart Start + HER): deterministic four-action worlds with a start, a goal and walls.

Smart Start's reference implementation defines its worlds as small layouts scaled up by a factor: each layout
cell becomes ``scale x scale`` cells (0 free, 1 wall, 2 start, 3 goal), and the start and the goal are the
centre cells of their scaled blocks (the rest of those blocks is free). ``LAYOUTS`` holds its "easy",
"medium" and "hard" worlds (REFERENCE.md section 10); users write their own as a maze YAML file::

    name: corridor          # optional, defaults to the file's stem
    scale: 3                # optional, default 5
    layout:                 # rows of 0 free, 1 wall, 2 start (exactly one), 3 goal (exactly one)
      - [3, 0, 0]
      - [1, 1, 0]
      - [2, 0, 0]

A maze whose goal cannot be reached from its start is refused (``MazeError`` names the file, the start and
the goal), so that no training run spends its budget on an impossible task. Moving into a wall or off the
grid leaves the agent where it is, as in the seed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

__all__ = ["ACTIONS", "LAYOUTS", "GridMaze", "MazeError", "load_maze", "maze", "maze_from_layout", "named_maze"]

# Row/column offsets of the four actions: up, right, down, left.
ACTIONS = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)], dtype=np.int64)

FREE, WALL, START, GOAL = 0, 1, 2, 3

# Smart Start's preset worlds (layout, scale). "hard" continues the serpentine of "medium" to 7 x 7.
LAYOUTS: dict[str, tuple[list[list[int]], int]] = {
    "easy": ([[3, 0, 0],
              [1, 1, 0],
              [1, 1, 0],
              [2, 0, 0]], 5),
    "medium": ([[3, 0, 0, 0, 0],
                [1, 1, 1, 1, 0],
                [0, 0, 0, 0, 0],
                [0, 1, 1, 1, 1],
                [0, 0, 0, 0, 2]], 5),
    "hard": ([[3, 0, 0, 0, 0, 0, 0],
              [1, 1, 1, 1, 1, 1, 0],
              [0, 0, 0, 0, 0, 0, 0],
              [0, 1, 1, 1, 1, 1, 1],
              [0, 0, 0, 0, 0, 0, 0],
              [1, 1, 1, 1, 1, 1, 0],
              [2, 0, 0, 0, 0, 0, 0]], 5),
}


class MazeError(ValueError):
    """A maze that cannot be used: the message names the file (or layout), the field and what is wrong."""


@dataclass(frozen=True, eq=False)
class GridMaze:
    """A deterministic grid maze. States are cell indices ``row * width + col``; actions index ``ACTIONS``.

    ``walls`` is a boolean (height, width) array; ``next_state[s, a]`` is the cell reached from ``s`` by ``a``
    (the same cell when a wall or the border is in the way).
    """

    name: str
    walls: np.ndarray
    start: tuple[int, int]
    goal: tuple[int, int]
    next_state: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        h, w = self.walls.shape
        rows, cols = np.divmod(np.arange(h * w), w)
        nxt = np.empty((h * w, len(ACTIONS)), dtype=np.int64)
        for a, (dr, dc) in enumerate(ACTIONS):
            r, c = rows + dr, cols + dc
            inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            r_in, c_in = np.where(inside, r, rows), np.where(inside, c, cols)
            blocked = self.walls[r_in, c_in]
            nxt[:, a] = np.where(blocked, rows * w + cols, r_in * w + c_in)
        object.__setattr__(self, "next_state", nxt)

    @property
    def shape(self) -> tuple[int, int]:
        return self.walls.shape

    @property
    def n_states(self) -> int:
        return self.walls.size

    @property
    def n_actions(self) -> int:
        return len(ACTIONS)

    @property
    def start_state(self) -> int:
        return self.state(*self.start)

    @property
    def goal_state(self) -> int:
        return self.state(*self.goal)

    def state(self, row: int, col: int) -> int:
        """The state index of cell (row, col)."""
        return row * self.walls.shape[1] + col

    def cell(self, state: int) -> tuple[int, int]:
        """The (row, col) of a state index."""
        r, c = divmod(int(state), self.walls.shape[1])
        return r, c

    def step(self, state: int, action: int) -> int:
        """The state after taking ``action`` in ``state``."""
        return int(self.next_state[state, action])

    def reachable(self, state: int | None = None) -> np.ndarray:
        """Boolean mask over states reachable from ``state`` (default the start), by breadth-first search."""
        seen = np.zeros(self.n_states, dtype=bool)
        first = self.start_state if state is None else state
        seen[first] = True
        queue = deque([first])
        while queue:
            s = queue.popleft()
            for n in self.next_state[s]:
                if not seen[n]:
                    seen[n] = True
                    queue.append(int(n))
        return seen

    def shortest_path_length(self) -> int:
        """Steps of the shortest path from start to goal (breadth-first search)."""
        dist = np.full(self.n_states, -1, dtype=np.int64)
        dist[self.start_state] = 0
        queue = deque([self.start_state])
        while queue:
            s = queue.popleft()
            for n in self.next_state[s]:
                if dist[n] < 0:
                    dist[n] = dist[s] + 1
                    queue.append(int(n))
        return int(dist[self.goal_state])


def _check_layout(layout: object, where: str) -> np.ndarray:
    """The layout as an int array, or a ``MazeError`` saying what is wrong (and at which row)."""
    if not isinstance(layout, (list, tuple)) or not layout:
        raise MazeError(f"{where}: 'layout' must be a non-empty list of rows, got {layout!r}")
    width = None
    for i, row in enumerate(layout):
        if not isinstance(row, (list, tuple)) or not row:
            raise MazeError(f"{where}: layout row {i} must be a non-empty list of 0/1/2/3, got {row!r}")
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise MazeError(f"{where}: layout row {i} has {len(row)} cells, row 0 has {width}; rows must be equally long")
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, int) or v not in (FREE, WALL, START, GOAL):
                raise MazeError(f"{where}: layout row {i}, column {j}: {v!r} is not one of 0 (free), 1 (wall), "
                                "2 (start), 3 (goal)")
    arr = np.asarray(layout, dtype=np.int64)
    for value, what in ((START, "start (2)"), (GOAL, "goal (3)")):
        n = int((arr == value).sum())
        if n != 1:
            raise MazeError(f"{where}: the layout needs exactly one {what}, found {n}")
    return arr


def maze_from_layout(layout: list[list[int]], scale: int = 5, name: str = "maze", where: str | None = None) -> GridMaze:
    """Scale ``layout`` up (each cell -> ``scale x scale`` cells) into a ``GridMaze``; the start and the goal
    become the centre cells of their blocks. Refuses a maze with no path from start to goal."""
    where = where or f"maze {name!r}"
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise MazeError(f"{where}: 'scale' must be a positive integer, got {scale!r}")
    arr = _check_layout(layout, where)
    grid = np.kron(arr, np.ones((scale, scale), dtype=np.int64))
    centre = scale // 2
    (sr, sc), = np.argwhere(arr == START)
    (gr, gc), = np.argwhere(arr == GOAL)
    start = (int(sr) * scale + centre, int(sc) * scale + centre)
    goal = (int(gr) * scale + centre, int(gc) * scale + centre)
    maze = GridMaze(name=name, walls=grid == WALL, start=start, goal=goal)
    if not maze.reachable()[maze.goal_state]:
        n = int(maze.reachable().sum())
        raise MazeError(f"{where}: no path from the start (row {start[0]}, col {start[1]}) to the goal "
                        f"(row {goal[0]}, col {goal[1]}) of the scaled {grid.shape[0]} x {grid.shape[1]} grid; "
                        f"walls enclose the start ({n} cells reachable): open a passage in the layout")
    return maze


def named_maze(name: str) -> GridMaze:
    """One of the preset mazes in ``LAYOUTS`` ("easy", "medium", "hard")."""
    if name not in LAYOUTS:
        raise MazeError(f"unknown maze {name!r}; presets are {sorted(LAYOUTS)}, or give a maze YAML file")
    layout, scale = LAYOUTS[name]
    return maze_from_layout(layout, scale, name=name)


def load_maze(path: str | Path) -> GridMaze:
    """Read a maze YAML file (format in the module docstring; ``yaml.safe_load``). Errors name the file and field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MazeError(f"maze file {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise MazeError(f"maze file {path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise MazeError(f"maze file {path}: expected a mapping with 'layout' (and optional 'scale', 'name'), "
                        f"got {type(data).__name__}")
    unknown = sorted(set(data) - {"layout", "scale", "name"})
    if unknown:
        raise MazeError(f"maze file {path}: unknown field(s) {unknown}; allowed are 'layout', 'scale', 'name'")
    if "layout" not in data:
        raise MazeError(f"maze file {path}: missing field 'layout' (rows of 0 free, 1 wall, 2 start, 3 goal)")
    name = data.get("name", path.stem)
    if not isinstance(name, str):
        raise MazeError(f"maze file {path}: 'name' must be a string, got {name!r}")
    return maze_from_layout(data["layout"], data.get("scale", 5), name=name, where=f"maze file {path}")


def maze(spec: str | Path) -> GridMaze:
    """A preset name ("easy", "medium", "hard") or the path of a maze YAML file."""
    if isinstance(spec, str) and spec in LAYOUTS:
        return named_maze(spec)
    path = Path(spec)
    if not path.exists():
        raise MazeError(f"maze {str(spec)!r}: neither a preset ({sorted(LAYOUTS)}) nor an existing maze YAML file")
    return load_maze(path)
