"""Soft actor-critic (Haarnoja et al. 2018) for continuous actions: the learner under CUP (seed 002).

Small MLPs: a tanh-squashed Gaussian actor and two Q critics (``networks.QNetwork`` over the concatenated
observation and action, one output) with Polyak-averaged target copies; the entropy weight alpha is tuned
automatically towards the target entropy ``-action_dim``. The losses are seed 002's Eq. 3:

- critic: ``(Q_i(s, a) - (r + gamma (1 - done) (min_j Q_j_targ(s', a') - alpha log pi(a'|s'))))^2``, a' ~ pi(s');
- actor: ``alpha log pi(a|s) - min_j Q_j(s, a)``, a ~ pi(s) (reparameterised);
- entropy: ``-log_alpha (log pi(a|s) + target_entropy)``.

``SACAgent.actor_loss`` takes the batch's states and returns the loss; CUP overrides it to add its regulariser,
so both share this one update and this one training loop (``run``). The loop reads top to bottom: act (random
for ``learning_starts`` steps), store, one gradient step per environment step, evaluate now and then.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flipper_control.rl.common import Progress, check_finite_loss
from flipper_control.rl.networks import QNetwork, QNetworkConfig
from flipper_control.rl.replay import ReplayMemory

__all__ = ["ActorConfig", "Batch", "ContinuousReplay", "GaussianActor", "SACAgent", "SACConfig", "evaluate_actor", "run",
           "to_batch"]

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass(frozen=True)
class ActorConfig:
    """Shapes of a ``GaussianActor``; actions are squashed into [-action_scale, action_scale] per dimension."""

    obs_dim: int
    act_dim: int
    hidden: tuple[int, ...] = (128, 128)
    action_scale: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name, value in (("obs_dim", self.obs_dim), ("act_dim", self.act_dim), *(("hidden", h) for h in self.hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ActorConfig.{name} must be integers >= 1, got {value!r}")
        if not (isinstance(self.action_scale, (int, float)) and 0 < self.action_scale < math.inf):
            raise ValueError(f"ActorConfig.action_scale must be a finite number > 0, got {self.action_scale!r}")

    def to_dict(self) -> dict:
        """A JSON-ready dict (the checkpoint sidecar's ``config``)."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> ActorConfig:
        """Inverse of ``to_dict``; unknown keys are an error."""
        if not isinstance(data, dict):
            raise ValueError(f"an ActorConfig must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown ActorConfig field(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"ActorConfig: {exc}") from None


class GaussianActor(nn.Module):
    """``obs -> (mean, log_std)`` of a diagonal Gaussian over pre-squash actions; ``tanh`` squashes samples."""

    def __init__(self, config: ActorConfig):
        super().__init__()
        self.config = config
        sizes = (config.obs_dim, *config.hidden)
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:], strict=False):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-1], 2 * config.act_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_std) of the pre-squash Gaussian, log_std clamped to [-5, 2]."""
        mean, log_std = self.head(self.trunk(obs.to(torch.float32))).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action and its log-probability (the tanh change of variables included)."""
        mean, log_std = self(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)
        return self._squash(u, mean, log_std)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log pi(action | obs) of given (squashed) actions."""
        mean, log_std = self(obs)
        y = (action / self.config.action_scale).clamp(-1 + 1e-6, 1 - 1e-6)
        return self._squash(torch.atanh(y), mean, log_std)[1]

    def _squash(self, u, mean, log_std):
        normal_lp = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log |d tanh(u) / du| = log(1 - tanh(u)^2), in the numerically stable form 2 (log 2 - u - softplus(-2u))
        jac = (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        scale = self.config.action_scale
        return scale * torch.tanh(u), normal_lp - jac - u.shape[-1] * math.log(scale)

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action ``tanh(mean)`` (evaluation)."""
        return self.config.action_scale * torch.tanh(self(obs)[0])


class ContinuousReplay(ReplayMemory):
    """``ReplayMemory`` with vector actions (float32, shape ``(act_dim,)``) instead of discrete ones (its ``add``
    and ``sample`` work unchanged on the wider array)."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        super().__init__(capacity, (obs_dim,), np.float32)
        self.actions = np.zeros((capacity, act_dim), dtype=np.float32)


class Batch(NamedTuple):
    """A minibatch as tensors."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    dones: torch.Tensor


