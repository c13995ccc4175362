"""A gymnasium environment over the flipper-control task, for users who bring their own RL library.

``FlipperEnv`` wraps any ``sim.simulator.Simulator`` (by default the embedded ``MujocoSimulator``):
each episode drives the robot across one world at the world's constant speed while the agent sets
the four absolute flipper targets every ``control_dt`` seconds. Observations are the robot-centric DEM
and the proprioceptive vector of seed 000 (pitch, roll, four flipper angles); rewards are a weighted sum
of small terms configured by ``RewardConfig``. The environment is registered as
``FlipperTraversal-v0``::

    import gymnasium
    import flipper_control.gym_env  # noqa: F401  (registers the id)

    env = gymnasium.make("FlipperTraversal-v0", control_dt=0.1)
    # or, without the import: gymnasium.make("flipper_control.gym_env:FlipperTraversal-v0")
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from sim.dem import DemSpec
from sim.robot import RobotSpec
from sim.safety import SafetyLimits
from sim.scoring import judge_run
from sim.simulator import FAILED, RUNNING, SUCCESS, Observation, Simulator
from sim.world import World

__all__ = ["ENV_ID", "FlipperEnv", "RewardConfig", "reward_terms"]

ENV_ID = "FlipperTraversal-v0"

# Generous observation bounds: terrain heights stay within a few metres of base_link on every world
# we can describe (primitives are at most 1.5 m high), euler pitch is in [-pi/2, pi/2] by construction.
_DEM_BOUND = 10.0
_PROPRIO_LOW = np.array([-math.pi / 2, -math.pi, -math.pi, -math.pi, -math.pi, -math.pi], dtype=np.float32)
_PROPRIO_HIGH = -_PROPRIO_LOW
_PROPRIO_HIGH[0] = math.pi / 2


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the reward terms; every weight is a magnitude (>= 0), the sign is fixed by the term.

    Per step, with ``p`` the progress along the course in metres, ``a`` the (clipped) flipper targets
    in radians and ``pitch`` the body pitch in radians after the step::

        r = progress * (p_t - p_{t-1})
            + success              (once, on the step that reaches the goal)
            - fail                 (once, on a failure: safety limit, stuck, left the course, time limit, blow-up)
            - flipper_change * sum_i |a_t[i] - a_{t-1}[i]|      (a_{-1}: the reset posture, all zeros)
            - pitch * |pitch| * control_dt

    With the defaults, driving across the 3 m flat test world in any fixed posture earns about +13,
    while getting stuck before a step earns about -9.5.
    """

    progress: float = 1.0  # per metre of progress along the course
    success: float = 10.0  # bonus once the required length is traversed
    fail: float = 10.0  # penalty once the run fails (including the world's time limit)
    flipper_change: float = 0.05  # per radian of total change of the four flipper targets, per step
    pitch: float = 0.1  # per radian of |pitch| per second (so the total does not depend on control_dt)

    def __post_init__(self) -> None:
        bad = [f.name for f in fields(self) if not (math.isfinite(getattr(self, f.name)) and getattr(self, f.name) >= 0)]
        if bad:
            raise ValueError(f"RewardConfig: {', '.join(bad)} must be finite and >= 0 (weights are magnitudes; "
                             "set a weight to 0 to switch its term off)")


def reward_terms(config: RewardConfig, progress_delta: float, target_change: np.ndarray, pitch: float, status: str,
                 dt: float) -> dict[str, float]:
    """The weighted reward terms of one step (their sum is the reward); see ``RewardConfig``."""
    return {
        "progress": config.progress * float(progress_delta),
        "success": config.success if status == SUCCESS else 0.0,
        "fail": -config.fail if status == FAILED else 0.0,
        "flipper_change": -config.flipper_change * float(np.abs(target_change).sum()),
        "pitch": -config.pitch * abs(float(pitch)) * dt,
    }


