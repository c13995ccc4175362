"""The embedded simulator: a MuJoCo model of the tracked robot on a world's terrain.

Tracks are rows of velocity-driven pseudo-wheels spinning at the world's constant speed; the four
flippers are position servos whose set-points move towards the commanded targets no faster than the
flipper motors (``RobotSpec.flipper_speed``) and whose torque is capped. The safety monitor runs at
every physics step. MuJoCo is deterministic on one thread, so with the complete integration state
(including the solver warm start) restored, stepping reproduces a trajectory bit for bit.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass

import mujoco
import numpy as np

from sim.dem import DemExtractor, DemSpec
from sim.mjcf import FORBIDDEN_GEOMS, build_mjcf, wheel_radii
from sim.robot import FLIPPER_NAMES, RobotSpec, SimPhysics
from sim.safety import SafetyLimits, SafetyMonitor, euler_from_quat, roll_pitch_from_quat
from sim.simulator import FAILED, RUNNING, SUCCESS, Observation, SimState, Simulator
from sim.terrain import HeightGrid, world_solids
from sim.world import World

_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION
_BAD_QPOS, _BAD_QVEL, _BAD_QACC = (int(mujoco.mjtWarning.mjWARN_BADQPOS), int(mujoco.mjtWarning.mjWARN_BADQVEL),
                                   int(mujoco.mjtWarning.mjWARN_BADQACC))
_log = logging.getLogger(__name__)


def _route_warnings_to_logging() -> None:
    """MuJoCo writes warnings to MUJOCO_LOG.TXT in the working directory; send them to logging instead."""
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(lambda msg: _log.warning("MuJoCo: %s", msg))


@dataclass(frozen=True)
class SimNoise:
    """Seeded per-run perturbations, so that one deterministic policy gives slightly different runs
    (seed 000 relied on Gazebo's randomness for this). Each value is a relative (friction, mass,
    flipper speed) or absolute (start offset in m, start yaw in rad) half-range of a uniform draw.
    With ``enabled`` false, every seed gives the same run."""

    enabled: bool = True
    friction: float = 0.10
    mass: float = 0.05
    flipper_speed: float = 0.10
    start_x: float = 0.05
    start_yaw: float = 0.02


class MujocoSimulator(Simulator):
    """``Simulator`` backed by MuJoCo (see module docstring)."""

    def __init__(
        self,
        robot: RobotSpec | None = None,
        physics: SimPhysics | None = None,
        dem: DemSpec | None = None,
        limits: SafetyLimits | None = None,
        noise: SimNoise | None = None,
        grid_resolution: float = 0.01,
    ):
        self.robot = robot or RobotSpec()
        self.physics = physics or SimPhysics()
        self.dem_spec = dem or DemSpec()
        self.limits = limits or SafetyLimits()
        self.noise = noise or SimNoise()
        self.grid_resolution = grid_resolution
        self.world: World | None = None
        self._world_key = ""
        self.model: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None
        self._status = RUNNING
        self._targets = np.zeros(4)

    # ------------------------------------------------------------------ model
    def _load(self, world: World) -> None:
        _route_warnings_to_logging()
        solids = world_solids(world)
        self.grid = HeightGrid.for_world(world, solids, self.grid_resolution)
        self.dem_extractor = DemExtractor(self.grid, self.dem_spec)
        xml = build_mjcf(self.robot, solids, (world.start_x, 0.0, 1.0), physics=self.physics, model_name=world.name)
        self.model = m = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(m)
        self.xml = xml
        self.world = world
        self._world_key = json.dumps(world.to_dict(), sort_keys=True)
        self._flip_qadr = np.array([m.jnt_qposadr[m.joint(f"{n}_joint").id] for n in FLIPPER_NAMES])
        self._flip_act = np.array([m.actuator(n).id for n in FLIPPER_NAMES])
        self._radii = np.array(wheel_radii(self.robot))
        self._n_wheels = len(self._radii)
        self._forbidden = {m.geom(n).id: n for n in FORBIDDEN_GEOMS}
        self._robot_geoms = np.array([g for g in range(m.ngeom) if m.geom_conaffinity[g] == 1])
        self._nominal_friction = m.geom_friction[self._robot_geoms, 0].copy()
        self._nominal_mass = m.body_mass.copy()
        self._nominal_inertia = m.body_inertia.copy()
        self._state_size = mujoco.mj_stateSize(m, _STATE_SPEC)

    def _apply_params(self, params: tuple[float, float, float]) -> None:
        friction, mass, flip_speed = params
        m = self.model
        m.geom_friction[self._robot_geoms, 0] = self._nominal_friction * friction
        m.body_mass[:] = self._nominal_mass * mass
        m.body_inertia[:] = self._nominal_inertia * mass
        self._flip_speed = self.robot.flipper_speed * flip_speed
        self._params = params

    def spawn_height(self, x: float, y: float = 0.0) -> float:
        """base_link height that puts the lowest wheels just above the terrain under the robot."""
        r = self.robot
        reach_x, reach_y = r.wheel_base / 2 + r.wheel_radius, r.track_separation / 2 + 0.05
        xs = np.linspace(x - reach_x, x + reach_x, 40)
        ys = np.linspace(y - reach_y, y + reach_y, 8)
        top = float(self.grid.height_at(xs[:, None], ys[None, :]).max())
        return top + self.robot.wheel_radius + 0.005

    # ------------------------------------------------------------------ interface
    def reset(self, world: World, seed: int = 0, flippers: np.ndarray | None = None) -> Observation:
        if self.world is None or world != self.world:
            self._load(world)
        m, d = self.model, self.data
        rng = np.random.default_rng(seed)
        nz = self.noise
        if nz.enabled:
            draw = rng.uniform(-1.0, 1.0, size=5)
            params = (1 + nz.friction * draw[0], 1 + nz.mass * draw[1], 1 + nz.flipper_speed * draw[2])
            dx, dyaw = nz.start_x * draw[3], nz.start_yaw * draw[4]
        else:
            params, dx, dyaw = (1.0, 1.0, 1.0), 0.0, 0.0
        self._apply_params(params)
        mujoco.mj_resetData(m, d)
        x0 = world.start_x + dx
        d.qpos[0:3] = (x0, 0.0, self.spawn_height(x0))
        d.qpos[3:7] = (math.cos(dyaw / 2), 0.0, 0.0, math.sin(dyaw / 2))
        posture = self._clip(np.zeros(4) if flippers is None else np.asarray(flippers, dtype=float))
        d.qpos[self._flip_qadr] = posture
        d.ctrl[: self._n_wheels] = world.speed / self._radii
        d.ctrl[self._flip_act] = posture
        self._targets = posture.copy()
        mujoco.mj_forward(m, d)
        self._last_x = x0
        self._start_x, self._start_y = world.start_x, 0.0
        self.monitor = SafetyMonitor(self.limits)
        self.monitor.reset(0.0, 0.0, d.qvel[0:3].copy())
        self._status = RUNNING
        self.seed = seed
        return self.observation()

    def _clip(self, targets: np.ndarray) -> np.ndarray:
        if targets.shape != (4,):
            raise ValueError(f"flipper targets must have shape (4,), got {targets.shape}")
        if not np.all(np.isfinite(targets)):
            raise ValueError(f"flipper targets must be finite, got {targets}")
        return np.clip(targets, self.robot.flipper_lower, self.robot.flipper_upper)

    def step(self, flipper_targets: np.ndarray, dt: float) -> Observation:
        if self.model is None:
            raise RuntimeError("reset() must be called before step()")
        if self._status != RUNNING:
            return self.observation()
        m, d, world, mon = self.model, self.data, self.world, self.monitor
        self._targets = targets = self._clip(np.asarray(flipper_targets, dtype=float))
        h = m.opt.timestep
        n = max(1, int(round(dt / h)))
        max_move = self._flip_speed * h
        # A physics step costs about 40 us. The bookkeeping around it (set-points, attitude, contacts) runs on Python
        # floats and lists: numpy calls on 4-element arrays cost about a microsecond each, and it took 7 us per
        # physics step with them, 3 without. The arithmetic is the same IEEE double arithmetic as numpy's, so
        # trajectories are those of the plain numpy loop bit for bit (test_simulator checks it).
        ctrl, act = d.ctrl, self._flip_act.tolist()
        goals = targets.tolist()
        setpoints = [float(ctrl[i]) for i in act]
        moving = [k for k in range(4) if setpoints[k] != goals[k]]  # set-points not yet at their targets
        goal_x, t_limit = world.goal_x, world.effective_time_limit
        forbidden = self._forbidden
        max_speed = self.limits.max_speed
        unstable_before = self._instability_count()
        last_x = self._last_x  # last finite position, for locating a blow-up
        qpos, qvel = d.qpos, d.qvel
        for _ in range(n):
            if moving:  # rate-limited set-points: each moves at most max_move towards its target per physics step
                still = []
                for k in moving:
                    step = goals[k] - setpoints[k]
                    step = max_move if step > max_move else (-max_move if step < -max_move else step)
                    setpoints[k] = value = setpoints[k] + step
                    ctrl[act[k]] = value
                    if value != goals[k]:
                        still.append(k)
                moving = still
            mujoco.mj_step(m, d)
            x = float(qpos[0])
            vel = qvel[0:3]
            vx, vy, vz = vel.tolist()
            # Auto-reset is disabled in the model, so an unstable state stays visible as NaN / huge values.
            if not (math.isfinite(x) and abs(vx) + abs(vy) + abs(vz) < max_speed):
                where = float((x if math.isfinite(x) else last_x) - self._start_x)
                mon.fail(d.time, where, "blowup", "physics blow-up (NaN or exploding velocity)")
                self._status = FAILED
                break
            roll, pitch = roll_pitch_from_quat(*qpos[3:7].tolist())
            touched = None
            ncon = d.ncon
            if ncon:
                geoms = d.contact.geom[:ncon].ravel().tolist()
                if not forbidden.keys().isdisjoint(geoms):
                    touched = next(forbidden[g] for g in geoms if g in forbidden)
            last_x = x
            progress = x - self._start_x
            if mon.check(d.time, progress, qpos[1] - self._start_y, roll, pitch, vel, touched):
                self._status = FAILED
                break
            if x >= goal_x:
                self._status = SUCCESS
                break
            if d.time >= t_limit:
                mon.fail(d.time, progress, "time", f"time limit {t_limit:g} s reached at {progress:.2f} m of {world.length:g} m")
                self._status = FAILED
                break
        if self._status == RUNNING and self._instability_count() != unstable_before:
            # MuJoCo flagged an unstable state that the velocity check above did not see
            self.monitor.fail(d.time, float("nan"), "blowup", "physics blow-up (MuJoCo reported an unstable state)")
            self._status = FAILED
        self._last_x = last_x
        return self.observation()

    def _instability_count(self) -> int:
        w = self.data.warning
        return int(w[_BAD_QPOS].number + w[_BAD_QVEL].number + w[_BAD_QACC].number)

    def observation(self) -> Observation:
        d = self.data
        roll, pitch, yaw = euler_from_quat(d.qpos[3:7])
        x, y, z = d.qpos[0], d.qpos[1], d.qpos[2]
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z) and math.isfinite(yaw)):
            dem = np.zeros(self.dem_spec.shape, dtype=np.float32)
            roll = pitch = 0.0
        else:
            dem = self.dem_extractor.extract(x, y, z, yaw)
        flippers = np.nan_to_num(d.qpos[self._flip_qadr].copy())
        return Observation(
            dem=dem, pitch=pitch, roll=roll, flipper_angles=flippers, time=float(d.time),
            progress=float(x - self._start_x), lateral=float(y - self._start_y),
        )

    def get_state(self) -> SimState:
        buf = np.empty(self._state_size)
        mujoco.mj_getState(self.model, self.data, buf, _STATE_SPEC)
        return SimState(
            world_key=self._world_key, physics=buf, monitor=self.monitor.state.copy(), targets=self._targets.copy(),
            events=tuple(self.monitor.events), status=self._status, extra={"params": self._params, "last_x": self._last_x},
        )

    def set_state(self, state: SimState) -> None:
        if self.model is None or state.world_key != self._world_key:
            raise ValueError("set_state: the snapshot was taken on another world; reset() to that world first")
        if state.extra.get("params") != self._params:
            self._apply_params(state.extra["params"])
        mujoco.mj_setState(self.model, self.data, state.physics, _STATE_SPEC)
        self.monitor.state[:] = state.monitor
        self.monitor.events = list(state.events)
        self._targets = state.targets.copy()
        self._status = state.status
        self._last_x = state.extra["last_x"]

    @property
    def status(self) -> str:
        return self._status

    @property
    def events(self):
        return self.monitor.events

    @property
    def time(self) -> float:
        return float(self.data.time) if self.data is not None else 0.0

    @property
    def targets(self) -> np.ndarray:
        return self._targets.copy()

    def pose(self) -> tuple[np.ndarray, np.ndarray]:
        """World position and (w, x, y, z) orientation of base_link."""
        return self.data.qpos[0:3].copy(), self.data.qpos[3:7].copy()

    def config_dict(self) -> dict:
        """Everything that defines this simulator's behaviour, for recording with outputs."""
        return {
            "backend": "mujoco", "mujoco": mujoco.__version__, "robot": asdict(self.robot), "physics": asdict(self.physics),
            "dem": asdict(self.dem_spec), "limits": asdict(self.limits), "noise": asdict(self.noise),
        }
