"""The map's age, what a G with the map-age input takes (``perception.cyclegan``, ``GanConfig.map_age_s``): for
recorded states ``trajectory_ages`` counts control periods from each trajectory's first state; for nodes that transform
a stream of DEMs ``MapClock`` counts seconds from the first DEM stamp, and ``takes_map_age`` tells such a G from other
transforms. No torch import, so that nodes load it cheaply."""

from __future__ import annotations

import numpy as np

__all__ = ["STATE_PERIOD_S", "MapClock", "takes_map_age", "trajectory_ages"]

# s between the recorded states of every dataset: the policy's control period (the planner's record_dt, the
# rollouts' and the proxy's control_dt, the bags' DEM rate)
STATE_PERIOD_S = 0.1


def trajectory_ages(traj_id: np.ndarray, period_s: float = STATE_PERIOD_S) -> np.ndarray:
    """Seconds since each trajectory's first state, for states in recorded order tagged with their trajectory:
    (N,) float64, ``period_s`` x the state's index within its trajectory. What G's map-age input is fed
    (``perception.cyclegan``): the planner, the rollouts and the bags all begin at a run's start, where its map begins."""
    traj_id = np.asarray(traj_id).reshape(-1)
    order = np.argsort(traj_id, kind="stable")  # each trajectory's states together, in recorded order
    sorted_ids = traj_id[order]
    first = np.r_[True, sorted_ids[1:] != sorted_ids[:-1]] if len(traj_id) else np.zeros(0, bool)
    starts = np.maximum.accumulate(np.where(first, np.arange(len(traj_id)), 0)) if len(traj_id) else np.zeros(0, int)
    ages = np.empty(len(traj_id), np.float64)
    ages[order] = (np.arange(len(traj_id)) - starts) * period_s
    return ages


def takes_map_age(transform) -> bool:
    """Whether a ``SimToReal``-like callable wants the map's age (a G with ``map_age_s`` > 0); plain callables do not."""
    return bool(getattr(transform, "map_age_s", 0.0))


class MapClock:
    """Seconds since the first DEM stamp seen. A stamp earlier than that first one (a simulator reset, a bag played
    again) starts a new map there."""

    def __init__(self):
        self.start_ns: int | None = None

    def age(self, stamp_ns: int) -> float:
        """The map's age at a DEM stamped ``stamp_ns`` (ns)."""
        if self.start_ns is None or stamp_ns < self.start_ns:
            self.start_ns = int(stamp_ns)
        return (int(stamp_ns) - self.start_ns) / 1e9

    def apply(self, transform, dem, scalars, stamp_ns: int):
        """``transform(dem, scalars)`` of a DEM stamped ``stamp_ns``, with ``map_age`` for a G that takes it."""
        if takes_map_age(transform):
            return transform(dem, scalars, map_age=self.age(stamp_ns))
        return transform(dem, scalars)
