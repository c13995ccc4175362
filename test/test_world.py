"""World YAML format: loading, validation messages, round trips, built-in sets and the training generator."""

from __future__ import annotations

import re

import pytest
import yaml

from sim.world import Box, Ramp, Rough, Stairs, Step, WorldError, dump_world, load_world, world_from_dict
from sim.world_sets import (
    FLIPPER_KINDS,
    OBSTACLE_KINDS,
    generated_worlds,
    half_steep_worlds,
    load_set,
    resolve_world,
    resolve_worlds,
    steep_worlds,
    training_worlds,
)

ALLOWED_PRIMITIVES = ("box", "stairs", "step", "ramp", "rough")  # the contract of ARCHITECTURE.md
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


def _with_primitive(**prim) -> dict:
    return _world(terrain=[prim])


def _is_descent(prim) -> bool:
    return (isinstance(prim, Stairs) and prim.direction == "down") or (isinstance(prim, Step) and prim.height < 0)


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


# ----------------------------------------------------------------------------------------- training worlds
def test_training_worlds_are_deterministic_per_seed():
    a, b = training_worlds(12, seed=5), training_worlds(12, seed=5)
    assert a == b
    assert [w.to_dict() for w in a] == [w.to_dict() for w in b]


def test_training_worlds_differ_across_seeds():
    a, b = training_worlds(12, seed=5), training_worlds(12, seed=6)
    assert [w.to_dict()["terrain"] for w in a] != [w.to_dict()["terrain"] for w in b]
    assert len({str(w.to_dict()["terrain"]) for w in a}) > 1, "worlds of one seed must differ among themselves"


def test_a_prefix_of_training_worlds_does_not_depend_on_count():
    assert training_worlds(3, seed=2) == training_worlds(8, seed=2)[:3]


def test_restricting_obstacle_kinds_keeps_only_those_kinds():
    from sim.world import Box, Ramp, Rough

    worlds = training_worlds(30, seed=3, kinds=FLIPPER_KINDS)
    assert not any(isinstance(p, (Box, Ramp, Rough)) for w in worlds for p in w.terrain)
    assert all("pallet" not in w.description and "ramp" not in w.description for w in worlds)
    assert any(isinstance(p, Box) for w in training_worlds(30, seed=3) for p in w.terrain), "the default draws pallets"


def test_severity_draws_from_the_hard_part_of_each_range():
    from sim.world import Stairs, Step
    from sim.world_sets import STAIR_RISE, STAIR_RUN, STEP_DOWN, STEP_UP

    sizes = {"rise": [], "run": [], "up": [], "down": []}
    for w in steep_worlds(40, seed=1):
        assert w.name.startswith("steep_1_")
        for p in w.terrain:
            if isinstance(p, Stairs):
                sizes["rise"].append(p.rise)
                sizes["run"].append(p.run)
            elif isinstance(p, Step):
                sizes["up" if p.height > 0 else "down"].append(abs(p.height))
    assert all(len(v) >= 3 for v in sizes.values()), sizes
    mid = {k: sum(r) / 2 for k, r in (("rise", STAIR_RISE), ("run", STAIR_RUN), ("up", STEP_UP), ("down", STEP_DOWN))}
    assert min(sizes["rise"]) >= mid["rise"] - 1e-3 and max(sizes["run"]) <= mid["run"] + 1e-3, "steeper stairs"
    assert min(sizes["up"]) >= mid["up"] - 1e-3 and min(sizes["down"]) >= mid["down"] - 1e-3, "higher steps and drops"


def test_generator_options_do_not_change_the_default_draw():
    plain = training_worlds(10, seed=4)
    assert training_worlds(10, seed=4, kinds=OBSTACLE_KINDS, severity=0.0) == plain
    assert resolve_world("steep/4/2") == steep_worlds(3, seed=4)[2]
    assert [w.name for w in resolve_worlds(["steep"], count=2, seed=4)] == ["steep_4_0", "steep_4_1"]


