"""World YAML format (sim/world.py): loading, validation messages, round trips and the bounds of the simulator;
the world sets, the training generator and resolve_world are in test_world_sets.py."""

from __future__ import annotations

import re

import pytest
import yaml
from world_samples import PROXY_WORLDS, TEST_WORLDS, _world

from sim.world import Box, Ramp, Rough, Stairs, Step, WorldError, dump_world, load_world, world_from_dict
from sim.world_sets import load_set

ALLOWED_PRIMITIVES = ("box", "stairs", "step", "ramp", "rough")  # the contract of ARCHITECTURE.md


def _with_primitive(**prim) -> dict:
    return _world(terrain=[prim])


# ----------------------------------------------------------------------------------------- built-in worlds
@pytest.mark.parametrize("set_name, names", [("test", TEST_WORLDS), ("proxy", PROXY_WORLDS)])
def test_builtin_sets_load_with_their_names(set_name, names):
    worlds = load_set(set_name)
    assert [w.name for w in worlds] == list(names)
    for w in worlds:
        assert w.length > 0 and w.speed > 0
        assert w.effective_time_limit >= w.length / w.speed


def test_proxy_staircase_is_scored_in_six_sections(builtin_worlds):
    w = builtin_worlds["proxy/staircase"]
    assert [s.name for s in w.sections] == ["SU1", "SU2", "SU3", "SD1", "SD2", "SD3"]
    assert all(s.start < s.end <= w.length + 1e-9 for s in w.sections)
    assert [type(p) for p in w.terrain] == [Stairs, Stairs]
    assert [p.direction for p in w.terrain] == ["up", "down"]


@pytest.mark.parametrize("ref", [f"test/{n}" for n in TEST_WORLDS] + [f"proxy/{n}" for n in PROXY_WORLDS])
def test_builtin_world_round_trips(ref, builtin_worlds):
    w = builtin_worlds[ref]
    assert world_from_dict(w.to_dict()) == w
    assert world_from_dict(yaml.safe_load(dump_world(w))) == w


def test_every_field_round_trips():
    w = world_from_dict(_world())
    assert [type(p) for p in w.terrain] == [Box, Stairs, Step, Ramp, Rough]
    assert w.start_x == 0.5 and w.time_limit == 60.0 and w.goal_x == pytest.approx(9.5)
    assert world_from_dict(w.to_dict()) == w
    assert world_from_dict(yaml.safe_load(dump_world(w))) == w


def test_round_trip_keeps_differences():
    """Equality is not vacuous: a changed primitive field gives a different world."""
    a = world_from_dict(_world())
    changed = _world()
    changed["terrain"][1]["rise"] = 0.16
    assert world_from_dict(changed) != a


def test_default_time_limit_leaves_room_for_the_nominal_time():
    w = world_from_dict({"name": "w", "length": 3.0, "speed": 0.3})
    assert w.time_limit is None
    assert w.effective_time_limit > 3.0 / 0.3


def test_yaml_file_loads_and_records_its_path(write_world):
    path = write_world(_world())
    w = load_world(path)
    assert w == world_from_dict(_world())
    assert w.source == str(path)


# ----------------------------------------------------------------------------------------- bad input
def _error_for(write_world, data) -> str:
    path = write_world(data)
    with pytest.raises(WorldError) as info:
        load_world(path)
    message = str(info.value)
    assert str(path) in message, "the message must name the file"
    return message


def test_unknown_primitive_names_file_field_and_allowed(write_world):
    data = _world()
    data["terrain"][2] = {"type": "pyramid", "position": [4.0, 0.0]}
    message = _error_for(write_world, data)
    assert "terrain[2].type" in message
    assert "pyramid" in message
    for kind in ALLOWED_PRIMITIVES:
        assert kind in message


@pytest.mark.parametrize(
    "data, field",
    [
        (_with_primitive(type="stairs", steps=3), "terrain[0].position"),
        (_with_primitive(type="box", position=[1.0, 0.0]), "terrain[0].size"),
        (_with_primitive(type="step", position=[1.0, 0.0]), "terrain[0].height"),
        (_with_primitive(type="ramp", position=[1.0, 0.0], height=0.2), "terrain[0].length"),
        ({k: v for k, v in _world().items() if k != "length"}, "length"),
        ({k: v for k, v in _world().items() if k != "name"}, "name"),
    ],
    ids=["stairs-position", "box-size", "step-height", "ramp-length", "world-length", "world-name"],
)
def test_missing_required_field_is_named(write_world, data, field):
    message = _error_for(write_world, data)
    assert f": {field}:" in message
    assert "missing" in message


