"""A drifting pose estimate for the reality proxy: what odometry/SLAM reports instead of the true pose.

The estimate differs from the truth by a slowly changing ``map -> odom`` transform (REP 105): a yaw
error and a translation. Both grow as a random walk in the distance travelled (variance proportional
to distance, so the error's spread grows like its square root), and a per-run scale error makes the
estimated distance run a little long or short -- the two ways track odometry and lidar SLAM drift on
Absolem. The truth itself plays the role of ``odom -> base_link``, so ``map -> base_link`` is the
estimate. Roll and pitch are not drifted: on the robot they come from the gravity-referenced IMU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.rotations import quat_multiply, yaw_quat


# ------------------------------------------------------------------------------------------ drift
@dataclass(frozen=True)
class OdometryConfig:
    """How fast the estimate drifts. Sigmas are per square root of metre travelled (random walks);
    ``scale`` is the half-range of a uniform per-run distance scale error. With ``enabled`` false the
    estimate equals the truth. Defaults give a few centimetres and about a degree over a 5 m course,
    a lidar-SLAM-corrected tracked robot rather than raw track odometry."""

    enabled: bool = True
    xy_sigma: float = 0.02  # m / sqrt(m)
    z_sigma: float = 0.005  # m / sqrt(m)
    yaw_sigma: float = 0.01  # rad / sqrt(m)
    scale: float = 0.01  # relative

    def __post_init__(self) -> None:
        bad = [n for n in ("xy_sigma", "z_sigma", "yaw_sigma", "scale") if not getattr(self, n) >= 0]
        if bad:
            raise ValueError(f"OdometryConfig: {', '.join(bad)} must be >= 0 (0 turns that drift off), got {self}")


class OdometryDrift:
    """A drifting ``map -> base_link`` estimate, seeded by the generator passed in (see module docstring).

    Call ``estimate`` with the true pose as the robot moves (any rate: the random walk's spread depends
    on the distance, not on the number of calls, though the draws do). The whole state is ``state()``
    plus the generator's state, so a snapshot restores the drift exactly.
    """

    STATE_SIZE = 9  # yaw drift, map->odom translation (3), last true position (3), distance, scale

    def __init__(self, config: OdometryConfig | None, rng: np.random.Generator):
        self.config = config or OdometryConfig()
        self.rng = rng
        self._state = np.zeros(self.STATE_SIZE)
        self._started = False
        self.reset()

    def reset(self) -> None:
        """Forget the motion so far; the next ``estimate`` starts with zero drift and draws the scale error."""
        self._state[:] = 0.0
        self._started = False

    @property
    def distance(self) -> float:
        """Metres travelled (3D path length of the true position) since reset."""
        return float(self._state[7])

    @property
    def scale_error(self) -> float:
        return float(self._state[8])

    def map_to_odom(self) -> tuple[np.ndarray, np.ndarray]:
        """The current drift as a transform: translation (3,) and (w, x, y, z) rotation (a pure yaw)."""
        return self._state[1:4].copy(), yaw_quat(float(self._state[0]))

    def estimate(self, true_pos: np.ndarray, true_quat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance the drift by the motion since the last call and return the estimated (position, quat)."""
        c = self.config
        st = self._state
        p = np.asarray(true_pos, dtype=float)
        if not self._started:
            st[:] = 0.0
            st[4:7] = p
            if c.enabled and c.scale > 0:
                st[8] = self.rng.uniform(-c.scale, c.scale)
            self._started = True
        delta = p - st[4:7]
        ds = float(np.linalg.norm(delta))
        if c.enabled and ds > 0 and np.isfinite(ds):
            yaw_old = st[0]
            est_old = _rotate_z(yaw_old, st[4:7]) + st[1:4]
            draw = self.rng.standard_normal(4) * math.sqrt(ds)
            yaw_new = yaw_old + c.yaw_sigma * draw[0]
            # the estimate moves along its own (drifted) heading, a little too far or short, plus noise
            est_new = est_old + _rotate_z(yaw_new, delta) * (1.0 + st[8])
            est_new += (c.xy_sigma * draw[1], c.xy_sigma * draw[2], c.z_sigma * draw[3])
            st[0] = yaw_new
            st[1:4] = est_new - _rotate_z(yaw_new, p)
        if np.isfinite(ds):
            st[4:7] = p
            st[7] += ds
        t, q = self.map_to_odom()
        return _rotate_z(float(st[0]), p) + t, quat_multiply(q, np.asarray(true_quat, dtype=float))

    def drift(self, true_pos: np.ndarray) -> np.ndarray:
        """(dx, dy, dz, dyaw): estimate minus truth at ``true_pos`` under the current drift."""
        est = _rotate_z(float(self._state[0]), np.asarray(true_pos, dtype=float)) + self._state[1:4]
        return np.concatenate((est - true_pos, [self._state[0]]))

    def state(self) -> np.ndarray:
        """A copy of the numeric state (pair it with ``rng.bit_generator.state`` for an exact snapshot)."""
        return np.concatenate((self._state, [float(self._started)]))

    def set_state(self, state: np.ndarray) -> None:
        """Restore a ``state()`` copy."""
        self._state[:] = state[: self.STATE_SIZE]
        self._started = bool(state[self.STATE_SIZE])


def _rotate_z(yaw: float, v: np.ndarray) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1], v[2]])
