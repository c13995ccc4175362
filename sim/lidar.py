"""A rotating 2D lidar like Absolem's, ray-cast against a world's terrain with open3d.

Absolem carries a 2D scanner (SICK LMS-151: 270 degree lines, 0.5 degree steps, 50 lines/s) on a
platform that turns about the robot's x axis, so the scan plane always contains the x axis and one
turn of the platform covers the sphere: a full 3D scan every ``period`` seconds (about 3 s). The 90
degree blind sector of a line faces away from the line's centre, which points perpendicular to the x
axis, so what is blind in one half-turn is seen in the other.

Each line is cast from the robot's true pose at the line's own time, so the robot's motion during a
scan distorts the cloud as on the real robot; occlusion comes for free from the ray casting. Rays also
hit the robot itself (body, tracks, mast and the four flippers at their current angles, tested
analytically as boxes), which is what the DEM builder's body filter exists to remove. Returns carry
Gaussian range noise, random dropouts and the scanner's minimum and maximum range.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import open3d as o3d

from sim.robot import RobotSpec
from sim.robot_boxes import RobotBoxes, ray_box_distance
from sim.rotations import quat_to_matrix
from sim.terrain import Solid

# pose_fn(t) -> (base_link position (3,), (w, x, y, z) quaternion, four flipper angles) at time t
PoseFn = Callable[[float], tuple[np.ndarray, np.ndarray, np.ndarray]]

_BOX_CORNERS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
# 12 outward-wound triangles over the corner order above (index = 4*(sx>0) + 2*(sy>0) + (sz>0))
_BOX_TRIANGLES = np.array([
    [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5],  # x- , x+
    [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],  # y- , y+
    [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],  # z- , z+
], dtype=np.uint32)


@dataclass(frozen=True)
class LidarConfig:
    """The scanner and its mount. Angles in radians, lengths in metres, times in seconds.

    ``mount``: optical centre in base_link, or None for 6 cm above the top of the robot's mast.
    The scanner's axes are those of base_link turned by the platform angle about x.
    """

    period: float = 3.0  # one turn of the platform = one full 3D scan
    line_rate: float = 50.0  # 2D lines per second
    fov: float = math.radians(270.0)
    angular_step: float = math.radians(0.5)
    min_range: float = 0.10  # the scanner's own housing and the mast top are closer than this
    max_range: float = 20.0
    range_sigma: float = 0.01  # Gaussian range noise
    dropout: float = 0.02  # probability that a return is lost (dark or specular surface)
    phase: float = 0.0  # platform angle at t = 0
    mount: tuple[float, float, float] | None = None
    self_hits: bool = True  # rays may hit the robot's own body and flippers
    threads: int = 1  # open3d ray-casting threads (0: all cores); 1 keeps parallel rollouts fair

    def __post_init__(self) -> None:
        rules = {  # field: (holds, what it must be); NaN fails every comparison, so it is refused too
            "period": (self.period > 0, "> 0 s"),
            "line_rate": (self.line_rate > 0, "> 0 lines/s"),
            "fov": (0 < self.fov <= 2 * math.pi, "in (0, 2 pi] rad"),
            "angular_step": (0 < self.angular_step <= self.fov, "in (0, fov] rad"),
            "min_range": (0 <= self.min_range < self.max_range, f">= 0 and below max_range ({self.max_range}) m"),
            "range_sigma": (self.range_sigma >= 0, ">= 0 m"),
            "dropout": (0 <= self.dropout < 1, "a probability in [0, 1)"),
            "threads": (self.threads >= 0, ">= 0 (0: all cores)"),
        }
        bad = [f"{name} must be {rule}, got {getattr(self, name)}" for name, (ok, rule) in rules.items() if not ok]
        if bad:
            raise ValueError(f"LidarConfig: {'; '.join(bad)}")

    @property
    def beams(self) -> int:
        """Returns per line (both ends of the field of view included)."""
        return int(math.floor(self.fov / self.angular_step + 1e-9)) + 1

    @property
    def lines_per_period(self) -> float:
        return self.period * self.line_rate


@dataclass(frozen=True)
class Scan:
    """Returns of the lines swept in one ``RotatingLidar.scan`` call.

    ``points``: (N, 3) in base_link at each return's own stamp (what a driver with a known platform
    angle publishes). ``world_points``: the same returns in the frame of the poses given (the
    simulator's world, i.e. odom). ``stamps``: (N,) seconds. ``line``: (N,) global line index (the
    ring). ``self_hit``: (N,) ground truth, true where the return came from the robot itself; a real
    robot does not know it -- for tests and figures only.
    """

    points: np.ndarray
    world_points: np.ndarray
    stamps: np.ndarray
    line: np.ndarray
    self_hit: np.ndarray

    def __len__(self) -> int:
        return len(self.stamps)

    @staticmethod
    def empty() -> Scan:
        z = np.zeros((0, 3))
        return Scan(z, z.copy(), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))

    @staticmethod
    def concatenate(scans: list[Scan]) -> Scan:
        """One scan from several consecutive ones."""
        scans = [s for s in scans if len(s)]
        if not scans:
            return Scan.empty()
        return Scan(*(np.concatenate([getattr(s, f) for s in scans]) for f in
                      ("points", "world_points", "stamps", "line", "self_hit")))


def solid_rotation(solid: Solid) -> np.ndarray:
    """3x3 rotation of a terrain solid, the same as its MuJoCo orientation."""
    return quat_to_matrix(np.array(solid.quat()))


def terrain_mesh(solids: list[Solid], ground_half: float = 200.0) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float32, triangles (T, 3) uint32) of the ground plane z = 0 (a square of half
    size ``ground_half`` around the origin, standing in for MuJoCo's infinite plane) and every box."""
    g = ground_half
    verts = [np.array([[-g, -g, 0.0], [g, -g, 0.0], [g, g, 0.0], [-g, g, 0.0]])]
    tris = [np.array([[0, 1, 2], [0, 2, 3]], dtype=np.uint32)]
    for k, s in enumerate(solids):
        corners = (_BOX_CORNERS * np.array(s.half)) @ solid_rotation(s).T + np.array(s.center)
        verts.append(corners)
        tris.append(_BOX_TRIANGLES + np.uint32(4 + 8 * k))
    return np.concatenate(verts).astype(np.float32), np.concatenate(tris).astype(np.uint32)


