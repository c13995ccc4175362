"""DQN as seed 003's lecture notes describe it, checked on CartPole-v1.

- a replay memory of past transitions, sampled uniformly, to break the correlation of consecutive steps;
- a target network, a copy of the Q-network synchronised every ``target_update_every`` steps, that gives the
  targets ``r + gamma * max_a Q_target(s', a)`` (0 after a terminal state);
- the Huber loss (``smooth_l1_loss``) between ``Q(s, a)`` and the target, each gradient element clamped to
  [-1, 1] as in the notes' ``optimize_model``;
- epsilon-greedy exploration with the notes' exponential decay ``end + (start - end) exp(-step / decay)``.

Where the notes leave a choice open we take what solves CartPole quickly on a CPU, the settings of the
rl-baselines3-zoo for CartPole-v1: Adam 2.3e-3 (the notes' tutorial used RMSprop), two hidden layers of 256 ReLU
units, batches of 64, and 128 updates every 256 steps against a target network synchronised after each round.
A time-limit truncation is not a terminal state: its next state is bootstrapped like any other.

The loop reads top to bottom: act, store, learn, sync, evaluate. Evaluations keep the best weights (written
as the checkpoint); a run with a ``target_return`` stops once the target is confirmed over
``final_eval_episodes`` greedy episodes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flipper_control.rl.checkpoint import save_agent
from flipper_control.rl.common import (
    EvalTracker,
    Progress,
    RunResult,
    check_env,
    check_finite_loss,
    exponential_epsilon,
    greedy_action,
    make_env,
    obs_spec,
    seed_everything,
)
from flipper_control.rl.networks import QNetwork, QNetworkConfig
from flipper_control.rl.replay import Batch, ReplayMemory

__all__ = ["ALGORITHM", "DQNConfig", "ENVS", "dqn_loss", "train"]

ALGORITHM = "dqn"
ENVS = ("CartPole-v1",)


@dataclass
class DQNConfig:
    """Hyperparameters of a DQN run (defaults: CartPole-v1)."""

    total_steps: int = 50_000  # environment steps at most (``--steps``)
    buffer_size: int = 50_000
    batch_size: int = 64
    gamma: float = 0.99
    lr: float = 2.3e-3
    hidden: tuple[int, ...] = (256, 256)
    init: str = "torch_default"  # the notes' tutorial network keeps PyTorch's initialisation (seed 004 uses He)
    learning_starts: int = 1_000  # random steps that fill the memory before the first update
    train_every: int = 256  # every train_every steps, gradient_steps updates against one fixed target network
    gradient_steps: int = 128
    target_update_every: int = 256  # steps between copies of the Q-network into the target network
    eps_start: float = 1.0
    eps_end: float = 0.04
    eps_decay_steps: float = 5_000.0
    grad_clamp: float | None = 1.0  # every gradient element clamped to [-grad_clamp, grad_clamp] (seed 003)
    max_grad_norm: float | None = None  # or the gradient's norm clipped (stable-baselines3: 10)
    eval_every: int = 2_500  # DQN on CartPole oscillates: frequent evaluations catch (and keep) a good network
    eval_episodes: int = 10
    final_eval_episodes: int = 100
    target_return: float | None = 475.0  # CartPole-v1 is solved at a mean of 475 over 100 episodes

    def to_dict(self) -> dict:
        """JSON-ready."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


def dqn_loss(q_net: torch.nn.Module, target_net: torch.nn.Module, batch: Batch, gamma: float) -> torch.Tensor:
    """Huber loss between Q(s, a) and r + gamma (1 - done) max_a' Q_target(s', a')."""
    obs, next_obs = torch.as_tensor(batch.obs), torch.as_tensor(batch.next_obs)
    actions = torch.as_tensor(batch.actions).unsqueeze(1)
    rewards, dones = torch.as_tensor(batch.rewards), torch.as_tensor(batch.dones)
    q = q_net(obs).gather(1, actions).squeeze(1)
    with torch.no_grad():
        target = rewards + gamma * (1.0 - dones) * target_net(next_obs).max(1).values
    return F.smooth_l1_loss(q, target)


