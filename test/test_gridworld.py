"""Grid mazes of seed 001: layout scaling, start/goal/walls, moves, unreachable mazes and maze YAML errors."""

import numpy as np
import pytest

from flipper_control.rl.gridworld import LAYOUTS, GridMaze, MazeError, load_maze, maze, maze_from_layout, named_maze


def test_easy_maze_is_the_scaled_reference_layout():
    m = named_maze("easy")
    assert m.shape == (20, 15)  # 4 x 3 layout, scale 5
    assert m.start == (17, 2) and m.goal == (2, 2)  # centre cells of the start and goal blocks
    # each layout wall cell is a 5 x 5 block of walls; the rest is free
    layout = np.asarray(LAYOUTS["easy"][0])
    assert np.array_equal(m.walls, np.kron(layout == 1, np.ones((5, 5), dtype=bool)))
    assert int((~m.walls).sum()) == 200
    # right along the bottom, up the open right column, left to the goal: 8 + 15 + 8 steps
    assert m.shortest_path_length() == 31


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_preset_is_solvable(name):
    m = named_maze(name)
    assert not m.walls[m.start] and not m.walls[m.goal]
    assert m.reachable()[m.goal_state]


def test_moves_stop_at_walls_and_border():
    m = maze_from_layout([[2, 1], [3, 0]], scale=1)
    s = m.start_state  # (0, 0)
    assert m.step(s, 0) == s  # up: border
    assert m.step(s, 1) == s  # right: wall
    assert m.step(s, 3) == s  # left: border
    assert m.cell(m.step(s, 2)) == (1, 0) == m.goal  # down: the goal
    assert m.cell(m.step(m.state(1, 0), 1)) == (1, 1)


def test_unreachable_maze_is_refused_with_where():
    with pytest.raises(MazeError, match=r"no path from the start \(row 1, col 1\) to the goal \(row 7, col 1\)"):
        maze_from_layout([[2, 0], [1, 1], [3, 0]], scale=3)


@pytest.mark.parametrize(("text", "message"), [
    ("layout: [[2, 0], [0, 3", "not valid YAML"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("scale: 2\n", "missing field 'layout'"),
    ("layout: [[2, 3]]\nwalls: 1\n", r"unknown field\(s\) \['walls'\]"),
    ("layout: [[2, 0], [0]]\n", "layout row 1 has 1 cells"),
    ("layout: [[2, 7], [0, 3]]\n", "row 0, column 1: 7 is not one of"),
    ("layout: [[2, 0], [0, 0]]\n", r"exactly one goal \(3\), found 0"),
    ("layout: [[2, 2], [0, 3]]\n", r"exactly one start \(2\), found 2"),
    ("layout: [[2, 3]]\nscale: 0\n", "'scale' must be a positive integer"),
    ("layout: [[2, 1, 3]]\n", "no path from the start"),
])
def test_maze_file_errors_name_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MazeError, match=message) as info:
        load_maze(path)
    assert str(path) in str(info.value)


def test_maze_file_round_trip_and_lookup(tmp_path):
    path = tmp_path / "corridor.yaml"
    path.write_text("scale: 3\nlayout:\n  - [3, 0, 0]\n  - [1, 1, 0]\n  - [2, 0, 0]\n")
    m = maze(str(path))
    assert isinstance(m, GridMaze) and m.name == "corridor"
    assert m.shape == (9, 9) and m.start == (7, 1) and m.goal == (1, 1)
    assert maze("medium").shape == (25, 25)
    with pytest.raises(MazeError, match="neither a preset"):
        maze(str(tmp_path / "missing.yaml"))
