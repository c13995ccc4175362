"""Built-in world sets and the seeded generator of random training worlds.

- ``test``: the 8 fixed simulated test worlds (the Table I columns).
- ``proxy``: the real test course of seed 000 (F, P and a staircase scored as SU1-3, SD1-3).
- ``training``: any number of random worlds whose obstacles roughly match the expected real ones,
  drawn from a seeded generator (same seed, same worlds).
- ``steep``: the same generator restricted to stairs, steps and drops from the hardest half of their
  size ranges: the worlds where the flipper posture decides (``flipper bench plan`` measures there too).
- ``half_steep``: ``training`` and ``steep`` worlds taking turns (even indices from one, odd from the other);
  what ``configs/full.yaml`` trains on.
- ``steep_kinds``: steep worlds of one kind of flipper obstacle each, the four kinds in turn, so that each weighs
  the same (a random draw of eight ``steep`` worlds may hold six climbs); for choosing a checkpoint on held-out
  worlds (``transfer.deploy_set``).
"""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np

from sim.world import World, WorldError, load_world, world_from_dict

BUILTIN_SETS = ("test", "proxy")
GENERATED_SETS = ("training", "steep", "half_steep", "steep_kinds")


def _set_dir(name: str) -> Path:
    return Path(str(resources.files("sim") / "worlds" / name))


def load_set(name: str, count: int = 20, seed: int = 0) -> list[World]:
    """Worlds of a built-in set; ``count`` and ``seed`` apply to the generated sets (``GENERATED_SETS``)."""
    if name in GENERATED_SETS:
        return generated_worlds(name, count, seed)
    if name not in BUILTIN_SETS:
        allowed = ", ".join(BUILTIN_SETS + GENERATED_SETS)
        raise WorldError("<world set>", "name", f"unknown world set {name!r}; allowed: {allowed}")
    return [load_world(p) for p in sorted(_set_dir(name).glob("*.yaml"))]


def builtin_world_names() -> dict[str, list[str]]:
    return {name: [w.name for w in load_set(name)] for name in BUILTIN_SETS}


