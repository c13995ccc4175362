"""Rosbags in the learning loop: record the reality proxy, ingest bags into real trajectories, replay bags.

- ``record_proxy_run``: a controller drives the reality proxy and every topic of the robot is written
  to a rosbag2 as the robot's drivers would publish it: /points per control step (the lidar lines of that
  step, raw, in the lidar frame), /tf (map -> odom drift, odom -> base_link) and /imu/data per physics
  substep, /joint_states, /flipper_controller/commands, /cmd_vel and /elevation_map (the proxy's own DEM)
  per control step, /tf_static once.
- ``ingest``: bags (from the robot or the proxy) -> the real-trajectory dataset. The DEMs are rebuilt
  from the recorded clouds and tf by the same ``DemHandler`` the live node runs; each is paired with the
  pitch and roll of the nearest /imu/data orientation, the nearest flipper angles and the next command.
- ``replay``: the handler (and a policy, if given) over a bag, its outputs written to a new bag.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from flipper_control.robot_sim.messages import write_initial, write_step
from perception.bag_io import DEFAULT_EPOCH, FRAMES, BagError, storage_of
from perception.bag_reader import BagReader
from perception.bag_writer import BagRecorder
from perception.dem_handler import DemHandler, DemHandlerConfig
from perception.messages import ELEVATION_MAP, FLIPPER_COMMANDS, IMU, JOINT_STATES, POINTS, TF, TF_STATIC, to_nanoseconds
from sim.io_utils import OutputError, write_json_atomic
from sim.robot import FLIPPER_NAMES
from sim.safety import euler_from_quat
from sim.simulator import RUNNING

JOINT_NAMES = tuple(f"{n}_joint" for n in FLIPPER_NAMES)  # the URDF's (sim.urdf) and the controller's order
INGEST_TOPICS = (POINTS, TF, IMU, JOINT_STATES, FLIPPER_COMMANDS)  # /tf_static is optional (mounts may be on /tf)
DATASET_NAME, REPORT_NAME = "real_trajectories.safetensors", "ingest_report.json"
_NS = 1_000_000_000


class OutputExistsError(OutputError):
    """An output that exists already and would be replaced; the message names it and how to go on."""


# ------------------------------------------------------------------------------------------ record
def record_proxy_run(world, controller, bag_path: str | Path, storage: str = "mcap", seed: int = 0,
                     control_dt: float = 0.1, proxy=None, epoch: float = DEFAULT_EPOCH,
                     max_time: float | None = None,
                     progress: Callable[[float, float], None] | None = None) -> dict[str, Any]:
    """Run ``controller`` on ``world`` in the reality proxy (``proxy``, default a fresh ``RealityProxy()``)
    with noise seed ``seed`` and record the run to ``bag_path`` (atomically); stops when the run ends or
    at ``max_time`` simulated seconds. Returns a summary: the judged run, message counts, the bag.
    ``progress(simulated s, at most s)`` is called after every control step."""
    from sim.reality_proxy import RealityProxy
    from sim.scoring import judge_run

    proxy = proxy or RealityProxy()
    if not (control_dt > 0 and math.isfinite(control_dt)):
        raise ValueError(f"control_dt must be > 0 seconds, got {control_dt}")
    controller.reset()
    obs = proxy.reset(world, seed=seed)
    robot = proxy.robot
    spec = proxy.dem_spec
    custom = {"source": "flipper_learning reality proxy", "world": world.name, "seed": str(seed),
              "controller": type(controller).__name__, "control_dt": str(control_dt)}
    with BagRecorder(bag_path, storage, epoch, custom_data=custom) as rec:
        # the same messages robot_sim_node publishes live (one builder for both, so a recording and a live run match)
        write_initial(rec, proxy)  # /tf_static, the state at reset, and the lidar's full warm-up turn as one cloud
        _record_dem(rec, proxy.sample, obs.dem, spec)
        horizon = world.effective_time_limit if max_time is None else min(max_time, world.effective_time_limit)
        while proxy.status == RUNNING and (max_time is None or proxy.time < max_time - 1e-9):
            t = proxy.time
            targets = np.clip(np.asarray(controller.act(obs), dtype=float), robot.flipper_lower, robot.flipper_upper)
            rec.flipper_commands(t, targets)
            rec.cmd_vel(t, world.speed, 0.0)
            obs = proxy.step(targets, control_dt)
            if not write_step(rec, proxy):
                break
            _record_dem(rec, proxy.last_step.samples[-1], obs.dem, spec)
            if progress is not None:
                progress(proxy.time, horizon)
        counts = dict(rec.counts)
    run = judge_run(world, proxy.status, proxy.events, proxy.time, obs.progress, proxy.limits, seed=seed)
    return {"bag": str(bag_path), "storage": storage, "world": world.name, "seed": seed, "epoch": epoch,
            "sim_time": proxy.time, "run": run.to_dict(), "messages": counts}


def _record_dem(rec: BagRecorder, s, dem: np.ndarray, spec) -> None:
    """/elevation_map: the proxy's DEM, built around the estimated pose in the map frame."""
    yaw = euler_from_quat(s.estimated_quat)[2]
    rec.elevation_map(s.time, dem, s.estimated_position, yaw, FRAMES["map"], spec)


