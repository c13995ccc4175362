"""What the RL algorithms share: seeding, epsilon schedules, the environments and their frame stacks, greedy
evaluation over N episodes, the divergence check, the result of a run and its learning-curve PNG.

Cores do not print: a training function reports through ``progress(done, total, info)``, which is
``flipper_control.progress.Step.update`` when a command runs it (a bar on a terminal, one summary line elsewhere).

Environments (``ENVS``): ``CartPole-v1`` (gymnasium, seed 003's benchmark) and ``Asterix-ram`` (ale-py 0.12,
seed 004's): the 128 RAM bytes as the observation, each action repeated for 2, 3 or 4 frames drawn uniformly,
no sticky actions (the seed describes its environment so: the Gym ``-v4`` settings), 9 actions, episodes end when
the 3 lives are lost (or at 108,000 frames).
"""

from __future__ import annotations

import io
import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from sim.io_utils import write_bytes_atomic

__all__ = ["DivergedError", "ENVS", "EvalTracker", "FrameStack", "Progress", "RunResult", "check_env", "check_finite_loss",
           "evaluate", "exponential_epsilon", "greedy_action", "linear_schedule", "make_env", "obs_spec",
           "save_learning_curve", "seed_everything"]

# progress(done, total, info): Step.update's signature
Progress = Callable[[int, int, str], None]

ENVS = {
    "CartPole-v1": "gymnasium classic control: balance a pole; return 500 at most, 475 over 100 episodes = solved",
    "Asterix-ram": "ale-py Asterix, 128 RAM bytes, frame skip 2-4, no sticky actions (seed 004's setting)",
}


class DivergedError(RuntimeError):
    """A training loss became NaN or infinite; the run stopped and the last good checkpoint (if any) is kept."""


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch (network initialisation, nothing else draws from it) and return the run's numpy generator, from
    which every other random choice (exploration, replay sampling, environment seeds) is drawn."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def exponential_epsilon(step: int, start: float, end: float, decay_steps: float) -> float:
    """Seed 003's schedule: ``end + (start - end) * exp(-step / decay_steps)``."""
    return end + (start - end) * math.exp(-step / decay_steps)


def linear_schedule(step: int, start: float, end: float, duration: int) -> float:
    """``start`` moving linearly to ``end`` over ``duration`` steps, then ``end``."""
    if step >= duration:
        return end
    return start + (end - start) * step / duration


def check_env(env_id: str, allowed: tuple[str, ...] | None = None, algorithm: str | None = None) -> None:
    """A ``ValueError`` naming the allowed environments for one the toolbox (or ``algorithm``) does not know."""
    names = tuple(ENVS) if allowed is None else allowed
    if env_id not in names:
        who = f"--algo {algorithm}" if algorithm else "the RL toolbox"
        raise ValueError(f"unknown environment {env_id!r} for {who}; allowed: {', '.join(names)}")


def make_env(env_id: str):
    """A fresh gymnasium environment by toolbox name (seeded by its first ``reset(seed=...)``)."""
    import gymnasium as gym

    check_env(env_id)
    if env_id == "Asterix-ram":
        import ale_py

        gym.register_envs(ale_py)
        return gym.make("ALE/Asterix-v5", obs_type="ram", frameskip=(2, 5), repeat_action_probability=0.0,
                        max_num_frames_per_episode=108_000)
    return gym.make(env_id)


def obs_spec(env) -> tuple[int, int, np.dtype]:
    """(observation size, number of actions, observation dtype) of a flat-observation, discrete-action env."""
    space = env.observation_space
    if len(space.shape) != 1 or not hasattr(env.action_space, "n"):
        raise ValueError(f"the DQN family needs flat observations and discrete actions; got {space} and {env.action_space}")
    return int(space.shape[0]), int(env.action_space.n), np.dtype(space.dtype)


