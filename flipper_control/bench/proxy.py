"""`flipper bench proxy`: real-time factor of the reality proxy beside the plain MuJoCo simulator in the same run,
both driven by the heuristic controller, with the share of the proxy's wall time per stage (physics, lidar,
fusion, DEM) and the size of its point map."""

from __future__ import annotations

import time

from flipper_control.bench.common import one_core
from flipper_control.controllers import HeuristicController
from sim.mujoco_sim import MujocoSimulator
from sim.reality_config import RealityProxyConfig
from sim.reality_proxy import RealityProxy
from sim.rollout import run_episode
from sim.world import World

__all__ = ["bench_proxy"]


def bench_proxy(world: World, seconds: float = 20.0, config: RealityProxyConfig | None = None) -> dict:
    """Real-time factors (simulated / wall seconds) of the proxy and of the plain ``MujocoSimulator``,
    both driven by the heuristic controller at 10 Hz for at least ``seconds`` simulated seconds on one
    CPU (the process is pinned for the measurement and restored afterwards)."""
    out = {"world": world.name, "seconds": seconds}
    with one_core():
        for label, sim in (("mujoco", MujocoSimulator()), ("proxy", RealityProxy(config=config))):
            sim_s = wall = 0.0
            seed = 0
            levels = []
            while sim_s < seconds:
                t0 = time.perf_counter()
                levels.append(run_episode(sim, world, HeuristicController(), seed=seed).level)
                wall += time.perf_counter() - t0
                sim_s += sim.time
                seed += 1
            out[label] = {"sim_s": sim_s, "wall_s": wall, "real_time_factor": sim_s / wall, "episodes": seed,
                          "levels": levels}
            if label == "proxy":
                out[label]["wall_share"] = {k: v / wall for k, v in sim.timing.items()}
                out[label]["map_points"] = len(sim.point_map.points())
                out[label]["map_bytes"] = int(sim.point_map.nbytes)
    return out