# ------------------------------------------------------------------------------------------ ingest
@dataclass(frozen=True)
class IngestConfig:
    """``handler``: the DEM handler's config (its tf history is widened to the whole bag: ingestion reads
    all transforms first). ``max_gap``: seconds within which a DEM finds its IMU and joint state (nearest)
    and its command (the first at or after the DEM's stamp)."""

    handler: DemHandlerConfig = field(default_factory=DemHandlerConfig)
    max_gap: float = 0.1

    def __post_init__(self) -> None:
        if not (self.max_gap > 0 and math.isfinite(self.max_gap)):
            raise ValueError(f"IngestConfig.max_gap must be > 0 seconds, got {self.max_gap}")


class _Series:
    """Values stamped in ns, for nearest / next-after lookups."""

    def __init__(self):
        self.t: list[int] = []
        self.v: list[np.ndarray] = []

    def add(self, t_ns: int, value) -> None:
        self.t.append(t_ns)
        self.v.append(np.asarray(value, dtype=float))

    def freeze(self) -> None:
        order = np.argsort(np.asarray(self.t, dtype=np.int64), kind="stable")
        self.t = np.asarray(self.t, dtype=np.int64)[order]
        self.v = [self.v[i] for i in order]

    def nearest(self, t_ns: int, gap_ns: int) -> np.ndarray | None:
        i = int(np.searchsorted(self.t, t_ns))
        best = min((j for j in (i - 1, i) if 0 <= j < len(self.t)), key=lambda j: abs(int(self.t[j]) - t_ns),
                   default=None)
        return None if best is None or abs(int(self.t[best]) - t_ns) > gap_ns else self.v[best]

    def at_or_before(self, t_ns: int) -> np.ndarray | None:
        i = int(np.searchsorted(self.t, t_ns, side="right")) - 1
        return self.v[i] if i >= 0 else None

    def next_after(self, t_ns: int, gap_ns: int, slack_ns: int = 1_000_000) -> np.ndarray | None:
        i = int(np.searchsorted(self.t, t_ns - slack_ns))
        return self.v[i] if i < len(self.t) and int(self.t[i]) - t_ns <= gap_ns else None


def _flipper_angles(js) -> np.ndarray | None:
    names = list(js.name)
    if len(js.position) != len(names) or not all(j in names for j in JOINT_NAMES):
        return None
    return np.asarray(js.position, dtype=float)[[names.index(j) for j in JOINT_NAMES]]


