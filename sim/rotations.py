"""Quaternion helpers in MuJoCo's (w, x, y, z) order, shared by the lidar, the odometry drift, the reality
proxy and the DEM builder/handler (``sim.safety.euler_from_quat`` goes the other way)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["quat_to_matrix", "quat_multiply", "yaw_quat", "nlerp", "quat_from_euler"]


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


def quat_from_euler(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """(w, x, y, z) of ZYX Euler angles (REP 103)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return np.array([cr * cp * cy + sr * sp * sy, sr * cp * cy - cr * sp * sy,
                     cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy])
