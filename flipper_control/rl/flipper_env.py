"""The flipper task for the RL toolbox: ``FlipperTraversal-v0`` with a reward from progress, safety and the run's
level, the planner's discrete fine action set (or continuous targets), and stacked NaN-aware DEM observations.

``FlipperRLEnv`` wraps ``flipper_control.gym_env.FlipperEnv`` (the registered ``FlipperTraversal-v0``) and keeps its
episodes exactly: one episode is one simulator run over one world at the world's constant speed, ending when the
simulator's status leaves RUNNING (goal reached, a fail-level safety event, stuck, off the course, or the world's time
limit); there is no other horizon. Worlds are drawn uniformly from the ``training`` set (``sim.world_sets``,
``world_count`` worlds from generator seed ``world_seed``) with the env's own generator, seeded by the first
``reset(seed=...)``; the test worlds are never trained on.

Reward (``reward_terms``), per decision, and why each term:

- ``progress``: ``w_progress * (x_t - x_{t-1})`` metres along the course. The dense signal: a run that gets further
  is better, and it reaches every decision, not only the last one (seed 000's cost is a traversal cost).
- ``safety``: ``-w_warn`` per new warn-level safety event in the step (pitch or roll past the warn angle, a hard
  impact; ``sim.safety`` reports each criterion once per run). These are what makes the judge call a finished run
  "unclear", so the agent hears of them when they happen instead of only through the run's level at the end.
  Fail-level events end the run and are paid through the level term.
- ``level``: on the terminating step, ``w_level * value(level) - w_fail * [level == fail]`` with seed 000's
  values good 1.0, unclear 0.5, fail 0.0 (``sim.scoring.judge_run``, the very judge of the Table I evaluation). The
  return thus carries the evaluation's score, and the extra failure penalty keeps "fail early" from ever beating
  "finish unclear" (a failed run also loses the progress it did not make).

Actions: ``action_mode="discrete"``: the index of one of the planner's fine postures (``planning.actions.FINE``:
7 target flipper configurations), each held for one planner expansion, ``FINE.dt`` = 0.2 s by default -- the
increments the guided planner of seed 000 searches with. ``action_mode="continuous"``: four values in [-1, 1],
mapped linearly onto the flipper joint range (``mid + half * a``), so that ``tanh`` of the NaN-aware policy's last
layer is exactly an action (CUP fine-tunes that policy).

Observations: a flat float32 vector, the last ``frame_stack`` frames oldest first (``common.FrameStack``), each frame
``[values (rows*cols), mask (rows*cols), proprio (6)]``: DEM heights in metres with missing (non-finite) cells set to
0, the mask 1 measured / 0 missing (as ``NanAwarePolicy.split_dem`` does), and pitch, roll, four flipper angles with
non-finite values set to 0. ``split_frames`` takes a batch apart again for the networks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from flipper_control.gym_env import ENV_ID, FlipperEnv, RewardConfig
from flipper_control.rl.common import FrameStack
from planning.actions import action_set
from sim.safety import WARN
from sim.scoring import LEVEL_VALUE, judge_run
from sim.simulator import FAILED

__all__ = ["ENV_ID", "FlipperRLConfig", "FlipperRLEnv", "N_PROPRIO", "encode_frame", "frame_size", "reward_terms",
           "scored_on_test_worlds",
           "config_from_checkpoint", "evaluate_agent", "split_frames"]

N_PROPRIO = 6  # pitch, roll, four flipper angles (Observation.proprio)
ACTION_MODES = ("discrete", "continuous")


@dataclass(frozen=True)
class FlipperRLConfig:
    """The flipper RL task: worlds, actions, observation stack and reward weights (module doc has the terms)."""

    world_set: str = "training"
    world_count: int = 24  # as many as the loop plans on (configs: training_worlds 24)
    world_seed: int = 0
    action_mode: str = "discrete"
    action_set: str = "fine"  # planning.actions.action_set spec: fine = 7 postures held 0.2 s
    control_dt: float | None = None  # seconds per decision; None: the action set's dt (discrete) or 0.1 (continuous)
    frame_stack: int = 3
    w_progress: float = 1.0  # per metre
    w_warn: float = 1.0  # per new warn-level safety event
    w_level: float = 5.0  # times the run's level value, on the last step
    w_fail: float = 5.0  # once more on a failed run

    def __post_init__(self):
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"FlipperRLConfig.action_mode must be one of {', '.join(ACTION_MODES)}, got {self.action_mode!r}")
        if not (isinstance(self.frame_stack, int) and 1 <= self.frame_stack <= 16):
            raise ValueError(f"FlipperRLConfig.frame_stack must be an integer in 1..16, got {self.frame_stack!r}")
        if self.world_count < 1:
            raise ValueError(f"FlipperRLConfig.world_count must be >= 1, got {self.world_count}")
        if self.control_dt is not None and not (math.isfinite(self.control_dt) and 0 < self.control_dt <= 10):
            raise ValueError(f"FlipperRLConfig.control_dt must be in (0, 10] s, got {self.control_dt!r}")
        bad = [f.name for f in fields(self) if f.name.startswith("w_")
               and not (math.isfinite(getattr(self, f.name)) and getattr(self, f.name) >= 0)]
        if bad:
            raise ValueError(f"FlipperRLConfig: {', '.join(bad)} must be finite and >= 0 (weights are magnitudes)")

    @property
    def dt(self) -> float:
        """Seconds one decision holds its action."""
        if self.control_dt is not None:
            return float(self.control_dt)
        return action_set(self.action_set).dt if self.action_mode == "discrete" else 0.1

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


def reward_terms(config: FlipperRLConfig, progress_delta: float, new_warnings: int, status: str,
                 level: str | None) -> dict[str, float]:
    """The weighted terms of one step (their sum is the reward). ``level`` is the judged run's level on the
    terminating step (``good``/``unclear``/``fail``) and None before."""
    terms = {"progress": config.w_progress * float(progress_delta), "safety": -config.w_warn * int(new_warnings),
             "level": 0.0}
    if level is not None:
        if level not in LEVEL_VALUE:
            raise ValueError(f"unknown run level {level!r}; expected one of {', '.join(LEVEL_VALUE)}")
        terms["level"] = config.w_level * LEVEL_VALUE[level] - (config.w_fail if level == "fail" else 0.0)
    elif status == FAILED:
        raise ValueError("a failed step needs the judged level (the run's result)")
    return terms


def frame_size(dem_shape: tuple[int, int]) -> int:
    """Length of one encoded frame: values + mask + proprio."""
    return 2 * dem_shape[0] * dem_shape[1] + N_PROPRIO


def encode_frame(dem: np.ndarray, proprio: np.ndarray) -> np.ndarray:
    """One frame ``[values, mask, proprio]`` (float32): non-finite DEM cells -> value 0, mask 0; non-finite proprio -> 0."""
    dem = np.asarray(dem, dtype=np.float32)
    proprio = np.asarray(proprio, dtype=np.float32)
    if dem.ndim != 2 or proprio.shape != (N_PROPRIO,):
        raise ValueError(f"encode_frame needs a 2-D DEM and {N_PROPRIO} proprio values, got {dem.shape} and {proprio.shape}")
    measured = np.isfinite(dem)
    values = np.where(measured, dem, 0.0).astype(np.float32)
    return np.concatenate([values.ravel(), measured.astype(np.float32).ravel(),
                           np.nan_to_num(proprio, nan=0.0, posinf=0.0, neginf=0.0)]).astype(np.float32)


def split_frames(obs: torch.Tensor, frame_stack: int, dem_shape: tuple[int, int]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of stacked observations (B, k * frame) -> values (B, k, rows, cols), mask (B, k, rows, cols),
    proprio (B, k, 6), oldest frame first."""
    rows, cols = dem_shape
    cells = rows * cols
    f = obs.reshape(obs.shape[0], frame_stack, frame_size(dem_shape))
    return (f[..., :cells].reshape(-1, frame_stack, rows, cols), f[..., cells:2 * cells].reshape(-1, frame_stack, rows, cols),
            f[..., 2 * cells:])