def test_half_steep_worlds_alternate_between_the_plain_and_the_steep_draw():
    worlds = half_steep_worlds(5, seed=4)
    assert worlds[0::2] == training_worlds(3, seed=4) and worlds[1::2] == steep_worlds(2, seed=4)
    assert half_steep_worlds(3, seed=4) == worlds[:3], "a prefix does not depend on count"
    assert resolve_world("half_steep/4/3") == worlds[3] and resolve_worlds(["half_steep"], count=5, seed=4) == worlds
    with pytest.raises(ValueError, match="unknown generated world set 'hard'"):
        generated_worlds("hard", 2)


@pytest.mark.parametrize("kwargs, fragment", [({"kinds": ("stairs_up", "slide")}, "slide"), ({"kinds": ()}, "no obstacle"),
                                              ({"severity": 1.0}, "severity"), ({"severity": -0.1}, "severity")])
def test_bad_generator_options_are_refused(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        training_worlds(2, seed=0, **kwargs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_worlds_validate_and_descend_only_first(seed):
    worlds = training_worlds(40, seed)
    assert len(worlds) == 40
    descents = 0
    for w in worlds:
        assert len(w.terrain) >= 1
        assert world_from_dict(w.to_dict()) == w  # validates again from its own YAML form
        assert all(w.start_x <= p.position[0] <= w.goal_x for p in w.terrain), "obstacles lie on the course"
        assert not any(_is_descent(p) for p in w.terrain[1:]), f"{w.name}: a descent after the first obstacle"
        descents += _is_descent(w.terrain[0])
    assert descents > 0, "the generator should produce descents at all (else the check above is vacuous)"


@pytest.mark.parametrize("seed", [0, 1])
def test_training_courses_end_on_an_up_staircase_landing(seed):
    """An up-staircase is the last obstacle and the goal lies on its landing, never past the cliff at its end."""
    from sim.terrain import world_solids
    from sim.world import Stairs

    found = 0
    for w in training_worlds(40, seed):
        ups = [i for i, p in enumerate(w.terrain) if isinstance(p, Stairs) and p.direction == "up"]
        if not ups:
            continue
        found += 1
        assert ups == [len(w.terrain) - 1], f"{w.name}: obstacles after an up-staircase"
        stairs = w.terrain[-1]
        landing_end = stairs.position[0] + stairs.steps * stairs.run + stairs.landing
        assert w.goal_x < landing_end, f"{w.name}: goal {w.goal_x} beyond the landing's end {landing_end}"
        assert world_solids(w)  # still builds
    assert found > 0


def test_training_worlds_reject_negative_count():
    with pytest.raises(ValueError):
        training_worlds(-1)
    assert training_worlds(0) == []


# ----------------------------------------------------------------------------------------- resolve_world
@pytest.mark.parametrize("ref", ["stairs_up", "test/stairs_up"])
def test_resolve_builtin_name(ref, builtin_worlds):
    assert resolve_world(ref) == builtin_worlds["test/stairs_up"]


def test_resolve_proxy_name(builtin_worlds):
    assert resolve_world("proxy/staircase") == builtin_worlds["proxy/staircase"]


def test_resolve_training_index():
    assert resolve_world("training/3") == training_worlds(4, seed=0)[3]
    assert resolve_world("training/7/2") == training_worlds(3, seed=7)[2]


def test_resolve_yaml_path(write_world):
    path = write_world(_world(name="my_world"))
    w = resolve_world(str(path))
    assert w.name == "my_world" and w == world_from_dict(_world(name="my_world"))


def test_resolve_unknown_name_lists_builtins():
    with pytest.raises(WorldError) as info:
        resolve_world("no_such_world")
    message = str(info.value)
    assert message.startswith("no_such_world: no such world file or built-in world; built-in:")
    for name in TEST_WORLDS + PROXY_WORLDS:
        assert name in message


@pytest.mark.parametrize("ref", ["training/x", "training/"])
def test_resolve_bad_training_name(ref):
    with pytest.raises(WorldError):
        resolve_world(ref)


def test_unknown_set_is_rejected():
    with pytest.raises(WorldError) as info:
        load_set("nope")
    assert "test" in str(info.value) and "proxy" in str(info.value)


def test_resolve_worlds_expands_sets():
    worlds = resolve_worlds(["test", "proxy/P", "training"], count=2, seed=1)
    assert [w.name for w in worlds[:8]] == list(TEST_WORLDS)
    assert worlds[8].name == "P"
    assert worlds[9:] == training_worlds(2, seed=1)


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
