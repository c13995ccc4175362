"""CUP, critic-guided policy reuse (seed 002), on SAC, and the point-goal task family it is checked on.

At every update CUP forms a guidance policy per state from the candidates {current target policy, source
policies}: the candidate whose actions the critic values highest, ``E_{a~pi_k}[Q(s, a) - alpha log pi_k(a|s)]``
(Eq. 5/7). Following the official code (REFERENCE.md section 6): 3 action samples per candidate, the larger of
the two target critics, a one-hot argmax per state; where the target policy itself wins there is no
regularisation. Elsewhere the actor loss gets ``beta_s * KL(pi_target(.|s) || pi_guidance(.|s))`` with the
detached weight ``beta_s = beta1 * min(EA, beta2 * |V(s)|)`` (Eq. 12; beta1 = 30, beta2 = 3e-3), EA the guidance
value minus the target policy's ``V(s)``. The KL is the closed form between the pre-squash diagonal Gaussians,
which equals the KL between the squashed action distributions (tanh is a bijection).

The benchmark task. The paper's Meta-World pins mujoco 3.3.0, which conflicts with our 4.0.0; gymnasium's MuJoCo
tasks have no family of related tasks with a shared observation and action space (InvertedPendulum ->
InvertedDoublePendulum changes both; Reacher's goal is random per episode, so "a source for another goal" does
not exist there). So the check runs on ``PointGoalEnv``, a small family we define: a 2-D point mass under
acceleration control, observation (x, y, vx, vy), start near the origin, reward ``-distance`` to the task's goal
per step, 50 steps, success = within 0.15 of the goal at the end. The target goal ``(0, 1.2)`` is straight up;
the sources are SAC policies for ``(0.5, 1.1)`` and ``(-0.5, 1.1)`` (related: their first half is nearly the
target's) and ``(0, -1.2)`` (useless: straight down), so CUP has useful and useless sources to choose from,
as in the paper's ablation with random sources. The goal is not in the observation: each task is one MDP, as
each of Meta-World's single-task policies is, and a source can only help through its actions.

``PointGoalWall-v0`` is the harder target, the analogue of Meta-World's Push-Wall beside Push: the same goal
behind a wall across y = 0.6 for |x| <= 0.25 (the point stops at it). Straight up, the dense reward leads into the
wall and to a local optimum just below it (distance 0.6); the sources, trained without the wall, pass beside it
on their way to (+-0.5, 1.1). This is where reuse should pay.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from flipper_control.rl.checkpoint import save_agent
from flipper_control.rl.common import Progress, RunResult, seed_everything
from flipper_control.rl.sac import ActorConfig, GaussianActor, SACAgent, SACConfig, evaluate_actor, run

__all__ = ["ACTOR_ARCHITECTURES", "CUPAgent", "CUPConfig", "ENVS", "ENV_WALLS", "PointGoalEnv", "SOURCE_GOALS", "TARGET_GOAL",
           "WALL", "gaussian_kl", "guidance_weights", "train", "train_source"]

ALGORITHM = "cup"
TARGET_GOAL = (0.0, 1.2)
WALL = (0.6, 0.25)  # PointGoalWall-v0: a wall across y = 0.6 for |x| <= 0.25
ENV_WALLS = {"PointGoal-v0": None, "PointGoalWall-v0": WALL}  # each target task and the wall before its goal
ENVS = tuple(ENV_WALLS)
SOURCE_GOALS = {"up-right": (0.5, 1.1), "up-left": (-0.5, 1.1), "down": (0.0, -1.2)}
ACTOR_ARCHITECTURES = {"GaussianActor": (GaussianActor, ActorConfig)}


class PointGoalEnv(gym.Env):
    """A 2-D point mass driven by acceleration towards a fixed goal (the module doc has the task)."""

    metadata = {"render_modes": []}

    def __init__(self, goal: tuple[float, float] = TARGET_GOAL, horizon: int = 50, success_radius: float = 0.15,
                 wall: tuple[float, float] | None = None):
        self.goal = np.asarray(goal, dtype=np.float64)
        self.wall = wall  # (y, half width): a segment across y for |x| <= half width, or None
        self.horizon, self.success_radius = horizon, success_radius
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._pos, self._vel, self._t = np.zeros(2), np.zeros(2), 0

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._pos, self._vel]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(-0.05, 0.05, size=2)
        self._vel, self._t = np.zeros(2), 0
        return self._obs(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self._vel = 0.75 * self._vel + 0.25 * a  # top speed 1, i.e. 0.1 per step
        new = np.clip(self._pos + 0.1 * self._vel, -2.0, 2.0)
        if self.wall is not None:
            new = self._stop_at_wall(self._pos, new)
        self._pos = new
        self._t += 1
        dist = float(np.linalg.norm(self._pos - self.goal))
        truncated = self._t >= self.horizon
        return self._obs(), -dist, False, truncated, {"success": dist < self.success_radius, "distance": dist}


    def _stop_at_wall(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        """``new``, or the point where the move from ``old`` meets the wall (1 mm short, vertical speed 0)."""
        y, half = self.wall
        if (old[1] - y) * (new[1] - y) > 0 or old[1] == new[1]:
            return new  # no crossing of the wall's line
        x = old[0] + (y - old[1]) / (new[1] - old[1]) * (new[0] - old[0])
        if abs(x) > half:
            return new  # passes beside the wall
        self._vel[1] = 0.0
        return np.array([new[0], y - 1e-3 * np.sign(new[1] - old[1])])


def make_point_goal(goal: tuple[float, float] = TARGET_GOAL, wall: tuple[float, float] | None = None):
    """A factory of ``PointGoalEnv(goal, wall=wall)`` for ``sac.run``."""
    return lambda: PointGoalEnv(goal, wall=wall)


@dataclass(frozen=True)
class CUPConfig:
    """CUP's own hyper-parameters (official code's defaults)."""

    beta1: float = 30.0  # weight of the KL regulariser
    beta2: float = 3e-3  # the expected advantage is clipped at beta2 * |V(s)|
    samples: int = 3  # actions sampled per candidate to estimate its value

    def __post_init__(self):
        if self.beta1 < 0 or self.beta2 < 0 or self.samples < 1:
            raise ValueError(f"CUPConfig: beta1, beta2 must be >= 0 and samples >= 1, got {self}")


def guidance_weights(values: torch.Tensor, beta1: float, beta2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per state, the guidance candidate and the regularisation weight.

    ``values`` is (candidates, batch): row 0 the current target policy's soft value ``V(s)``, rows 1.. the sources'
    ``E[Q - alpha log pi_k]``. Returns (choice (batch,) with 0 = the target policy, weight (batch,)), weight
    ``beta1 * min(EA, beta2 |V(s)|)`` with EA the best value minus ``V(s)``, and 0 where the target policy wins."""
    best_value, choice = values.max(dim=0)
    advantage = best_value - values[0]
    weight = beta1 * torch.minimum(advantage, beta2 * values[0].abs())
    weight = torch.where(choice == 0, torch.zeros_like(weight), weight.clamp(min=0.0))
    return choice, weight


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the last dimension."""
    var_p, var_q = (2 * log_std_p).exp(), (2 * log_std_q).exp()
    return (log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2 * var_q) - 0.5).sum(-1)


class CUPAgent(SACAgent):
    """SAC whose actor loss adds CUP's advantage-weighted KL towards the per-state guidance policy."""

    def __init__(self, obs_dim: int, act_dim: int, action_scale: float, config: SACConfig,
                 sources: list[GaussianActor], cup: CUPConfig | None = None):
        super().__init__(obs_dim, act_dim, action_scale, config)
        # frozen sources; .eval() is nn.Module's evaluation mode, not Python's eval
        self.sources = [s.eval().requires_grad_(False) for s in sources]
        self.cup = cup or CUPConfig()

    def candidate_values(self, obs: torch.Tensor) -> torch.Tensor:
        """(1 + n_sources, batch): ``mean over samples of max(Q1_targ, Q2_targ)(s, a) - alpha log pi_k(a|s)``."""
        policies = (self.actor, *self.sources)
        n, k = obs.shape[0], self.cup.samples
        with torch.no_grad():
            obs_k = obs.repeat(k, 1)  # every sample of every candidate in one critic pass: far fewer small matmuls
            samples = [p.sample(obs_k) for p in policies]
            x = torch.cat([obs_k.repeat(len(policies), 1), torch.cat([a for a, _ in samples])], dim=-1)
            soft_q = torch.max(self.q1_targ(x), self.q2_targ(x)).squeeze(-1) - self.alpha * torch.cat([lp for _, lp in samples])
        return soft_q.view(len(policies), k, n).mean(dim=1)

    def actor_loss(self, obs: torch.Tensor):
        loss, log_prob, info = super().actor_loss(obs)
        if not self.sources:
            return loss, log_prob, info
        choice, weight = guidance_weights(self.candidate_values(obs), self.cup.beta1, self.cup.beta2)
        mean, log_std = self.actor(obs)
        with torch.no_grad():
            src = [s(obs) for s in self.sources]
            g_mean = torch.stack([m for m, _ in src])  # (sources, batch, act)
            g_log_std = torch.stack([ls for _, ls in src])
            idx = (choice - 1).clamp(min=0)  # rows where the target won have weight 0: any source will do
            rows = torch.arange(obs.shape[0])
            g_mean, g_log_std = g_mean[idx, rows], g_log_std[idx, rows]
        kl = gaussian_kl(mean, log_std, g_mean, g_log_std)
        loss = loss + (weight * kl).mean()
        info = {**info, "guided_fraction": float((choice > 0).float().mean()), "mean_weight": float(weight.mean()),
                "source_share": [float((choice == k + 1).float().mean()) for k in range(len(self.sources))]}
        return loss, log_prob, info


