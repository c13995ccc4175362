"""The bounded point map: world-frame lidar returns fused over time, one point per voxel (seed 000 section IV).

A rotating lidar sees the ground ahead of the robot only now and then, so a DEM built from one scan has holes;
``PointMap`` keeps what earlier scans saw, and its ``crop`` around the robot is what ``perception.dem_builder``
turns into a DEM (in ``perception.dem_handler`` on the robot and in ``sim.reality_proxy``). Each voxel keeps
the highest point seen in it, which is what a DEM cell keeps too.

Bounded because a run may be long and the robot keeps driving: past ``max_bytes`` the voxels seen longest
ago are dropped, so memory stays flat and the map keeps the terrain around the robot. Voxels are found by a
packed int64 key: each axis' voxel index, offset by 2^20 to make it non-negative, takes 21 bits, x in the
highest, then y, then z. Sorting by that key groups voxels by x first, so a crop only visits the x band.
"""

from __future__ import annotations

import math

import numpy as np

_FIELD = 21  # bits per voxel index in a packed key: +-2^20 voxels, +-52 km at 5 cm
_OFFSET = 1 << (_FIELD - 1)


class PointMap:
    """World-frame points fused over time: one point per voxel (the highest seen), at most ``max_bytes``.

    Storage is three arrays sorted by a packed voxel key (x index, then y, then z): the points (float64),
    the keys, and a last-seen sequence number. A voxel seen again is refreshed and takes the new point if
    it is higher. When the map would exceed ``max_bytes`` the voxels seen longest ago are dropped, which
    on a moving robot are the ones left behind. ``nbytes`` counts the stored arrays; while ``add`` runs,
    memory briefly holds a second copy of the map plus the batch. Deterministic: the same adds give the
    same map.
    """

    BYTES_PER_POINT = 3 * 8 + 8 + 8  # point, key, sequence number

    def __init__(self, voxel: float = 0.05, max_bytes: int = 1 << 30):
        try:
            good = math.isfinite(float(voxel)) and float(voxel) > 0
        except (TypeError, ValueError):
            good = False
        if not good:
            raise ValueError(f"PointMap: voxel must be a positive number of metres, got {voxel!r}")
        if int(max_bytes) < self.BYTES_PER_POINT:
            raise ValueError(f"PointMap: max_bytes must hold at least one point ({self.BYTES_PER_POINT} bytes), "
                             f"got {max_bytes!r}")
        self.voxel = float(voxel)
        self.max_bytes = int(max_bytes)
        self.capacity = self.max_bytes // self.BYTES_PER_POINT
        self._points = np.empty((0, 3), dtype=np.float64)
        self._keys = np.empty(0, dtype=np.int64)
        self._seen = np.empty(0, dtype=np.int64)
        self._clock = 0
        self.rejected = 0  # non-finite points and points beyond the key range, over the map's life
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored arrays (never above ``max_bytes`` after an ``add``)."""
        return self._points.nbytes + self._keys.nbytes + self._seen.nbytes

    def points(self) -> np.ndarray:
        """All stored points (M, 3), sorted by voxel; a read-only array that later adds do not change."""
        view = self._points.view()
        view.flags.writeable = False
        return view

    def _index(self, coords: np.ndarray) -> np.ndarray:
        return np.floor(coords / self.voxel).astype(np.int64)

    def add(self, points: np.ndarray) -> int:
        """Fuse (N, 3) world-frame points; returns how many voxels were created or raised."""
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"PointMap.add: points must have shape (N, 3), got {p.shape}")
        ok = np.isfinite(p).all(axis=1)
        ok[ok] = (np.abs(p[ok]) < (_OFFSET - 1) * self.voxel).all(axis=1)
        self.rejected += int(len(p) - ok.sum())
        p = p[ok]
        if len(p) == 0:
            return 0
        ix = self._index(p) + _OFFSET
        key = (ix[:, 0] << (2 * _FIELD)) | (ix[:, 1] << _FIELD) | ix[:, 2]
        # highest point per voxel within the batch: sort by (key, z) and take each key's last
        order = np.lexsort((p[:, 2], key))
        k = key[order]
        last = np.append(k[1:] != k[:-1], True)
        sel = order[last]
        new_keys, new_pts = key[sel], p[sel]
        seen = self._clock + np.arange(len(new_keys), dtype=np.int64)
        self._clock += len(new_keys)

        keys, pts, old_seen = self._keys, self._points, self._seen
        pos = np.searchsorted(keys, new_keys)
        hit = pos < len(keys)
        hit[hit] = keys[pos[hit]] == new_keys[hit]
        fresh = ~hit
        # np.insert always returns new arrays (even with nothing to insert), so the in-place updates below
        # never touch an array that points() handed out earlier
        ins = pos[fresh]
        keys = np.insert(keys, ins, new_keys[fresh])
        pts = np.insert(pts, ins, new_pts[fresh], axis=0)
        all_seen = np.insert(old_seen, ins, seen[fresh])
        # old element j moved right by the number of insertions at or before it
        at = pos[hit] + np.searchsorted(ins, pos[hit], side="right")
        all_seen[at] = seen[hit]
        higher = new_pts[hit, 2] > pts[at, 2]
        pts[at[higher]] = new_pts[hit][higher]
        changed = int(fresh.sum() + higher.sum())

        excess = len(keys) - self.capacity
        if excess > 0:
            # sequence numbers are unique, so exactly `excess` voxels fall at or below the threshold
            threshold = np.partition(all_seen, excess - 1)[excess - 1]
            stay = all_seen > threshold
            keys, pts, all_seen = keys[stay], pts[stay], all_seen[stay]
            self.evicted += excess
        self._keys, self._points, self._seen = keys, pts, all_seen
        return changed

    def crop(self, center, radius: float) -> np.ndarray:
        """Points within ``radius`` of ``center`` in x-y (a vertical cylinder: a gravity-aligned DEM needs
        every height), as a new (M, 3) array. Only the voxels in the x band are visited (keys are x-major)."""
        c = np.asarray(center, dtype=np.float64).reshape(-1)
        if c.shape not in ((2,), (3,)) or not np.all(np.isfinite(c[:2])):
            raise ValueError(f"PointMap.crop: center must be 2 or 3 finite numbers, got {center!r}")
        if not (math.isfinite(radius) and radius >= 0):
            raise ValueError(f"PointMap.crop: radius must be a finite number >= 0, got {radius!r}")
        lim = _OFFSET - 2  # keeps (hi + 1) << 42 below 2**63
        lo = int(np.clip(math.floor((c[0] - radius) / self.voxel), -lim, lim)) + _OFFSET
        hi = int(np.clip(math.floor((c[0] + radius) / self.voxel), -lim, lim)) + _OFFSET
        a, b = np.searchsorted(self._keys, [lo << (2 * _FIELD), (hi + 1) << (2 * _FIELD)])
        band = self._points[a:b]
        dx = band[:, 0] - c[0]
        dy = band[:, 1] - c[1]
        return band[dx * dx + dy * dy <= radius * radius]