def ingest_bag(path: str | Path, config: IngestConfig | None = None, on_cloud: Callable[[], None] | None = None):
    """One bag -> (``planning.dataset.Trajectory``, report dict). Raises MissingTopicError for a bag without
    the topics a trajectory needs (the message lists the topics it has). ``on_cloud()`` is called after every
    cloud (a progress hook)."""
    from planning.dataset import Trajectory

    config = config or IngestConfig()
    gap = int(config.max_gap * _NS)
    skipped: Counter[str] = Counter()
    with BagReader(path) as reader:
        reader.require(INGEST_TOPICS)
        handler = DemHandler(replace(config.handler, tf_cache=1e9))  # every transform of the bag is read first
        imu, joints, commands = _Series(), _Series(), _Series()
        for m in reader.messages([TF, TF_STATIC, IMU, JOINT_STATES, FLIPPER_COMMANDS]):
            if m.topic in (TF, TF_STATIC):
                handler.on_tf(m.msg, static=m.topic == TF_STATIC)
            elif m.topic == IMU:
                q = m.msg.orientation
                roll, pitch, _ = euler_from_quat(np.array([q.w, q.x, q.y, q.z]))
                if math.isfinite(roll) and math.isfinite(pitch) and abs(q.w) + abs(q.x) + abs(q.y) + abs(q.z) > 0:
                    imu.add(to_nanoseconds(m.msg.header.stamp), (pitch, roll))
                else:
                    skipped["imu without orientation"] += 1
            elif m.topic == JOINT_STATES:
                angles = _flipper_angles(m.msg)
                if angles is None:
                    skipped["joint_states without the four flipper joints"] += 1
                else:
                    joints.add(to_nanoseconds(m.msg.header.stamp), angles)
            else:
                data = np.asarray(m.msg.data, dtype=float)
                if data.shape == (len(JOINT_NAMES),) and np.all(np.isfinite(data)):
                    commands.add(m.log_ns, data)
                else:
                    skipped["malformed flipper command"] += 1
        for s in (imu, joints, commands):
            s.freeze()
        dems, proprio, action, stamps = [], [], [], []
        for m in reader.messages([POINTS]):
            t = to_nanoseconds(m.msg.header.stamp)
            handler.flipper_angles = joints.at_or_before(t)  # the self filter's flipper pose, as live
            result = handler.on_cloud(m.msg)
            if on_cloud is not None:
                on_cloud()
            if result is None:
                continue
            pr, fl, cmd = imu.nearest(t, gap), joints.nearest(t, gap), commands.next_after(t, gap)
            missing = [name for name, v in (("imu", pr), ("joint_states", fl), ("command", cmd)) if v is None]
            if missing:
                skipped[f"DEM without {' / '.join(missing)} within {config.max_gap:g} s"] += 1
                continue
            dems.append(result.dem)
            proprio.append(np.concatenate((pr, fl)))
            action.append(cmd)
            stamps.append(t)
        report = reader.report.to_dict()
        custom = reader.custom_data
    report.update(handler_skips=dict(handler.skips), pairing_skips=dict(skipped), dems_built=handler.processed,
                  dems_from_map_only=handler.from_map_only, samples=len(dems), custom_data=custom)
    shape = config.handler.builder.dem.shape
    meta = {"source": "rosbag", "bag": str(path), "world": custom.get("world", Path(path).name),
            "seed": int(custom["seed"]) if custom.get("seed", "").isdigit() else None,
            "t0": min(stamps) / _NS if stamps else None, "t1": max(stamps) / _NS if stamps else None}
    if not dems:
        return Trajectory.failed("no usable samples in the bag", shape, meta), report
    # in time order: clouds recovered record by record from a damaged bag come after the others
    order = np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
    traj = Trajectory(np.stack(dems)[order], np.stack(proprio)[order], np.stack(action)[order], success=True, meta=meta)
    return traj, report


