"""Terrain geometry: world primitives -> solid boxes (for the physics model) and a max-pooled height grid.

Both the MuJoCo model and the exact simulated DEM are built from the same list of ``Solid`` boxes, so
what the robot collides with is what the DEM reports. The height grid stores, per pixel, the highest
terrain point inside that pixel (conservative: a pixel partly covered by a block takes its height),
which makes the DEM a pure gather-and-max over pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.world import Box, Ramp, Rough, Stairs, Step, World, WorldError

MAX_GRID_CELLS = 60_000_000  # 480 MiB of float64 heights: more than any course within sim.world's bounds needs
RAMP_SLAB = 0.10  # thickness of the tilted slab that forms a ramp surface


@dataclass(frozen=True)
class Solid:
    """A box: centre, half sizes, and one rotation (``yaw`` about z, or ``pitch`` of its x axis above horizontal)."""

    center: tuple[float, float, float]
    half: tuple[float, float, float]
    yaw: float = 0.0
    pitch: float = 0.0

    def quat(self) -> tuple[float, float, float, float]:
        """MuJoCo (w, x, y, z) orientation."""
        if self.pitch:
            # Raising the x axis by `pitch` is a rotation of -pitch about +y.
            return (math.cos(-self.pitch / 2), 0.0, math.sin(-self.pitch / 2), 0.0)
        return (math.cos(self.yaw / 2), 0.0, 0.0, math.sin(self.yaw / 2))


def _block(x0: float, x1: float, y: float, width: float, z0: float, z1: float) -> Solid:
    return Solid(((x0 + x1) / 2, y, (z0 + z1) / 2), ((x1 - x0) / 2, width / 2, (z1 - z0) / 2))


def world_solids(world: World) -> list[Solid]:
    """Decompose every terrain primitive of a world into boxes."""
    out: list[Solid] = []
    behind = world.start_x - 1.0  # platforms of descents reach this far back by default
    for prim in world.terrain:
        x, y = prim.position
        if isinstance(prim, Box):
            lx, wy, h = prim.size
            c, s = math.cos(prim.yaw), math.sin(prim.yaw)
            # position is the near edge's midpoint; the centre lies half a length further along the box axis
            out.append(Solid((x + c * lx / 2, y + s * lx / 2, prim.z + h / 2), (lx / 2, wy / 2, h / 2), yaw=prim.yaw))
        elif isinstance(prim, Stairs):
            n, rise, run = prim.steps, prim.rise, prim.run
            if prim.direction == "up":
                for k in range(n):
                    x_end = x + (k + 1) * run + (prim.landing if k == n - 1 else 0.0)
                    out.append(_block(x + k * run, x_end, y, prim.width, 0.0, (k + 1) * rise))
            else:
                start = x - prim.platform if prim.platform is not None else min(behind, x - 0.5)
                out.append(_block(start, x, y, prim.width, 0.0, n * rise))
                for k in range(1, n):
                    out.append(_block(x + (k - 1) * run, x + k * run, y, prim.width, 0.0, (n - k) * rise))
        elif isinstance(prim, Step):
            if prim.height > 0:
                length = prim.length if prim.length is not None else 3.0
                out.append(_block(x, x + length, y, prim.width, 0.0, prim.height))
            else:
                start = x - prim.length if prim.length is not None else min(behind, x - 0.5)
                out.append(_block(start, x, y, prim.width, 0.0, -prim.height))
        elif isinstance(prim, Ramp):
            out.extend(_ramp(prim))
        elif isinstance(prim, Rough):
            out.extend(_rough(prim))
    return out


def _ramp(prim: Ramp) -> list[Solid]:
    x, y = prim.position
    L, H, W = prim.length, prim.height, prim.width
    theta = math.atan2(H, L)
    half_len = math.hypot(L, H) / 2
    t = RAMP_SLAB / 2
    # normal of the incline surface (pointing up), for a rising slope
    sign = 1.0 if prim.direction == "up" else -1.0
    nx, nz = -sign * math.sin(theta), math.cos(theta)
    top_cx, top_cz = x + L / 2, H / 2
    slab = Solid((top_cx - nx * t, y, top_cz - nz * t), (half_len, W / 2, t), pitch=sign * theta)
    if prim.direction == "up":
        plateau = _block(x + L, x + L + prim.plateau, y, W, 0.0, H) if prim.plateau > 0 else None
    else:
        plateau = _block(x - prim.plateau, x, y, W, 0.0, H) if prim.plateau > 0 else None
    return [slab] + ([plateau] if plateau else [])


def _rough(prim: Rough) -> list[Solid]:
    x, y = prim.position
    rng = np.random.default_rng(prim.seed)
    nx = max(1, round(prim.length / prim.cell))
    ny = max(1, round(prim.width / prim.cell))
    heights = rng.uniform(0.0, prim.amplitude, size=(nx, ny))
    out = []
    for i in range(nx):
        for j in range(ny):
            h = float(heights[i, j])
            if h < 0.005:
                continue  # flush with the ground: no block
            x0 = x + i * prim.cell
            yc = y - prim.width / 2 + (j + 0.5) * prim.cell
            out.append(_block(x0, x0 + prim.cell, yc, prim.cell, 0.0, h))
    return out


def solid_top_profile(solid: Solid, xs: np.ndarray) -> np.ndarray:
    """Highest z of a pitched solid's x-z cross-section at each x (-inf outside it)."""
    cx, _, cz = solid.center
    hx, _, hz = solid.half
    c, s = math.cos(solid.pitch), math.sin(solid.pitch)
    corners = [(cx + c * a - s * b, cz + s * a + c * b) for a, b in ((-hx, -hz), (hx, -hz), (hx, hz), (-hx, hz))]
    top = np.full(xs.shape, -np.inf)
    for (x0, z0), (x1, z1) in zip(corners, corners[1:] + corners[:1], strict=True):
        if abs(x1 - x0) < 1e-12:
            continue
        lo, hi = min(x0, x1), max(x0, x1)
        inside = (xs >= lo) & (xs <= hi)
        z = z0 + (z1 - z0) * (xs - x0) / (x1 - x0)
        top = np.where(inside, np.maximum(top, z), top)
    return top


