"""One typed description of the tracked robot, from which the MJCF and URDF models are generated.

Defaults are the Absolem / TRADR platform of seed 000 (REFERENCE.md section 2). All lengths in
metres, masses in kilograms, angles in radians.

Frames (REP 103): ``base_link`` sits on the axis of the main-track wheels, halfway between the front
and rear wheel centres, with x forward, y left and z up.

Flipper angle convention
------------------------
Each flipper is hinged on the axis of the outermost main-track wheel (front flippers at the front
wheel, rear flippers at the rear wheel). Its angle is 0 when the flipper points horizontally away from
the body along the body x axis (front flippers forward, rear flippers backward) and grows as the tip
rises: +pi/2 points straight up, negative angles press the tip down below the track plane. The same
convention holds for all four flippers, so ``[a, a, a, a]`` is a symmetric posture. The order is
always front-left, front-right, rear-left, rear-right (``FLIPPER_NAMES``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FLIPPER_NAMES = ("front_left", "front_right", "rear_left", "rear_right")


@dataclass(frozen=True)
class RobotSpec:
    """Geometry, masses and actuation limits of a tracked robot with four flippers."""

    # Main tracks.
    wheel_base: float = 0.50  # distance between front and rear main-track wheel centres
    wheel_radius: float = 0.089
    track_width: float = 0.097
    track_separation: float = 0.397  # centre to centre of the two main tracks
    wheels_per_track: int = 9  # driven pseudo-wheels that approximate one belt (dense: nosings must not sink in)
    # Body (chassis between the tracks).
    body_length: float = 0.60
    body_width: float = 0.241
    body_height: float = 0.16
    body_z: float = 0.05  # height of the chassis centre above base_link
    # Flippers.
    flipper_length: float = 0.3476  # pivot to the tip-wheel centre
    flipper_width: float = 0.05
    flipper_tip_radius: float = 0.0435
    wheels_per_flipper: int = 6
    flipper_lower: float = -1.2  # joint limits (see the angle convention above)
    flipper_upper: float = 1.57
    flipper_speed: float = 0.8  # rad/s, Absolem's flipper motors
    flipper_torque: float = 120.0  # N m per flipper
    flipper_kp: float = 600.0  # N m / rad, stiffness of the position servo
    # Sensor mast carrying the rotating lidar (fragile: must not touch the terrain).
    mast_x: float = 0.10
    mast_size: tuple[float, float, float] = (0.08, 0.08, 0.20)
    # Masses.
    body_mass: float = 22.0
    track_mass: float = 2.5  # per main track, spread over its wheels
    flipper_mass: float = 1.0
    mast_mass: float = 1.5
    # Drive.
    track_torque: float = 40.0  # N m per pseudo-wheel
    track_kv: float = 8.0  # N m s / rad, velocity servo gain of a pseudo-wheel
    track_friction: float = 1.5  # rubber belt with grousers on concrete edges: effective mu above 1

    def __post_init__(self) -> None:
        checks = {
            "wheel_base": self.wheel_base > 0,
            "wheel_radius": self.wheel_radius > 0,
            "track_separation": self.track_separation > self.track_width,
            "wheels_per_track": self.wheels_per_track >= 2,
            "wheels_per_flipper": self.wheels_per_flipper >= 2,
            "flipper_length": self.flipper_length > 0,
            "flipper_tip_radius": 0 < self.flipper_tip_radius <= self.wheel_radius,
            "flipper_upper": self.flipper_lower < self.flipper_upper,
            "flipper_speed": self.flipper_speed > 0,
            "flipper_torque": self.flipper_torque > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"RobotSpec: invalid value for {', '.join(bad)}")

    @property
    def total_mass(self) -> float:
        return self.body_mass + 2 * self.track_mass + 4 * self.flipper_mass + self.mast_mass

    @property
    def flipper_y(self) -> float:
        """Lateral offset of the flipper centre plane (flippers run outside the main tracks)."""
        return self.track_separation / 2 + self.track_width / 2 + self.flipper_width / 2 + 0.005

    @property
    def mast_top(self) -> float:
        """Height of the mast top above base_link (where the lidar sits)."""
        return self.body_z + self.body_height / 2 + self.mast_size[2]

    def track_wheel_x(self) -> list[float]:
        """x positions of the pseudo-wheels of one main track."""
        n = self.wheels_per_track
        half = self.wheel_base / 2
        return [-half + i * self.wheel_base / (n - 1) for i in range(n)]

    def flipper_wheels(self) -> list[tuple[float, float]]:
        """(distance from pivot, radius) of the pseudo-wheels of one flipper, pivot excluded.

        The pivot wheel coincides with the outermost main-track wheel, so the flipper's own wheels
        start one spacing out; radii taper linearly from the main wheel radius to the tip radius.
        """
        n = self.wheels_per_flipper
        out = []
        for i in range(1, n + 1):
            s = i / n
            r = self.wheel_radius + s * (self.flipper_tip_radius - self.wheel_radius)
            out.append((s * self.flipper_length, r))
        return out

    def flipper_pivots(self) -> dict[str, tuple[float, float, float]]:
        """Pivot of each flipper in base_link, keyed by FLIPPER_NAMES."""
        half, y = self.wheel_base / 2, self.flipper_y
        return {
            "front_left": (half, y, 0.0),
            "front_right": (half, -y, 0.0),
            "rear_left": (-half, y, 0.0),
            "rear_right": (-half, -y, 0.0),
        }

    def flipper_tip(self, name: str, angle: float) -> tuple[float, float]:
        """(x, z) of a flipper's tip-wheel centre in base_link for a joint angle."""
        px, _, pz = self.flipper_pivots()[name]
        sign = 1.0 if name.startswith("front") else -1.0
        return (px + sign * self.flipper_length * math.cos(angle), pz + self.flipper_length * math.sin(angle))


@dataclass(frozen=True)
class SimPhysics:
    """Numerical settings of the embedded simulator."""

    timestep: float = 0.005
    solver_iterations: int = 30
    ls_iterations: int = 10
    terrain_friction: float = 0.8
