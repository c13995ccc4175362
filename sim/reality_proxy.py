"""The reality proxy: the MuJoCo robot with perturbed dynamics and real-like perception (seed 000 Fig. 3).

It stands in for the real robot where there is none. Dynamics: wider seeded ranges of friction,
mass and flipper speed than ``SimNoise``, and flipper commands that reach the servos late (a dead
time) and smoothed (a first-order lag). Perception: a rotating lidar (``sim.lidar``) cast from the
true pose, whose returns are fused into a bounded point map under a drifting odometry/SLAM estimate
(``sim.odometry``); the policy's DEM is built from that map by ``perception.dem_builder`` around the
estimated pose -- NaN where nothing was seen, smeared where drift misaligns old and new returns --
never from the simulator's exact heights. Pitch and roll come from the true orientation (the gyro). Its settings
(``RealityProxyConfig``, ``--reality-config FILE``) live in ``sim.reality_config``.

``RealityProxy`` implements ``Simulator``, so rollouts and ``evaluate`` take it in place of
``MujocoSimulator``; ``last_step`` holds the raw data of the last step for a rosbag recorder.

Layering: this module imports a layer above it (``perception.dem_builder`` and ``perception.point_map``), on
purpose: the proxy reproduces the robot's perception path, so it must fuse its scans and build its DEMs with the
very code that runs on the robot, not with a copy. ``test/test_layering.py`` names these two imports as
exceptions; the only other is ``sim.reality_config``, which holds the builder's settings.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import asdict, dataclass, replace

import numpy as np

from perception.dem_builder import DemBuilder
from perception.point_map import PointMap
from sim.lidar import RotatingLidar, Scan
from sim.mujoco_sim import MujocoSimulator
from sim.odometry import OdometryDrift
from sim.reality_config import RealityProxyConfig
from sim.robot import FLIPPER_NAMES, RobotSpec, SimPhysics
from sim.rotations import nlerp, quat_to_matrix
from sim.safety import SafetyLimits, euler_from_quat
from sim.simulator import RUNNING, Observation, SimState, Simulator
from sim.terrain import world_solids
from sim.world import World


class FlipperLag:
    """Commands reach the servos ``delay`` seconds late, then through a first-order low pass (``tau``)."""

    def __init__(self, delay: float, tau: float):
        self.delay, self.tau = delay, tau
        self.queue: deque[tuple[float, np.ndarray]] = deque()
        self.output = np.zeros(4)

    def reset(self, posture: np.ndarray) -> None:
        self.queue = deque([(-math.inf, posture.copy())])
        self.output = posture.copy()

    def command(self, t: float, targets: np.ndarray) -> None:
        """A command issued at time t."""
        self.queue.append((t, targets.copy()))

    def advance(self, t: float, h: float) -> np.ndarray:
        """The servo target for the substep [t, t + h)."""
        while len(self.queue) > 1 and self.queue[1][0] <= t - self.delay + 1e-9:
            self.queue.popleft()
        alpha = 1.0 - math.exp(-h / self.tau) if self.tau > 0 else 1.0
        self.output = self.output + alpha * (self.queue[0][1] - self.output)
        return self.output.copy()


@dataclass(frozen=True)
class ProxySample:
    """The robot's state at the end of one substep (what /tf, /imu/data and /joint_states carry).

    IMU: ``angular_velocity`` (rad/s) and ``linear_acceleration`` (specific force, m/s^2, gravity
    included as an accelerometer reads it) in base_link; orientation is ``true_quat``.
    ``map_to_odom``: (translation, quat) of the drift; ``odom -> base_link`` is the true pose.
    """

    time: float
    true_position: np.ndarray
    true_quat: np.ndarray
    estimated_position: np.ndarray
    estimated_quat: np.ndarray
    map_to_odom: tuple[np.ndarray, np.ndarray]
    angular_velocity: np.ndarray
    linear_acceleration: np.ndarray
    flipper_angles: np.ndarray
    flipper_velocities: np.ndarray
    servo_targets: np.ndarray  # after the delay and lag: what the servos were told


@dataclass(frozen=True)
class ProxyStep:
    """Raw data of one ``step``: the lidar returns swept during it, the substep samples, the command."""

    scan: Scan
    samples: tuple[ProxySample, ...]
    flipper_commands: np.ndarray
    cmd_vel: tuple[float, float]  # (linear x m/s, angular z rad/s): the tracks' constant drive


class RealityProxy(Simulator):
    """``Simulator`` over a perturbed ``MujocoSimulator`` with ray-cast perception (see module docstring)."""

    def __init__(self, robot: RobotSpec | None = None, physics: SimPhysics | None = None,
                 limits: SafetyLimits | None = None, config: RealityProxyConfig | None = None):
        self.config = c = config or RealityProxyConfig()
        self.sim = MujocoSimulator(robot=robot, physics=physics, dem=c.dem_builder.dem, limits=limits,
                                   noise=c.dynamics.sim_noise())
        self.robot, self.limits, self.dem_spec = self.sim.robot, self.sim.limits, self.sim.dem_spec
        self.world: World | None = None
        self.builder = DemBuilder(c.dem_builder)
        s = self.dem_spec
        # the DEM's farthest corner from base_link, plus a margin for the yaw of the cells
        self._crop_radius = math.hypot(max(s.front, s.rows * s.resolution - s.front), s.cols * s.resolution / 2) + 0.3
        self.last_step: ProxyStep | None = None
        self.timing = {"physics": 0.0, "lidar": 0.0, "fusion": 0.0, "dem": 0.0}
        self._commands = np.zeros(4)

    # ------------------------------------------------------------------ reset
    def reset(self, world: World, seed: int = 0, flippers: np.ndarray | None = None) -> Observation:
        c = self.config
        if self.world is None or world != self.world:
            self.lidar = RotatingLidar(world_solids(world), c.lidar, np.random.default_rng([seed, 1]), self.sim.robot)
        self.world = world
        self.sim.reset(world, seed=seed, flippers=flippers)
        m = self.sim.model
        self._flip_qadr = np.array([m.joint(f"{n}_joint").qposadr[0] for n in FLIPPER_NAMES])
        self._flip_dadr = np.array([m.joint(f"{n}_joint").dofadr[0] for n in FLIPPER_NAMES])
        self._gravity = -m.opt.gravity.copy()  # an accelerometer at rest reads +g up
        dyn = np.random.default_rng([seed, 3])
        d = c.dynamics
        delay, tau = (dyn.uniform(*d.delay), dyn.uniform(*d.lag)) if d.enabled else (0.0, 0.0)
        self.lag = FlipperLag(delay, tau)
        self._commands = self.sim.targets
        self.lag.reset(self._commands)
        self.lidar.rng = np.random.default_rng([seed, 1])
        self.lidar.phase = float(np.random.default_rng([seed, 4]).uniform(0, 2 * math.pi))
        self.odometry = OdometryDrift(c.odometry, np.random.default_rng([seed, 2]))
        self.point_map = PointMap(c.map_voxel, c.map_max_bytes)
        self.seed = seed
        self._vel = self.sim.data.qvel[0:3].copy()
        self._sample = self._take_sample(self.sim.targets, np.zeros(3))
        self._dem: np.ndarray | None = None
        self.last_step = None
        start = self._sample
        self.warmup_scan = Scan.empty()
        if c.lead_in > 0:
            self.warmup_scan = self._lead_in_scan(world, start, -c.lidar.period if c.warmup else 0.0)
            self._fuse([(self.warmup_scan, start)])
        if c.warmup:
            # lines of the turn before t = 0, cast from the start pose (negative stamps)
            turn = self.lidar.scan(-c.lidar.period, 0.0, lambda t: (
                start.true_position, start.true_quat, start.flipper_angles))
            self._fuse([(turn, start)])
            self.warmup_scan = Scan.concatenate([self.warmup_scan, turn])
        return self.observation()

    def _lead_in_scan(self, world: World, start: ProxySample, t_end: float) -> Scan:
        """The lines cast while the robot drove ``lead_in`` metres up to the start pose, ending at ``t_end``, as
        one cloud in base_link at the start pose (what the warm-up's cloud is too, so a recorder publishes both
        the same way): the robot's own returns go first, each line in its own pose, as ``_fuse`` drops them."""
        rot = quat_to_matrix(start.true_quat)
        heading = np.array([rot[0, 0], rot[1, 0], 0.0])
        heading /= max(np.linalg.norm(heading), 1e-9)
        span = self.config.lead_in / world.speed
        scan = self.lidar.scan(t_end - span, t_end, lambda t: (
            start.true_position + heading * world.speed * (t - t_end), start.true_quat, start.flipper_angles))
        keep = ~self.lidar.body.contains(scan.points, start.flipper_angles, self.config.self_filter_margin)
        world_points = scan.world_points[keep]
        return Scan((world_points - start.true_position) @ rot, world_points, scan.stamps[keep], scan.line[keep],
                    np.zeros(int(keep.sum()), dtype=bool))

    def _clip(self, targets: np.ndarray) -> np.ndarray:
        if targets.shape != (4,) or not np.all(np.isfinite(targets)):
            raise ValueError(f"flipper targets must be four finite angles, got {targets}")
        return np.clip(targets, self.robot.flipper_lower, self.robot.flipper_upper)

    # ------------------------------------------------------------------ stepping
    def _take_sample(self, servo: np.ndarray, accel_world: np.ndarray) -> ProxySample:
        d = self.sim.data
        pos, quat = d.qpos[0:3].copy(), d.qpos[3:7].copy()
        est_pos, est_quat = self.odometry.estimate(pos, quat)
        rot = quat_to_matrix(quat)
        return ProxySample(
            time=float(d.time), true_position=pos, true_quat=quat, estimated_position=est_pos, estimated_quat=est_quat,
            map_to_odom=self.odometry.map_to_odom(), angular_velocity=d.qvel[3:6].copy(),  # free joint: body frame
            linear_acceleration=rot.T @ (accel_world + self._gravity), flipper_angles=d.qpos[self._flip_qadr].copy(),
            flipper_velocities=d.qvel[self._flip_dadr].copy(), servo_targets=servo,
        )

    def step(self, flipper_targets: np.ndarray, dt: float) -> Observation:
        if self.world is None:
            raise RuntimeError("reset() must be called before step()")
        sim, c = self.sim, self.config
        targets = self._clip(np.asarray(flipper_targets, dtype=float))
        self._commands = targets
        self.lag.command(sim.time, targets)
        n = max(1, int(round(dt / c.substep)))
        h = dt / n
        scans, samples = [], []
        for _ in range(n):
            if sim.status != RUNNING:
                break
            before = self._sample
            servo = self.lag.advance(sim.time, h)
            t0 = time.perf_counter()
            sim.step(servo, h)
            vel = sim.data.qvel[0:3].copy()
            t1 = time.perf_counter()
            after = self._take_sample(servo, (vel - self._vel) / max(sim.time - before.time, 1e-9))
            self._vel = vel
            scans.append(self.lidar.scan(before.time, after.time, _interpolator(before, after)))
            samples.append(after)
            self._sample = after
            self.timing["physics"] += t1 - t0
            self.timing["lidar"] += time.perf_counter() - t1
        t0 = time.perf_counter()
        # one map update per step: a point map insert costs more per call than per point
        self._fuse([(scan, sample) for scan, sample in zip(scans, samples, strict=True)])
        self.timing["fusion"] += time.perf_counter() - t0
        self.last_step = ProxyStep(Scan.concatenate(scans), tuple(samples), targets.copy(), (self.world.speed, 0.0))
        self._dem = None
        return self.observation()

    def _fuse(self, scans: list[tuple[Scan, ProxySample]]) -> None:
        """Add scans' returns to the point map under the drifting estimate at each scan's end, robot removed."""
        parts = []
        for scan, sample in scans:
            if not len(scan):
                continue
            keep = np.linalg.norm(scan.points - self.lidar.mount, axis=1) <= self.config.fuse_range
            # the self filter runs on each scan in base_link at its own flipper angles, before fusion: a body
            # return fused into the map would stay behind as a phantom obstacle once the robot moves on
            keep &= ~self.lidar.body.contains(scan.points, sample.flipper_angles, self.config.self_filter_margin)
            t, q = sample.map_to_odom
            parts.append(scan.world_points[keep] @ quat_to_matrix(q).T + t)
        if parts and sum(len(p) for p in parts):
            self.point_map.add(np.concatenate(parts))

    # ------------------------------------------------------------------ observation
    def dem(self) -> np.ndarray:
        """The DEM from the point map around the estimated pose (cached until the next step)."""
        if self._dem is None:
            t0 = time.perf_counter()
            s = self._sample
            if np.all(np.isfinite(s.estimated_position)) and np.all(np.isfinite(s.estimated_quat)):
                pts = self.point_map.crop(s.estimated_position, self._crop_radius)
                self._dem = self.builder.build(pts, s.estimated_position, s.estimated_quat)
            else:
                self._dem = np.full(self.dem_spec.shape, np.nan, dtype=np.float32)
            self.timing["dem"] += time.perf_counter() - t0
        return self._dem

    def observation(self) -> Observation:
        s = self._sample
        roll, pitch, _ = euler_from_quat(s.true_quat)
        if not (math.isfinite(roll) and math.isfinite(pitch)):
            roll = pitch = 0.0
        x, y = s.true_position[0], s.true_position[1]
        return Observation(
            dem=self.dem(), pitch=pitch, roll=roll, flipper_angles=np.nan_to_num(s.flipper_angles), time=s.time,
            progress=float(x - self.world.start_x), lateral=float(y),  # the start line is y = 0
        )

    # ------------------------------------------------------------------ snapshots
    def get_state(self) -> SimState:
        """A complete snapshot; it copies the point map, so it costs its size (``point_map.nbytes``)."""
        inner = self.sim.get_state()
        proxy = {
            "commands": self._commands.copy(), "lag": (list(self.lag.queue), self.lag.output.copy()),
            "drawn": (self.lag.delay, self.lag.tau, self.lidar.phase),
            "odometry": self.odometry.state(), "odometry_rng": self.odometry.rng.bit_generator.state,
            "lidar_rng": self.lidar.rng.bit_generator.state, "map": self.point_map.points().copy(),
            "vel": self._vel.copy(), "sample": self._sample, "last_step": self.last_step,
        }
        return replace(inner, extra={**inner.extra, "proxy": proxy})

    def set_state(self, state: SimState) -> None:
        """Restore a ``get_state`` snapshot. The point map is rebuilt from the snapshot's points, so the
        DEM is restored exactly, but which points a full map evicts first may differ from the original."""
        if "proxy" not in state.extra:
            raise ValueError("set_state: not a RealityProxy snapshot (take it with RealityProxy.get_state)")
        self.sim.set_state(state)
        p = state.extra["proxy"]
        self._commands = p["commands"].copy()
        self.lag.queue = deque((t, u.copy()) for t, u in p["lag"][0])
        self.lag.output = p["lag"][1].copy()
        self.lag.delay, self.lag.tau, self.lidar.phase = p["drawn"]  # a snapshot of another seed's run
        self.odometry.set_state(p["odometry"])
        self.odometry.rng.bit_generator.state = p["odometry_rng"]
        self.lidar.rng.bit_generator.state = p["lidar_rng"]
        self.point_map = PointMap(self.config.map_voxel, self.config.map_max_bytes)
        if len(p["map"]):
            self.point_map.add(p["map"])
        self._vel = p["vel"].copy()
        self._sample = p["sample"]
        self.last_step = p["last_step"]
        self._dem = None

    # ------------------------------------------------------------------ interface
    @property
    def status(self) -> str:
        return self.sim.status

    @property
    def events(self):
        return self.sim.events

    @property
    def time(self) -> float:
        return self.sim.time

    @property
    def targets(self) -> np.ndarray:
        """The last flipper command (before the delay and lag)."""
        return self._commands.copy()

    def pose(self) -> tuple[np.ndarray, np.ndarray]:
        """True world position and (w, x, y, z) orientation of base_link."""
        return self.sim.pose()

    @property
    def sample(self) -> ProxySample:
        """The latest sensor sample (after reset: the start state), as a recorder publishes it."""
        return self._sample

    def estimated_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """The drifting estimate of base_link in the map frame."""
        return self._sample.estimated_position.copy(), self._sample.estimated_quat.copy()

    def config_dict(self) -> dict:
        """Everything that defines this proxy's behaviour, for recording with outputs."""
        out = self.sim.config_dict()
        out.update(backend="reality_proxy", proxy=asdict(self.config))
        if hasattr(self, "lag"):
            out["drawn"] = {"flipper_delay": self.lag.delay, "flipper_lag": self.lag.tau,
                            "params": list(self.sim.get_state().extra["params"]),
                            "odometry_scale": self.odometry.scale_error}
        return out


def _interpolator(a: ProxySample, b: ProxySample):
    """pose_fn over one substep: linear in position and flipper angles, nlerp in orientation."""
    span = max(b.time - a.time, 1e-12)

    def pose_fn(t: float):
        s = min(max((t - a.time) / span, 0.0), 1.0)
        return ((1 - s) * a.true_position + s * b.true_position, nlerp(a.true_quat, b.true_quat, s),
                (1 - s) * a.flipper_angles + s * b.flipper_angles)

    return pose_fn
