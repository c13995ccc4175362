"""How far above the simulator the real sensor reads the ground, estimated from unpaired data.

A lidar-built DEM reads level ground a centimetre or two above the exact one (each cell keeps the highest of its noisy
returns). An unpaired GAN cannot learn that offset from the height distributions: the real sets lack the low cells
the lidar cannot see (behind edges, down drops), so their heights sit higher for reasons of content, and G, free to
shift a DEM, lifts it by three times the sensor's offset (docs/sim2real_experiments.md, "Why the unpaired GAN lifts
the terrain"). Held to its input, it keeps the simulator's level, which alone tells its DEMs apart.

One reference is the same in both domains without pairing them: the ground under the robot's main tracks. The
tracks' contact plane follows from the robot's pitch and roll (``flipper_control.policy.footprint_heights``), and
the exact DEM lies on it under the tracks wherever the tracks carry the robot on level or sloped ground. So each such
DEM's median of (measured height - plane) over the cells under the tracks says how high its sensing reads the ground
the robot stands on, and the real set's median of those minus the simulated set's is the sensor's offset.

Two kinds of state are left out, in both sets alike, because there the plane is not the ground and how many of them a
set holds is a matter of content (the terrain driven, the policy's habits):

- a flipper angle below ``LIFT_ANGLE`` (-0.131 rad for the default robot): its tip can reach below the tracks' plane,
  so pressed on the ground it lifts the body and the ground reads centimetres below the plane;
- a spread (90th - 10th percentile) of the readings under the tracks above ``max_spread`` (5 cm): stairs, edges and
  rocks, where the tracks rest on nosings and the cells between them lie lower.

Without them, the simulated rollouts of one demo seed read -4.1 cm (a policy pressing its flippers, stairs) and the
estimate came out at +5.5 cm; with them every simulated set of the demo's seeds 0-3 reads +0.01 to +0.02 cm. On the same-pose
pairs of the demo's seed 0, used as two unpaired sets, the estimate is +1.35 cm, where the proxy's measured cells read
+1.35 cm above the exact ones on average.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from flipper_control.policy import TRACK_REACH, footprint_heights
from perception.gan_training import GanData, GanTrainConfig
from sim.dem import DemSpec
from sim.robot import RobotSpec

__all__ = ["LIFT_ANGLE", "MAX_SPREAD", "OffsetEstimate", "estimate_height_offset", "ground_readings", "lift_angle",
           "with_estimated_offset"]


@dataclass(frozen=True)
class OffsetEstimate:
    """The estimate (metres, real minus simulated) and what it stands on."""

    offset_m: float
    real_m: float  # the real set's median reading of the ground under the tracks, above the contact plane
    sim_m: float
    real_dems: int  # DEMs that show level ground under the tracks (``ground_readings``)
    sim_dems: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def lift_angle(robot: RobotSpec | None = None) -> float:
    """The flipper angle (radians, negative: tip down) below which a flipper's tip wheel reaches below the main
    tracks' contact plane, and so can carry the body."""
    r = robot or RobotSpec()
    return -math.asin((r.wheel_radius - r.flipper_tip_radius) / r.flipper_length)


LIFT_ANGLE = lift_angle()
MAX_SPREAD = 0.05  # m, 90th - 10th percentile of one DEM's readings under the tracks: more is not level ground
MIN_CELLS = 5  # measured cells under the tracks for a DEM's reading to count


def ground_readings(dems: np.ndarray, scalars: np.ndarray, spec: DemSpec | None = None, reach: float = TRACK_REACH,
                    depth: float = RobotSpec.wheel_radius, max_spread: float = MAX_SPREAD,
                    lift: float = LIFT_ANGLE) -> np.ndarray:
    """Per DEM (N, rows, cols; NaN where unmeasured), the median of (height - the tracks' contact plane) over the
    measured cells within ``reach`` metres of base_link along x; NaN for a DEM that does not show the ground the
    tracks stand on: fewer than ``MIN_CELLS`` such cells, a spread of them above ``max_spread`` metres, or a flipper
    below ``lift`` radians (see the module docstring). ``scalars`` (N, 6): pitch and roll in radians, then the four
    flipper angles, as the datasets store them."""
    dems = np.asarray(dems, dtype=np.float64)
    scalars = np.asarray(scalars, dtype=np.float64)
    if dems.ndim != 3 or scalars.ndim != 2 or len(scalars) != len(dems) or scalars.shape[1] < 6:
        raise ValueError(f"ground_readings needs DEMs (N, rows, cols) and N rows of 6 scalars (pitch, roll, four "
                         f"flippers), got {dems.shape} and {scalars.shape}")
    spec = spec or DemSpec(rows=dems.shape[1], cols=dems.shape[2])
    cx, cy = (torch.from_numpy(a.astype(np.float64)) for a in spec.cell_centers())
    pitch, roll = torch.from_numpy(scalars[:, 0]), torch.from_numpy(scalars[:, 1])
    plane = footprint_heights(pitch, roll, cx, cy, depth).numpy()
    under = (np.abs(cx.numpy()) <= reach)[None] & np.isfinite(dems)
    residual = np.where(under, dems - plane, np.nan).reshape(len(dems), -1)
    out = np.full(len(dems), np.nan)
    ok = (under.reshape(len(dems), -1).sum(axis=1) >= MIN_CELLS) & (scalars[:, 2:6].min(axis=1) >= lift)
    if ok.any():
        low, mid, high = np.nanpercentile(residual[ok], [10, 50, 90], axis=1)
        out[np.flatnonzero(ok)] = np.where(high - low <= max_spread, mid, np.nan)
    return out


def estimate_height_offset(sim_dems: np.ndarray, sim_scalars: np.ndarray, real_dems: np.ndarray,
                           real_scalars: np.ndarray, spec: DemSpec | None = None) -> OffsetEstimate:
    """The real sensor's height offset over the simulator's (see the module docstring). Raises ValueError naming the
    set when none of its DEMs shows level ground under the tracks."""
    readings = {}
    for name, dems, scalars in (("simulated", sim_dems, sim_scalars), ("real", real_dems, real_scalars)):
        r = ground_readings(dems, scalars, spec)
        r = r[np.isfinite(r)]
        if not len(r):
            raise ValueError(f"height offset: none of the {len(dems)} DEMs of the {name} set shows level ground under "
                             f"the tracks (at least {MIN_CELLS} measured cells within {100 * MAX_SPREAD:.0f} cm of each "
                             f"other, no flipper pressed below {LIFT_ANGLE:.3f} rad)")
        readings[name] = r
    real_m, sim_m = float(np.median(readings["real"])), float(np.median(readings["simulated"]))
    return OffsetEstimate(offset_m=real_m - sim_m, real_m=real_m, sim_m=sim_m, real_dems=len(readings["real"]),
                          sim_dems=len(readings["simulated"]))


def with_estimated_offset(config: GanTrainConfig, sim: GanData, real: GanData) -> tuple[GanTrainConfig, OffsetEstimate]:
    """``config`` (a ``GanTrainConfig``) with ``height_offset`` set to the estimate from ``sim`` and ``real``
    (``GanData``, the sets G trains on), and the estimate."""
    estimate = estimate_height_offset(sim.dems, sim.scalars, real.dems, real.scalars)
    return replace(config, height_offset=estimate.offset_m), estimate