def ingest(bags: list[str | Path], out_dir: str | Path, config: IngestConfig | None = None,
           progress: Callable[[int, int], None] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Bags -> ``out_dir/real_trajectories.safetensors`` (one trajectory per bag, DEMs with NaN) and
    ``out_dir/ingest_report.json`` (what was read and skipped, per bag); both written atomically.
    Either existing in ``out_dir`` raises OutputExistsError unless ``overwrite`` (as ``record`` and ``replay``
    never replace a bag). Every bag is checked for the required topics before anything is processed or written.
    ``progress(clouds done, clouds in all bags)`` is called after every cloud."""
    from planning.dataset import TrajectoryDataset

    if not bags:
        raise ValueError("ingest: give at least one bag")
    out = Path(out_dir)
    existing = [out / name for name in (DATASET_NAME, REPORT_NAME) if (out / name).exists()]
    if existing and not overwrite:  # before minutes of DEM building
        raise OutputExistsError(f"{' and '.join(map(str, existing))} exist{'s' if len(existing) == 1 else ''} already; "
                                "ingest replaces a dataset only when asked: pass --overwrite (overwrite=True) or choose "
                                "another --out")
    total = 0
    for bag in bags:  # fail fast, before minutes of DEM building on the other bags
        with BagReader(bag) as reader:
            reader.require(INGEST_TOPICS)
            total += reader.counts.get(POINTS, 0)
    done = 0

    def on_cloud() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, max(total, done))

    trajectories, reports = [], []
    for bag in bags:
        traj, rep = ingest_bag(bag, config, on_cloud)
        trajectories.append(traj)
        reports.append(rep)
    data = TrajectoryDataset(trajectories)
    data.save(out / DATASET_NAME)
    summary = {"dataset": str(out / DATASET_NAME), "trajectories": len(data), "samples": data.n_samples,
               "bags": reports}
    write_json_atomic(out / REPORT_NAME, summary)
    return summary


# ------------------------------------------------------------------------------------------ replay
def replay(bag_in: str | Path, bag_out: str | Path, policy=None, storage: str | None = None,
           config: DemHandlerConfig | None = None) -> dict[str, Any]:
    """Run the DEM handler over ``bag_in`` in log-time order, as the live node would receive it, and write
    /elevation_map (and, with ``policy`` -- a NanAwarePolicy or a checkpoint path -- its flipper commands
    from the DEM, the latest IMU pitch/roll and flipper angles) to ``bag_out``, each at its cloud's log
    time. ``storage`` defaults to the input's. Returns counts and the reader's report."""
    # the one Imu and JointState reading of policy_node, sim2real_node and replay
    from perception.messages import imu_pitch_roll, joint_positions

    if policy is not None and not hasattr(policy, "act_numpy"):
        from flipper_control.checkpoint import load_policy

        policy, _ = load_policy(policy)
    handler = DemHandler(config)
    storage = storage or storage_of(bag_in)
    with BagReader(bag_in) as reader:
        reader.require([POINTS, TF] + ([IMU, JOINT_STATES] if policy is not None else []))
        pitch_roll = flippers = None
        no_state = 0
        with BagRecorder(bag_out, storage, epoch=0.0, custom_data={"source": "flipper replay", "input": str(bag_in)}) as rec:
            for m in reader.messages([TF, TF_STATIC, IMU, JOINT_STATES, POINTS]):
                if m.topic in (TF, TF_STATIC):
                    handler.on_tf(m.msg, static=m.topic == TF_STATIC)
                elif m.topic == JOINT_STATES:
                    handler.on_joint_states(m.msg)
                    # policy_node's reading too: a message without the flipper joints or with NaN is dropped
                    angles = joint_positions(m.msg, JOINT_NAMES)
                    flippers = flippers if isinstance(angles, str) else angles
                elif m.topic == IMU:
                    # policy_node's reading (perception.messages): a NaN or zero orientation is dropped, the last kept
                    read = imu_pitch_roll(m.msg)
                    pitch_roll = pitch_roll if read is None else read
                else:
                    result = handler.on_cloud(m.msg)
                    if result is None:
                        continue
                    rec.write(ELEVATION_MAP, 0.0, result.gridmap, log_ns=m.log_ns)
                    if policy is None:
                        continue
                    if pitch_roll is None or flippers is None:
                        no_state += 1  # the policy needs pitch, roll and flipper angles: none received yet
                        continue
                    targets = policy.act_numpy(result.dem, np.concatenate((pitch_roll, flippers)).astype(np.float32))
                    rec.flipper_commands(0.0, targets, log_ns=m.log_ns)
            if not rec.counts[ELEVATION_MAP]:  # raised inside: the recorder discards the empty bag
                raise BagError(f"{bag_in}: no DEM could be built (skips: {dict(handler.skips)}); nothing written")
            counts = dict(rec.counts)
        report = reader.report.to_dict()
    return {"bag": str(bag_out), "storage": storage, "messages": counts, "handler_skips": dict(handler.skips),
            "commands_without_state": no_state, "read": report}