class FrameStack:
    """The last ``k`` observations side by side (oldest first), the first one repeated after a reset: what lets a
    value function see motion in a single input (seed 004 stacks 5)."""

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"frame stack must be >= 1, got {k}")
        self.k = k
        self.frames: deque[np.ndarray] = deque(maxlen=k)

    def reset(self, obs: np.ndarray) -> np.ndarray:
        """Fill the stack with ``obs``; returns the stacked observation."""
        for _ in range(self.k):
            self.frames.append(obs)
        return self.get()

    def push(self, obs: np.ndarray) -> np.ndarray:
        """Add ``obs``, dropping the oldest; returns the stacked observation."""
        self.frames.append(obs)
        return self.get()

    def get(self) -> np.ndarray:
        """The stacked observation, shape ``(k * obs_dim,)``."""
        return np.concatenate(self.frames) if self.k > 1 else self.frames[-1]


def greedy_action(net: torch.nn.Module, obs: np.ndarray) -> int:
    """argmax_a Q(obs, a)."""
    with torch.no_grad():
        return int(net(torch.as_tensor(obs).unsqueeze(0)).argmax(1).item())


def evaluate(net: torch.nn.Module, env_id: str, episodes: int, seed: int, frame_stack: int = 1,
             epsilon: float = 0.0) -> tuple[list[float], int]:
    """Run ``episodes`` episodes with the greedy policy of ``net`` (epsilon-greedy with ``epsilon`` > 0, as Atari
    evaluations do so that a policy cannot stall forever); returns (returns, environment steps used). Episode
    ``i`` starts from ``reset(seed=seed + i)``, so two networks evaluated with one seed meet the same starts."""
    env = make_env(env_id)
    rng = np.random.default_rng(seed)
    stack = FrameStack(frame_stack)
    returns, steps = [], 0
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            state, total, done = stack.reset(obs), 0.0, False
            while not done:
                if epsilon > 0 and rng.random() < epsilon:
                    action = int(rng.integers(env.action_space.n))
                else:
                    action = greedy_action(net, state)
                obs, reward, terminated, truncated, _ = env.step(action)
                state, total, done = stack.push(obs), total + float(reward), terminated or truncated
                steps += 1
            returns.append(total)
    finally:
        env.close()
    return returns, steps


def check_finite_loss(loss: torch.Tensor, step: int, checkpoint: str | None, kept_step: int | None) -> None:
    """Raise ``DivergedError`` for a NaN or infinite loss, saying at which environment step and what was kept."""
    if bool(torch.isfinite(loss)):
        return
    kept = (f"the last good checkpoint {checkpoint} (step {kept_step}) is kept" if checkpoint and kept_step is not None
            else "no checkpoint had been written yet")
    raise DivergedError(f"training diverged: the loss became {float(loss.detach())} at environment step {step}; {kept} "
                        "(lower the learning rate, or clip rewards)")


