"""World data shared by test_world.py and test_world_sets.py: the built-in world names and a valid world mapping
with one primitive of each kind; not a test module."""

from __future__ import annotations

TEST_WORLDS = ("flat", "pallet", "stairs_up", "stairs_down", "step_up", "step_down", "rubble", "mixed")
PROXY_WORLDS = ("F", "P", "staircase")


def _world(**overrides) -> dict:
    """A valid world mapping with one primitive of each kind; tests break one field at a time."""
    data = {
        "name": "all_kinds",
        "length": 9.0,
        "speed": 0.3,
        "seed": 4,
        "time_limit": 60.0,
        "start_x": 0.5,
        "description": "every primitive",
        "terrain": [
            {"type": "box", "position": [1.0, 0.1], "size": [0.8, 1.2, 0.144], "yaw": 0.2, "z": 0.05},
            {"type": "stairs", "position": [2.5, 0.0], "direction": "up", "steps": 3, "rise": 0.15, "run": 0.3},
            {"type": "step", "position": [4.5, 0.0], "height": -0.2, "length": 1.0},
            {"type": "ramp", "position": [5.5, 0.0], "length": 1.0, "height": 0.2, "direction": "down"},
            {"type": "rough", "position": [7.0, 0.0], "length": 1.0, "amplitude": 0.05, "seed": 11},
        ],
        "sections": [{"name": "A", "start": 0.0, "end": 4.0}, {"name": "B", "start": 4.0, "end": 9.0}],
    }
    data.update(overrides)
    return data