_RANGE = re.compile(r"\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]")


@pytest.mark.parametrize(
    "prim, field, value",
    [
        ({"type": "stairs", "position": [1.0, 0.0], "width": -1.0}, "terrain[0].width", -1.0),
        ({"type": "stairs", "position": [1.0, 0.0], "rise": 2.0}, "terrain[0].rise", 2.0),
        ({"type": "stairs", "position": [1.0, 0.0], "steps": 500}, "terrain[0].steps", 500),
        ({"type": "ramp", "position": [1.0, 0.0], "length": 1.0, "height": 3.0}, "terrain[0].height", 3.0),
        ({"type": "rough", "position": [1.0, 0.0], "length": 1.0, "amplitude": 2.0}, "terrain[0].amplitude", 2.0),
    ],
    ids=["negative-width", "rise-2m", "500-steps", "ramp-3m", "rough-2m"],
)
def test_impossible_size_names_field_and_range(write_world, prim, field, value):
    message = _error_for(write_world, _with_primitive(**prim))
    assert f": {field}:" in message
    match = _RANGE.search(message)
    assert match, f"no allowed range in {message!r}"
    lo, hi = float(match.group(1)), float(match.group(2))
    assert lo < hi and not lo <= value <= hi, "the stated range must exclude the rejected value"


@pytest.mark.parametrize(
    "prim, field",
    [
        ({"type": "step", "position": [1.0, 0.0], "height": 0.0}, "terrain[0].height"),
        ({"type": "ramp", "position": [1.0, 0.0], "length": 1.0, "height": -0.2}, "terrain[0].height"),
        ({"type": "box", "position": [1.0, 0.0], "size": [0.5, -1.0, 0.1]}, "terrain[0].size[1]"),
        ({"type": "box", "position": [1.0, 0.0], "size": [0.5, 1.0, 0.0]}, "terrain[0].size[2]"),
    ],
    ids=["step-height-0", "ramp-negative", "box-negative-width", "box-flat"],
)
def test_degenerate_size_names_field_and_limit(write_world, prim, field):
    message = _error_for(write_world, _with_primitive(**prim))
    assert f": {field}:" in message
    # the allowed side is stated as a comparison with a number, e.g. "|height| >= 0.01" or "> 0"
    assert re.search(r"(>=|>|<=|<)\s*-?\d", message), message


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"speed": -0.3}, "speed"),
        ({"speed": 30.0}, "speed"),
        ({"length": "far"}, "length"),
        ({"seed": 1.5}, "seed"),
        ({"colour": "red"}, "colour"),
        ({"terrain": {"type": "box"}}, "terrain"),
        ({"sections": [{"name": "A", "start": 2.0, "end": 1.0}]}, "sections[0].end"),
    ],
)
def test_bad_world_field_is_named(write_world, overrides, field):
    message = _error_for(write_world, _world(**overrides))
    assert f": {field}:" in message


def test_unknown_primitive_field_is_named(write_world):
    message = _error_for(write_world, _with_primitive(type="stairs", position=[1.0, 0.0], riser=0.2))
    assert "terrain[0].riser" in message
    assert "rise" in message  # the allowed fields are listed


def test_bad_direction_is_named(write_world):
    message = _error_for(write_world, _with_primitive(type="stairs", position=[1.0, 0.0], direction="sideways"))
    assert "terrain[0].direction" in message and "up" in message and "down" in message


def test_time_limit_shorter_than_nominal_is_rejected(write_world):
    # 3 m at 0.3 m/s needs 10 s: 5 s cannot be enough
    message = _error_for(write_world, {"name": "w", "length": 3.0, "speed": 0.3, "time_limit": 5.0})
    assert ": time_limit:" in message
    assert world_from_dict({"name": "w", "length": 3.0, "speed": 0.3, "time_limit": 12.0}).time_limit == 12.0


@pytest.mark.parametrize("text", ["name: [unclosed\nlength: 3", "name: w\n  length: : 3\n\t- x"], ids=["bracket", "indent"])
def test_non_yaml_file_names_the_file(write_world, text):
    path = write_world(text)
    with pytest.raises(WorldError) as info:
        load_world(path)
    assert str(path) in str(info.value)
    assert "yaml" in str(info.value).lower()  # says what is wrong with it