class HeightGrid:
    """Max-pooled terrain heights on a regular x-y grid; outside the grid the ground (0) is assumed."""

    def __init__(self, solids: list[Solid], x_range: tuple[float, float], y_range: tuple[float, float], resolution: float = 0.01):
        self.resolution = r = float(resolution)
        self.x0, self.y0 = float(x_range[0]), float(y_range[0])
        self.nx = int(math.ceil((x_range[1] - x_range[0]) / r))
        self.ny = int(math.ceil((y_range[1] - y_range[0]) / r))
        self.heights = np.zeros((self.nx, self.ny), dtype=np.float64)
        for solid in solids:
            self._rasterize(solid)

    @classmethod
    def for_world(cls, world: World, solids: list[Solid] | None = None, resolution: float = 0.01) -> HeightGrid:
        """A grid covering the world's course with margins for the DEM's reach."""
        solids = world_solids(world) if solids is None else solids
        x_lo, x_hi = world.start_x - 3.0, world.goal_x + 3.0
        y_lo, y_hi = -2.0, 2.0
        for s in solids:
            reach = math.hypot(s.half[0], s.half[1])
            x_lo, x_hi = min(x_lo, s.center[0] - reach), max(x_hi, s.center[0] + reach)
            y_lo, y_hi = min(y_lo, s.center[1] - reach), max(y_hi, s.center[1] + reach)
        cells = math.ceil((x_hi - x_lo) / resolution) * math.ceil((y_hi - y_lo) / resolution)
        if cells > MAX_GRID_CELLS:  # the world checks bound each field; this bounds their sum
            raise WorldError(world.source, "terrain", f"the terrain spans {x_hi - x_lo:.0f} m x {y_hi - y_lo:.0f} m: a "
                                                      f"{resolution * 100:g} cm height grid of {cells:.2e} cells "
                                                      f"({cells * 8 / 2**20:.0f} MiB), more than the simulator's "
                                                      f"{MAX_GRID_CELLS:.0e}; shorten the course or its obstacles")
        return cls(solids, (x_lo, x_hi), (y_lo, y_hi), resolution)

    def _index_range(self, lo: float, hi: float, origin: float, n: int) -> tuple[int, int]:
        eps = 1e-9
        a = int(math.floor((lo - origin) / self.resolution + eps))
        b = int(math.ceil((hi - origin) / self.resolution - eps))
        return max(a, 0), min(b, n)

    def _rasterize(self, solid: Solid) -> None:
        r = self.resolution
        cx, cy, cz = solid.center
        hx, hy, hz = solid.half
        if solid.pitch:
            ext = abs(hx * math.cos(solid.pitch)) + abs(hz * math.sin(solid.pitch))
            i0, i1 = self._index_range(cx - ext, cx + ext, self.x0, self.nx)
            j0, j1 = self._index_range(cy - hy, cy + hy, self.y0, self.ny)
            if i0 >= i1 or j0 >= j1:
                return
            left = self.x0 + np.arange(i0, i1) * r
            prof = np.maximum(solid_top_profile(solid, left), solid_top_profile(solid, left + r))
            prof = np.maximum(prof, 0.0)
            block = self.heights[i0:i1, j0:j1]
            np.maximum(block, prof[:, None], out=block)
        elif abs(solid.yaw) < 1e-9:
            i0, i1 = self._index_range(cx - hx, cx + hx, self.x0, self.nx)
            j0, j1 = self._index_range(cy - hy, cy + hy, self.y0, self.ny)
            block = self.heights[i0:i1, j0:j1]
            np.maximum(block, cz + hz, out=block)
        else:
            reach = math.hypot(hx, hy)
            i0, i1 = self._index_range(cx - reach, cx + reach, self.x0, self.nx)
            j0, j1 = self._index_range(cy - reach, cy + reach, self.y0, self.ny)
            if i0 >= i1 or j0 >= j1:
                return
            px = self.x0 + (np.arange(i0, i1) + 0.5) * r - cx
            py = self.y0 + (np.arange(j0, j1) + 0.5) * r - cy
            c, s = math.cos(solid.yaw), math.sin(solid.yaw)
            lx = c * px[:, None] + s * py[None, :]
            ly = -s * px[:, None] + c * py[None, :]
            margin = r * 0.7072  # half a pixel diagonal: any pixel touching the footprint counts
            inside = (np.abs(lx) <= hx + margin) & (np.abs(ly) <= hy + margin)
            block = self.heights[i0:i1, j0:j1]
            np.maximum(block, np.where(inside, cz + hz, 0.0), out=block)

    def height_at(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Highest terrain point of the pixel containing each (x, y); 0 outside the grid."""
        x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        ix = np.floor((x - self.x0) / self.resolution).astype(np.intp)
        iy = np.floor((y - self.y0) / self.resolution).astype(np.intp)
        ok = (ix >= 0) & (ix < self.nx) & (iy >= 0) & (iy < self.ny)
        out = np.zeros(x.shape)
        out[ok] = self.heights[ix[ok], iy[ok]]
        return out