def train(env_id: str, *, steps: int | None = None, seed: int = 0, out: str | Path | None = None,
          progress: Progress | None = None, config: DQNConfig | None = None) -> RunResult:
    """Train DQN on ``env_id`` for at most ``steps`` environment steps (default: the config's); the best weights go
    to checkpoint ``out`` (if given). Raises ``DivergedError`` on a NaN/inf loss, keeping the last checkpoint."""
    check_env(env_id, ENVS, ALGORITHM)
    c = config or DQNConfig()
    total = int(steps if steps is not None else c.total_steps)
    t0 = time.perf_counter()
    rng = seed_everything(seed)
    env = make_env(env_id)
    obs_dim, n_actions, obs_dtype = obs_spec(env)
    net_config = QNetworkConfig(obs_dim, n_actions, tuple(c.hidden), init=c.init)
    q_net, target_net = QNetwork(net_config), QNetwork(net_config)
    target_net.load_state_dict(q_net.state_dict())
    optimizer = torch.optim.Adam(q_net.parameters(), lr=c.lr)
    memory = ReplayMemory(c.buffer_size, (obs_dim,), np.float32)
    saved_step: list[int] = []

    def save(step: int) -> None:
        if out is not None:
            save_agent(out, q_net, algorithm=ALGORITHM, env_id=env_id, rl={"frame_stack": 1, "step": step},
                       metadata={"seed": seed, "config": c.to_dict()})
            saved_step[:] = [step]

    tracker = EvalTracker(q_net, env_id, seed, c.eval_episodes, c.final_eval_episodes, c.target_return, save=save)
    episode_returns: list[float] = []
    episode_ends: list[int] = []
    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    episode_return, step = 0.0, 0
    try:
        for step in range(1, total + 1):
            # act: epsilon-greedy with the notes' exponential decay
            eps = exponential_epsilon(step, c.eps_start, c.eps_end, c.eps_decay_steps)
            action = int(rng.integers(n_actions)) if rng.random() < eps else greedy_action(q_net, obs)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            # store: a truncated episode's next state still has a value, only a terminal one has none
            memory.add(obs, action, reward, next_obs, terminated)
            episode_return += float(reward)
            if terminated or truncated:
                episode_returns.append(episode_return)
                episode_ends.append(step)
                obs, _ = env.reset(seed=int(rng.integers(2**31)))
                episode_return = 0.0
            else:
                obs = next_obs
            # learn
            if step > c.learning_starts and step % c.train_every == 0:
                for _ in range(c.gradient_steps):
                    loss = dqn_loss(q_net, target_net, memory.sample(c.batch_size, rng), c.gamma)
                    check_finite_loss(loss, step, str(out) if saved_step else None, saved_step[0] if saved_step else None)
                    optimizer.zero_grad()
                    loss.backward()
                    if c.grad_clamp is not None:
                        for p in q_net.parameters():
                            p.grad.clamp_(-c.grad_clamp, c.grad_clamp)
                    if c.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(q_net.parameters(), c.max_grad_norm)
                    optimizer.step()
            # sync the target network
            if step % c.target_update_every == 0:
                target_net.load_state_dict(q_net.state_dict())
            # evaluate (first right before learning starts: a baseline, and a checkpoint to fall back on)
            if step == c.learning_starts or step % c.eval_every == 0:
                if tracker.periodic(step):
                    break
            if progress is not None and (step % 500 == 0 or step == total):
                recent = np.mean(episode_returns[-20:]) if episode_returns else 0.0
                progress(step, total, f"eps {eps:.2f} return {recent:.0f} best eval {tracker.best_mean:.0f}")
        if not tracker.evals or tracker.evals[-1][0] != step:
            tracker.periodic(step)  # the end of the budget is a candidate too
    finally:
        env.close()
    return tracker.result(ALGORITHM, env_id, seed, step, time.perf_counter() - t0, c.to_dict(), episode_returns, episode_ends,
                          str(out) if out is not None and saved_step else None)