def train_source(goal: tuple[float, float], config: SACConfig, seed: int,
                 progress: Progress | None = None) -> tuple[GaussianActor, dict]:
    """A SAC policy for ``PointGoalEnv(goal)``; returns (actor, run record)."""
    rng = seed_everything(seed)
    agent = SACAgent(4, 2, 1.0, config)
    record = run(agent, make_point_goal(goal), seed, rng, progress, label=f"source {goal}")
    return agent.actor, record


def train_target(sources: list[GaussianActor], config: SACConfig, seed: int, cup: CUPConfig | None = None,
                 progress: Progress | None = None, goal: tuple[float, float] = TARGET_GOAL,
                 wall: tuple[float, float] | None = None) -> tuple[SACAgent, dict]:
    """CUP on the target task (behind ``wall``, if given) with ``sources`` (plain SAC when ``sources`` is empty);
    returns (agent, record)."""
    rng = seed_everything(seed)
    agent = CUPAgent(4, 2, 1.0, config, sources, cup) if sources else SACAgent(4, 2, 1.0, config)
    guided: list[float] = []
    original = agent.update

    def update(batch):  # record how often a source guided the actor, for the report
        info = original(batch)
        guided.append(info.get("guided_fraction", 0.0))
        return info

    agent.update = update
    record = run(agent, make_point_goal(goal, wall), seed, rng, progress, label="cup" if sources else "sac")
    record["guided_fraction"] = [float(np.mean(guided[i:i + 500])) for i in range(0, len(guided), 500)]
    return agent, record


