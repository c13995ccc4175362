"""Reference controllers: a fixed flipper posture and a hand-written heuristic from pitch and DEM.

They prove that the physics allows traversal and that flippers matter (the fixed ``flat`` posture
gets stuck at anything higher than the track wheels), and they are the baselines of every table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from sim.dem import DemSpec
from sim.simulator import Observation

POSTURES = {
    "flat": (0.0, 0.0, 0.0, 0.0),  # flippers in line with the tracks: the neutral posture
    "approach": (0.6, 0.6, 0.0, 0.0),  # front flippers raised to catch an edge
    "v": (0.5, 0.5, 0.5, 0.5),  # all raised: shortest footprint
}


class FixedController:
    """Holds the flippers in one posture (a name from ``POSTURES`` or four angles in radians)."""

    def __init__(self, posture: str | tuple[float, float, float, float] = "flat"):
        if isinstance(posture, str):
            if posture not in POSTURES:
                raise ValueError(f"unknown posture {posture!r}; allowed: {', '.join(POSTURES)} or four angles")
            posture = POSTURES[posture]
        self.posture = np.asarray(posture, dtype=float)
        if self.posture.shape != (4,):
            raise ValueError(f"a posture has four angles, got {posture!r}")

    def reset(self) -> None:
        pass

    def act(self, obs: Observation) -> np.ndarray:
        return self.posture.copy()


@dataclass(frozen=True)
class HeuristicConfig:
    """Parameters of the heuristic rule (angles in radians, heights and distances in metres)."""

    rise_threshold: float = 0.06  # terrain this much above the ground under the tracks is an obstacle
    drop_threshold: float = 0.06  # ... this much below is a descent
    look_ahead: tuple[float, float] = (0.30, 0.95)  # x window (robot frame) searched for obstacles
    under: float = 0.25  # |x| window taken as the ground under the tracks
    front_neutral: float = 0.25
    front_climb: float = 0.75  # absolute angle above horizontal when an obstacle is ahead
    # absolute angle when a descent is ahead: reaching 29 deg below horizontal, the front flippers meet the lower
    # ground before the tracks leave the edge, so the nose does not drop past the 40-degree warning. The first rule
    # (``v1``, -0.15) let it drop on every stairs_down run; anything from -0.3 to -0.8 does not, and -0.5 is the middle
    # (docs/sim2real_experiments.md, "The rule's descent")
    front_descend: float = -0.5
    rear_neutral: float = 0.0
    rear_climb: float = -0.2  # press the tail up once the nose is up: keeps pitch low, pushes over edges
    rear_descend: float = 0.0
    climb_pitch: float = 0.20  # nose-up pitch (rad) from which the robot counts as climbing


def _median(values: np.ndarray) -> float:
    """``np.median`` of a small 1-D array, to the bit (the mean of the two middle values for an even count), at a
    tenth of its cost: on the 25 cells under the tracks np.median takes about 12 us and this 1.2 us (an idle 2-core
    machine), where the whole rule now takes under 9 us per decision."""
    ordered = np.sort(values)
    n = len(ordered)
    return float((ordered[(n - 1) // 2] + ordered[n // 2]) / 2)


class HeuristicController:
    """A hand-written rule: raise the front flippers towards an obstacle ahead, lower them towards a
    descent, press the rear flippers down while climbing; front targets are held in a gravity frame
    (compensated by pitch) so that they keep reaching for the terrain when the body tilts."""

    def __init__(self, config: HeuristicConfig | None = None, dem: DemSpec | None = None):
        self.config = c = config or HeuristicConfig()
        spec = dem or DemSpec()
        xs, _ = spec.cell_centers()
        x = xs[:, 0]
        self._under = np.abs(x) <= c.under
        self._ahead = (x >= c.look_ahead[0]) & (x <= c.look_ahead[1])
        if not self._under.any() or not self._ahead.any():
            raise ValueError(f"the DEM {spec} does not cover the heuristic's windows {c.look_ahead} and +-{c.under}")
        self._spec = spec

    def reset(self) -> None:
        pass

    def features(self, obs: Observation) -> tuple[float, float]:
        """(rise, drop) of the terrain ahead relative to the ground under the tracks.

        NaN cells (nothing seen there: lidar-built DEMs) are left out; with no measured ground or nothing
        seen ahead, there is no obstacle to react to and both are 0.
        """
        return self.dem_features(obs.dem)

    def dem_features(self, dem: np.ndarray) -> tuple[float, float]:
        """``features`` of a (rows, cols) DEM."""
        if dem.shape != self._spec.shape:  # another grid: the windows would pick the wrong cells, or fail to index
            raise ValueError(f"HeuristicController: a DEM of {dem.shape[0]} x {dem.shape[1]} cells, but it was built "
                             f"for {self._spec} (pass the simulator's DemSpec)")
        under = dem[self._under]
        under = under[np.isfinite(under)]
        ahead = dem[self._ahead]
        ahead = ahead[np.isfinite(ahead)]
        if under.size == 0 or ahead.size == 0:
            return 0.0, 0.0
        ground = _median(under)
        return float(ahead.max()) - ground, ground - float(ahead.min())

    def act(self, obs: Observation) -> np.ndarray:
        return self.act_on(obs.dem, obs.pitch)

    def act_on(self, dem: np.ndarray, pitch: float) -> np.ndarray:
        """The rule's four flipper angles for a (rows, cols) DEM (NaN: not seen) and the pitch (rad, REP 103); what
        ``act`` does with an observation, which the rule reads nothing else of."""
        c = self.config
        rise, drop = self.dem_features(dem)
        nose_up = -pitch  # REP 103: pitch > 0 is nose down
        if rise > c.rise_threshold:
            front_abs = c.front_climb
        elif drop > c.drop_threshold:
            front_abs = c.front_descend
        else:
            front_abs = c.front_neutral
        # flipper angles are relative to the body: subtract the body's nose-up pitch to hold an absolute angle
        front = front_abs - nose_up
        if nose_up > c.climb_pitch:
            rear = c.rear_climb
        elif drop > c.drop_threshold or nose_up < -c.climb_pitch:
            rear = c.rear_descend
        else:
            rear = c.rear_neutral
        return np.array([front, front, rear, rear])


# versions of the rule by name (``heuristic:v1``): the record's figures name the rule they were measured with. Each
# is spelled out in full, so that a later change of ``HeuristicConfig``'s defaults cannot alter a version's figures;
# the defaults are the newest version, listed first (a test holds the two together: a new default needs a new version)
_V2 = HeuristicConfig(rise_threshold=0.06, drop_threshold=0.06, look_ahead=(0.30, 0.95), under=0.25, front_neutral=0.25,
                      front_climb=0.75, front_descend=-0.5, rear_neutral=0.0, rear_climb=-0.2, rear_descend=0.0,
                      climb_pitch=0.20)
HEURISTIC_VERSIONS = {"v2": _V2, "v1": replace(_V2, front_descend=-0.15)}


def _rule_version(version: str | None) -> tuple[str, HeuristicConfig]:
    """(name, config) of a version of the rule; None: the newest. An unknown name is refused, naming the known ones."""
    version = version or next(iter(HEURISTIC_VERSIONS))
    if version not in HEURISTIC_VERSIONS:
        raise ValueError(f"unknown heuristic version {version!r}; allowed: {', '.join(HEURISTIC_VERSIONS)}")
    return version, HEURISTIC_VERSIONS[version]


def make_controller(name: str, posture: str | None = None):
    """Controller by CLI name: ``fixed`` (with ``posture``, e.g. ``fixed:flat``) or ``heuristic`` (today's rule; with a
    version from ``HEURISTIC_VERSIONS`` in its place, e.g. ``heuristic:v1``, an earlier one)."""
    if name == "fixed":
        return FixedController(posture or "flat")
    if name == "heuristic":
        return HeuristicController(_rule_version(posture)[1])
    raise ValueError(f"unknown controller {name!r}; allowed: fixed, heuristic (policies: flipper eval --policy)")


def rule_record(name: str) -> dict | None:
    """What a reference controller's name (``heuristic``, ``heuristic:v1``, ``fixed:flat``) ran, for a report or a
    JSON file: the rule's version and its parameters for the heuristic (so that a file says which rule it scored,
    whatever the defaults are when it is read), None for a fixed posture, whose name says it all."""
    kind, _, version = name.partition(":")
    if kind != "heuristic":
        return None
    version, config = _rule_version(version or None)
    return {"version": version} | asdict(config)
