"""How far above the simulator the real sensor reads the ground, estimated from unpaired data.

A lidar-built DEM reads level ground a centimetre or two above the exact one (each cell keeps the highest of its noisy
returns). An unpaired GAN cannot learn that offset from the height distributions: the real sets lack the low cells
the lidar cannot see (behind edges, down drops), so their heights sit higher for reasons of content, and G, free to
shift a DEM, lifts it by three times the sensor's offset (docs/sim2real_experiments.md, "Why the unpaired GAN lifts
the terrain"). Held to its input, it keeps the simulator's level, which alone tells its DEMs apart.

One reference is the same in both domains without pairing them: the ground under the robot's main tracks. The
tracks' contact plane follows from the robot's pitch and roll (``flipper_control.policy.footprint_heights``), and
the exact DEM lies on it under the tracks. So each DEM's median of (measured height - plane) over the cells under
the tracks says how high its sensing reads the ground the robot stands on; the median over a set's DEMs is robust
to the few DEMs on a stair nosing or a rock, and the real set's median minus the simulated set's is the sensor's
offset. ``GanTrainConfig.height_offset`` then pulls G's kept heights towards input + offset instead of input.

On the demo's data (seed 0: its first real collection, 1,703 states, against iteration 1's 1,976 simulated ones) the
estimate is +1.34 cm; the proxy's DEMs of the same poses read +1.35 cm above the exact ones on average (median +1.11).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from flipper_control.policy import TRACK_REACH, footprint_heights
from perception.gan_training import GanData, GanTrainConfig
from sim.dem import DemSpec
from sim.robot import RobotSpec

__all__ = ["OffsetEstimate", "estimate_height_offset", "ground_readings", "with_estimated_offset"]


@dataclass(frozen=True)
class OffsetEstimate:
    """The estimate (metres, real minus simulated) and what it stands on."""

    offset_m: float
    real_m: float  # the real set's median reading of the ground under the tracks, above the contact plane
    sim_m: float
    real_dems: int  # DEMs with at least one measured cell under the tracks
    sim_dems: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def ground_readings(dems: np.ndarray, scalars: np.ndarray, spec: DemSpec | None = None,
                    reach: float = TRACK_REACH, depth: float = RobotSpec.wheel_radius) -> np.ndarray:
    """Per DEM (N, rows, cols; NaN where unmeasured), the median of (height - the tracks' contact plane) over the
    measured cells within ``reach`` metres of base_link along x; NaN for a DEM with none. ``scalars`` (N, >= 2): pitch
    and roll in radians first, as the datasets store them."""
    dems = np.asarray(dems, dtype=np.float64)
    if dems.ndim != 3 or len(scalars) != len(dems):
        raise ValueError(f"ground_readings needs DEMs (N, rows, cols) and N rows of scalars, got {dems.shape} and "
                         f"{np.shape(scalars)}")
    spec = spec or DemSpec(rows=dems.shape[1], cols=dems.shape[2])
    cx, cy = (torch.from_numpy(a.astype(np.float64)) for a in spec.cell_centers())
    scalars = torch.from_numpy(np.asarray(scalars, dtype=np.float64))
    plane = footprint_heights(scalars[:, 0], scalars[:, 1], cx, cy, depth).numpy()
    under = (np.abs(cx.numpy()) <= reach)[None] & np.isfinite(dems)
    residual = np.where(under, dems - plane, np.nan)
    out = np.full(len(dems), np.nan)
    has = under.any(axis=(1, 2))
    if has.any():
        out[has] = np.nanmedian(residual[has].reshape(int(has.sum()), -1), axis=1)
    return out


def estimate_height_offset(sim_dems: np.ndarray, sim_scalars: np.ndarray, real_dems: np.ndarray,
                           real_scalars: np.ndarray, spec: DemSpec | None = None) -> OffsetEstimate:
    """The real sensor's height offset over the simulator's (see the module docstring). Raises ValueError naming the
    set when one has no DEM with a measured cell under the tracks."""
    readings = {}
    for name, dems, scalars in (("simulated", sim_dems, sim_scalars), ("real", real_dems, real_scalars)):
        r = ground_readings(dems, scalars, spec)
        r = r[np.isfinite(r)]
        if not len(r):
            raise ValueError(f"height offset: the {name} set has no DEM with a measured cell under the tracks "
                             f"({len(dems)} DEMs)")
        readings[name] = r
    real_m, sim_m = float(np.median(readings["real"])), float(np.median(readings["simulated"]))
    return OffsetEstimate(offset_m=real_m - sim_m, real_m=real_m, sim_m=sim_m, real_dems=len(readings["real"]),
                          sim_dems=len(readings["simulated"]))


def with_estimated_offset(config: GanTrainConfig, sim: GanData, real: GanData) -> tuple[GanTrainConfig, OffsetEstimate]:
    """``config`` (a ``GanTrainConfig``) with ``height_offset`` set to the estimate from ``sim`` and ``real``
    (``GanData``, the sets G trains on), and the estimate."""
    estimate = estimate_height_offset(sim.dems, sim.scalars, real.dems, real.scalars)
    return replace(config, height_offset=estimate.offset_m), estimate