class FlipperRLEnv(gymnasium.Env):
    """``FlipperTraversal-v0`` as the RL toolbox trains on it (module doc: reward, actions, observations).

    ``simulator``: any ``sim.simulator.Simulator`` (default ``MujocoSimulator()``); ``worlds``: overrides the
    training set (tests, evaluation). ``info`` adds to the inner env's: ``reward_terms``, ``sim_seconds`` (simulated
    seconds of this step) and, on the last step, ``level`` and ``run`` (the judged ``sim.scoring.RunResult``).
    ``sim_seconds_total`` counts every simulated second this env has stepped (the sample cost: simulator hours =
    it / 3600).
    """

    metadata = {"render_modes": []}

    def __init__(self, config: FlipperRLConfig | None = None, simulator=None, worlds=None):
        self.config = c = config or FlipperRLConfig()
        if worlds is None:
            from sim.world_sets import load_set

            worlds = load_set(c.world_set, c.world_count, c.world_seed)
        # the inner env's own reward is not used: its weights are set to 0 and ours are computed here
        zero = RewardConfig(progress=0.0, success=0.0, fail=0.0, flipper_change=0.0, pitch=0.0)
        self.inner = FlipperEnv(worlds=worlds, control_dt=c.dt, simulator=simulator, reward=zero)
        self.dem_shape = tuple(self.inner.observation_space["dem"].shape)
        robot = self.inner.robot
        self._mid = (robot.flipper_upper + robot.flipper_lower) / 2
        self._half = (robot.flipper_upper - robot.flipper_lower) / 2
        self.postures = action_set(c.action_set).array
        if c.action_mode == "discrete":
            self.action_space = spaces.Discrete(len(self.postures))
        else:
            self.action_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        n = c.frame_stack * frame_size(self.dem_shape)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float32)
        self.stack = FrameStack(c.frame_stack)
        self.sim_seconds_total = 0.0
        self._warnings = 0
        self._progress = 0.0
        self._time = 0.0

    @property
    def sim(self):
        """The simulator under the env."""
        return self.inner.sim

    def targets(self, action) -> np.ndarray:
        """The four flipper targets (radians) of an action of this env's action space."""
        if self.config.action_mode == "discrete":
            a = int(action)
            if not 0 <= a < len(self.postures):
                raise ValueError(f"action {action!r} is not an index of the {len(self.postures)} postures of "
                                 f"action set {self.config.action_set!r}")
            return self.postures[a].copy()
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (4,) or not np.all(np.isfinite(a)):
            raise ValueError(f"a continuous action is 4 finite values in [-1, 1], got {a!r}")
        return self._mid + self._half * np.clip(a, -1.0, 1.0)

    def normalise(self, targets: np.ndarray) -> np.ndarray:
        """Inverse of ``targets`` for the continuous mode: flipper angles -> [-1, 1]."""
        return np.clip((np.asarray(targets, dtype=np.float64) - self._mid) / self._half, -1.0, 1.0)

    def _encode(self, obs: dict) -> np.ndarray:
        return encode_frame(obs["dem"], obs["proprio"])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """A new run on a world drawn from the env's generator (or ``options['world']``, see ``FlipperEnv``)."""
        super().reset(seed=seed)
        obs, info = self.inner.reset(seed=seed, options=options)
        self._warnings, self._progress, self._time = 0, float(info["progress"]), float(info["time"])
        return self.stack.reset(self._encode(obs)), info

    def step(self, action):
        """Hold ``action`` for ``config.dt`` seconds; returns (obs, reward, terminated, False, info)."""
        obs, _, terminated, _, info = self.inner.step(self.targets(action))
        warnings = sum(1 for e in self.sim.events if e.severity == WARN)
        level = info["result"]["level"] if terminated else None
        terms = reward_terms(self.config, info["progress"] - self._progress, warnings - self._warnings, info["status"],
                             level)
        stepped = float(info["time"]) - self._time
        self.sim_seconds_total += stepped
        self._warnings, self._progress, self._time = warnings, float(info["progress"]), float(info["time"])
        info["reward_terms"], info["sim_seconds"] = terms, stepped
        if terminated:
            info["level"] = level
            info["run"] = judge_run(self.inner.world, info["status"], self.sim.events, self.sim.time, info["progress"],
                                    self.inner.limits, seed=self.inner.noise_seed)
        return self.stack.push(self._encode(obs)), float(sum(terms.values())), terminated, False, info