def train(env_id: str, *, steps: int | None = None, seed: int = 0, out: str | Path | None = None,
          progress: Progress | None = None, config: SACConfig | None = None, source_steps: int = 4_000) -> RunResult:
    """``flipper rl train --algo cup``: train the three source policies (``source_steps`` each), then CUP on the
    target task for ``steps`` environment steps; the target actor goes to checkpoint ``out``."""
    if env_id not in ENVS:
        raise ValueError(f"unknown environment {env_id!r} for --algo cup; allowed: {', '.join(ENVS)}")
    t0 = time.perf_counter()
    c = config or SACConfig()
    if steps is not None:
        c = SACConfig(**{**asdict(c), "total_steps": int(steps)})
    src_cfg = SACConfig(**{**asdict(c), "total_steps": source_steps})
    wall = ENV_WALLS[env_id]
    sources = [train_source(g, src_cfg, seed + 100 + k)[0] for k, g in enumerate(SOURCE_GOALS.values())]
    agent, record = train_target(sources, c, seed, progress=progress, wall=wall)
    returns, successes = evaluate_actor(agent.actor, make_point_goal(wall=wall), 20, seed + 2_000_000)
    if out is not None:
        save_agent(out, agent.actor, algorithm=ALGORITHM, env_id=env_id, rl={"step": c.total_steps},
                   metadata={"seed": seed, "config": c.to_dict(), "sources": SOURCE_GOALS},
                   architectures=ACTOR_ARCHITECTURES)
    return RunResult(algorithm=ALGORITHM, env=env_id, seed=seed, eval_mean_return=float(np.mean(returns)),
                     eval_std_return=float(np.std(returns)), eval_episodes=len(returns),
                     env_steps=c.total_steps + len(SOURCE_GOALS) * source_steps, eval_env_steps=50 * len(returns),
                     seconds=time.perf_counter() - t0, config={**c.to_dict(), "source_steps": source_steps},
                     train_episodes=len(record["episode_returns"]),
                     train_mean_return=float(np.mean(record["episode_returns"])) if record["episode_returns"] else None,
                     checkpoint=str(out) if out is not None else None,
                     curve={"episode_end_steps": record["episode_end_steps"], "episode_returns": record["episode_returns"],
                            "evals": [[s, m] for s, m, _ in record["evals"]],
                            "eval_success_rate": float(np.mean(successes))})
