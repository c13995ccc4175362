"""Double DQN with proportional prioritized experience replay, as seed 004 plays Atari Asterix from RAM.

Seed 004's agent, component by component:

- input: the last 5 observations stacked (5 x 128 RAM bytes = 640 inputs), scaled to [0, 1] by 1/255;
- network: two hidden layers of 128 ReLU units, He-uniform initialisation (``networks.QNetwork``);
- Double DQN target ``r + gamma Q_target(s', argmax_a Q_online(s', a))``: the online network picks the next
  action, the target network values it, which removes the max operator's overestimation bias;
- prioritized replay over a sum tree (``sum_tree.PrioritizedReplay``): transitions drawn in proportion to
  ``(|td error| + eps) ** alpha``, each update weighted by its importance-sampling weight, beta annealed to 1;
- the Huber loss, Adam with learning rate 2.5e-4, batches of 32, no reward clipping (the seed names clipping as
  future work), seed 1337 in the seed's runs.

The seed uses ``|r|`` as a transition's error in one formula; we use the TD error ``|Q(s, a) - target|`` of
Schaul et al., which the seed cites and which its text otherwise describes. ``prioritized=False`` gives Double
DQN with uniform replay: the baseline at the same budget. What the seed does not fix (memory size, target update
period, epsilon schedule, updates per step) takes DQN's usual Atari values scaled to a CPU budget.

The loop reads top to bottom like ``dqn.py``: act, store, learn (with priorities), sync, evaluate.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flipper_control.rl.checkpoint import save_agent
from flipper_control.rl.common import (
    EvalTracker,
    FrameStack,
    Progress,
    RunResult,
    check_env,
    check_finite_loss,
    greedy_action,
    linear_schedule,
    make_env,
    obs_spec,
    seed_everything,
)
from flipper_control.rl.networks import QNetwork, QNetworkConfig
from flipper_control.rl.replay import Batch
from flipper_control.rl.sum_tree import PrioritizedReplay, annealed_beta

__all__ = ["ALGORITHM", "DDQNPERConfig", "ENVS", "default_config", "double_dqn_targets", "td_errors_and_loss", "train"]

ALGORITHM = "ddqn-per"
ENVS = ("Asterix-ram", "CartPole-v1")


@dataclass
class DDQNPERConfig:
    """Hyperparameters of a DDQN + PER run (defaults: seed 004 on Asterix RAM; ``default_config`` per env)."""

    total_steps: int = 200_000  # environment steps (agent decisions; each is 2-4 Atari frames)
    frame_stack: int = 5
    hidden: tuple[int, ...] = (128, 128)
    lr: float = 2.5e-4
    batch_size: int = 32
    gamma: float = 0.99
    buffer_size: int = 100_000
    learning_starts: int = 10_000
    train_every: int = 4
    target_update_every: int = 2_000
    eps_start: float = 1.0
    eps_end: float = 0.05
    # of total_steps, linear. 10 % as in cleanrl's Atari DQN (the seed gives no schedule): seed 004's metric is the
    # mean over *all* training episodes, so a long random phase costs it directly (at 25 %: 519.8 over 1M steps)
    eps_decay_fraction: float = 0.10
    prioritized: bool = True  # False: Double DQN with uniform replay (the baseline)
    per_alpha: float = 0.6
    per_beta0: float = 0.4  # annealed linearly to 1 over the run
    per_eps: float = 1e-6
    eval_every: int = 25_000
    eval_episodes: int = 5
    final_eval_episodes: int = 20
    eval_epsilon: float = 0.05  # Atari evaluations act epsilon-greedy so that a policy cannot stall forever
    target_return: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


def default_config(env_id: str) -> DDQNPERConfig:
    """Seed 004's settings for Asterix; on CartPole-v1 (a quick check) DQN's CartPole scale without frame stacks."""
    if env_id == "CartPole-v1":
        return replace(DDQNPERConfig(), total_steps=100_000, frame_stack=1, lr=1e-3, batch_size=64, buffer_size=50_000,
                       learning_starts=1_000, train_every=1, target_update_every=500, eps_decay_fraction=0.1,
                       eval_every=5_000, eval_episodes=10, final_eval_episodes=100, eval_epsilon=0.0,
                       target_return=475.0)
    return DDQNPERConfig()


def double_dqn_targets(rewards: torch.Tensor, dones: torch.Tensor, next_q_online: torch.Tensor,
                       next_q_target: torch.Tensor, gamma: float) -> torch.Tensor:
    """``r + gamma (1 - done) Q_target(s', argmax_a Q_online(s', a))`` for a batch."""
    best = next_q_online.argmax(1, keepdim=True)
    return rewards + gamma * (1.0 - dones) * next_q_target.gather(1, best).squeeze(1)


def td_errors_and_loss(q_net: torch.nn.Module, target_net: torch.nn.Module, batch: Batch, weights: np.ndarray | None,
                       gamma: float) -> tuple[torch.Tensor, np.ndarray]:
    """(importance-weighted mean Huber loss, TD errors ``Q(s, a) - target`` as numpy for the priorities)."""
    obs, next_obs = torch.as_tensor(batch.obs), torch.as_tensor(batch.next_obs)
    actions = torch.as_tensor(batch.actions).unsqueeze(1)
    q = q_net(obs).gather(1, actions).squeeze(1)
    with torch.no_grad():
        target = double_dqn_targets(torch.as_tensor(batch.rewards), torch.as_tensor(batch.dones), q_net(next_obs),
                                    target_net(next_obs), gamma)
    per_sample = F.smooth_l1_loss(q, target, reduction="none")
    loss = (torch.as_tensor(weights) * per_sample).mean() if weights is not None else per_sample.mean()
    return loss, (q.detach() - target).numpy()


def train(env_id: str, *, steps: int | None = None, seed: int = 0, out: str | Path | None = None,
          progress: Progress | None = None, config: DDQNPERConfig | None = None) -> RunResult:
    """Train DDQN + PER on ``env_id`` for ``steps`` environment steps (default: the config's); the best weights go
    to checkpoint ``out`` (if given). Raises ``DivergedError`` on a NaN/inf loss, keeping the last checkpoint."""
    check_env(env_id, ENVS, ALGORITHM)
    c = config or default_config(env_id)
    total = int(steps if steps is not None else c.total_steps)
    t0 = time.perf_counter()
    rng = seed_everything(seed)
    env = make_env(env_id)
    obs_dim, n_actions, obs_dtype = obs_spec(env)
    scale = 1.0 / 255.0 if obs_dtype == np.uint8 else 1.0  # RAM bytes -> [0, 1]
    net_config = QNetworkConfig(obs_dim * c.frame_stack, n_actions, tuple(c.hidden), input_scale=scale)
    q_net, target_net = QNetwork(net_config), QNetwork(net_config)
    target_net.load_state_dict(q_net.state_dict())
    optimizer = torch.optim.Adam(q_net.parameters(), lr=c.lr)
    # alpha 0 makes the sum tree sample uniformly: the same code path serves the no-PER baseline
    memory = PrioritizedReplay(c.buffer_size, (net_config.obs_dim,), obs_dtype, alpha=c.per_alpha if c.prioritized else 0.0,
                               eps=c.per_eps)
    saved_step: list[int] = []
    algorithm = ALGORITHM if c.prioritized else "ddqn"

    def save(step: int) -> None:
        if out is not None:
            save_agent(out, q_net, algorithm=algorithm, env_id=env_id, rl={"frame_stack": c.frame_stack, "step": step},
                       metadata={"seed": seed, "config": c.to_dict()})
            saved_step[:] = [step]

    tracker = EvalTracker(q_net, env_id, seed, c.eval_episodes, c.final_eval_episodes, c.target_return,
                          frame_stack=c.frame_stack, epsilon=c.eval_epsilon, save=save)
    stack = FrameStack(c.frame_stack)
    episode_returns: list[float] = []
    episode_ends: list[int] = []
    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    state = stack.reset(obs)
    episode_return, step = 0.0, 0
    try:
        for step in range(1, total + 1):
            # act: epsilon-greedy, epsilon linear from eps_start to eps_end over the first part of the run
            eps = linear_schedule(step, c.eps_start, c.eps_end, int(c.eps_decay_fraction * total))
            action = int(rng.integers(n_actions)) if rng.random() < eps else greedy_action(q_net, state)
            obs, reward, terminated, truncated, _ = env.step(action)
            next_state = stack.push(obs)
            # store at the largest priority so far
            memory.add(state, action, reward, next_state, terminated)
            episode_return += float(reward)
            if terminated or truncated:
                episode_returns.append(episode_return)
                episode_ends.append(step)
                obs, _ = env.reset(seed=int(rng.integers(2**31)))
                state, episode_return = stack.reset(obs), 0.0
            else:
                state = next_state
            # learn: sample by priority, weight by importance, give the replayed transitions their new priorities
            if step > c.learning_starts and step % c.train_every == 0:
                if c.prioritized:
                    batch, weights = memory.sample(c.batch_size, rng, annealed_beta(c.per_beta0, step, total))
                else:
                    batch, weights = memory.memory.sample(c.batch_size, rng), None
                loss, td = td_errors_and_loss(q_net, target_net, batch, weights, c.gamma)
                check_finite_loss(loss, step, str(out) if saved_step else None, saved_step[0] if saved_step else None)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if c.prioritized:
                    memory.update_priorities(batch.indices, td)
            # sync the target network
            if step % c.target_update_every == 0:
                target_net.load_state_dict(q_net.state_dict())
            # evaluate (first right before learning starts: a baseline, and a checkpoint to fall back on)
            if step == c.learning_starts or step % c.eval_every == 0:
                if tracker.periodic(step):
                    break
            if progress is not None and (step % 1000 == 0 or step == total):
                recent = np.mean(episode_returns[-20:]) if episode_returns else 0.0
                progress(step, total, f"eps {eps:.2f} return {recent:.0f} best eval {tracker.best_mean:.0f}")
        if not tracker.evals or tracker.evals[-1][0] != step:
            tracker.periodic(step)
    finally:
        env.close()
    return tracker.result(algorithm, env_id, seed, step, time.perf_counter() - t0, c.to_dict(), episode_returns, episode_ends,
                          str(out) if out is not None and saved_step else None)
