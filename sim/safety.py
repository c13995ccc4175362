"""Safety criteria of a run (seed 000 sections V and VIII) as small pure checks plus a stateful monitor.

A run is unsafe when the robot pitches or rolls past a limit, accelerates violently (falls, hard
impacts), touches the terrain with a fragile part (sensor mast, body top), leaves the course, gets
stuck, or the physics blows up. Each criterion has a ``warn`` level (the run becomes "unclear") and a
``fail`` level (the run fails). All limits are configuration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

WARN, FAIL = "warn", "fail"


@dataclass(frozen=True)
class SafetyLimits:
    """Thresholds of the safety monitor; angles in radians, accelerations in m/s^2."""

    pitch_warn: float = math.radians(40.0)
    pitch_fail: float = math.radians(50.0)
    roll_warn: float = math.radians(20.0)
    roll_fail: float = math.radians(30.0)
    accel_warn: float = 20.0  # body acceleration averaged over `accel_window`
    accel_fail: float = 40.0
    accel_window: float = 0.05
    lateral_fail: float = 0.6  # |y - y_start| at which the robot has left the course
    stuck_time: float = 4.0  # no progress of `stuck_distance` within this many seconds -> stuck
    stuck_distance: float = 0.10
    slow_factor: float = 1.3  # finishing later than this x the nominal time -> unclear ("had to slow down")
    max_speed: float = 50.0  # any body speed above this is a physics blow-up

    def __post_init__(self) -> None:
        pairs = [("pitch", self.pitch_warn, self.pitch_fail), ("roll", self.roll_warn, self.roll_fail),
                 ("accel", self.accel_warn, self.accel_fail)]
        for name, warn, fail in pairs:
            if not 0 < warn <= fail:
                raise ValueError(f"SafetyLimits: need 0 < {name}_warn <= {name}_fail, got {warn}, {fail}")
        if self.stuck_time <= 0 or self.stuck_distance <= 0 or self.accel_window <= 0:
            raise ValueError("SafetyLimits: stuck_time, stuck_distance and accel_window must be > 0")

    @classmethod
    def from_dict(cls, data: dict) -> SafetyLimits:
        """Build from a mapping (YAML); angle fields may be given in degrees with a ``_deg`` suffix."""
        kwargs = {}
        for key, value in data.items():
            if key.endswith("_deg"):
                key, value = key[:-4], math.radians(float(value))
            if key not in cls.__dataclass_fields__:
                raise ValueError(f"SafetyLimits: unknown field {key!r}; allowed: {', '.join(cls.__dataclass_fields__)}")
            kwargs[key] = float(value)
        return cls(**kwargs)


@dataclass(frozen=True)
class SafetyEvent:
    """Something unsafe that happened at time ``t`` with the robot at ``x``."""

    t: float
    x: float
    severity: str  # WARN or FAIL
    kind: str  # pitch, roll, accel, contact, lateral, stuck, blowup, time
    message: str


def level_of(value: float, warn: float, fail: float) -> str | None:
    """WARN / FAIL / None for a magnitude against its two thresholds."""
    a = abs(value)
    if a > fail:
        return FAIL
    if a > warn:
        return WARN
    return None


def euler_from_quat(q: np.ndarray) -> tuple[float, float, float]:
    """(roll, pitch, yaw) of a (w, x, y, z) quaternion, ZYX convention, REP 103 (pitch > 0 is nose down)."""
    w, x, y, z = float(q[0]), float(q[1]), float(q[2]), float(q[3])
    roll, pitch = roll_pitch_from_quat(w, x, y, z)
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return roll, pitch, yaw


def roll_pitch_from_quat(w: float, x: float, y: float, z: float) -> tuple[float, float]:
    """(roll, pitch) of ``euler_from_quat`` without the yaw, from the quaternion's four floats (the simulator's
    per-physics-step check needs only these two)."""
    roll = math.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2.0 * (w * y - z * x))))
    return roll, pitch


class SafetyMonitor:
    """Tracks one run's safety state; its whole state is a small float array (``state``), so a
    simulator snapshot restores the monitor exactly along with the physics."""

    # state layout
    _PITCH_LVL, _ROLL_LVL, _ACC_LVL, _CONTACT, _LAT, _PROG_X, _PROG_T, _ACC_T, _VX, _VY, _VZ, _MAX_ACC, _FAILED = range(13)
    SIZE = 13

    def __init__(self, limits: SafetyLimits):
        self.limits = limits
        self.state = np.zeros(self.SIZE)
        self.events: list[SafetyEvent] = []

    def reset(self, x: float, t: float, vel: np.ndarray) -> None:
        self.state[:] = 0.0
        self.state[self._PROG_X], self.state[self._PROG_T], self.state[self._ACC_T] = x, t, t
        self.state[self._VX:self._VZ + 1] = vel
        self.events = []

    def _emit(self, slot: int, severity: str, t: float, x: float, kind: str, message: str) -> None:
        # Each criterion reports a level once (warn, then fail), not at every step.
        rank = 2.0 if severity == FAIL else 1.0
        if self.state[slot] < rank:
            self.state[slot] = rank
            self.events.append(SafetyEvent(t, x, severity, kind, message))
            if severity == FAIL:
                self.state[self._FAILED] = 1.0

    def check(self, t: float, x: float, y_offset: float, roll: float, pitch: float, vel: np.ndarray,
              forbidden_contact: str | None) -> bool:
        """Update with the current robot state; returns True when the run must stop (a fail).

        ``vel`` may be a view into the simulator's buffers: it is copied when stored.
        """
        lim, st = self.limits, self.state
        for slot, name, angle, warn, fail in ((self._PITCH_LVL, "pitch", pitch, lim.pitch_warn, lim.pitch_fail),
                                              (self._ROLL_LVL, "roll", roll, lim.roll_warn, lim.roll_fail)):
            lvl = level_of(angle, warn, fail)
            if lvl:
                limit = math.degrees(fail if lvl == FAIL else warn)
                self._emit(slot, lvl, t, x, name, f"{name} {math.degrees(angle):.0f} deg beyond {limit:.0f}")
        if t - st[self._ACC_T] >= lim.accel_window - 1e-9:
            acc = float(np.linalg.norm(vel - st[self._VX:self._VZ + 1])) / (t - st[self._ACC_T])
            st[self._MAX_ACC] = max(st[self._MAX_ACC], acc)
            st[self._ACC_T] = t
            st[self._VX:self._VZ + 1] = vel
            lvl = level_of(acc, lim.accel_warn, lim.accel_fail)
            if lvl:
                limit = lim.accel_fail if lvl == FAIL else lim.accel_warn
                self._emit(self._ACC_LVL, lvl, t, x, "accel", f"acceleration {acc:.0f} m/s^2 beyond {limit:.0f}")
        if forbidden_contact:
            self._emit(self._CONTACT, FAIL, t, x, "contact", f"{forbidden_contact} touched the terrain")
        if abs(y_offset) > lim.lateral_fail:
            self._emit(self._LAT, FAIL, t, x, "lateral", f"left the course ({y_offset:+.2f} m sideways)")
        if x > st[self._PROG_X] + lim.stuck_distance:
            st[self._PROG_X], st[self._PROG_T] = x, t
        elif t - st[self._PROG_T] > lim.stuck_time:
            self.fail(t, x, "stuck", f"stuck: less than {lim.stuck_distance:g} m progress in {lim.stuck_time:g} s")
        return bool(st[self._FAILED])

    def fail(self, t: float, x: float, kind: str, message: str) -> None:
        """Record a fail that the simulator detects itself (blow-up, time limit)."""
        self.events.append(SafetyEvent(t, x, FAIL, kind, message))
        self.state[self._FAILED] = 1.0

    @property
    def max_acceleration(self) -> float:
        return float(self.state[self._MAX_ACC])