def evaluate_agent(act, config: FlipperRLConfig, worlds, runs: int, seed: int, simulator=None, progress=None):
    """Run ``act(stacked observation) -> action`` ``runs`` times on each world, run ``r`` with noise seed
    ``seed + r`` (as ``learning.evaluation.evaluate`` does, so scores compare run for run); returns
    (``WorldEvaluation`` per world, episode returns, simulated seconds). ``progress(worlds done, worlds)``."""
    from flipper_control.learning.evaluation import WorldEvaluation

    env = FlipperRLEnv(config, simulator=simulator, worlds=list(worlds))
    evaluations, returns = [], []
    for i, world in enumerate(env.inner.worlds):
        ev = WorldEvaluation(world.name)
        for r in range(runs):
            obs, _ = env.reset(options={"world": i, "noise_seed": seed + r})
            total, done, info = 0.0, False, {}
            while not done:
                obs, reward, done, _, info = env.step(act(obs))
                total += reward
            ev.runs.append(info["run"])
            returns.append(total)
        evaluations.append(ev)
        if progress is not None:
            progress(i + 1, len(env.inner.worlds))
    return evaluations, returns, env.sim_seconds_total


def config_from_checkpoint(path, metadata: dict) -> FlipperRLConfig:
    """The ``FlipperRLConfig`` a checkpoint was trained with (``metadata.rl.env_config``); a ``CheckpointError``
    naming the sidecar when it is missing or invalid."""
    from sim.checkpoint_io import CheckpointError, checkpoint_paths

    sidecar = checkpoint_paths(path)[1]
    data = (metadata.get("rl") or {}).get("env_config")
    if not isinstance(data, dict) or set(data) - {f.name for f in fields(FlipperRLConfig)}:
        raise CheckpointError(f"{sidecar}: metadata.rl.env_config is missing or has unknown fields: not a checkpoint of "
                              "the flipper RL task")
    try:
        return FlipperRLConfig(**data)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{sidecar}: metadata.rl.env_config: {exc}") from None