@dataclass
class RunResult:
    """What a training run reports (the JSON of ``flipper rl train``)."""

    algorithm: str
    env: str
    seed: int
    eval_mean_return: float
    eval_std_return: float
    eval_episodes: int
    env_steps: int  # training environment steps (evaluation episodes not included; see eval_env_steps)
    eval_env_steps: int
    seconds: float
    config: dict
    train_episodes: int = 0
    train_mean_return: float | None = None  # over every training episode: seed 004's "average score"
    solved_at_step: int | None = None  # first step whose evaluation reached the config's target, if any
    best_step: int | None = None  # the step of the weights kept (and evaluated)
    checkpoint: str | None = None
    curve: dict = field(default_factory=dict)  # episode_end_steps, episode_returns, evals [[step, mean], ...]

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def save_learning_curve(path: str | Path, result: RunResult, window: int = 20) -> Path:
    """Write the learning curve as a PNG (atomically): training episode returns, their moving mean over ``window``
    episodes, and the periodic greedy evaluations, against environment steps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend state, works without a display

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    steps = np.asarray(result.curve.get("episode_end_steps", []), dtype=float)
    rets = np.asarray(result.curve.get("episode_returns", []), dtype=float)
    if rets.size:
        ax.plot(steps, rets, ".", ms=2, alpha=0.3, color="tab:blue", label="training episode")
        if rets.size >= window:
            mean = np.convolve(rets, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], mean, color="tab:blue", label=f"training, mean of {window}")
    evals = np.asarray(result.curve.get("evals", []), dtype=float).reshape(-1, 2)
    if evals.size:
        ax.plot(evals[:, 0], evals[:, 1], "o-", color="tab:orange", label="greedy evaluation")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(f"{result.algorithm} on {result.env} (seed {result.seed}): final evaluation "
                 f"{result.eval_mean_return:.1f} over {result.eval_episodes} episodes", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return write_bytes_atomic(path, buf.getvalue())


class EvalTracker:
    """Periodic greedy evaluations of a training run: keeps the best weights (and writes them as the checkpoint
    through ``save(step)``), and decides when a run with a target return is solved.

    A periodic evaluation that reaches ``target`` is confirmed by a final evaluation of ``final_episodes`` on other
    starts; if that also reaches it, the run is solved and stops. At the end of a run the kept (best) weights are
    evaluated over ``final_episodes`` on those other starts, so the reported figure is not the maximum of noisy
    periodic estimates.
    """

    def __init__(self, net: torch.nn.Module, env_id: str, seed: int, episodes: int, final_episodes: int,
                 target: float | None = None, frame_stack: int = 1, epsilon: float = 0.0,
                 save: Callable[[int], None] | None = None):
        self.net, self.env_id, self.frame_stack, self.epsilon = net, env_id, frame_stack, epsilon
        self.episodes, self.final_episodes, self.target, self.save = episodes, final_episodes, target, save
        # evaluation starts apart from training's (drawn from the run's generator) and periodic apart from final
        self.periodic_seed, self.final_seed = seed + 1_000_000, seed + 2_000_000
        self.evals: list[list[float]] = []
        self.best_mean, self.best_step, self.best_state = -math.inf, None, None
        self.final: tuple[list[float], int] | None = None  # (returns, steps) of the kept weights
        self.solved_at: int | None = None
        self.eval_steps = 0

    def _run(self, episodes: int, seed: int) -> tuple[list[float], int]:
        was_training = self.net.training
        self.net.eval()  # safe: nn.Module.eval() (evaluation mode), not Python's eval
        try:
            returns, steps = evaluate(self.net, self.env_id, episodes, seed, self.frame_stack, self.epsilon)
        finally:
            self.net.train(was_training)
        self.eval_steps += steps
        return returns, steps

    def periodic(self, step: int) -> bool:
        """Evaluate now; keep the weights if best so far; returns True when the run is solved."""
        returns, _ = self._run(self.episodes, self.periodic_seed)
        mean = float(np.mean(returns))
        self.evals.append([step, mean])
        if mean >= self.best_mean:
            self.best_mean, self.best_step = mean, step
            self.best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            self.final = None
            if self.save is not None:
                self.save(step)
        if self.target is not None and mean >= self.target and self.best_step == step:
            self.final = self._run(self.final_episodes, self.final_seed)
            if float(np.mean(self.final[0])) >= self.target:
                self.solved_at = step
                return True
        return False

    def finish(self) -> tuple[list[float], int]:
        """Load the kept weights into the network and return their final evaluation (returns, steps)."""
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)
        if self.final is None:
            self.final = self._run(self.final_episodes, self.final_seed)
        return self.final

    def result(self, algorithm: str, env_id: str, seed: int, env_steps: int, seconds: float, config: dict,
               episode_returns: list[float], episode_ends: list[int], checkpoint: str | None) -> RunResult:
        """The run's ``RunResult``: the kept weights' final evaluation (``finish``), the training episodes and the
        evaluations on the way, as every Q-learning run of the toolbox reports them."""
        final_returns, _ = self.finish()
        return RunResult(
            algorithm=algorithm, env=env_id, seed=seed, eval_mean_return=float(np.mean(final_returns)),
            eval_std_return=float(np.std(final_returns)), eval_episodes=len(final_returns), env_steps=env_steps,
            eval_env_steps=self.eval_steps, seconds=seconds, config=config, train_episodes=len(episode_returns),
            train_mean_return=float(np.mean(episode_returns)) if episode_returns else None,
            solved_at_step=self.solved_at, best_step=self.best_step, checkpoint=checkpoint,
            curve={"episode_end_steps": episode_ends, "episode_returns": episode_returns, "evals": self.evals},
        )
