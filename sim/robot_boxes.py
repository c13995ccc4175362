"""The robot as oriented boxes in base_link, for analytic ray tests and self filtering.

Pure numpy, so the live DEM node's self filter (``perception.dem_handler``) needs neither open3d nor
the lidar simulation (``sim.lidar``), which casts its rays against these boxes too.
"""

from __future__ import annotations

import numpy as np

from sim.robot import FLIPPER_NAMES, RobotSpec

__all__ = ["RobotBoxes", "ray_box_distance"]


class RobotBoxes:
    """The robot as oriented boxes in base_link, for analytic ray tests: chassis, mast, the two main
    tracks, and the four flippers (tapered tracks approximated by boxes of their mean thickness)
    turned to given angles."""

    def __init__(self, robot: RobotSpec):
        r = robot
        body_top = r.body_z + r.body_height / 2
        static = [  # (centre, half sizes), axis-aligned
            ((0.0, 0.0, r.body_z), (r.body_length / 2, r.body_width / 2, r.body_height / 2)),
            ((r.mast_x, 0.0, body_top + r.mast_size[2] / 2), tuple(s / 2 for s in r.mast_size)),
        ]
        for y in (r.track_separation / 2, -r.track_separation / 2):
            static.append(((0.0, y, 0.0), (r.wheel_base / 2 + r.wheel_radius, r.track_width / 2, r.wheel_radius)))
        self.static_centers = np.array([c for c, _ in static])
        self.static_half = np.array([h for _, h in static])
        self.pivots = np.array([r.flipper_pivots()[n] for n in FLIPPER_NAMES])
        self.sign = np.array([1.0 if n.startswith("front") else -1.0 for n in FLIPPER_NAMES])
        self.flipper_reach = r.flipper_length + r.flipper_tip_radius
        self.flipper_half = np.array([self.flipper_reach / 2, r.flipper_width / 2,
                                      (r.wheel_radius + r.flipper_tip_radius) / 2])

    def boxes(self, flipper_angles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(centres (K, 3), axes (K, 3, 3) rows = box axes in base_link, half sizes (K, 3))."""
        a = np.asarray(flipper_angles, dtype=float)
        along = np.stack([self.sign * np.cos(a), np.zeros(4), np.sin(a)], axis=1)  # pivot -> tip
        normal = np.stack([-along[:, 2], np.zeros(4), along[:, 0]], axis=1)
        side = np.tile([0.0, 1.0, 0.0], (4, 1))
        f_axes = np.stack([along, side, normal], axis=1)
        f_centers = self.pivots + along * (self.flipper_reach / 2)
        n_static = len(self.static_centers)
        centers = np.concatenate([self.static_centers, f_centers])
        axes = np.concatenate([np.tile(np.eye(3), (n_static, 1, 1)), f_axes])
        half = np.concatenate([self.static_half, np.tile(self.flipper_half, (4, 1))])
        return centers, axes, half


    def contains(self, points: np.ndarray, flipper_angles: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """(N,) true where a base_link point lies inside any box grown by ``margin`` (a self filter like
        robot_body_filter's, which Absolem runs on its clouds with the current joint angles)."""
        centers, axes, half = self.boxes(flipper_angles)
        local = np.einsum("kij,knj->kni", axes, points[None, :, :] - centers[:, None, :])
        return (np.abs(local) <= half[:, None, :] + margin).all(axis=2).any(axis=0)


def ray_box_distance(origin: np.ndarray, dirs: np.ndarray, centers: np.ndarray, axes: np.ndarray,
                     half: np.ndarray) -> np.ndarray:
    """Distance along unit ``dirs`` (N, 3) from ``origin`` (3,) to the nearest of K oriented boxes
    (slab test); inf where a ray misses them all or starts inside one."""
    o = np.einsum("kij,kj->ki", axes, origin[None, :] - centers)  # origin in each box frame (K, 3)
    d = np.einsum("kij,nj->kni", axes, dirs)  # (K, N, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (-half[:, None, :] - o[:, None, :]) * inv
        t2 = (half[:, None, :] - o[:, None, :]) * inv
    t_near = np.minimum(t1, t2).max(axis=2)
    t_far = np.maximum(t1, t2).min(axis=2)
    hit = (t_near <= t_far) & (t_near > 0)  # NaN (a ray in a slab's boundary plane) compares false
    return np.where(hit, t_near, np.inf).min(axis=0)