def scored_on_test_worlds(algorithm: str, env_id: str, seed: int, act, config: FlipperRLConfig, record: dict,
                      run_config: dict, eval_runs: int):
    """The registry's ``RunResult`` of a flipper learner's training ``record`` (the dict its ``train_flipper_*``
    returns): ``act`` evaluated on the 8 test worlds, ``eval_runs`` runs each (noise seeds 0..), with the Table I
    score, the training simulator hours and the learning curve."""
    from flipper_control.rl.common import RunResult
    from sim.world_sets import load_set

    evs, returns, sim_s = evaluate_agent(act, config, load_set("test"), eval_runs, 0)
    rets = record["episode_returns"]
    return RunResult(algorithm=algorithm, env=env_id, seed=seed, eval_mean_return=float(np.mean(returns)),
                     eval_std_return=float(np.std(returns)), eval_episodes=len(returns), env_steps=record["env_steps"],
                     eval_env_steps=int(round(sim_s / config.dt)), seconds=record["wall_seconds"],
                     config={**run_config, "test_score": float(sum(ev.score for ev in evs)),
                             "test_scores": {ev.world: ev.score for ev in evs},
                             "train_sim_hours": record["train_sim_seconds"] / 3600, "cpu_seconds": record["cpu_seconds"]},
                     train_episodes=len(rets), train_mean_return=float(np.mean(rets)) if rets else None,
                     best_step=record["best_step"], checkpoint=record["checkpoint"],
                     curve={"episode_end_steps": record["episode_end_steps"], "episode_returns": rets,
                            "evals": [[s, m] for s, m, _ in record["evals"]]})
