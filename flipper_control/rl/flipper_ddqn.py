"""Double DQN + prioritized replay on the flipper task (``FlipperRLEnv``, discrete mode): the plain-RL baseline
against imitation (seed 000 claims plain RL is too sample-hungry here; ``bench.rl_flipper`` measures it).

The algorithm is seed 004's as ``ddqn_per`` implements it, and reuses its pieces: ``sum_tree.PrioritizedReplay`` and
``annealed_beta``, ``ddqn_per.td_errors_and_loss`` (Double DQN targets, importance-weighted Huber loss),
``common.linear_schedule``, ``check_finite_loss``, ``seed_everything``, ``RunResult`` and ``checkpoint.save_agent``.
Only the network and the loop's budget differ: ``ddqn_per.train`` builds an MLP over a gymnasium vector env by
name, while here the observation is a stack of DEM frames, so the Q-network is a small NaN-aware convolution
(``FlipperQNetwork``), and a run stops at ``total_steps`` or ``max_cpu_s`` CPU seconds, whichever comes first
(the simulator, not the network, is the cost; ``sim_seconds`` counts what was simulated).

Greedy evaluation runs on held-out *training-set* worlds (``val_worlds`` of generator seed ``world_seed + 1``),
never on the test worlds, and keeps the best weights; the test worlds are for the bench's final scores.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flipper_control.rl.checkpoint import load_agent, save_agent
from flipper_control.rl.common import Progress, RunResult, check_finite_loss, linear_schedule, seed_everything
from flipper_control.rl.ddqn_per import td_errors_and_loss
from flipper_control.rl.flipper_env import (
    ENV_ID,
    FlipperRLConfig,
    FlipperRLEnv,
    evaluate_agent,
    frame_size,
    scored_on_test_worlds,
    split_frames,
)
from flipper_control.rl.sum_tree import PrioritizedReplay, annealed_beta

__all__ = ["ALGORITHM", "ARCHITECTURES", "ENVS", "FlipperDDQNConfig", "FlipperQConfig", "FlipperQNetwork",
           "evaluate_checkpoint", "greedy", "load_q", "train", "train_flipper_ddqn"]

ALGORITHM = "flipper-ddqn-per"  # metadata.rl.algorithm of its checkpoints (``--algo ddqn-per`` on this env)
ENVS = (ENV_ID,)


@dataclass(frozen=True)
class FlipperQConfig:
    """Shapes of a ``FlipperQNetwork`` (the checkpoint sidecar's ``config``)."""

    n_actions: int
    frame_stack: int = 3
    dem_shape: tuple[int, int] = (20, 5)
    conv_channels: int = 8
    hidden: tuple[int, ...] = (128,)
    dem_scale: float = 0.5  # metres per unit, as the policy scales heights
    dem_clip: float = 5.0

    def __post_init__(self):
        object.__setattr__(self, "dem_shape", tuple(int(v) for v in self.dem_shape))
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        ints = [("n_actions", self.n_actions), ("frame_stack", self.frame_stack), ("conv_channels", self.conv_channels),
                *(("dem_shape", v) for v in self.dem_shape), *(("hidden", h) for h in self.hidden)]
        for name, value in ints:
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
                raise ValueError(f"FlipperQConfig.{name} must be integers in 1..4096, got {value!r}")
        if len(self.dem_shape) != 2 or not (self.dem_scale > 0 and self.dem_clip > 0):
            raise ValueError(f"FlipperQConfig: dem_shape is (rows, cols), dem_scale and dem_clip > 0; got {self}")

    @property
    def obs_dim(self) -> int:
        """Length of the stacked observation the network reads."""
        return self.frame_stack * frame_size(self.dem_shape)

    def to_dict(self) -> dict:
        """JSON-ready."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict) -> FlipperQConfig:
        """Inverse of ``to_dict``; unknown keys are an error."""
        if not isinstance(data, dict) or set(data) - {f.name for f in fields(cls)}:
            raise ValueError(f"a FlipperQConfig has the fields {', '.join(f.name for f in fields(cls))}; got {data!r}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"FlipperQConfig: {exc}") from None


class FlipperQNetwork(nn.Module):
    """Stacked frames -> one Q-value per posture.

    The DEM stack goes in as seed 000's policy takes a DEM: the values (missing cells 0) and the mask through their
    own 3x3 convolutions (one input channel per stacked frame), multiplied, so a missing cell is never read as a
    height; then the flattened product with the stacked proprio vectors through ReLU layers, He-uniform
    initialisation as seed 004's networks.
    """

    def __init__(self, config: FlipperQConfig):
        super().__init__()
        self.config = c = config
        rows, cols = c.dem_shape
        self.conv_values = nn.Conv2d(c.frame_stack, c.conv_channels, 3, padding=1)
        self.conv_mask = nn.Conv2d(c.frame_stack, c.conv_channels, 3, padding=1)
        sizes = (c.conv_channels * rows * cols + c.frame_stack * 6, *c.hidden)
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:], strict=False):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], c.n_actions))
        self.head = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        with torch.no_grad():  # a zero-bias mask convolution would silence every patch at first
            self.conv_mask.bias.fill_(1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Q-values (B, n_actions) of stacked observations (B, obs_dim)."""
        c = self.config
        values, mask, proprio = split_frames(obs.to(torch.float32), c.frame_stack, c.dem_shape)
        values = values.clamp(-c.dem_clip, c.dem_clip) / c.dem_scale
        features = torch.relu(self.conv_values(values) * self.conv_mask(mask)).flatten(1)
        return self.head(torch.cat([features, proprio.flatten(1)], dim=1))


ARCHITECTURES = {"FlipperQNetwork": (FlipperQNetwork, FlipperQConfig)}


@dataclass
class FlipperDDQNConfig:
    """A DDQN + PER run on the flipper task: seed 004's learner (Huber, Adam 2.5e-4, batch 32, He init, PER alpha
    0.6 / beta 0.4 -> 1) with what a CPU budget of minutes allows (one update per decision, a small memory)."""

    env: FlipperRLConfig = field(default_factory=FlipperRLConfig)
    total_steps: int = 60_000  # decisions (0.2 s of simulation each with the fine set)
    max_cpu_s: float | None = None  # stop earlier when the process has used this many CPU seconds
    conv_channels: int = 8
    hidden: tuple[int, ...] = (128,)
    lr: float = 2.5e-4
    batch_size: int = 32
    gamma: float = 0.99
    buffer_size: int = 50_000
    learning_starts: int = 1_000
    train_every: int = 1
    target_update_every: int = 1_000
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_decay_fraction: float = 0.3
    per_alpha: float = 0.6
    per_beta0: float = 0.4
    per_eps: float = 1e-6
    eval_every: int = 5_000
    val_worlds: int = 4
    val_runs: int = 1

    def to_dict(self) -> dict:
        """JSON-ready."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


def greedy(net: nn.Module):
    """``act(stacked obs) -> argmax_a Q`` for ``evaluate_agent``."""
    def act(obs: np.ndarray) -> int:
        with torch.no_grad():
            return int(net(torch.as_tensor(obs).unsqueeze(0)).argmax(1).item())
    return act


def _score(evaluations) -> float:
    return float(sum(ev.score for ev in evaluations))


def train_flipper_ddqn(config: FlipperDDQNConfig | None = None, seed: int = 0, out: str | Path | None = None,
                       progress: Progress | None = None, simulator=None) -> dict:
    """Train; returns a record: the network (best validation weights loaded), curve, steps, CPU and simulated
    seconds, validation scores. Raises ``DivergedError`` on a NaN/inf loss, the last checkpoint kept."""
    from sim.world_sets import load_set

    c = config or FlipperDDQNConfig()
    if c.env.action_mode != "discrete":
        raise ValueError("DDQN needs FlipperRLConfig.action_mode='discrete'")
    cpu0, t0 = time.process_time(), time.perf_counter()
    rng = seed_everything(seed)
    env = FlipperRLEnv(c.env, simulator=simulator)
    val = load_set(c.env.world_set, c.val_worlds, c.env.world_seed + 1)
    qc = FlipperQConfig(int(env.action_space.n), c.env.frame_stack, env.dem_shape, c.conv_channels, tuple(c.hidden))
    q_net, target_net = FlipperQNetwork(qc), FlipperQNetwork(qc)
    target_net.load_state_dict(q_net.state_dict())
    optimizer = torch.optim.Adam(q_net.parameters(), lr=c.lr)
    memory = PrioritizedReplay(c.buffer_size, (qc.obs_dim,), np.float32, alpha=c.per_alpha, eps=c.per_eps)
    total = int(c.total_steps)
    saved: list[int] = []
    best = {"score": -1.0, "step": None, "state": None}
    evals, val_sim_s = [], 0.0
    episode_returns, episode_ends, episode_levels = [], [], []

    def validate(step: int) -> None:
        nonlocal val_sim_s
        q_net.eval()
        evs, rets, sim_s = evaluate_agent(greedy(q_net), c.env, val, c.val_runs, 5_000_000 + seed, simulator=env.sim)
        q_net.train()
        val_sim_s += sim_s
        score = _score(evs)
        evals.append([step, float(np.mean(rets)), score])
        if score >= best["score"]:
            best.update(score=score, step=step, state={k: v.clone() for k, v in q_net.state_dict().items()})
            if out is not None:
                save_agent(out, q_net, algorithm=ALGORITHM, env_id=ENV_ID, architectures=ARCHITECTURES,
                           rl={"frame_stack": c.env.frame_stack, "step": step, "env_config": c.env.to_dict()},
                           metadata={"seed": seed, "config": c.to_dict()})
                saved[:] = [step]

    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    ep_return, step, stop, eval_due = 0.0, 0, "steps", False
    for step in range(1, total + 1):
        eps = linear_schedule(step, c.eps_start, c.eps_end, int(c.eps_decay_fraction * total))
        if rng.random() < eps:
            action = int(rng.integers(qc.n_actions))
        else:
            with torch.no_grad():
                action = int(q_net(torch.as_tensor(obs).unsqueeze(0)).argmax(1).item())
        next_obs, reward, terminated, _, info = env.step(action)
        memory.add(obs, action, reward, next_obs, terminated)
        ep_return += reward
        obs = next_obs
        if terminated:
            episode_returns.append(ep_return)
            episode_ends.append(step)
            episode_levels.append(info["level"])
            if eval_due:  # between episodes: validation shares the simulator, and the next reset restores it
                validate(step)
                eval_due = False
            obs, _ = env.reset()
            ep_return = 0.0
        if step > c.learning_starts and step % c.train_every == 0:
            batch, weights = memory.sample(c.batch_size, rng, annealed_beta(c.per_beta0, step, total))
            loss, td = td_errors_and_loss(q_net, target_net, batch, weights, c.gamma)
            check_finite_loss(loss, step, str(out) if saved else None, saved[0] if saved else None)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            memory.update_priorities(batch.indices, td)
        if step % c.target_update_every == 0:
            target_net.load_state_dict(q_net.state_dict())
        eval_due = eval_due or step % c.eval_every == 0
        if c.max_cpu_s is not None and time.process_time() - cpu0 >= c.max_cpu_s:
            stop = "cpu budget"
            break
        if progress is not None and step % 500 == 0:
            recent = np.mean(episode_returns[-20:]) if episode_returns else 0.0
            progress(step, total, f"eps {eps:.2f} return {recent:.1f} best val {best['score']:.2f}")
    if not evals or evals[-1][0] != step:
        validate(step)
    q_net.load_state_dict(best["state"])
    q_net.eval()
    n_random = sum(1 for e in episode_ends if e <= c.learning_starts)
    return {"net": q_net, "env_steps": step, "stopped_by": stop, "train_sim_seconds": env.sim_seconds_total,
            "val_sim_seconds": val_sim_s, "cpu_seconds": time.process_time() - cpu0,
            "wall_seconds": time.perf_counter() - t0, "best_step": best["step"], "best_val_score": best["score"],
            "val_worlds": [w.name for w in val], "evals": evals, "episode_returns": episode_returns,
            "episode_end_steps": episode_ends, "episode_levels": episode_levels,
            "random_phase_episodes": n_random,
            "random_phase_successes": sum(1 for lv in episode_levels[:n_random] if lv != "fail"),
            "checkpoint": str(out) if out is not None and saved else None, "config": c.to_dict(), "seed": seed}


def load_q(path: str | Path) -> tuple[FlipperQNetwork, dict]:
    """A saved flipper Q-network, checked to be this algorithm's (``CheckpointError`` naming file and field)."""
    return load_agent(path, algorithm=ALGORITHM, architectures=ARCHITECTURES, needed_by=ENV_ID)


def train(env_id: str, *, steps: int | None = None, seed: int = 0, out: str | Path | None = None,
          progress: Progress | None = None, config: FlipperDDQNConfig | None = None, eval_runs: int = 2) -> RunResult:
    """``flipper rl train --algo ddqn-per --env FlipperTraversal-v0`` (the registry's contract); the evaluation is the
    greedy policy on the 8 test worlds, ``eval_runs`` runs each (noise seeds 0..), return and Table I score."""
    if env_id not in ENVS:
        raise ValueError(f"unknown environment {env_id!r} for the flipper DDQN + PER; allowed: {', '.join(ENVS)}")
    c = config or FlipperDDQNConfig()
    if steps is not None:
        c = replace(c, total_steps=int(steps))
    rec = train_flipper_ddqn(c, seed, out, progress)
    return scored_on_test_worlds(ALGORITHM, env_id, seed, greedy(rec["net"]), c.env, rec, c.to_dict(), eval_runs)


def evaluate_checkpoint(path: str | Path, episodes: int, seed: int) -> tuple[list[float], int, dict]:
    """``flipper rl eval`` of a flipper DDQN checkpoint: greedy runs on the 8 test worlds, ``ceil(episodes / 8)``
    runs each from noise seed ``seed``, with the env settings it was trained with; (returns, decisions, metadata)."""
    from flipper_control.rl.flipper_env import config_from_checkpoint
    from sim.world_sets import load_set

    net, meta = load_q(path)
    env_config = config_from_checkpoint(path, meta)
    _, returns, sim_s = evaluate_agent(greedy(net), env_config, load_set("test"), max(1, -(-int(episodes) // 8)), seed)
    return returns, int(round(sim_s / env_config.dt)), meta