class RotatingLidar:
    """The rotating 2D lidar over one world's terrain (see module docstring)."""

    def __init__(self, solids: list[Solid], config: LidarConfig | None = None, rng: np.random.Generator | None = None,
                 robot: RobotSpec | None = None):
        self.config = c = config or LidarConfig()
        if rng is None:
            raise ValueError("RotatingLidar needs a seeded np.random.Generator for its noise (rng=...)")
        self.rng = rng
        self.robot = robot or RobotSpec()
        self.mount = np.array(c.mount if c.mount is not None else (self.robot.mast_x, 0.0, self.robot.mast_top + 0.06))
        self.body = RobotBoxes(self.robot)
        verts, tris = terrain_mesh(solids)
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(verts), o3d.core.Tensor(tris))
        self.phase = c.phase  # the proxy draws a per-run platform angle at t = 0
        theta = -c.fov / 2 + np.arange(c.beams) * c.angular_step
        self._sin_theta, self._cos_theta = np.sin(theta), np.cos(theta)

    def line_times(self, t0: float, t1: float) -> np.ndarray:
        """Global indices of the lines swept in [t0, t1)."""
        rate = self.config.line_rate
        k0, k1 = math.ceil(t0 * rate - 1e-9), math.ceil(t1 * rate - 1e-9)
        return np.arange(k0, k1)

    def directions(self, line: int) -> np.ndarray:
        """Unit beam directions (beams, 3) of one line in base_link axes."""
        c = self.config
        phi = self.phase + 2 * math.pi * line / c.lines_per_period
        # the line's plane holds x and n = (0, cos phi, sin phi); the field of view is centred on n
        return np.stack([self._sin_theta, self._cos_theta * math.cos(phi), self._cos_theta * math.sin(phi)], axis=1)

    def scan(self, t0: float, t1: float, pose_fn: PoseFn) -> Scan:
        """Cast the lines swept in [t0, t1), each from ``pose_fn`` at its own time."""
        c = self.config
        lines = self.line_times(t0, t1)
        if lines.size == 0:
            return Scan.empty()
        n_beams = c.beams
        dirs_base = np.empty((lines.size, n_beams, 3))
        origins = np.empty((lines.size, 3))
        rot = np.empty((lines.size, 3, 3))
        positions = np.empty((lines.size, 3))
        self_t = np.full((lines.size, n_beams), np.inf)
        for i, k in enumerate(lines):
            pos, quat, flippers = pose_fn(k / c.line_rate)
            dirs_base[i] = self.directions(int(k))
            rot[i] = quat_to_matrix(quat)
            positions[i] = pos
            origins[i] = rot[i] @ self.mount + pos
            if c.self_hits:
                self_t[i] = ray_box_distance(self.mount, dirs_base[i], *self.body.boxes(flippers))
        dirs_world = np.einsum("lij,lbj->lbi", rot, dirs_base)
        rays = np.empty((lines.size, n_beams, 6), dtype=np.float32)
        rays[..., :3] = origins[:, None, :]
        rays[..., 3:] = dirs_world
        hit = self.scene.cast_rays(o3d.core.Tensor(rays), nthreads=c.threads)
        terrain_t = hit["t_hit"].numpy().astype(float)
        dist = np.minimum(terrain_t, self_t)
        is_self = self_t < terrain_t
        keep = (dist >= c.min_range) & (dist <= c.max_range)
        if c.dropout > 0:
            keep &= self.rng.random(dist.shape) >= c.dropout
        rng_noise = self.rng.standard_normal(dist.shape) * c.range_sigma if c.range_sigma > 0 else 0.0
        measured = dist + rng_noise
        li, bi = np.nonzero(keep)
        r = measured[li, bi][:, None]
        points = self.mount + r * dirs_base[li, bi]
        world_points = origins[li] + r * dirs_world[li, bi]
        stamps = lines[li] / c.line_rate
        return Scan(points, world_points, stamps, lines[li], is_self[li, bi])