def resolve_world(ref: str) -> World:
    """A world from a YAML path, a built-in name (``stairs_up`` or ``test/stairs_up``), or
    ``training/SEED/INDEX`` for one generated training world."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_world(path)
    parts = ref.split("/")
    if parts[0] in GENERATED_SETS:
        try:
            seed, index = (int(p) for p in parts[1:3]) if len(parts) == 3 else (0, int(parts[1]))
        except (ValueError, IndexError):
            raise WorldError(ref, "", f"generated worlds are named {parts[0]}/INDEX or {parts[0]}/SEED/INDEX") from None
        return load_set(parts[0], index + 1, seed)[index]
    sets = [parts[0]] if len(parts) == 2 else list(BUILTIN_SETS)
    name = parts[-1]
    for set_name in sets:
        if set_name not in BUILTIN_SETS:
            break
        for world in load_set(set_name):
            if world.name == name:
                return world
    known = ", ".join(f"{s}/{n}" for s, names in builtin_world_names().items() for n in names)
    raise WorldError(ref, "", f"no such world file or built-in world; built-in: {known}; "
                                     "or training/INDEX, steep/INDEX, half_steep/INDEX (SEED/INDEX too)")


def resolve_worlds(refs: list[str], count: int = 20, seed: int = 0) -> list[World]:
    """Expand set names (test, proxy and ``GENERATED_SETS``) and single world references into a list of worlds."""
    worlds: list[World] = []
    for ref in refs:
        if ref in BUILTIN_SETS or ref in GENERATED_SETS:
            worlds.extend(load_set(ref, count, seed))
        else:
            worlds.append(resolve_world(ref))
    return worlds


# ------------------------------------------------------------------------------------------ training
_GAP = 1.2  # flat run-up before each obstacle, metres
# Obstacle size ranges (metres). They reach past the built-in test worlds (stairs of 34 degrees, a 0.30 m
# step up, a 0.38 m drop) to steep building stairs (up to about 40 degrees) and drops of 0.45 m: there the
# flipper posture has to be prepared a second or more ahead, which is what makes fine-grained planning
# hard without a guiding policy (seed 000 Table III) and what the policy must learn. Higher steps up than
# 0.34 m are not climbable with the coarse action set, so iteration 1 could not plan them.
STAIR_RISE, STAIR_RUN = (0.14, 0.21), (0.25, 0.32)
STEP_UP, STEP_DOWN = (0.12, 0.34), (0.15, 0.45)


def _size(rng: np.random.Generator, bounds: tuple[float, float], severity: float, larger_is_harder: bool = True) -> float:
    """A size from ``bounds``, restricted to its hardest ``1 - severity`` part (severity 0: the whole range)."""
    lo, hi = bounds
    cut = (hi - lo) * severity
    return float(rng.uniform(lo + cut, hi) if larger_is_harder else rng.uniform(lo, hi - cut))


def _obstacle(kind: str, x: float, rng: np.random.Generator, severity: float = 0.0) -> tuple[list[dict], float]:
    """One obstacle starting at x; returns its primitives and where the terrain is flat again."""
    width = float(rng.uniform(1.2, 1.8))
    if kind in ("stairs_up", "stairs_down"):  # steeper is harder: a higher rise and a shorter run
        steps = int(rng.integers(3, 7))
        rise, run = _size(rng, STAIR_RISE, severity), _size(rng, STAIR_RUN, severity, larger_is_harder=False)
    if kind == "stairs_up":
        landing = float(rng.uniform(1.5, 2.5))
        return [{"type": "stairs", "position": [x, 0.0], "direction": "up", "steps": steps, "rise": round(rise, 3),
                 "run": round(run, 3), "width": round(width, 2), "landing": round(landing, 2)}], x + steps * run + landing
    if kind == "stairs_down":
        return [{"type": "stairs", "position": [x, 0.0], "direction": "down", "steps": steps, "rise": round(rise, 3),
                 "run": round(run, 3), "width": round(width, 2)}], x + (steps - 1) * run
    if kind == "step_up":
        h, length = _size(rng, STEP_UP, severity), float(rng.uniform(1.5, 3.0))
        return [{"type": "step", "position": [x, 0.0], "height": round(h, 3), "width": round(width, 2),
                 "length": round(length, 2)}], x + length
    if kind == "step_down":
        h = _size(rng, STEP_DOWN, severity)
        return [{"type": "step", "position": [x, 0.0], "height": -round(h, 3), "width": round(width, 2)}], x
    if kind == "pallet":
        h, length = float(rng.uniform(0.10, 0.16)), float(rng.uniform(0.8, 1.2))
        return [{"type": "box", "position": [x, 0.0], "size": [round(length, 2), 1.2, round(h, 3)]}], x + length
    if kind == "ramp":
        h, length = float(rng.uniform(0.10, 0.30)), float(rng.uniform(0.7, 1.5))
        plateau = float(rng.uniform(0.8, 1.5))
        return [{"type": "ramp", "position": [x, 0.0], "length": round(length, 2), "height": round(h, 3),
                 "width": round(width, 2), "plateau": round(plateau, 2)}], x + length + plateau
    # rough
    length = float(rng.uniform(1.0, 2.5))
    return [{"type": "rough", "position": [x, 0.0], "length": round(length, 2), "width": round(width, 2),
             "amplitude": round(float(rng.uniform(0.04, 0.12)), 3), "cell": 0.15,
             "seed": int(rng.integers(0, 2**31 - 1))}], x + length


_FIRST_ONLY = ("stairs_down", "step_down")  # descents start from a platform reaching back to the start
_ANYWHERE = ("stairs_up", "step_up", "pallet", "ramp", "rough")
_ENDS_WORLD = ("stairs_up",)  # obstacles after which the course ends (see training_worlds)


OBSTACLE_KINDS = _FIRST_ONLY + _ANYWHERE
FLIPPER_KINDS = ("stairs_up", "stairs_down", "step_up", "step_down")  # obstacles that need the flippers


def training_worlds(count: int, seed: int = 0, kinds: tuple[str, ...] | None = None,
                    severity: float = 0.0, name: str = "training") -> list[World]:
    """``count`` random training worlds (1-3 obstacles each) drawn from ``np.random.default_rng(seed)``.

    ``kinds`` restricts the obstacles to a subset of ``OBSTACLE_KINDS`` (for example ``FLIPPER_KINDS``);
    the default draws from all of them. ``severity`` in [0, 1) draws stair, step and drop sizes from the
    hardest ``1 - severity`` part of their ranges (0.5: stairs of 31.5-40 degrees, steps of 0.23-0.34 m,
    drops of 0.30-0.45 m); the generator's other draws (pallets, ramps, rough ground) are unchanged.
    Worlds are named ``{name}_{seed}_{index}``.

    Descents only come first (they start from a platform reaching back to the start) and an up-staircase
    comes last (the course ends on its landing instead of dropping off a cliff as high as the flight).
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    allowed = OBSTACLE_KINDS if kinds is None else tuple(kinds)
    unknown = sorted(set(allowed) - set(OBSTACLE_KINDS))
    first = tuple(k for k in _FIRST_ONLY + _ANYWHERE if k in allowed)
    later = tuple(k for k in _ANYWHERE if k in allowed)
    if unknown or not first:
        what = f"unknown obstacle kinds {unknown}" if unknown else "no obstacle kinds given"
        raise ValueError(f"training worlds: {what}; allowed: {', '.join(OBSTACLE_KINDS)}")
    if not 0.0 <= severity < 1.0:
        raise ValueError(f"training worlds: severity must be in [0, 1), got {severity}")
    rng = np.random.default_rng(seed)
    worlds = []
    for i in range(count):
        n_obstacles = int(rng.integers(1, 4))
        x = _GAP
        terrain: list[dict] = []
        drawn = []
        length = 0.0
        for k in range(n_obstacles):
            pool = first if k == 0 else later
            if not pool:
                break
            kind = str(pool[int(rng.integers(0, len(pool)))])
            prims, x_end = _obstacle(kind, round(x, 2), rng, severity)
            terrain.extend(prims)
            drawn.append(kind)
            if kind in _ENDS_WORLD:
                # the landing of an up-staircase ends in a cliff as high as the flight: the course ends on it
                length = round(x_end - 0.3, 2)
                break
            x = x_end + _GAP
        length = length or round(x - _GAP + 1.0, 2)
        data = {"name": f"{name}_{seed}_{i}", "length": length, "speed": 0.3, "seed": int(rng.integers(0, 2**31 - 1)),
                "description": "random training world: " + ", ".join(drawn), "terrain": terrain}
        worlds.append(world_from_dict(data, f"{name}/{seed}/{i}"))
    return worlds


