"""`flipper bench ros`: latencies of the live nodes over real DDS, each beside the same core called in-process.

- **policy_node**: GridMap arrival -> command publish. A probe publishes /imu/data and /joint_states, then a
  GridMap, and waits for the command before the next (20 Hz). Figures: the node's own arrival-to-publish time
  (from its /diagnostics: decode, decision, encode, publish; the issue's target p99 <= 5 ms) and the probe's
  round trip (two DDS hops more). Baseline: ``PolicyRuntime`` in this process on the same messages (CDR in,
  CDR out), no DDS.
- **dem_node**: cloud -> GridMap for 0.1 s lidar slices: a recorded reality-proxy bag is played message by
  message at its recorded pace (/tf_static, /tf, /joint_states, /points), each cloud timed from publish to the
  GridMap's arrival (a round trip: two hops more than the node's own time; target p99 <= 20 ms). The first cloud
  (the full turn the robot waits for at the start) is left out of the figures. Baseline: ``DemHandler`` over
  the same CDR messages in this process.

Both nodes run pinned to one CPU (``taskset``), the probe on another where there is one. Everything that speaks
DDS runs inside a loopback-only network namespace with a private /dev/shm (``bench.common.isolated_graph``,
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``): ``bench_ros`` re-runs this module inside one
(``python -m flipper_control.bench.ros --inside SPEC``) and reads its JSON. More parts (the closed loop of
``robot_sim_node``) plug in as ``"module:function"`` names in ``parts``: each is called inside the namespace with
a ``RosBench`` (start pinned nodes, the probe adapter, a work folder) and returns a dict that goes into the JSON
under its name.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from flipper_control.bench.common import cpu_model, isolated_graph

__all__ = ["POLICY_TARGET_MS", "DEM_TARGET_MS", "RosBench", "bench_ros", "closed_loop_part", "percentiles"]

POLICY_TARGET_MS, DEM_TARGET_MS = 5.0, 20.0
BUILTIN_PARTS = ("policy", "dem")


def percentiles(ms: list[float]) -> dict[str, Any]:
    """p50 / p99 / max and the sample count of latencies in milliseconds."""
    a = np.asarray(ms, dtype=float)
    if a.size == 0:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    p50, p99 = np.percentile(a, [50, 99])
    return {"n": int(a.size), "p50_ms": round(float(p50), 4), "p99_ms": round(float(p99), 4), "max_ms": round(float(a.max()), 4)}


def _cpus() -> tuple[int, int]:
    """(node CPU, probe CPU): the last and the first CPU this process may use (the same one on a 1-CPU machine)."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[-1], cpus[0]


