"""Discrete flipper action sets of the planner (seed 000 section V).

An action is a target flipper configuration (four joint angles, order ``sim.robot.FLIPPER_NAMES``,
radians, 0 = horizontal outward, + raises the tip) held for the action's duration ``dt``. Seed 000 plans
with a reduced set (3 actions, 1000 ms) in the first, unguided iteration and a larger one (7 actions,
200 ms) once a policy guides the expansion. Both are defaults here and configurable from YAML.

``fine_rear`` is the fine set with ``neutral`` and ``approach`` pressing the rear flippers down as ``climb`` does:
climbing speed on a flight is set by the rear flippers, and with the fine set's rear-level postures random 200 ms
draws seldom keep them pressed through a climb (docs/sim2real_experiments.md, "Rear-pressed postures").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.robot import RobotSpec

__all__ = ["ActionSet", "COARSE", "FINE", "FINE_REAR", "action_set", "action_set_label", "ACTION_SETS"]


@dataclass(frozen=True)
class ActionSet:
    """Named flipper postures and how long each expansion holds one."""

    name: str
    names: tuple[str, ...]
    targets: tuple[tuple[float, float, float, float], ...]
    dt: float  # seconds one expansion applies the action

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "targets", tuple(tuple(float(v) for v in t) for t in self.targets))
        lo, hi = RobotSpec.flipper_lower, RobotSpec.flipper_upper
        if not self.targets or len(self.names) != len(self.targets):
            raise ValueError(f"action set {self.name!r}: needs one name per target and at least one action")
        for n, t in zip(self.names, self.targets, strict=True):
            if len(t) != 4 or not all(np.isfinite(t)) or min(t) < lo or max(t) > hi:
                raise ValueError(f"action set {self.name!r}, action {n!r}: four finite angles in [{lo}, {hi}] rad, got {t}")
        if not (0.0 < self.dt <= 10.0):
            raise ValueError(f"action set {self.name!r}: dt must be in (0, 10] s, got {self.dt}")

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def array(self) -> np.ndarray:
        """(K, 4) float64 targets."""
        return np.asarray(self.targets, dtype=float)

    def to_dict(self) -> dict:
        return {"name": self.name, "dt": self.dt, "actions": {n: list(t) for n, t in zip(self.names, self.targets, strict=True)}}

    @classmethod
    def from_dict(cls, data: dict) -> ActionSet:
        """From ``{name, dt, actions: {label: [fl, fr, rl, rr]}}`` (YAML/JSON)."""
        if not isinstance(data, dict) or not isinstance(data.get("actions"), dict):
            raise ValueError(f"an action set needs 'dt' and a mapping 'actions: {{label: [fl, fr, rl, rr]}}', got {data!r}")
        acts = data["actions"]
        targets = tuple(tuple(v) for v in acts.values())
        return cls(str(data.get("name", "custom")), tuple(acts), targets, float(data.get("dt", 0.2)))

    def with_dt(self, dt: float) -> ActionSet:
        return ActionSet(f"{len(self)}x{int(round(dt * 1000))}ms", self.names, self.targets, dt)


# neutral: front tips slightly up so that a small edge is caught; climb: front high, rear pressed to keep
# the pitch down and push over edges; descend: front tips down to touch the lower level early.
_COARSE = {"neutral": (0.2, 0.2, 0.0, 0.0), "climb": (0.8, 0.8, -0.2, -0.2), "descend": (-0.4, -0.4, 0.0, 0.0)}
# the fine set adds intermediate and whole-body postures
_FINE = {**_COARSE, "approach": (0.6, 0.6, 0.0, 0.0), "press": (0.4, 0.4, -0.5, -0.5), "v": (0.5, 0.5, 0.5, 0.5),
         "flat": (0.0, 0.0, 0.0, 0.0)}
# the same postures, the rear pressed in the two a climb passes through most (same order: a plan's action indices
# mean the same postures in both sets)
_FINE_REAR = {**_FINE, "neutral": (0.2, 0.2, -0.2, -0.2), "approach": (0.6, 0.6, -0.2, -0.2)}

COARSE = ActionSet("3x1000ms", tuple(_COARSE), tuple(_COARSE.values()), 1.0)
FINE = ActionSet("7x200ms", tuple(_FINE), tuple(_FINE.values()), 0.2)
FINE_REAR = ActionSet("7x200ms-rear", tuple(_FINE_REAR), tuple(_FINE_REAR.values()), 0.2)
ACTION_SETS = {"coarse": COARSE, "fine": FINE, "fine_rear": FINE_REAR}


def action_set(spec: str | dict | ActionSet) -> ActionSet:
    """``coarse``, ``fine``, ``coarse@0.2`` (another dt), a dict (see ``ActionSet.from_dict``) or an ActionSet."""
    if isinstance(spec, ActionSet):
        return spec
    if isinstance(spec, dict):
        return ActionSet.from_dict(spec)
    name, _, dt = str(spec).partition("@")
    if name not in ACTION_SETS:
        raise ValueError(f"unknown action set {spec!r}; use {', '.join(ACTION_SETS)} (optionally @DT seconds) or a mapping")
    base = ACTION_SETS[name]
    return base.with_dt(float(dt)) if dt else base


def action_set_label(spec: str | dict | ActionSet) -> str:
    """How logs and reports name an action-set spec: a name given as text as it is (``fine``, ``coarse@0.2``), a
    mapping or an ActionSet by its own name (a loop config may spell a set out in full)."""
    return spec if isinstance(spec, str) else action_set(spec).name
