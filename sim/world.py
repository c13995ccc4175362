"""World specification: the YAML format users write, its validation, and the built-in world sets.

A world is a strip of terrain that the robot must traverse along +x at a constant commanded speed.
Every terrain primitive has a ``position: [x, y]``: x is where the primitive begins (the first point
the robot meets when driving along +x), y is its centre line. Heights are metres above the ground
plane z = 0. See README.md ("World format") for the full description and an example.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

PRIMITIVES = ("box", "stairs", "step", "ramp", "rough")


class WorldError(ValueError):
    """A world file or dict is invalid; the message names the source, the field and what is allowed."""

    def __init__(self, source: str, where: str, problem: str):
        super().__init__(f"{source}: {where}: {problem}" if where else f"{source}: {problem}")  # where="": the whole
        self.source, self.where, self.problem = source, where, problem

    def __reduce__(self):  # picklable (process pools) although __init__ takes three arguments
        return (type(self), (self.source, self.where, self.problem))


@dataclass(frozen=True)
class Box:
    """A solid block (a pallet, a kerb, a crate). ``size`` is [length along x, width, height]."""

    position: tuple[float, float]
    size: tuple[float, float, float]
    yaw: float = 0.0
    z: float = 0.0  # height of the bottom face (stack boxes on each other)


@dataclass(frozen=True)
class Stairs:
    """A straight staircase. ``up``: steps climb from ``position``, then a landing of ``landing`` metres.

    ``down``: the terrain before ``position`` is a platform at the full height (``platform`` metres
    long, by default reaching 1 m behind the world start) and the steps descend from ``position``.
    """

    position: tuple[float, float]
    direction: str = "up"
    steps: int = 5
    rise: float = 0.17
    run: float = 0.29
    width: float = 1.2
    landing: float = 1.5
    platform: float | None = None


@dataclass(frozen=True)
class Step:
    """A single step. Positive ``height``: a block rises at x. Negative: a block ends at x (a drop)."""

    position: tuple[float, float]
    height: float
    width: float = 1.5
    length: float | None = None  # extent of the block; by default it reaches the start or 3 m on


@dataclass(frozen=True)
class Ramp:
    """An incline rising (``up``) or falling (``down``) by ``height`` over ``length``, then a plateau."""

    position: tuple[float, float]
    length: float
    height: float
    width: float = 1.5
    direction: str = "up"
    plateau: float = 1.0


@dataclass(frozen=True)
class Rough:
    """A seeded random height field patch: blocks of ``cell`` size, heights uniform in [0, amplitude]."""

    position: tuple[float, float]
    length: float
    width: float = 1.5
    amplitude: float = 0.08
    cell: float = 0.15
    seed: int = 0


PRIMITIVE_TYPES: dict[str, type] = {"box": Box, "stairs": Stairs, "step": Step, "ramp": Ramp, "rough": Rough}


@dataclass(frozen=True)
class Section:
    """A named x interval of a world scored on its own (the proxy staircase: SU1..SD3)."""

    name: str
    start: float
    end: float


@dataclass(frozen=True)
class World:
    """A validated world: what to traverse, how fast, and the terrain."""

    name: str
    length: float
    terrain: tuple = ()
    speed: float = 0.3
    time_limit: float | None = None  # default: 2.5 x the time needed at the commanded speed
    seed: int = 0
    start_x: float = 0.0
    sections: tuple[Section, ...] = ()
    description: str = ""
    source: str = field(default="<dict>", compare=False)

    @property
    def goal_x(self) -> float:
        return self.start_x + self.length

    @property
    def effective_time_limit(self) -> float:
        return self.time_limit if self.time_limit is not None else 2.5 * self.length / self.speed

    def to_dict(self) -> dict[str, Any]:
        """The YAML-ready form of this world (round-trips through ``world_from_dict``)."""
        out: dict[str, Any] = {"name": self.name, "length": self.length, "speed": self.speed, "seed": self.seed}
        if self.time_limit is not None:
            out["time_limit"] = self.time_limit
        if self.start_x:
            out["start_x"] = self.start_x
        if self.description:
            out["description"] = self.description
        terrain = []
        for prim in self.terrain:
            kind = next(k for k, t in PRIMITIVE_TYPES.items() if isinstance(prim, t))
            item: dict[str, Any] = {"type": kind}
            for f in fields(prim):
                value = getattr(prim, f.name)
                if value is not None:
                    item[f.name] = list(value) if isinstance(value, tuple) else value
            terrain.append(item)
        out["terrain"] = terrain
        if self.sections:
            out["sections"] = [{"name": s.name, "start": s.start, "end": s.end} for s in self.sections]
        return out


# --------------------------------------------------------------------------------------------------
# Validation


# How much course the simulator holds. Its terrain is a 1 cm height grid over the course plus margins
# (sim.terrain.HeightGrid), so the grid's size follows the course: 100 m x 10 m is 10^7 cells (80 MB of float64).
# Obstacles lie on the course: at most OBSTACLE_MARGIN before its start or after its end, at most MAX_OFFSET
# to either side of its centre line (the robot fails when it leaves the course by 0.6 m anyway).
MAX_LENGTH = 100.0  # metres of course
MAX_START_X = 100.0  # |start_x|, metres
OBSTACLE_MARGIN = 20.0  # metres before the start line or past the goal line
MAX_OFFSET = 5.0  # |y| of a primitive's centre line, metres
MAX_ROUGH_BLOCKS = 20_000  # blocks of one rough patch (each is a MuJoCo box)


def _number(src: str, where: str, value: Any, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            raise WorldError(src, where, f"not a number: {value!r} is text") from None
        hint = " (YAML reads an exponent without a sign as text: write 1.0e+9, not 1.0e9)" if "e" in value.lower() else ""
        raise WorldError(src, where, f"not a number: {value!r} is text{hint}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise WorldError(src, where, f"expected a finite number, got {value!r}")
    if positive and value <= 0:
        raise WorldError(src, where, f"must be > 0, got {value}")
    if nonneg and value < 0:
        raise WorldError(src, where, f"must be >= 0, got {value}")
    return float(value)


def _vector(src: str, where: str, value: Any, n: int, *, positive: bool = False) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise WorldError(src, where, f"expected a list of {n} numbers, got {value!r}")
    return tuple(_number(src, f"{where}[{i}]", v, positive=positive) for i, v in enumerate(value))


_LIMITS = {  # field -> (min, max) sanity bounds for sizes in metres; outside them is "impossible"
    "rise": (0.01, 0.5), "run": (0.1, 1.0), "steps": (1, 40), "width": (0.3, 20.0), "height": (-1.5, 1.5),
    "length": (0.05, 100.0), "amplitude": (0.0, 0.4), "cell": (0.05, 1.0), "landing": (0.0, 50.0),
    "platform": (0.0, 100.0), "plateau": (0.0, 50.0),
}


def _primitive(src: str, index: int, item: Any) -> Any:
    where = f"terrain[{index}]"
    if not isinstance(item, dict):
        raise WorldError(src, where, f"expected a mapping with a 'type' key, got {item!r}")
    kind = item.get("type")
    if kind not in PRIMITIVE_TYPES:
        raise WorldError(src, f"{where}.type", f"unknown primitive {kind!r}; allowed: {', '.join(PRIMITIVES)}")
    cls = PRIMITIVE_TYPES[kind]
    allowed = {f.name for f in fields(cls)}
    unknown = set(item) - allowed - {"type"}
    if unknown:
        raise WorldError(src, f"{where}.{sorted(unknown)[0]}", f"unknown field for {kind}; allowed: {', '.join(sorted(allowed))}")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        fw = f"{where}.{f.name}"
        if f.name not in item:
            if f.default is MISSING:
                raise WorldError(src, fw, f"missing; {kind} needs {', '.join(_required(cls))}")
            continue
        value = item[f.name]
        if f.name == "position":
            kwargs[f.name] = _vector(src, fw, value, 2)
        elif f.name == "size":
            kwargs[f.name] = _vector(src, fw, value, 3, positive=True)
        elif f.name == "direction":
            if value not in ("up", "down"):
                raise WorldError(src, fw, f"must be 'up' or 'down', got {value!r}")
            kwargs[f.name] = value
        elif f.name in ("steps", "seed"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise WorldError(src, fw, f"expected an integer, got {value!r}")
            kwargs[f.name] = value
        elif value is None and f.default is None:
            kwargs[f.name] = None
        else:
            kwargs[f.name] = _number(src, fw, value)
        if f.name in _LIMITS and kwargs[f.name] is not None:
            lo, hi = _LIMITS[f.name]
            v = kwargs[f.name]
            if not lo <= v <= hi:
                raise WorldError(src, fw, f"impossible size {v}; allowed range is [{lo}, {hi}]")
    if kind == "step" and abs(kwargs["height"]) < 0.01:
        raise WorldError(src, f"{where}.height", "a step needs |height| >= 0.01 m")
    if kind == "ramp" and kwargs["height"] <= 0:
        raise WorldError(src, f"{where}.height", "must be > 0 (use direction: down for a descent)")
    if kind == "box" and kwargs["size"][2] > 1.5:
        raise WorldError(src, f"{where}.size[2]", f"impossible height {kwargs['size'][2]}; at most 1.5 m")
    if kind == "box" and max(kwargs["size"][:2]) > _LIMITS["width"][1]:
        raise WorldError(src, f"{where}.size", f"impossible size {list(kwargs['size'])}; length and width at most "
                                               f"{_LIMITS['width'][1]:g} m")
    prim = cls(**kwargs)
    if isinstance(prim, Rough):
        blocks = math.ceil(prim.length / prim.cell) * math.ceil(prim.width / prim.cell)
        if blocks > MAX_ROUGH_BLOCKS:
            raise WorldError(src, where, f"a rough patch of {blocks} blocks is more than the simulator holds (at most "
                                         f"{MAX_ROUGH_BLOCKS}, each a collision box); use a larger cell or a smaller patch")
    return prim


def _on_course(src: str, index: int, prim: Any, start_x: float, goal_x: float) -> None:
    """A primitive must lie on the course the simulator holds (see MAX_LENGTH and the margins above)."""
    x, y = prim.position
    lo, hi = start_x - OBSTACLE_MARGIN, goal_x + OBSTACLE_MARGIN
    if not lo <= x <= hi:
        raise WorldError(src, f"terrain[{index}].position[0]", f"x = {x:g} m is off the course; allowed [{lo:g}, {hi:g}] "
                                                               f"(from {OBSTACLE_MARGIN:g} m before the start to "
                                                               f"{OBSTACLE_MARGIN:g} m past the goal)")
    if abs(y) > MAX_OFFSET:
        raise WorldError(src, f"terrain[{index}].position[1]", f"y = {y:g} m is off the course; allowed "
                                                               f"[{-MAX_OFFSET:g}, {MAX_OFFSET:g}]")


def _required(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.default is MISSING]


def world_from_dict(data: Any, source: str = "<dict>") -> World:
    """Validate a world mapping (as loaded from YAML) and build a ``World``.

    Raises ``WorldError`` naming ``source``, the offending field and what is allowed.
    """
    if not isinstance(data, dict):
        raise WorldError(source, "<top>", f"expected a mapping of world fields, got {type(data).__name__}")
    allowed = {"name", "length", "terrain", "speed", "time_limit", "seed", "start_x", "sections", "description"}
    unknown = set(data) - allowed
    if unknown:
        raise WorldError(source, sorted(unknown)[0], f"unknown field; allowed: {', '.join(sorted(allowed))}")
    for key in ("name", "length"):
        if key not in data:
            raise WorldError(source, key, "missing; a world needs at least 'name' and 'length'")
    name = data["name"]
    if not isinstance(name, str) or not name.strip():
        raise WorldError(source, "name", f"expected a non-empty string, got {name!r}")
    length = _number(source, "length", data["length"], positive=True)
    if length > MAX_LENGTH:
        raise WorldError(source, "length", f"{length:g} m is more course than the simulator holds; allowed (0, {MAX_LENGTH:g}]"
                                           " (split a longer course into several worlds)")
    speed = _number(source, "speed", data.get("speed", 0.3), positive=True)
    if speed > 2.0:
        raise WorldError(source, "speed", f"impossible speed {speed} m/s; allowed (0, 2]")
    time_limit = data.get("time_limit")
    if time_limit is not None:
        time_limit = _number(source, "time_limit", time_limit, positive=True)
        if time_limit < length / speed:
            raise WorldError(source, "time_limit", f"{time_limit} s is shorter than length/speed = {length / speed:.1f} s")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise WorldError(source, "seed", f"expected an integer, got {seed!r}")
    start_x = _number(source, "start_x", data.get("start_x", 0.0))
    if abs(start_x) > MAX_START_X:
        raise WorldError(source, "start_x", f"{start_x:g} m is too far from the origin; allowed "
                                            f"[{-MAX_START_X:g}, {MAX_START_X:g}]")
    terrain_raw = data.get("terrain", [])
    if terrain_raw is None:
        terrain_raw = []
    if not isinstance(terrain_raw, list):
        raise WorldError(source, "terrain", "expected a list of primitives")
    terrain = tuple(_primitive(source, i, item) for i, item in enumerate(terrain_raw))
    for i, prim in enumerate(terrain):
        _on_course(source, i, prim, start_x, start_x + length)
    sections = []
    for i, sec in enumerate(data.get("sections", []) or []):
        w = f"sections[{i}]"
        if not isinstance(sec, dict) or set(sec) != {"name", "start", "end"}:
            raise WorldError(source, w, "expected a mapping with exactly name, start, end")
        s0, s1 = _number(source, f"{w}.start", sec["start"]), _number(source, f"{w}.end", sec["end"])
        if s1 <= s0:
            raise WorldError(source, f"{w}.end", f"must be greater than start ({s0})")
        sections.append(Section(str(sec["name"]), s0, s1))
    return World(
        name=name, length=length, terrain=terrain, speed=speed, time_limit=time_limit, seed=seed,
        start_x=start_x, sections=tuple(sections), description=str(data.get("description", "")), source=source,
    )


def load_world(path: str | Path) -> World:
    """Load and validate a world YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorldError(str(path), "<file>", f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise WorldError(str(path), "<file>", f"not a text file (a world is YAML text): byte 0x{exc.object[exc.start]:02x} "
                                              f"at offset {exc.start} is not UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WorldError(str(path), "<yaml>", f"not valid YAML: {exc}") from exc
    return world_from_dict(data, str(path))


def dump_world(world: World) -> str:
    """The world as YAML text."""
    return yaml.safe_dump(world.to_dict(), sort_keys=False)
