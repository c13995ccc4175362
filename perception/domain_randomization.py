"""Domain randomisation of simulated DEMs: the baseline a CycleGAN has to beat.

Instead of learning how real DEMs differ from simulated ones (seed 000's CycleGAN), one can perturb the
simulated DEMs with hand-made versions of what the real lidar does, and train the policy on those so that it
tolerates real input. ``randomize`` applies, per DEM and independently drawn from the generator passed in:

- **Occlusion** (``occlusion_prob``): the lidar sees terrain only along straight rays from its optical centre
  (on the mast, about 0.39 m above base_link and 0.10 m ahead of it: ``sim.lidar``'s default mount), so
  the cells behind a drop or behind anything standing above the line of sight stay empty: the tread beyond a
  stair nosing going down, the floor behind a step. Here a cell becomes NaN when, in its own column, a cell
  between it and the sensor stands more than ``occlusion_margin`` above the straight line from the sensor to
  the target cell's centre top. The sensor height is jittered by up to ``sensor_z_jitter`` per DEM (the robot
  rocks, the mast flexes, and on the real robot the point map fuses views from several poses); with
  ``pitch`` given, the mount is also turned by the robot's pitch (on stairs the mast leans back by 0.2 m).
- **Edge smear** (``smear_prob``): scans fused under drifting odometry are misaligned by centimetres, and a
  cell keeps the highest point that falls into it, so a cell next to an edge reads the upper level: each cell
  takes, with this probability, the maximum of itself and its neighbour one row ahead or behind (one
  direction per DEM, the direction of the drift).
- **Height noise** (``noise_sigma``, ``noise_bias``): Gaussian range noise (about 1 cm on the Absolem's SICK
  scanner) per cell, plus a per-DEM upward bias drawn from [0, ``noise_bias``]: a cell holds the *highest* of
  many noisy returns, which lies one to two sigma above the surface (the reality proxy's cells read about
  1 cm high).
- **Dropout** (``dropout``): single cells left empty at random (dark or specular surfaces, sparse returns).
- **Far-front rows** (``front_prob``, ``front_rows_max``): the far edge of the DEM is seen at grazing angles
  with few returns, and after a turn or with the nose pitched up it has not been seen yet; 1 to
  ``front_rows_max`` rows from the front edge become NaN.
- **Rear block** (``rear_prob``, ``rear_x_min``, ``rear_x_max``): the ground under and just behind the
  robot is hidden from the mast by the robot's own body; the point map fills it from earlier scans only after
  the robot has driven over it, so at the start of a run and after a turn the DEM is empty from somewhere
  under the robot back to its rear edge. Every cell whose centre lies behind a front edge drawn uniformly in
  [``rear_x_min``, ``rear_x_max``] (metres ahead of base_link) becomes NaN.

The defaults are calibrated on the reality proxy (``sim.reality_proxy``): over its runs on the flat, step and
stairs test worlds its DEMs carry 15 % NaN on average (10-20 % per world), spread between many DEMs with none
and start-of-run DEMs with 50 %; the defaults applied to the exact DEMs of the same runs give 16 %. On
synthetic 20 x 5 DEMs they give: flat ground and a step up 12.5 % (no occlusion: dropout, front rows and the
rear block alone), stairs up (0.18 m rises) 21-22 %, a 0.4 m drop 24-28 %, stairs down 29-35 % (each level and
pitched by 0.5 rad the way one drives it: nose up on stairs up, nose down over drops).
NaN already present in the input stays NaN; the input array is never modified.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from sim.config_io import config_from_mapping
from sim.dem import DemSpec
from sim.robot import RobotSpec

__all__ = ["LIDAR_X", "LIDAR_Z", "DomainRandomization", "geometric_occlusion", "occlusion_mask", "randomize"]

_ROBOT = RobotSpec()
_DEM = DemSpec()
# sim.lidar's default mount: 6 cm above the mast top (importing sim.lidar would pull in open3d for two numbers)
LIDAR_X = _ROBOT.mast_x
LIDAR_Z = _ROBOT.mast_top + 0.06


@dataclass(frozen=True)
class DomainRandomization:
    """Probabilities and magnitudes of every effect (see the module docstring for what each stands for).

    Lengths in metres; ``front`` and ``resolution`` give the DEM geometry (``sim.dem.DemSpec``'s: the front
    edge 1.3 m ahead of base_link, 0.1 m cells); rows and columns come from the arrays. ``off()`` is the
    identity.
    """

    occlusion_prob: float = 1.0
    sensor_x: float = LIDAR_X
    sensor_z: float = LIDAR_Z
    sensor_z_jitter: float = 0.05
    occlusion_margin: float = 0.01
    smear_prob: float = 0.05
    noise_sigma: float = 0.01
    noise_bias: float = 0.02
    dropout: float = 0.01
    front_prob: float = 0.2
    front_rows_max: int = 4
    rear_prob: float = 0.3
    rear_x_min: float = -0.6
    rear_x_max: float = 0.4
    front: float = _DEM.front
    resolution: float = _DEM.resolution

    def __post_init__(self) -> None:
        bad = []
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                bad.append(f"{f.name} must be a finite number, got {v!r}")
        if bad:
            raise ValueError("DomainRandomization: " + "; ".join(bad))
        for name in ("occlusion_prob", "smear_prob", "dropout", "front_prob", "rear_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad.append(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        for name in ("sensor_z_jitter", "occlusion_margin", "noise_sigma", "noise_bias"):
            if getattr(self, name) < 0:
                bad.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not isinstance(self.front_rows_max, int) or self.front_rows_max < 0:
            bad.append(f"front_rows_max must be an integer >= 0, got {self.front_rows_max!r}")
        if self.rear_x_min > self.rear_x_max:
            bad.append(f"rear_x_min {self.rear_x_min} must be <= rear_x_max {self.rear_x_max}")
        if self.resolution <= 0:
            bad.append(f"resolution must be > 0, got {self.resolution}")
        if bad:
            raise ValueError("DomainRandomization: " + "; ".join(bad))

    @classmethod
    def off(cls) -> DomainRandomization:
        """Every effect off: ``randomize`` returns an unchanged copy."""
        return cls(occlusion_prob=0.0, smear_prob=0.0, noise_sigma=0.0, noise_bias=0.0, dropout=0.0, front_prob=0.0,
                   rear_prob=0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DomainRandomization:
        return config_from_mapping(cls, data, "domain randomization config")


_DEFAULT_CONFIG = DomainRandomization()  # built once: validating a config costs more than one DEM's occlusion test


def _dems(dems: Any) -> np.ndarray:
    try:
        a = np.asarray(dems)
        if not np.issubdtype(a.dtype, np.number):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"dems must be a numeric array of shape (N, rows, cols), got {type(dems).__name__}") from None
    if a.ndim != 3 or min(a.shape) < 1:
        raise ValueError(f"dems must have shape (N, rows, cols) with N >= 1 (e.g. (N, 20, 5)), got {a.shape}")
    if np.isinf(a).any():
        raise ValueError("dems hold infinite heights; unmeasured cells must be NaN")
    return a


def _pitch(pitch: Any, n: int) -> np.ndarray:
    if pitch is None:
        return np.zeros(n)
    p = np.asarray(pitch, dtype=np.float64)
    if p.shape != (n,) or not np.isfinite(p).all():
        raise ValueError(f"pitch must be {n} finite angles (rad, one per DEM, > 0 nose down), got shape {p.shape}")
    return p


def occlusion_mask(dems: Any, sensor_x: Any, sensor_z: Any, config: DomainRandomization | None = None) -> np.ndarray:
    """True where a cell is hidden from a sensor at (``sensor_x``, ``sensor_z``) (metres, in the DEM frame).

    ``sensor_x`` / ``sensor_z`` are scalars or one value per DEM. Per column: a target cell (its centre, at its
    height) is hidden when a cell strictly between it and the sensor along x stands more than
    ``config.occlusion_margin`` above the straight line of sight anywhere over that cell's extent (clipped to
    the stretch between sensor and target). Rays to the side columns run slightly diagonally; treating each
    column as its own profile ignores that (the DEM is 0.5 m wide). NaN cells neither occlude nor are judged.
    """
    cfg = config or _DEFAULT_CONFIG
    h = _dems(dems).astype(np.float64)
    n = len(h)
    try:
        sx = np.broadcast_to(np.asarray(sensor_x, dtype=np.float64), (n,))
        sz = np.broadcast_to(np.asarray(sensor_z, dtype=np.float64), (n,))
    except ValueError:
        raise ValueError(f"sensor_x and sensor_z must be numbers or {n} values (one per DEM), got shapes "
                         f"{np.shape(sensor_x)} and {np.shape(sensor_z)}") from None
    if not (np.isfinite(sx).all() and np.isfinite(sz).all()):
        raise ValueError("sensor_x and sensor_z must be finite")
    return _occluded_chunks(h, sx, sz, cfg)


def _occluded_chunks(h: np.ndarray, sx: np.ndarray, sz: np.ndarray, cfg: DomainRandomization) -> np.ndarray:
    # chunks of DEMs bound the (chunk, rows, rows, cols) temporaries (16 MB each at 1024 DEMs of 20 x 5)
    step = 1024
    if len(h) <= step:
        return _occluded(h, sx, sz, cfg)
    return np.concatenate([_occluded(h[i:i + step], sx[i:i + step], sz[i:i + step], cfg) for i in range(0, len(h), step)])


def _occluded(h: np.ndarray, sx: np.ndarray, sz: np.ndarray, cfg: DomainRandomization) -> np.ndarray:
    """``occlusion_mask`` on validated float64 DEMs (n, rows, cols) and sensor positions (n,). All columns at once:
    for one DEM (the generator's hint, per control step) the cost is the number of numpy calls, not their size."""
    rows = h.shape[1]
    r = cfg.resolution
    x_hi = cfg.front - np.arange(rows) * r  # front edge of each row
    x_lo = x_hi - r
    xc = x_hi - r / 2
    # target t (axis 1), occluder k (axis 2), column (axis 3): the part of k's extent between the sensor and t's centre
    sxb = sx[:, None, None]
    near = np.minimum(sxb, xc[None, :, None])
    far = np.maximum(sxb, xc[None, :, None])
    a = np.maximum(x_lo[None, None, :], near)
    b = np.minimum(x_hi[None, None, :], far)
    between = (a < b) & (np.arange(rows)[None, :, None] != np.arange(rows)[None, None, :])
    dx = xc[None, :, None] - sxb  # (n, t, 1)
    dx = np.where(np.abs(dx) < 1e-9, 1e-9, dx)  # a target right under the sensor: no occluder lies between
    szb = sz[:, None, None, None]
    slope = (h[:, :, None, :] - szb) / dx[..., None]  # from the sensor to each target's top, (n, t, 1, cols)
    # the line is straight, so its lowest point over [a, b] is at one end
    line = szb + np.minimum(slope * (a - sxb)[..., None], slope * (b - sxb)[..., None])
    blocked = between[..., None] & (h[:, None, :, :] > line + cfg.occlusion_margin)  # NaN occluders compare False
    return blocked.any(axis=2) & ~np.isnan(h)


def _pitched_sensor(x_mount: Any, z_mount: Any, pitch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mount (``x_mount``, ``z_mount``) in the gravity-aligned DEM frame of a robot pitched by ``pitch`` (rad,
    > 0 nose down: the mast tilts forward and lowers)."""
    return (x_mount * np.cos(pitch) + z_mount * np.sin(pitch), -x_mount * np.sin(pitch) + z_mount * np.cos(pitch))


def geometric_occlusion(dems: Any, pitch: Any = None, config: DomainRandomization | None = None) -> np.ndarray:
    """``occlusion_mask`` from the nominal mount (``config.sensor_x``, ``config.sensor_z``, no jitter) turned by
    each DEM's ``pitch`` (N,) (rad, > 0 nose down; None: level): which cells the terrain itself hides from the
    lidar. Deterministic; the CycleGAN's generator takes it as a hint (``GanConfig.occlusion_hint``)."""
    cfg = config or _DEFAULT_CONFIG
    h = _dems(dems).astype(np.float64)
    sx, sz = _pitched_sensor(cfg.sensor_x, cfg.sensor_z, _pitch(pitch, len(h)))  # finite: the pitch is checked
    return _occluded_chunks(h, sx, sz, cfg)


def randomize(dems: Any, rng: np.random.Generator, config: DomainRandomization | None = None,
              pitch: Any = None) -> np.ndarray:
    """A randomised copy of ``dems`` (N, rows, cols); the input is never modified and its NaN stay NaN.

    Every random choice comes from ``rng``, so a seeded generator repeats exactly. ``pitch`` (N,) (rad,
    > 0 nose down, as the IMU reports it) turns the lidar mount with the robot; None assumes level. The
    result keeps the input's float dtype (float32 stays float32).
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    cfg = config or _DEFAULT_CONFIG
    src = _dems(dems)
    n, rows, cols = src.shape
    p = _pitch(pitch, n)
    out = np.array(src, dtype=np.result_type(src.dtype, np.float32), copy=True)
    hide = np.isnan(out)

    if cfg.occlusion_prob > 0:
        z_mount = cfg.sensor_z + rng.uniform(-cfg.sensor_z_jitter, cfg.sensor_z_jitter, n)
        sx, sz = _pitched_sensor(cfg.sensor_x, z_mount, p)
        on = rng.random(n) < cfg.occlusion_prob
        if on.any():
            occluded = occlusion_mask(src[on], sx[on], sz[on], cfg)
            hide[on] |= occluded

    if cfg.smear_prob > 0:
        direction = rng.integers(0, 2, n) * 2 - 1  # +1: the row ahead (index - 1), -1: the row behind
        ahead = np.concatenate([out[:, :1], out[:, :-1]], axis=1)  # row i reads row i - 1 (clamped at the front)
        behind = np.concatenate([out[:, 1:], out[:, -1:]], axis=1)
        neighbour = np.where((direction > 0)[:, None, None], ahead, behind)
        smear = rng.random(out.shape) < cfg.smear_prob
        out = np.where(smear, np.fmax(out, neighbour), out)  # fmax: a NaN neighbour leaves the cell as it is

    if cfg.noise_sigma > 0 or cfg.noise_bias > 0:
        bias = rng.uniform(0.0, cfg.noise_bias, n)[:, None, None]
        out = out + (bias + cfg.noise_sigma * rng.standard_normal(out.shape)).astype(out.dtype)

    if cfg.dropout > 0:
        hide |= rng.random(out.shape) < cfg.dropout

    if cfg.front_prob > 0 and cfg.front_rows_max > 0:
        k = np.where(rng.random(n) < cfg.front_prob, rng.integers(1, cfg.front_rows_max + 1, n), 0)
        hide |= (np.arange(rows)[None, :] < k[:, None])[:, :, None]

    if cfg.rear_prob > 0:
        edge = np.where(rng.random(n) < cfg.rear_prob, rng.uniform(cfg.rear_x_min, cfg.rear_x_max, n), -np.inf)
        xc = cfg.front - (np.arange(rows) + 0.5) * cfg.resolution
        hide |= (xc[None, :] < edge[:, None])[:, :, None]

    out[hide] = np.nan
    return out
