"""The closed loop over DDS beside in-process evaluation: the figure ``flipper bench ros`` reports for issue 16.

For each world, ``robot_sim_node`` (the reality proxy), ``dem_node`` and ``policy_node`` run as three separate
processes -- with the parameter file of ``launch/sim.launch.xml`` -- inside a graph of their own
(``bench.common.isolated_graph``: loopback only, a private /dev/shm, ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``:
no DDS packet leaves the machine), robot_sim_node in lockstep (each step waits for the policy's answer to the last
one, as ``sim.rollout.run_episode`` does) and policy_node without its rate limit (``flipper eval`` has none); the run's
result comes back through robot_sim_node's ``result_file``. The same policy, worlds and seeds then run in-process
on the reality proxy (``flipper eval --reality proxy``). The two totals should lie within 0.5 of each other over
the 8 test worlds; what separates them is that dem_node builds the DEM from the published clouds and /tf while
the in-process proxy builds it from its own point map, and DDS timing.

Hook for ``flipper_control/bench/ros.py``: ``closed_loop_figure(policy, worlds=["test"], seed=0, progress=step)``
returns a JSON-ready dict (per world both levels, both totals, the gap, ``within_target``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flipper_control.bench.common import isolated_graph

ROOT = Path(__file__).resolve().parents[2]
SIM_PARAMS = ROOT / "config" / "sim.yaml"
TARGET_GAP = 0.5  # issue 16: the DDS total within 0.5 of the in-process total over the 8 test worlds

__all__ = ["TARGET_GAP", "closed_loop_figure", "dds_run", "in_process_runs"]


def dds_run(policy: str, world: str, seed: int, workdir: Path, reality_config: str = "", timeout: float = 300.0,
            domain_id: int = 42) -> dict[str, Any]:
    """One world driven over DDS by the three nodes (see the module docstring); returns robot_sim_node's result
    plus ``wall_s`` of the whole graph. Raises RuntimeError with the nodes' logs when no result comes out."""
    workdir.mkdir(parents=True, exist_ok=True)
    result_file = workdir / "result.json"
    py = shlex.quote(sys.executable)
    params = shlex.quote(str(SIM_PARAMS))
    robot = (f"{py} -m flipper_control.robot_sim.node --ros-args -r __node:=robot_sim_node --params-file {params} "
             f"-p world:={shlex.quote(world)} -p seed:={int(seed)} -p lockstep:=true -p exit_when_done:=true "
             f"-p command_timeout:=5.0 -p result_file:={shlex.quote(str(result_file))}"
             + (f" -p reality_config:={shlex.quote(reality_config)}" if reality_config else ""))
    dem = f"{py} -m perception.dem_node --ros-args -r __node:=dem_node --params-file {params}"
    pol = (f"{py} -m flipper_control.policy_node --ros-args -r __node:=policy_node --params-file {params} "
           f"-p checkpoint:={shlex.quote(str(policy))} -p max_rate:=0.0 -p checkpoint_poll:=0.0")
    # the two helpers are stopped when the robot's run has ended: SIGINT (a clean rclpy shutdown), and SIGKILL
    # after 5 s (a dem_node was once seen to need a second SIGINT)
    script = (f"{dem} > dem_node.log 2>&1 & D=$!; {pol} > policy_node.log 2>&1 & P=$!; "
              f"{robot} > robot_sim_node.log 2>&1; R=$?; kill -INT $D $P 2>/dev/null; "
              "for i in $(seq 50); do kill -0 $D 2>/dev/null || kill -0 $P 2>/dev/null || break; sleep 0.1; done; "
              "kill -KILL $D $P 2>/dev/null; wait $D $P; exit $R")
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain_id),
           "ROS_LOG_DIR": str(workdir / "ros_log"), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(isolated_graph(script), cwd=workdir, env=env, timeout=timeout,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if not result_file.exists():
        logs = "\n".join(f"--- {n}\n{(workdir / n).read_text(errors='replace')[-1500:]}" for n in
                         ("robot_sim_node.log", "dem_node.log", "policy_node.log") if (workdir / n).exists())
        raise RuntimeError(f"{world}: no result from the DDS graph (exit {proc.returncode}) {proc.stderr[-500:]}\n{logs}")
    return {**json.loads(result_file.read_text()), "graph_wall_s": round(wall, 2)}


def in_process_runs(policy: str, worlds: list, seed: int, reality_config: str = "") -> list:
    """``flipper eval --reality proxy`` of one run per world with seed ``seed``: the judged RunResults."""
    from flipper_control.checkpoint import load_policy
    from flipper_control.learning.evaluation import evaluate
    from flipper_control.policy import PolicyController
    from sim.reality_config import load_reality_config
    from sim.reality_proxy import RealityProxy

    net, _ = load_policy(policy)
    proxy = RealityProxy(config=load_reality_config(reality_config) if reality_config else None)
    return [ev.runs[0] for ev in evaluate(lambda: PolicyController(net), worlds, runs=1, seed=seed, sim=proxy)]


def closed_loop_figure(policy: str, worlds: list[str] | None = None, seed: int = 0, reality_config: str = "",
                       workdir: str | Path | None = None,
                       progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Every world over DDS and in process (see the module docstring); ``progress(done, total)`` after each world."""
    from sim.world import dump_world
    from sim.world_sets import resolve_worlds

    resolved = resolve_worlds(worlds or ["test"])
    base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="flipper_closed_loop."))
    in_proc = in_process_runs(policy, resolved, seed, reality_config)
    rows = []
    for i, (world, ref) in enumerate(zip(resolved, in_proc, strict=True)):
        folder = base / f"{i}_{world.name}"
        folder.mkdir(parents=True, exist_ok=True)
        world_file = folder / "world.yaml"  # the node loads exactly the world evaluated in process
        world_file.write_text(dump_world(world))
        dds = dds_run(policy, str(world_file), seed, folder, reality_config)
        rows.append({"world": world.name, "dds": {k: dds[k] for k in ("level", "value", "distance", "time", "reasons",
                                                                        "steps", "commands", "command_timeouts",
                                                                        "real_time_factor", "graph_wall_s")},
                     "in_process": {k: v for k, v in ref.to_dict().items() if k in ("level", "value", "distance", "time",
                                                                                     "reasons")}})
        if progress is not None:
            progress(i + 1, len(resolved))
    dds_total = sum(r["dds"]["value"] for r in rows)
    eval_total = sum(r["in_process"]["value"] for r in rows)
    return {"policy": str(policy), "seed": seed, "worlds": rows, "max": len(rows), "dds_total": dds_total,
            "in_process_total": eval_total, "gap": round(dds_total - eval_total, 4),
            "same_level": sum(r["dds"]["level"] == r["in_process"]["level"] for r in rows),
            "target_gap": TARGET_GAP, "within_target": abs(dds_total - eval_total) <= TARGET_GAP, "workdir": str(base)}
