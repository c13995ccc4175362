"""The embedded simulator as a ROS 2 robot, without ROS: one world on the reality proxy (or the exact simulator),
stepped one control period at a time, producing what the robot publishes and taking what a robot takes.

``RobotSim`` is the pure core of ``robot_sim_node``: ``start()`` resets the world and returns the first
messages, ``step()`` simulates one control period with the latest flipper command and returns that period's
messages (``flipper_control.robot_sim.messages``: the recorder's own builders), and when the run has ended it
returns the result on ``RESULT_TOPIC`` too. Commands come in as the rosbags dataclasses the ROS adapter
decodes: std_msgs/Float64MultiArray on /flipper_controller/commands (four positions in the controller's joint
order, ``JOINT_NAMES``) and geometry_msgs/Twist on /cmd_vel. Pacing (real time, a real-time factor, lockstep)
is ``flipper_control.robot_sim.runner``'s job; this module never sleeps.

Stepping is exactly ``sim.rollout.run_episode``'s: a command received before step k is applied at the start of
step k for ``control_dt`` seconds, so a controller answering every step in lockstep gives the run
``flipper eval`` gives (``test/test_robot_sim.py``). The proxy models the robot's command dead time itself
(``ProxyDynamics.delay``).

Backends: ``proxy`` is ``sim.reality_proxy.RealityProxy`` with the reality config (perturbed dynamics, noisy
lidar, drifting odometry). ``exact`` is the exact simulator's run (``flipper eval --reality sim``: the same
per-run ``SimNoise``, no flipper lag, no drift) seen by a noise-free lidar; it also publishes the simulator's
exact DEM on ``exact_map_topic``, which a policy fed from it turns into the in-process exact evaluation.

The result is a std_msgs/String holding JSON (``RunResult.to_dict`` plus world, seed, backend and timing): a
run's level comes with a list of reasons and, on sectioned worlds, one level per section -- nested data that
diagnostic_msgs' flat key/value pairs would have to encode anyway, and that `ros2 topic echo` shows readably.
It is published transient-local (latched), so a bench or test that subscribes late still gets it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from flipper_control.robot_sim.messages import (
    JOINT_NAMES,
    MessageSink,
    exact_map_message,
    initial_messages,
    step_messages,
)
from perception.messages import msg
from sim.simulator import RUNNING

__all__ = ["BACKENDS", "EXACT_MAP_TOPIC", "RESULT_TOPIC", "CommandError", "RobotSim", "RobotSimConfig",
           "declared_parameters", "exact_backend_config"]

RESULT_TOPIC = "/robot_sim/result"
EXACT_MAP_TOPIC = "/robot_sim/exact_elevation_map"
BACKENDS = ("proxy", "exact")


class CommandError(ValueError):
    """A flipper command or /cmd_vel that cannot be applied; the message names the topic and the problem."""


@dataclass(frozen=True)
class RobotSimConfig:
    """``robot_sim_node``'s parameters (every field is a ROS parameter of the same name).

    ``world``: a built-in world (``flat``, ``test/stairs_up``, ``proxy/staircase``, ``training/3``) or a world
    YAML file. ``reality_config``: a reality-proxy YAML (``flipper ... --reality-config``), empty for the
    defaults; only for ``backend: proxy``. ``seed``: the run's noise seed (as ``flipper eval --seed``).
    ``real_time_factor``: simulated seconds per wall second. ``lockstep``: after each step wait (up to
    ``command_timeout`` wall seconds) for the controller's next command, then step at once: deterministic
    closed loops for tests and benches. In real time the node waits at most ``command_wait`` after publishing a
    step for the answer to it, then steps on with the latest command. ``start_timeout``: wall seconds to hold at
    t = 0 (republishing the start state every ``hold_period``) until the first command arrives; 0 starts at
    once. ``epoch``: stamps are ``epoch + simulated seconds``; negative takes the wall clock at start (a robot's
    stamps), ``1700000000`` gives the stamps of ``flipper record``. ``max_time``: end the run after this many
    simulated seconds (0: the world's time limit). ``max_speed``/``max_yaw_rate``: /cmd_vel is clamped to these.
    ``exit_when_done``: stop the node once the result is out (otherwise it idles, as a parked robot).
    ``result_file``: also write the result JSON there (atomically)."""

    world: str = "flat"
    reality_config: str = ""
    backend: str = "proxy"
    seed: int = 0
    real_time_factor: float = 1.0
    lockstep: bool = False
    control_dt: float = 0.1
    command_wait: float = 0.05
    command_timeout: float = 2.0
    start_timeout: float = 15.0
    hold_period: float = 0.5
    epoch: float = -1.0
    max_time: float = 0.0
    max_speed: float = 1.0
    max_yaw_rate: float = 1.0
    publish_clock: bool = True
    exit_when_done: bool = False
    result_file: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.backend not in BACKENDS:
            problems.append(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "exact" and self.reality_config:
            problems.append("reality_config applies to backend 'proxy' only (the exact backend has no reality)")
        if not self.world:
            problems.append("world must name a built-in world or a world YAML file")
        if self.seed < 0:
            problems.append(f"seed must be >= 0, got {self.seed}")
        for name, low in (("real_time_factor", 0.0), ("control_dt", 0.0), ("command_wait", None),
                          ("command_timeout", 0.0), ("start_timeout", None), ("hold_period", 0.0), ("max_time", None),
                          ("max_speed", None), ("max_yaw_rate", None)):
            value = getattr(self, name)
            ok = math.isfinite(value) and (value > low if low is not None else value >= 0)
            if not ok:
                problems.append(f"{name} must be {'> 0' if low is not None else '>= 0'}, got {value}")
        if not math.isfinite(self.epoch):
            problems.append(f"epoch must be finite, got {self.epoch}")
        if problems:
            raise ValueError("robot_sim: " + "; ".join(problems))


# (low, high) of the numeric parameters, for the ROS adapter's ranges (None: unbounded on that side)
PARAMETER_RANGES: dict[str, tuple[float | None, float | None]] = {
    "seed": (0, None), "real_time_factor": (1e-3, 100.0), "control_dt": (1e-3, 1.0), "command_wait": (0.0, 1.0),
    "command_timeout": (1e-3, 60.0), "start_timeout": (0.0, 600.0), "hold_period": (0.01, 10.0),
    "epoch": (-1.0, None), "max_time": (0.0, None), "max_speed": (0.0, 5.0), "max_yaw_rate": (0.0, 5.0),
}


def declared_parameters() -> list[str]:
    """The names of the ROS parameters ``robot_sim_node`` declares (the launch-file test reads them)."""
    return [f.name for f in fields(RobotSimConfig)]


def exact_backend_config():
    """The ``RealityProxyConfig`` that makes the proxy run the exact simulator's run: ``SimNoise``'s ranges (as
    ``MujocoSimulator()`` draws them per seed), no flipper delay or lag, no range noise or dropouts, no drift."""
    from sim.lidar import LidarConfig
    from sim.mujoco_sim import SimNoise
    from sim.odometry import OdometryConfig
    from sim.reality_config import ProxyDynamics, RealityProxyConfig

    n = SimNoise()
    dynamics = ProxyDynamics(enabled=n.enabled, friction=n.friction, mass=n.mass, flipper_speed=n.flipper_speed,
                             start_x=n.start_x, start_yaw=n.start_yaw, delay=(0.0, 0.0), lag=(0.0, 0.0))
    return RealityProxyConfig(dynamics=dynamics, lidar=LidarConfig(range_sigma=0.0, dropout=0.0),
                              odometry=OdometryConfig(enabled=False))


def _drive_actuators(proxy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(actuator ids, wheel radii, side sign: +1 left, -1 right) of every driven pseudo-wheel."""
    from sim.mjcf import wheel_names, wheel_radii

    model = proxy.sim.model
    names = wheel_names(proxy.robot)
    ids = np.array([model.actuator(n).id for n in names])
    side = np.array([1.0 if "left" in n else -1.0 for n in names])
    return ids, np.asarray(wheel_radii(proxy.robot)), side


class RobotSim:
    """One run of one world as a robot (see the module docstring). Not thread-safe: the runner serialises calls."""

    def __init__(self, config: RobotSimConfig | None = None, world=None, wall_epoch: float | None = None):
        """``world``: a ``sim.world.World`` in place of ``config.world`` (tests). ``wall_epoch``: the wall clock
        for ``epoch < 0`` (default: now)."""
        import time

        from sim.reality_config import load_reality_config
        from sim.reality_proxy import RealityProxy
        from sim.world_sets import resolve_world

        self.config = c = config or RobotSimConfig()
        self.world = world if world is not None else resolve_world(c.world)
        if c.backend == "exact":
            proxy_config = exact_backend_config()
        else:
            proxy_config = load_reality_config(c.reality_config) if c.reality_config else None
        self.proxy = RealityProxy(config=proxy_config)
        epoch = c.epoch if c.epoch >= 0 else (time.time() if wall_epoch is None else wall_epoch)
        self.sink = MessageSink(float(epoch))
        self._targets: np.ndarray | None = None
        self._drive: tuple[float, float] | None = None  # (v, w) from /cmd_vel; None: the world's speed
        self.commands = 0
        self.bad_inputs = 0
        self.steps = 0
        self.result: dict[str, Any] | None = None
        self._start: list[tuple[str, Any]] = []

    # ------------------------------------------------------------------ inputs
    def on_command(self, message: Any) -> np.ndarray:
        """A std_msgs/Float64MultiArray on /flipper_controller/commands: four finite positions (rad) in
        ``JOINT_NAMES`` order, applied from the next step (clipped to the joint ranges by the simulator). Raises
        CommandError naming the problem; the last good command stays."""
        data = np.asarray(getattr(message, "data", None), dtype=float).reshape(-1) if hasattr(message, "data") else None
        if data is None or data.shape != (len(JOINT_NAMES),) or not np.all(np.isfinite(data)):
            self.bad_inputs += 1
            shown = "no data field" if data is None else f"{data.size} values {np.round(data, 4).tolist()[:8]}"
            raise CommandError(f"/flipper_controller/commands: expected {len(JOINT_NAMES)} finite positions (rad) in "
                               f"the order {', '.join(JOINT_NAMES)}; got {shown}; keeping the last command")
        self._targets = data.copy()
        self.commands += 1
        return data

    def on_cmd_vel(self, message: Any) -> tuple[float, float]:
        """A geometry_msgs/Twist on /cmd_vel: linear.x (m/s) and angular.z (rad/s) drive the tracks from the next
        step, clamped to ``max_speed``/``max_yaw_rate``. Until the first one the tracks run at the world's speed
        (as ``flipper eval`` drives). Raises CommandError for non-finite values."""
        try:
            v, w = float(message.linear.x), float(message.angular.z)
        except (AttributeError, TypeError, ValueError):
            self.bad_inputs += 1
            raise CommandError("/cmd_vel: not a geometry_msgs/Twist (needs linear.x and angular.z)") from None
        if not (math.isfinite(v) and math.isfinite(w)):
            self.bad_inputs += 1
            raise CommandError(f"/cmd_vel: linear.x and angular.z must be finite, got {v}, {w}; keeping the last")
        c = self.config
        self._drive = (min(max(v, -c.max_speed), c.max_speed), min(max(w, -c.max_yaw_rate), c.max_yaw_rate))
        return self._drive

    def _apply_drive(self) -> None:
        if self._drive is None:
            return
        v, w = self._drive
        ids, radii, side = self._wheels
        half = self.proxy.robot.track_separation / 2
        # skid steer: a left turn (w > 0) slows the left track and speeds up the right one
        self.proxy.sim.data.ctrl[ids] = (v - side * w * half) / radii

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        """Whether the run goes on (started, not ended)."""
        return self.result is None and self.proxy.world is not None and self.proxy.status == RUNNING

    @property
    def time(self) -> float:
        """Simulated seconds since the start."""
        return self.proxy.time

    @property
    def horizon(self) -> float:
        """Simulated seconds after which the run ends at the latest."""
        limit = self.world.effective_time_limit
        return min(self.config.max_time, limit) if self.config.max_time > 0 else limit

    def start(self) -> list[tuple[str, Any]]:
        """Reset the world (seed ``config.seed``) and return the start messages (kept for ``start_messages``)."""
        self.proxy.reset(self.world, seed=self.config.seed)
        self._wheels = _drive_actuators(self.proxy)
        self._targets = None
        self.result = None
        self.steps = 0
        self._start = initial_messages(self.sink, self.proxy, self.config.publish_clock) + self._exact_map()
        return list(self._start)

    def start_messages(self) -> list[tuple[str, Any]]:
        """The start state again (republished while the node waits for its controller)."""
        return list(self._start)

    def _exact_map(self) -> list[tuple[str, Any]]:
        return exact_map_message(self.sink, self.proxy, EXACT_MAP_TOPIC) if self.config.backend == "exact" else []

    def step(self) -> list[tuple[str, Any]]:
        """Simulate one control period with the latest command (the start posture before any) and return its
        messages; when the run ends, the result message comes last. Empty once the run has ended."""
        if not self.running:
            return []
        targets = self._targets if self._targets is not None else self.proxy.targets
        self._apply_drive()
        dt = self.config.control_dt
        if self.config.max_time > 0:  # a cut short run ends on time; the world's own limit the simulator enforces
            dt = min(dt, max(self.config.max_time - self.time, 1e-6))
        self.proxy.step(targets, dt)
        self.steps += 1
        out = step_messages(self.sink, self.proxy, self.config.publish_clock) + self._exact_map()
        if self.proxy.status != RUNNING or self.time >= self.horizon - 1e-9:
            out.append((RESULT_TOPIC, self.finish()))
        return out

    def finish(self, **extra: Any) -> Any:
        """Judge the run (also one cut short by ``max_time``) and return the result message (std_msgs/String, JSON)."""
        from sim.scoring import judge_run

        p = self.proxy
        run = judge_run(self.world, p.status, p.events, p.time, p.observation().progress, p.limits, seed=self.config.seed)
        self.result = {"world": self.world.name, "backend": self.config.backend, "status": p.status, **run.to_dict(),
                       "steps": self.steps, "commands": self.commands, "bad_inputs": self.bad_inputs, **extra}
        return self.result_message()

    def result_message(self) -> Any:
        """The result as std_msgs/String JSON (after the run has ended)."""
        if self.result is None:
            raise RuntimeError("the run has not ended yet")
        return msg("std_msgs/msg/String")(data=json.dumps(self.result, sort_keys=True))

    def write_result(self, path: str | Path, **extra: Any) -> Path:
        """Write the result (plus ``extra``) as JSON to ``path``, atomically."""
        from sim.io_utils import write_json_atomic

        if self.result is None:
            raise RuntimeError("the run has not ended yet")
        self.result = {**self.result, **extra}
        write_json_atomic(Path(path), self.result)
        return Path(path)

    def diagnostics(self) -> dict[str, str]:
        """Key/values for /diagnostics: world, simulated time, steps, commands and bad inputs, the level when done."""
        out = {"world": self.world.name, "backend": self.config.backend, "seed": str(self.config.seed),
               "sim_time": f"{self.time:.2f}", "steps": str(self.steps), "commands": str(self.commands),
               "bad_inputs": str(self.bad_inputs)}
        if self.result is not None:
            out["level"] = self.result["level"]
        return out


def with_overrides(config: RobotSimConfig, **changes: Any) -> RobotSimConfig:
    """``config`` with some fields replaced (validated again)."""
    return replace(config, **changes)
