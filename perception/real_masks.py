"""Borrowed real NaN masks: simulated DEMs that wear the missing-cell masks of real DEMs taken at a similar pitch.

The CycleGAN's G learns how *many* cells the lidar misses but not *which* (docs/sim2real_experiments.md, "Why the
classifier target is missed": at the same pose its NaN cells agree with the proxy's with F1 0.08-0.10), so a policy
trained on G(x_s) meets real NaN patterns it has hardly seen: far-front rows the rotating lidar has not swept yet, the
ground under and behind the robot that its body hides, the treads behind stair nosings. On the reality proxy's stairs the full
run's iteration-4 policy answered the proxy's 20-50 % NaN DEMs by pressing its front flippers down and raising the
rear ones; given the exact heights with the same NaN cells it did the same, given the proxy's heights with the NaN
cells filled it did not.

Most of that pattern depends on where a cell lies and on how the robot is pitched, which the real set itself
shows. So each simulated DEM takes the NaN mask of a random real DEM whose pitch falls into the same bin
(``pitch_bin_deg`` wide; a bin with fewer than ``min_pool`` real DEMs also draws from its two neighbours, and an
empty neighbourhood from the whole set); its measured cells keep the heights given. Only the real DEMs' own masks
are used, never a pairing of real and simulated states: the method stays unpaired, as seed 000 requires.

One part of the pattern the pitch does not show: the map's history. A run's point map begins at its start, so for
its first seconds the ground behind the robot is unseen (the proxy's real DEMs of the demo: rows 14-19 miss 94-96 %
in the first 2 s, 64 % in the third, 21 % in the fourth, 2-8 % later), and a DEM alone cannot tell whether it was
taken there; a policy that never learnt on such DEMs may fail at the start (docs/sim2real_experiments.md, "The
map's history"). With ``start_s`` > 0 the DEMs of a trajectory's first ``start_s`` seconds always borrow, and only
from real DEMs of the same second of their runs (both counted in control periods from the trajectory's first state).

It is not domain randomisation's occlusion test either: that one computes occlusion from the simulated terrain,
while here the masks are measured ones, so they carry what the real sensor and point map do, including what no
hand-made rule models. What it cannot carry is the link between a mask and the terrain under it (a real mask's
stair-nosing shadows land wherever they fall on the simulated DEM).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sim.config_io import config_from_mapping

__all__ = ["MaskBorrowing", "borrow_real_masks", "pitch_bins"]


@dataclass(frozen=True)
class MaskBorrowing:
    """How simulated DEMs borrow real NaN masks (see the module docstring).

    ``share``: the fraction of DEMs that take a borrowed mask (the others keep their own NaN, usually none or G's).
    ``start_s``: DEMs of a trajectory's first ``start_s`` seconds always borrow, from real DEMs of the same second of
    their runs, whatever ``share`` says (0: off; the pitch alone chooses the pool).
    """

    share: float = 1.0
    pitch_bin_deg: float = 10.0
    min_pool: int = 20
    start_s: float = 0.0

    def __post_init__(self) -> None:
        bad = []
        if isinstance(self.share, bool) or not isinstance(self.share, int | float) or not 0.0 <= self.share <= 1.0:
            bad.append(f"share must be a fraction in [0, 1], got {self.share!r}")
        if (isinstance(self.pitch_bin_deg, bool) or not isinstance(self.pitch_bin_deg, int | float)
                or not math.isfinite(self.pitch_bin_deg) or self.pitch_bin_deg <= 0):
            bad.append(f"pitch_bin_deg must be a number > 0, got {self.pitch_bin_deg!r}")
        if isinstance(self.min_pool, bool) or not isinstance(self.min_pool, int) or self.min_pool < 1:
            bad.append(f"min_pool must be an integer >= 1, got {self.min_pool!r}")
        if (isinstance(self.start_s, bool) or not isinstance(self.start_s, int | float) or not math.isfinite(self.start_s)
                or not 0 <= self.start_s <= 60):
            bad.append(f"start_s must be a number of seconds in [0, 60], got {self.start_s!r}")
        if bad:
            raise ValueError("MaskBorrowing: " + "; ".join(bad))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MaskBorrowing:
        return config_from_mapping(cls, data, "real_masks config")


def pitch_bins(pitch: np.ndarray, bin_deg: float) -> np.ndarray:
    """Bin index of each pitch (radians): bins ``bin_deg`` wide with an edge at 0."""
    return np.floor(np.degrees(np.asarray(pitch, dtype=float)) / bin_deg).astype(np.int64)


def _array(value: Any, ndim: int, what: str, dtype=np.float32) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim != ndim:
        raise ValueError(f"borrow_real_masks: {what} must have {ndim} dimensions, got shape {arr.shape}")
    return arr


def borrow_real_masks(heights: Any, pitch: Any, real_masks: Any, real_pitch: Any, rng: np.random.Generator,
                      config: MaskBorrowing | None = None, step: Any = None, real_step: Any = None,
                      control_dt: float = 0.1) -> np.ndarray:
    """(N, R, C) DEM heights with NaN where each DEM's borrowed real mask is true (a new float32 array).

    ``heights``: finite (N, R, C) heights (fill a transform's NaN cells from the exact DEM first); ``pitch`` (N,)
    radians; ``real_masks`` (M, R, C) booleans, true where a real DEM had no measurement; ``real_pitch`` (M,).
    ``step`` (N,) and ``real_step`` (M,): each DEM's index in its trajectory, at ``control_dt`` seconds per step;
    needed when ``config.start_s`` > 0. A DEM left out by ``share`` keeps its heights unchanged. Every draw comes
    from ``rng``.
    """
    config = config or MaskBorrowing()
    heights = _array(heights, 3, "heights")
    masks = _array(real_masks, 3, "real_masks", dtype=bool)
    pitch, real_pitch = _array(pitch, 1, "pitch", dtype=float), _array(real_pitch, 1, "real_pitch", dtype=float)
    if len(pitch) != len(heights) or len(real_pitch) != len(masks):
        raise ValueError(f"borrow_real_masks: {len(heights)} DEMs with {len(pitch)} pitches, {len(masks)} real masks "
                         f"with {len(real_pitch)} pitches: one pitch per DEM")
    if heights.shape[1:] != masks.shape[1:]:
        raise ValueError(f"borrow_real_masks: simulated DEMs are {heights.shape[1:]}, real ones {masks.shape[1:]}: "
                         "the two sets must share the DEM geometry")
    if not len(masks):
        raise ValueError("borrow_real_masks: no real DEM to borrow a mask from")
    if not (np.all(np.isfinite(heights)) and np.all(np.isfinite(pitch)) and np.all(np.isfinite(real_pitch))):
        raise ValueError("borrow_real_masks: heights and pitches must be finite (fill NaN cells before borrowing)")
    second = real_second = None
    if config.start_s > 0:
        if step is None or real_step is None:
            raise ValueError("borrow_real_masks: start_s needs each DEM's step in its trajectory (step, real_step)")
        second = np.floor(_array(step, 1, "step", dtype=float) * control_dt).astype(np.int64)
        real_second = np.floor(_array(real_step, 1, "real_step", dtype=float) * control_dt).astype(np.int64)
        if len(second) != len(heights) or len(real_second) != len(masks):
            raise ValueError(f"borrow_real_masks: {len(heights)} DEMs with {len(second)} steps, {len(masks)} real masks "
                             f"with {len(real_second)} steps: one step per DEM")
    out = heights.copy()
    sim_bin, real_bin = pitch_bins(pitch, config.pitch_bin_deg), pitch_bins(real_pitch, config.pitch_bin_deg)
    chosen = rng.random(len(heights)) < config.share
    if second is not None:  # the start window: by the second of the run, not by the pitch
        early = second < config.start_s
        chosen &= ~early
        for sec in np.unique(second[early]):
            idx = np.flatnonzero(early & (second == sec))
            pool = np.flatnonzero(real_second == sec)
            if len(pool) < config.min_pool:  # few real runs: any real DEM of the window
                pool = np.flatnonzero(real_second < config.start_s)
            if not len(pool):
                pool = np.arange(len(masks))
            out[idx] = np.where(masks[rng.choice(pool, len(idx))], np.float32(np.nan), out[idx])
    chosen = np.flatnonzero(chosen)
    for b in np.unique(sim_bin[chosen]):
        idx = chosen[sim_bin[chosen] == b]
        pool = np.flatnonzero(real_bin == b)
        if len(pool) < config.min_pool:  # a pitch the real runs rarely reached: the neighbouring bins too
            pool = np.flatnonzero(np.abs(real_bin - b) <= 1)
        if not len(pool):
            pool = np.arange(len(masks))
        out[idx] = np.where(masks[rng.choice(pool, len(idx))], np.float32(np.nan), out[idx])
    return out
