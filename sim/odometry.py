"""A drifting pose estimate for the reality proxy: what odometry/SLAM reports instead of the true pose.

The estimate differs from the truth by a slowly changing ``map -> odom`` transform (REP 105): a yaw
error and a translation. Both grow as a random walk in the distance travelled (variance proportional
to distance, so the error's spread grows like its square root), and a per-run scale error makes the
estimated distance run a little long or short -- the two ways track odometry and lidar SLAM drift on
Absolem. The truth itself plays the role of ``odom -> base_link``, so ``map -> base_link`` is the
estimate. Roll and pitch are not drifted: on the robot they come from the gravity-referenced IMU.

Also holds the small quaternion helpers (MuJoCo order ``w, x, y, z``) that the lidar and proxy share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


# ------------------------------------------------------------------------------------------ rotations
def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices of (..., 4) unit quaternions (w, x, y, z): shape (..., 3, 3)."""
    q = np.asarray(q, dtype=float)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    out = np.empty(q.shape[:-1] + (3, 3))
    out[..., 0, 0] = 1 - 2 * (y * y + z * z)
    out[..., 0, 1] = 2 * (x * y - w * z)
    out[..., 0, 2] = 2 * (x * z + w * y)
    out[..., 1, 0] = 2 * (x * y + w * z)
    out[..., 1, 1] = 1 - 2 * (x * x + z * z)
    out[..., 1, 2] = 2 * (y * z - w * x)
    out[..., 2, 0] = 2 * (x * z - w * y)
    out[..., 2, 1] = 2 * (y * z + w * x)
    out[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return out


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of (w, x, y, z) quaternions (rotation b first, then a)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ])


def yaw_quat(yaw: float) -> np.ndarray:
    """(w, x, y, z) of a rotation by ``yaw`` about +z."""
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


def nlerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    """Normalised linear interpolation of two close unit quaternions (s in [0, 1])."""
    if float(np.dot(q0, q1)) < 0:
        q1 = -q1  # same rotation, shorter path
    q = (1 - s) * q0 + s * q1
    return q / np.linalg.norm(q)


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
