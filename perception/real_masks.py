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

Nor does the pitch show the stage of a manoeuvre: a level DEM before a drop and a level DEM before a step share a
bin, yet the lidar leaves the lower level beyond the drop's edge unseen until the robot tips over it, and the
ground under its front unseen while its body covers it. The robot's own pitch over the next seconds does show it
(a descent tips the nose down, a climb up), on the real runs as in the planned trajectories, with no look at the
terrain or at a paired state. With ``ahead_s`` > 0 each DEM draws only among real DEMs whose pitch also changes as
much over the next ``ahead_s`` seconds of their runs (``pitch_change_ahead``: the signed largest change, binned
``ahead_bin_deg`` wide around 0).

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

__all__ = ["MaskBorrowing", "borrow_real_masks", "pitch_bins", "pitch_change_ahead"]


@dataclass(frozen=True)
class MaskBorrowing:
    """How simulated DEMs borrow real NaN masks (see the module docstring).

    ``share``: the fraction of DEMs that take a borrowed mask (the others keep their own NaN, usually none or G's).
    ``start_s``: DEMs of a trajectory's first ``start_s`` seconds always borrow, from real DEMs of the same second of
    their runs, whatever ``share`` says (0: off; the pitch alone chooses the pool).
    ``ahead_s``: the pool also shares the bin of the pitch's largest change over the next ``ahead_s`` seconds
    (``ahead_bin_deg`` wide, centred on 0; 0: off).
    """

    share: float = 1.0
    pitch_bin_deg: float = 10.0
    min_pool: int = 20
    start_s: float = 0.0
    ahead_s: float = 0.0
    ahead_bin_deg: float = 10.0

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
        if (isinstance(self.ahead_s, bool) or not isinstance(self.ahead_s, int | float) or not math.isfinite(self.ahead_s)
                or not 0 <= self.ahead_s <= 10):
            bad.append(f"ahead_s must be a number of seconds in [0, 10], got {self.ahead_s!r}")
        if (isinstance(self.ahead_bin_deg, bool) or not isinstance(self.ahead_bin_deg, int | float)
                or not math.isfinite(self.ahead_bin_deg) or self.ahead_bin_deg <= 0):
            bad.append(f"ahead_bin_deg must be a number > 0, got {self.ahead_bin_deg!r}")
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


def pitch_change_ahead(pitch: Any, traj_id: Any, steps: int) -> np.ndarray:
    """(N,) the signed largest change of ``pitch`` (radians) from each sample to any of the next ``steps`` samples of
    its own trajectory (``traj_id``: contiguous runs of equal ids); 0 at a trajectory's last sample."""
    pitch = np.asarray(pitch, dtype=float)
    traj_id = np.asarray(traj_id)
    if pitch.shape != traj_id.shape or pitch.ndim != 1:
        raise ValueError(f"pitch_change_ahead: pitch {pitch.shape} and traj_id {traj_id.shape} must be equal 1-d shapes")
    n = len(pitch)
    if not n:
        return np.zeros(0)
    ends = np.flatnonzero(np.r_[traj_id[1:] != traj_id[:-1], True])  # each trajectory's last index
    last = np.repeat(ends, np.diff(np.r_[-1, ends]))
    best = np.zeros(n)
    idx = np.arange(n)
    for offset in range(1, max(int(steps), 0) + 1):
        change = pitch[np.minimum(idx + offset, last)] - pitch
        best = np.where(np.abs(change) > np.abs(best), change, best)
    return best


def _pool(real_keys: np.ndarray, key: np.ndarray, min_pool: int) -> np.ndarray:
    """The real DEMs a simulated DEM of ``key`` draws from: those of the same key, else of the neighbouring keys (no
    component off by more than one), else, with two components, of the same or a neighbouring first component (the
    pitch's bin), each next one taken while the last holds fewer than ``min_pool``; all real DEMs where none holds one."""
    found = np.flatnonzero(np.all(real_keys == key, axis=1))
    if len(found) < min_pool:  # a pose the real runs rarely reached: the neighbouring bins too
        found = np.flatnonzero(np.all(np.abs(real_keys - key) <= 1, axis=1))
    if len(found) < min_pool and real_keys.shape[1] > 1:  # the change ahead never seen there: the pitch alone
        found = np.flatnonzero(np.abs(real_keys[:, 0] - key[0]) <= 1)
    return found if len(found) else np.arange(len(real_keys))


def _array(value: Any, ndim: int, what: str, dtype=np.float32) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim != ndim:
        raise ValueError(f"borrow_real_masks: {what} must have {ndim} dimensions, got shape {arr.shape}")
    return arr


def borrow_real_masks(heights: Any, pitch: Any, real_masks: Any, real_pitch: Any, rng: np.random.Generator,
                      config: MaskBorrowing | None = None, step: Any = None, real_step: Any = None,
                      control_dt: float = 0.1, ahead: Any = None, real_ahead: Any = None) -> np.ndarray:
    """(N, R, C) DEM heights with NaN where each DEM's borrowed real mask is true (a new float32 array).

    ``heights``: finite (N, R, C) heights (fill a transform's NaN cells from the exact DEM first); ``pitch`` (N,)
    radians; ``real_masks`` (M, R, C) booleans, true where a real DEM had no measurement; ``real_pitch`` (M,).
    ``step`` (N,) and ``real_step`` (M,): each DEM's index in its trajectory, at ``control_dt`` seconds per step;
    needed when ``config.start_s`` > 0. ``ahead`` (N,) and ``real_ahead`` (M,): each DEM's pitch change ahead
    (``pitch_change_ahead``, radians); needed when ``config.ahead_s`` > 0. A DEM left out by ``share`` keeps its
    heights unchanged. Every draw comes from ``rng``.
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
    sim_keys = [pitch_bins(pitch, config.pitch_bin_deg)]
    real_keys = [pitch_bins(real_pitch, config.pitch_bin_deg)]
    if config.ahead_s > 0:
        if ahead is None or real_ahead is None:
            raise ValueError("borrow_real_masks: ahead_s needs each DEM's pitch change ahead (ahead, real_ahead)")
        ahead, real_ahead = _array(ahead, 1, "ahead", dtype=float), _array(real_ahead, 1, "real_ahead", dtype=float)
        if len(ahead) != len(heights) or len(real_ahead) != len(masks):
            raise ValueError(f"borrow_real_masks: {len(heights)} DEMs with {len(ahead)} changes ahead, {len(masks)} real "
                             f"masks with {len(real_ahead)}: one change per DEM")
        half = 0.5 * config.ahead_bin_deg  # centred on 0: a level run stays in one bin whatever its small wobbles
        sim_keys.append(np.floor((np.degrees(ahead) + half) / config.ahead_bin_deg).astype(np.int64))
        real_keys.append(np.floor((np.degrees(real_ahead) + half) / config.ahead_bin_deg).astype(np.int64))
    sim_key, real_key = np.stack(sim_keys, axis=1), np.stack(real_keys, axis=1)
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
    for key in np.unique(sim_key[chosen], axis=0):  # each key once: its pool is computed once
        idx = chosen[np.all(sim_key[chosen] == key, axis=1)]
        out[idx] = np.where(masks[rng.choice(_pool(real_key, key, config.min_pool), len(idx))], np.float32(np.nan), out[idx])
    return out
