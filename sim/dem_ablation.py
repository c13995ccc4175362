"""The reality proxy with the controller's DEM taken apart: which part of the lidar-built DEM costs a policy.

A policy that climbs in simulation and sticks on the proxy may be thrown by the proxy's dynamics, by the cells the
lidar misses, or by the heights it measures. ``DemAblation`` drives the proxy unchanged (the same perturbed robot,
lidar, point map and noise seeds) and swaps only the DEM handed to the controller, built from the proxy's DEM and
the simulator's exact DEM of the true pose:

- ``lidar``: the proxy's DEM as it is (what ``RealityProxy`` gives);
- ``exact``: the exact DEM (the proxy's robot and dynamics with perfect perception);
- ``mask``: the exact heights where the lidar measured a cell, NaN where it did not (only the missing cells);
- ``heights``: the lidar's heights, its missing cells filled from the exact DEM (only the measured heights).

Scores with ``exact`` against ``lidar`` separate perception from dynamics; ``mask`` and ``heights`` split the
perception part (``flipper eval --reality proxy --proxy-dem MODE``; docs/sim2real_experiments.md, "Where G alone's
course runs stick"). The proxy's DEM is built at the drifting estimated pose and the exact one at the true pose, so
``mask`` and ``heights`` mix two frames that differ by the odometry's drift (centimetres over a run).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from sim.simulator import Observation

PROXY_DEMS = ("lidar", "exact", "mask", "heights")


def ablated_dem(lidar: np.ndarray, exact: np.ndarray, source: str) -> np.ndarray:
    """The DEM a controller sees under ``source`` (one of ``PROXY_DEMS``), from the proxy's ``lidar`` DEM (NaN where
    no point fell) and the ``exact`` DEM of the same step (float32, the DEM's shape)."""
    if source == "lidar":
        return lidar
    if source == "exact":
        return exact
    missing = np.isnan(lidar)
    if source == "mask":
        return np.where(missing, np.float32(np.nan), exact).astype(np.float32)
    if source == "heights":
        return np.where(missing, exact, lidar).astype(np.float32)
    raise ValueError(f"unknown proxy DEM {source!r}; allowed: {', '.join(PROXY_DEMS)}")


class DemAblation:
    """A ``RealityProxy`` whose observations carry the DEM of ``source`` (see the module docstring); everything else
    (status, events, time, limits, snapshots) is the proxy's own."""

    def __init__(self, proxy: Any, source: str):
        if source not in PROXY_DEMS:
            raise ValueError(f"unknown proxy DEM {source!r}; allowed: {', '.join(PROXY_DEMS)}")
        self.proxy, self.source = proxy, source

    def __getattr__(self, name: str) -> Any:  # only called for what this class does not define
        return getattr(self.proxy, name)

    def _swap(self, obs: Observation) -> Observation:
        if self.source == "lidar":
            return obs
        exact = self.proxy.sim.observation().dem  # the simulator's exact DEM at the true pose of this step
        return replace(obs, dem=ablated_dem(obs.dem, exact, self.source))

    def reset(self, world, seed: int = 0, flippers: np.ndarray | None = None) -> Observation:
        return self._swap(self.proxy.reset(world, seed=seed, flippers=flippers))

    def step(self, flipper_targets: np.ndarray, dt: float) -> Observation:
        return self._swap(self.proxy.step(flipper_targets, dt))

    def observation(self) -> Observation:
        return self._swap(self.proxy.observation())

    def config_dict(self) -> dict:
        return {**self.proxy.config_dict(), "proxy_dem": self.source}