class RosBench:
    """What a bench part gets inside the namespace: pinned node processes, the probe's ``NodeAdapter``, a folder."""

    def __init__(self, work: Path, node_cpu: int, probe_cpu: int):
        import rclpy

        from perception.ros_adapter import NodeAdapter

        self.work, self.node_cpu, self.probe_cpu = work, node_cpu, probe_cpu
        self.processes: list[subprocess.Popen] = []
        os.sched_setaffinity(0, {probe_cpu})
        rclpy.init()
        self.adapter = NodeAdapter(f"bench_probe_{os.getpid()}", diagnostics_period=60.0)

    def start_node(self, module: str, name: str, params: dict | None = None) -> subprocess.Popen:
        """``python -m module`` as node ``name`` with ``params``, pinned to ``node_cpu``, output in ``<work>/name.log``."""
        import yaml

        argv = ["taskset", "-c", str(self.node_cpu), sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}"]
        if params:
            path = self.work / f"{name}.params.yaml"
            path.write_text(yaml.safe_dump({name: {"ros__parameters": params}}))
            argv += ["--params-file", str(path)]
        with open(self.work / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.processes.append(proc)
        return proc

    def spin_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Spin the probe until ``done()`` or ``timeout`` seconds; returns ``done()``."""
        import rclpy

        end = time.monotonic() + timeout
        while not done() and time.monotonic() < end:
            rclpy.spin_once(self.adapter.node, timeout_sec=0.001)
        return done()

    def stop_nodes(self) -> None:
        """SIGINT every node started here, SIGKILL what is left after 5 s."""
        for p in self.processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        for p in self.processes:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        self.processes.clear()

    def close(self) -> None:
        """Stop the nodes and the probe."""
        import rclpy

        self.stop_nodes()
        self.adapter.close()
        rclpy.try_shutdown()


# ------------------------------------------------------------------------------------------ inputs
def _record_bag(work: Path, seconds: float, seed: int) -> Path:
    """A reality-proxy run of ``seconds`` on the stairs test world, recorded (the heuristic drives)."""
    from flipper_control.controllers import make_controller
    from flipper_control.learning.bags import record_proxy_run
    from sim.world_sets import resolve_world

    bag = work / "bag"
    record_proxy_run(resolve_world("stairs_up"), make_controller("heuristic"), bag, seed=seed, max_time=seconds)
    return bag


def _bag_messages(bag: Path, topics: list[str]) -> list[tuple[str, str, bytes, Any]]:
    """(topic, type, CDR bytes, message) in log order."""
    from perception.bag_reader import BagReader
    from perception.messages import TOPIC_TYPES, typestore

    with BagReader(bag) as reader:
        return [(m.topic, TOPIC_TYPES[m.topic], bytes(typestore().serialize_cdr(m.msg, TOPIC_TYPES[m.topic])), m.msg)
                for m in reader.messages(topics)]


# ------------------------------------------------------------------------------------------ policy part
def _policy_inputs(bag: Path) -> list[tuple[bytes, bytes, bytes]]:
    """(Imu, JointState, GridMap) CDR triples from the bag: each GridMap with the latest state before it."""
    from perception.messages import ELEVATION_MAP, IMU, JOINT_STATES

    out, imu, js = [], None, None
    for topic, _, raw, _ in _bag_messages(bag, [IMU, JOINT_STATES, ELEVATION_MAP]):
        if topic == IMU:
            imu = raw
        elif topic == JOINT_STATES:
            js = raw
        elif imu is not None and js is not None:
            out.append((imu, js, raw))
    return out


def _policy_baseline(checkpoint: Path, inputs, samples: int) -> dict:
    """``PolicyRuntime`` in-process on the same CDR messages: decode, decide, encode; ms per GridMap."""
    from flipper_control.policy_node import command_message
    from flipper_control.policy_node_config import PolicyNodeConfig
    from flipper_control.policy_runtime import PolicyRuntime
    from perception.messages import deserialize_lenient, typestore

    rt = PolicyRuntime(PolicyNodeConfig(checkpoint=str(checkpoint), max_rate=0.0, gridmap_timeout=60.0, imu_timeout=60.0,
                                        joint_states_timeout=60.0), now=time.monotonic())
    ms = []
    for k in range(samples + 5):
        imu, js, gm = inputs[k % len(inputs)]
        rt.on_imu(deserialize_lenient(imu, "sensor_msgs/msg/Imu"), time.monotonic())
        rt.on_joint_states(deserialize_lenient(js, "sensor_msgs/msg/JointState"), time.monotonic())
        t0 = time.perf_counter()
        cmd = rt.on_gridmap(deserialize_lenient(gm, "grid_map_msgs/msg/GridMap"), time.monotonic())
        typestore().serialize_cdr(command_message(cmd.positions), "std_msgs/msg/Float64MultiArray")
        if k >= 5:  # warm-up
            ms.append((time.perf_counter() - t0) * 1e3)
    return percentiles(ms)


def _policy_part(rb: RosBench, bag: Path, checkpoint: Path, samples: int) -> dict:
    inputs = _policy_inputs(bag)
    a = rb.adapter
    rb.start_node("flipper_control.policy_node", "policy_node", {
        "checkpoint": str(checkpoint), "max_rate": 0.0, "gridmap_timeout": 60.0, "imu_timeout": 60.0,
        "joint_states_timeout": 60.0, "checkpoint_poll": 0.0})
    pubs = [a.publisher("/imu/data", "sensor_msgs/msg/Imu"), a.publisher("/joint_states", "sensor_msgs/msg/JointState"),
            a.publisher("/elevation_map", "grid_map_msgs/msg/GridMap")]
    got: list[float] = []
    diag: dict[str, str] = {}
    a.subscribe("/flipper_controller/commands", "std_msgs/msg/Float64MultiArray", lambda _m: got.append(time.perf_counter()))

    def on_diag(m) -> None:
        for st in m.status:
            if st.name.endswith("policy_node"):
                diag.update({kv.key: kv.value for kv in st.values})

    a.subscribe("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", on_diag)
    if not rb.spin_until(lambda: all(p.subscription_count for p in pubs) and diag, 60.0):
        raise RuntimeError(f"policy_node did not come up within 60 s; see {rb.work / 'policy_node.log'}")
    round_trip, lost = [], 0
    for k in range(samples + 5):
        imu, js, gm = inputs[k % len(inputs)]
        pubs[0].publish(imu)
        pubs[1].publish(js)
        rb.spin_until(lambda: False, 0.003)  # the state first, as a robot's 200 Hz IMU would have it there
        n = len(got)
        t0 = time.perf_counter()
        pubs[2].publish(gm)
        if rb.spin_until(lambda n=n: len(got) > n, 1.0):
            if k >= 5:
                round_trip.append((got[n] - t0) * 1e3)
        else:
            lost += 1
        rb.spin_until(lambda: False, 0.04)
    diag.clear()
    rb.spin_until(lambda: "latency p99 ms" in diag, 3.0)  # the node's own figures, after the last decision
    rb.stop_nodes()
    in_node = {"p50_ms": float(diag["latency p50 ms"]), "p99_ms": float(diag["latency p99 ms"]),
               "n": int(diag["latency samples"])} if "latency p99 ms" in diag else None
    return {"in_node": in_node, "round_trip": percentiles(round_trip), "lost": lost,
            "target_p99_ms": POLICY_TARGET_MS,
            "meets_target": in_node is not None and in_node["p99_ms"] <= POLICY_TARGET_MS}


# ------------------------------------------------------------------------------------------ dem part
def _dem_baseline(messages, samples: int) -> dict:
    """``DemHandler`` in-process on the same CDR messages (cloud CDR in, GridMap CDR out); the first cloud left out."""
    from perception.dem_handler import DemHandler
    from perception.messages import JOINT_STATES, POINTS, TF_STATIC

    handler, ms, clouds = DemHandler(), [], 0
    for topic, _, raw, _ in messages:
        if topic == POINTS:
            t0 = time.perf_counter()
            handler.on_cloud_cdr(raw)
            if clouds:
                ms.append((time.perf_counter() - t0) * 1e3)
            clouds += 1
            if len(ms) >= samples:
                break
        elif topic == JOINT_STATES:
            handler.on_joint_states_cdr(raw)
        else:
            handler.on_tf_cdr(raw, static=topic == TF_STATIC)
    return percentiles(ms)


def _dem_part(rb: RosBench, messages, samples: int) -> dict:
    from perception.messages import JOINT_STATES, POINTS, TF, TF_STATIC

    a = rb.adapter
    rb.start_node("perception.dem_node", "dem_node")
    pubs = {t: a.publisher(t, ty) for t, ty in {m[0]: m[1] for m in messages}.items()}
    got: list[float] = []
    a.subscribe("/elevation_map", "grid_map_msgs/msg/GridMap", lambda _m: got.append(time.perf_counter()))
    if not rb.spin_until(lambda: all(pubs[t].subscription_count for t in (POINTS, TF, TF_STATIC, JOINT_STATES))
                         and a.node.count_publishers("/elevation_map") > 0, 60.0):
        raise RuntimeError(f"dem_node did not come up within 60 s; see {rb.work / 'dem_node.log'}")
    rb.spin_until(lambda: False, 0.5)  # /tf_static's transient-local match settles
    ms, lost, clouds = [], 0, 0
    start, first = time.perf_counter(), None
    for topic, _, raw, msg in messages:
        t_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec if topic == POINTS else None
        if topic == POINTS:
            first = t_ns if first is None else first
            due = start + (t_ns - first) / 1e9  # the recorded pace: one slice per 0.1 s
            rb.spin_until(lambda due=due: time.perf_counter() >= due, 10.0)
            n = len(got)
            t0 = time.perf_counter()
            pubs[topic].publish(raw)
            if rb.spin_until(lambda n=n: len(got) > n, 2.0):
                if clouds:
                    ms.append((got[n] - t0) * 1e3)
            else:
                lost += 1
            clouds += 1
            if len(ms) >= samples:
                break
        else:
            pubs[topic].publish(raw)
    rb.stop_nodes()
    rt = percentiles(ms)
    return {"round_trip": rt, "lost": lost, "clouds": clouds, "target_p99_ms": DEM_TARGET_MS,
            "meets_target": rt["p99_ms"] is not None and rt["p99_ms"] <= DEM_TARGET_MS}


# ------------------------------------------------------------------------------------------ closed loop hook
def closed_loop_part(rb: RosBench) -> dict:
    """The hook for the closed loop over DDS (``robot_sim_node`` + ``dem_node`` + ``policy_node``): a part with this
    signature, named as ``"module:function"`` in ``bench_ros(parts=...)``, runs inside the namespace with the same
    ``RosBench`` and its dict lands in the JSON under its function name. This placeholder only says it is not there."""
    return {"status": "not measured: no closed-loop part registered (robot_sim_node)"}


# ------------------------------------------------------------------------------------------ driver
def _inside(spec: dict) -> dict:
    """Everything that speaks DDS: runs inside the namespace (``--inside``)."""
    import torch

    from flipper_control.checkpoint import save_policy
    from flipper_control.policy import NanAwarePolicy
    from perception.messages import JOINT_STATES, POINTS, TF, TF_STATIC

    work = Path(spec["work"])
    node_cpu, probe_cpu = _cpus()
    torch.set_num_threads(1)
    out: dict[str, Any] = {"cpu": cpu_model(), "node_cpu": node_cpu, "probe_cpu": probe_cpu,
                           "bag_seconds": spec["seconds"], "samples": spec["samples"]}
    bag = checkpoint = dem_messages = None
    if {"policy", "dem"} & set(spec["parts"]):  # hooks bring their own inputs
        bag = _record_bag(work, spec["seconds"], spec["seed"])
        torch.manual_seed(spec["seed"])
        checkpoint = Path(spec.get("checkpoint") or work / "policy")
        if not spec.get("checkpoint"):
            save_policy(checkpoint, NanAwarePolicy())  # the cost does not depend on the weights
        dem_messages = _bag_messages(bag, [TF_STATIC, TF, JOINT_STATES, POINTS])
        os.sched_setaffinity(0, {node_cpu})  # the baselines on the CPU the nodes get
    if "policy" in spec["parts"]:
        out["policy_baseline_in_process"] = _policy_baseline(checkpoint, _policy_inputs(bag), spec["samples"])
    if "dem" in spec["parts"]:
        out["dem_baseline_in_process"] = _dem_baseline(dem_messages, spec["samples"])
    rb = RosBench(work, node_cpu, probe_cpu)
    try:
        for part in spec["parts"]:
            if part == "policy":
                out["policy_node"] = _policy_part(rb, bag, checkpoint, spec["samples"])
            elif part == "dem":
                out["dem_node"] = _dem_part(rb, dem_messages, spec["samples"])
            else:
                module, _, name = part.partition(":")
                out[name] = getattr(importlib.import_module(module), name)(rb)
    finally:
        rb.close()
    return out


def bench_ros(samples: int = 200, seconds: float = 8.0, seed: int = 0, checkpoint: str | None = None,
              parts: tuple[str, ...] = BUILTIN_PARTS, work: str | Path | None = None, timeout: float = 600.0) -> dict:
    """Run the parts (``"policy"``, ``"dem"``, or ``"module:function"`` hooks such as ``closed_loop_part``) inside a
    loopback-only network namespace and return their figures. ``seconds``: length of the recorded proxy run whose
    clouds and maps are used (10 slices per second); ``samples``: latencies per figure (the dem part has at most one
    per recorded slice). Raises RuntimeError (with the tail of the log) when the namespace cannot be made or a
    part fails."""
    if samples < 1 or not seconds > 0:
        raise ValueError(f"samples must be >= 1 and seconds > 0, got {samples} and {seconds}")
    for tool in ("unshare", "ip", "taskset"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"bench ros needs {tool} (util-linux / iproute2) to run the nodes in a network namespace")
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="bench_ros_") if own else work)
    work.mkdir(parents=True, exist_ok=True)
    spec = {"work": str(work), "samples": samples, "seconds": seconds, "seed": seed, "checkpoint": checkpoint,
            "parts": list(parts)}
    inner = (f"export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_LOG_DIR={work}/ros_log && "
             f"exec {sys.executable} -m flipper_control.bench.ros --inside '{json.dumps(spec)}'")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(isolated_graph(inner), capture_output=True, text=True, timeout=timeout,
                          env=env)
    result = work / "result.json"
    if proc.returncode != 0 or not result.exists():
        raise RuntimeError(f"bench ros failed (exit {proc.returncode}); work folder {work}; log:\n"
                           f"{(proc.stdout + proc.stderr)[-3000:]}")
    out = json.loads(result.read_text())
    if own:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv: list[str]) -> int:
    """``python -m flipper_control.bench.ros --inside SPEC``: the part that runs inside the namespace."""
    from sim.io_utils import write_json_atomic

    if len(argv) != 2 or argv[0] != "--inside":
        print("usage: python -m flipper_control.bench.ros --inside SPEC_JSON (use `flipper bench ros`)", file=sys.stderr)
        return 2
    spec = json.loads(argv[1])
    write_json_atomic(Path(spec["work"]) / "result.json", _inside(spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