@dataclass
class SACConfig:
    """Hyper-parameters: SAC's gamma 0.99, tau 0.005, Adam 3e-4; the official CUP code's 3 x 400 MLPs, batch 128
    and 5,000 random steps shrunk to what a shared CPU core trains in minutes."""

    total_steps: int = 6_000  # environment steps
    learning_starts: int = 500  # uniform random actions before the first update
    buffer_size: int = 100_000
    batch_size: int = 64
    gamma: float = 0.99
    tau: float = 0.005
    lr: float = 3e-4
    hidden: tuple[int, ...] = (64, 64)
    init_alpha: float = 0.1
    eval_every: int = 1_000  # environment steps between evaluations
    eval_episodes: int = 5

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        for name in ("total_steps", "batch_size", "buffer_size", "eval_every", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"SACConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1:
            raise ValueError(f"SACConfig.gamma and tau must be in (0, 1], got {self.gamma}, {self.tau}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


def _critic(obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> QNetwork:
    return QNetwork(QNetworkConfig(obs_dim + act_dim, 1, hidden, init="torch_default"))


class SACAgent:
    """The networks, optimisers and the update of SAC; ``actor_loss`` is the hook CUP overrides."""

    def __init__(self, obs_dim: int, act_dim: int, action_scale: float, config: SACConfig):
        self.config = config
        self.actor = GaussianActor(ActorConfig(obs_dim, act_dim, config.hidden, float(action_scale)))
        self.q1, self.q2 = _critic(obs_dim, act_dim, config.hidden), _critic(obs_dim, act_dim, config.hidden)
        self.q1_targ, self.q2_targ = _critic(obs_dim, act_dim, config.hidden), _critic(obs_dim, act_dim, config.hidden)
        self.q1_targ.load_state_dict(self.q1.state_dict())
        self.q2_targ.load_state_dict(self.q2.state_dict())
        self.log_alpha = torch.tensor(math.log(config.init_alpha), requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.critic_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=config.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=config.lr)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp().detach()

    def q_min(self, obs, actions, target: bool = False) -> torch.Tensor:
        """min(Q1, Q2) (of the target copies with ``target``), shape (batch,)."""
        a, b = (self.q1_targ, self.q2_targ) if target else (self.q1, self.q2)
        x = torch.cat([obs, actions], dim=-1)
        return torch.min(a(x), b(x)).squeeze(-1)

    def critic_loss(self, batch: Batch) -> torch.Tensor:
        """Seed 002 Eq. 3, first line, summed over both critics."""
        with torch.no_grad():
            next_a, next_lp = self.actor.sample(batch.next_obs)
            v_next = self.q_min(batch.next_obs, next_a, target=True) - self.alpha * next_lp
            target = batch.rewards + self.config.gamma * (1 - batch.dones) * v_next
        x = torch.cat([batch.obs, batch.actions], dim=-1)
        return F.mse_loss(self.q1(x).squeeze(-1), target) + F.mse_loss(self.q2(x).squeeze(-1), target)

    def actor_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """SAC's actor loss; returns (loss, log-probs of the sampled actions, info for the logs)."""
        actions, log_prob = self.actor.sample(obs)
        loss = (self.alpha * log_prob - self.q_min(obs, actions)).mean()
        return loss, log_prob, {}

    def update(self, batch: Batch) -> dict:
        """One gradient step of critic, actor and alpha, then the Polyak update; returns the losses."""
        c = self.config
        critic_loss = self.critic_loss(batch)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        actor_loss, log_prob, info = self.actor_loss(batch.obs)
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        with torch.no_grad():
            for net, targ in ((self.q1, self.q1_targ), (self.q2, self.q2_targ)):
                for p, p_t in zip(net.parameters(), targ.parameters(), strict=True):
                    p_t.mul_(1 - c.tau).add_(c.tau * p)
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "alpha": self.alpha.item(), **info}

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """An action for one observation."""
        with torch.no_grad():
            o = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
            a = self.actor.mean_action(o) if deterministic else self.actor.sample(o)[0]
        return a.squeeze(0).numpy()


def to_batch(memory: ContinuousReplay, batch_size: int, rng: np.random.Generator) -> Batch:
    """A uniform minibatch from ``memory`` as tensors."""
    b = memory.sample(batch_size, rng)
    return Batch(torch.as_tensor(b.obs), torch.as_tensor(b.actions), torch.as_tensor(b.rewards),
                 torch.as_tensor(b.next_obs), torch.as_tensor(b.dones))


def evaluate_actor(actor: GaussianActor, make_env: Callable[[], object], episodes: int,
                   seed: int) -> tuple[list[float], list[bool]]:
    """Deterministic (mean-action) episodes; returns (returns, successes: ``info["success"]`` at the end, else False).
    Episode ``i`` starts from ``reset(seed=seed + i)``, so two actors evaluated with one seed meet the same starts."""
    env = make_env()
    returns, successes = [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done, info = 0.0, False, {}
        while not done:
            with torch.no_grad():
                a = actor.mean_action(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)).squeeze(0).numpy()
            obs, r, terminated, truncated, info = env.step(a)
            total += float(r)
            done = terminated or truncated
        returns.append(total)
        successes.append(bool(info.get("success", False)))
    return returns, successes


def run(agent: SACAgent, make_env: Callable[[], object], seed: int, rng: np.random.Generator,
        progress: Progress | None = None, label: str = "sac") -> dict:
    """Train ``agent`` for ``agent.config.total_steps`` environment steps; returns the learning curve and the final
    evaluation. Raises ``DivergedError`` when a loss becomes NaN/inf."""
    c, t0 = agent.config, time.perf_counter()
    env = make_env()
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    memory = ContinuousReplay(c.buffer_size, obs_dim, act_dim)
    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    episode_return, episode_returns, episode_ends, evals, last = 0.0, [], [], [], {}
    for step in range(1, c.total_steps + 1):
        if step <= c.learning_starts:
            action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        else:
            action = agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        # a time-limit truncation is not terminal: its next state keeps its value
        memory.add(obs, action, reward, next_obs, terminated)
        episode_return += float(reward)
        obs = next_obs
        if terminated or truncated:
            episode_returns.append(episode_return)
            episode_ends.append(step)
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            episode_return = 0.0
        if step > c.learning_starts:
            last = agent.update(to_batch(memory, c.batch_size, rng))
            check_finite_loss(torch.tensor(last["critic_loss"] + last["actor_loss"]), step, None, None)
        if step % c.eval_every == 0 or step == c.total_steps:
            returns, successes = evaluate_actor(agent.actor, make_env, c.eval_episodes, seed + 1_000_000)
            evals.append([step, float(np.mean(returns)), float(np.mean(successes))])
            if progress is not None:
                progress(step, c.total_steps, f"{label} eval {np.mean(returns):.1f}")
    return {"evals": evals, "episode_returns": episode_returns, "episode_end_steps": episode_ends,
            "last_losses": last, "env_steps": c.total_steps, "seconds": time.perf_counter() - t0}
