"""World sets (sim/world_sets.py): the training world generator and resolving world names, sets and files."""

from __future__ import annotations

import pytest
from world_samples import PROXY_WORLDS, TEST_WORLDS, _world

from sim.world import Stairs, Step, WorldError, world_from_dict
from sim.world_sets import (
    FLIPPER_KINDS,
    OBSTACLE_KINDS,
    generated_worlds,
    half_steep_worlds,
    load_set,
    resolve_world,
    resolve_worlds,
    steep_kinds_worlds,
    steep_worlds,
    training_worlds,
)


def _is_descent(prim) -> bool:
    return (isinstance(prim, Stairs) and prim.direction == "down") or (isinstance(prim, Step) and prim.height < 0)


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


def test_steep_kinds_worlds_take_each_flipper_obstacle_in_turn_from_the_steep_draw():
    worlds = steep_kinds_worlds(6, seed=2)
    assert [w.name for w in worlds] == [f"steep_kinds_2_{i}" for i in range(6)]
    for i, w in enumerate(worlds):  # one kind per world, in turn, each drawn from its own seed's hardest half
        kind = FLIPPER_KINDS[i % 4]
        assert set(w.description.split(": ")[1].split(", ")) == {kind}
        assert w.terrain == training_worlds(1, 20_000 + i, kinds=(kind,), severity=0.5)[0].terrain
    assert steep_kinds_worlds(3, seed=2) == worlds[:3], "a prefix does not depend on count"
    assert resolve_world("steep_kinds/2/5") == worlds[5] and generated_worlds("steep_kinds", 6, 2) == worlds


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