def steep_worlds(count: int, seed: int = 0) -> list[World]:
    """``count`` worlds of only stairs, steps and drops from the hardest half of their ranges (``steep_SEED_I``)."""
    return training_worlds(count, seed, kinds=FLIPPER_KINDS, severity=0.5, name="steep")


def half_steep_worlds(count: int, seed: int = 0) -> list[World]:
    """``count`` worlds alternating between ``training_worlds`` (even indices) and ``steep_worlds`` (odd).

    Every world keeps the name it has in its own set; a prefix does not depend on ``count``.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    plain, steep = training_worlds((count + 1) // 2, seed), steep_worlds(count // 2, seed)
    return [plain[i // 2] if i % 2 == 0 else steep[i // 2] for i in range(count)]


def steep_kinds_worlds(count: int, seed: int = 0) -> list[World]:
    """``count`` steep worlds, world ``i`` with obstacles of the one kind ``FLIPPER_KINDS[i % 4]`` only
    (``steep_kinds_SEED_I``; each drawn as ``steep_worlds`` draws, from generator seed ``seed x 10000 + i``).

    Every kind weighs the same, as in the test worlds, whatever the count's prefix; a prefix does not depend on ``count``.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    worlds = []
    for i in range(count):
        kind = FLIPPER_KINDS[i % len(FLIPPER_KINDS)]
        (world,) = training_worlds(1, seed * 10_000 + i, kinds=(kind,), severity=0.5, name="steep_kinds")
        worlds.append(replace(world, name=f"steep_kinds_{seed}_{i}", source=f"steep_kinds/{seed}/{i}"))
    return worlds


def generated_worlds(name: str, count: int, seed: int = 0) -> list[World]:
    """``count`` worlds of the generated set ``name`` (one of ``GENERATED_SETS``) from generator seed ``seed``."""
    makers = {"training": training_worlds, "steep": steep_worlds, "half_steep": half_steep_worlds,
              "steep_kinds": steep_kinds_worlds}
    if name not in makers:
        raise ValueError(f"unknown generated world set {name!r}; allowed: {', '.join(GENERATED_SETS)}")
    return makers[name](count, seed)