class FlipperEnv(gymnasium.Env):
    """Traverse a world with learned flipper control (seed 000's task as a gymnasium ``Env``).

    Args:
        worlds: worlds to draw episodes from (uniformly, with ``self.np_random``); default: the 8
            simulated test worlds (``sim.world_sets.load_set('test')``).
        control_dt: seconds between two actions (the simulator rounds it to whole physics steps).
        simulator: any ``Simulator``; default ``MujocoSimulator()`` with its default seeded noise. Its
            ``robot`` (flipper limits), ``dem_spec`` (DEM shape) and ``limits`` (judging) attributes are
            used when present, else the defaults of ``RobotSpec``, ``DemSpec`` and ``SafetyLimits``.
        reward: reward weights (``RewardConfig``).
        render_mode: only ``None`` is supported (there is no viewer; use the ``flipper sim`` CLI or
            MuJoCo's own viewer on ``simulator.model`` for pictures).

    Spaces:
        observation: ``Dict(dem=Box(DemSpec.shape), proprio=Box(6))``, float32. ``dem`` are terrain
            heights relative to base_link (front rows first, see ``sim.dem``); ``proprio`` is
            ``[pitch, roll, fl, fr, rl, rr]`` in radians (``Observation.proprio``). Values are clipped to
            the (generous) bounds, which only matters after a physics blow-up, and that ends the episode.
        action: ``Box(4)`` float32, absolute flipper targets within the robot's joint limits, in the
            order and angle convention of ``sim.robot``. Out-of-range actions are clipped; NaN or a
            wrong shape raises ``ValueError``. The flippers move towards the targets at motor speed.

    Episodes end with ``terminated=True`` as soon as the simulator's status leaves RUNNING: success
    (the goal was reached) or failure (a fail-level safety event, stuck, off the course, or the
    world's time limit). ``truncated`` is always False: the simulator enforces each world's time limit
    itself and judges it as a failure, exactly like the evaluation does. Wrap the env in
    ``gymnasium.wrappers.TimeLimit`` for a shorter training horizon.

    ``reset(options=...)`` accepts ``{'world': index | name | World}`` to pick the world (a ``World``
    need not be in ``worlds``) and ``{'noise_seed': int}`` to fix the simulator's noise seed (otherwise
    drawn from ``self.np_random``).
    ``info`` holds ``world``, ``noise_seed``, ``status``, ``progress`` and ``time``; the reset info adds
    ``world_index`` (None for a ``World`` passed in options), step infos add
    ``reward_terms``, and the terminating step adds ``result``: the judged run (``sim.scoring.RunResult``)
    as a dict, with its ``world`` name.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        worlds: list[World] | None = None,
        control_dt: float = 0.1,
        simulator: Simulator | None = None,
        reward: RewardConfig | None = None,
        render_mode: str | None = None,
    ):
        if render_mode is not None:
            raise ValueError(f"FlipperEnv supports only render_mode=None, got {render_mode!r}")
        if not (isinstance(control_dt, (int, float)) and math.isfinite(control_dt) and control_dt > 0):
            raise ValueError(f"control_dt must be a positive number of seconds, got {control_dt!r}")
        if worlds is None:
            from sim.world_sets import load_set

            worlds = load_set("test")
        self.worlds = list(worlds)
        if not self.worlds:
            raise ValueError("FlipperEnv needs at least one world (pass worlds=None for the 8 test worlds)")
        if simulator is None:
            from sim.mujoco_sim import MujocoSimulator

            simulator = MujocoSimulator()
        self.sim = simulator
        self.control_dt = float(control_dt)
        self.reward_config = reward or RewardConfig()
        self.render_mode = render_mode
        self.robot: RobotSpec = getattr(simulator, "robot", None) or RobotSpec()
        self.limits: SafetyLimits = getattr(simulator, "limits", None) or SafetyLimits()
        dem_shape = (getattr(simulator, "dem_spec", None) or DemSpec()).shape

        self.observation_space = spaces.Dict({
            "dem": spaces.Box(-_DEM_BOUND, _DEM_BOUND, shape=dem_shape, dtype=np.float32),
            "proprio": spaces.Box(_PROPRIO_LOW, _PROPRIO_HIGH, dtype=np.float32),
        })
        self.action_space = spaces.Box(
            np.full(4, self.robot.flipper_lower, dtype=np.float32),
            np.full(4, self.robot.flipper_upper, dtype=np.float32),
            dtype=np.float32,
        )
        self.world: World | None = None
        self.noise_seed = 0
        self._targets = np.zeros(4)
        self._progress = 0.0

    # ------------------------------------------------------------------ helpers
    def _pick_world(self, choice: Any) -> tuple[int | None, World]:
        """(index in ``self.worlds`` or None, world) for ``options['world']``."""
        if choice is None:
            index = int(self.np_random.integers(len(self.worlds)))
            return index, self.worlds[index]
        if isinstance(choice, World):
            return (self.worlds.index(choice) if choice in self.worlds else None), choice
        if isinstance(choice, (int, np.integer)) and not isinstance(choice, bool):
            if not -len(self.worlds) <= choice < len(self.worlds):
                raise ValueError(f"options['world'] = {choice} is out of range for {len(self.worlds)} worlds")
            index = int(choice) % len(self.worlds)
            return index, self.worlds[index]
        if isinstance(choice, str):
            names = [w.name for w in self.worlds]
            if choice in names:
                return names.index(choice), self.worlds[names.index(choice)]
            raise ValueError(f"options['world'] = {choice!r} is not one of this env's worlds: {', '.join(names)}")
        raise TypeError(f"options['world'] must be an index, a world name or a World, got {type(choice).__name__}")

    def _observe(self, obs: Observation) -> dict[str, np.ndarray]:
        return {
            "dem": np.clip(np.asarray(obs.dem, dtype=np.float32), -_DEM_BOUND, _DEM_BOUND),
            "proprio": np.clip(obs.proprio(), _PROPRIO_LOW, _PROPRIO_HIGH),
        }

    def _info(self, obs: Observation) -> dict[str, Any]:
        return {"world": self.world.name, "noise_seed": self.noise_seed, "status": self.sim.status,
                "progress": float(obs.progress), "time": float(self.sim.time)}

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode on a world drawn from ``self.np_random`` (or ``options['world']``)."""
        super().reset(seed=seed)
        options = options or {}
        index, world = self._pick_world(options.get("world"))
        noise_seed = options.get("noise_seed")
        self.noise_seed = int(self.np_random.integers(2**31 - 1)) if noise_seed is None else int(noise_seed)
        self.world = world
        obs = self.sim.reset(self.world, seed=self.noise_seed)
        self._targets = np.zeros(4)  # the simulator's reset posture
        self._progress = float(obs.progress)
        info = self._info(obs)
        info["world_index"] = index
        return self._observe(obs), info

    def step(self, action):
        """Apply flipper targets for ``control_dt`` seconds; returns (obs, reward, terminated, False, info)."""
        if self.world is None:
            raise RuntimeError("FlipperEnv.step() called before reset()")
        if self.sim.status != RUNNING:
            raise RuntimeError("FlipperEnv.step() called after the episode terminated; call reset()")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (4,):
            raise ValueError(f"action must have shape (4,) (front-left, front-right, rear-left, rear-right), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action}")
        targets = np.clip(action, self.robot.flipper_lower, self.robot.flipper_upper)
        obs = self.sim.step(targets, self.control_dt)
        status = self.sim.status
        terms = reward_terms(self.reward_config, obs.progress - self._progress, targets - self._targets, obs.pitch, status,
                             self.control_dt)
        self._targets, self._progress = targets, float(obs.progress)
        terminated = status != RUNNING
        info = self._info(obs)
        info["reward_terms"] = terms
        if terminated:
            result = judge_run(self.world, status, self.sim.events, self.sim.time, obs.progress, self.limits,
                               seed=self.noise_seed)
            info["result"] = {"world": result.world, **result.to_dict()}
        return self._observe(obs), float(sum(terms.values())), terminated, False, info


if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="flipper_control.gym_env:FlipperEnv")