@pytest.mark.parametrize("text", ["- just\n- a list\n", "42\n", ""], ids=["list", "scalar", "empty"])
def test_yaml_that_is_not_a_mapping_names_the_file(write_world, text):
    path = write_world(text)
    with pytest.raises(WorldError) as info:
        load_world(path)
    assert str(path) in str(info.value)


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nowhere" / "missing.yaml"
    with pytest.raises(WorldError) as info:
        load_world(path)
    assert str(path) in str(info.value)


def test_world_error_is_a_value_error():
    with pytest.raises(ValueError):
        world_from_dict({"name": "w"})


def test_world_error_survives_a_pickle_round_trip():
    """Process pools send a worker's exception back pickled; a custom __init__ must not break that."""
    import pickle

    err = WorldError("w.yaml", "obstacles[0].rise", "must be > 0")
    back = pickle.loads(pickle.dumps(err))  # safe: our own in-memory object
    assert type(back) is WorldError and str(back) == str(err)
    assert (back.source, back.where, back.problem) == ("w.yaml", "obstacles[0].rise", "must be > 0")


# ------------------------------------------------------------------------------------------ bounds of the simulator


@pytest.mark.parametrize(
    "world, field",
    [
        ({"name": "w", "length": 1.0e9}, "length"),
        ({"name": "w", "length": 3.0, "start_x": 1.0e7}, "start_x"),
        (_with_primitive(type="box", position=[1.0e7, 0.0], size=[0.5, 1.0, 0.1]), "terrain[0].position[0]"),
        (_with_primitive(type="box", position=[-30.0, 0.0], size=[0.5, 1.0, 0.1]), "terrain[0].position[0]"),
        (_with_primitive(type="step", position=[1.0, 40.0], height=0.2), "terrain[0].position[1]"),
    ],
    ids=["length-1e9", "start-1e7", "box-at-1e7", "box-far-behind", "step-far-aside"],
)
def test_a_world_larger_than_the_simulator_holds_names_field_and_bound(write_world, world, field):
    message = _error_for(write_world, world)
    assert f": {field}:" in message
    match = _RANGE.search(message) or re.search(r"\((0), (\d+)\]", message)
    assert match, f"no allowed range in {message!r}"


def test_a_rough_patch_of_too_many_blocks_is_refused(write_world):
    message = _error_for(write_world, _with_primitive(type="rough", position=[1.0, 0.0], length=100.0, width=20.0, cell=0.05))
    assert ": terrain[0]:" in message and "800000 blocks" in message and "at most 20000" in message


def test_terrain_grid_beyond_the_simulator_bound_is_a_world_error_not_a_memory_error():
    """Every field within its bound, the sum still too large: refused before the grid is allocated."""
    from sim.terrain import HeightGrid

    world = world_from_dict({"name": "big", "length": 100, "terrain": [
        {"type": "stairs", "position": [80, 0], "steps": 40, "run": 1.0, "rise": 0.5, "landing": 50, "width": 20},
        {"type": "stairs", "position": [0, -5], "direction": "down", "steps": 40, "run": 1.0, "rise": 0.03,
         "platform": 100, "width": 20}]}, source="big.yaml")
    with pytest.raises(WorldError, match=r"big\.yaml: terrain: the terrain spans .* more than the simulator's"):
        HeightGrid.for_world(world)


@pytest.mark.parametrize("text, hint", [("1.0e9", "write 1.0e+9"), ("three", "is text")])
def test_a_number_that_yaml_reads_as_text_is_named_not_a_number(write_world, text, hint):
    path = write_world(f"name: w\nlength: {text}\n")
    with pytest.raises(WorldError) as info:
        load_world(path)
    message = str(info.value)
    assert message.startswith(f"{path}: length: not a number") and hint in message


def test_a_binary_world_file_names_the_file(tmp_path):
    path = tmp_path / "world.yaml"
    path.write_bytes(b"name: w\nlength: 3\n\xff\xfe\x00binary")
    with pytest.raises(WorldError) as info:
        load_world(path)
    assert str(info.value).startswith(f"{path}: <file>: not a text file") and "byte 0xff at offset 18" in str(info.value)
