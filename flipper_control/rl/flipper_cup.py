"""CUP fine-tuning of the imitation flipper policy (seed 002 on seed 000's task), over ``rl.sac`` / ``rl.cup``.

- Target actor: ``PolicyActor``, the NaN-aware policy's network itself (``flipper_control.policy.NanAwarePolicy``,
  copied from a checkpoint) read as the mean of a Gaussian before ``tanh``, with a learned state-independent
  log-std. The env's continuous actions are ``[-1, 1]`` mapped linearly onto the joint range, so ``tanh(mean)`` is
  exactly the imitation policy's output: fine-tuning starts from the imitation policy, not from scratch.
- Sources: the loop's earlier-iteration policies (``iter_1..4/policy``), each a ``PolicySource``: a Gaussian with
  a small fixed std around its action (same mean construction, frozen).
- Learner: ``cup.CUPAgent`` (SAC + critic-guided KL towards the per-state best source) with ``sac.QNetwork``
  critics over the stacked observation and the action, ``sac.ContinuousReplay``, ``sac.to_batch``. Two changes for
  fine-tuning, both in ``FlipperCUPAgent.update``: the first ``critic_warmup`` updates train the critics only (an
  untrained critic would otherwise pull the actor away from a good policy at once), and data is collected by the
  actor from the first step (SAC's uniform random warm-up would waste the imitation start).

The loop is ``sac.run``'s, with a CPU-seconds budget and simulated-seconds accounting added (``sac.run`` has
neither and evaluates through ``info["success"]``, which this env does not set).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flipper_control.policy import NanAwarePolicy, PolicyConfig
from flipper_control.rl.checkpoint import load_agent, save_agent
from flipper_control.rl.common import Progress, RunResult, check_finite_loss, seed_everything
from flipper_control.rl.cup import CUPAgent, CUPConfig
from flipper_control.rl.flipper_env import (
    ENV_ID,
    FlipperRLConfig,
    FlipperRLEnv,
    evaluate_agent,
    scored_on_test_worlds,
    split_frames,
)
from flipper_control.rl.sac import LOG_STD_MAX, LOG_STD_MIN, ContinuousReplay, GaussianActor, SACConfig, to_batch

__all__ = ["ALGORITHM", "ARCHITECTURES", "ENVS", "FlipperCUPAgent", "FlipperCUPConfig", "PolicyActor",
           "PolicyActorConfig", "PolicySource", "build_actor", "deterministic", "evaluate_checkpoint", "load_actor", "train",
           "train_flipper_cup"]

ALGORITHM = "flipper-cup"  # metadata.rl.algorithm of its checkpoints (``--algo cup`` on this env)
ENVS = (ENV_ID,)
DEFAULT_RUN = "demo_out"  # `make demo`'s run: its last policy is fine-tuned, the earlier iterations' are the sources
DEMO_ITERATIONS = 4  # DEMO_CONFIG's (flipper_control.learning.loop_config; a test keeps the two equal)
DEFAULT_POLICY = f"{DEFAULT_RUN}/iter_{DEMO_ITERATIONS}/policy"


@dataclass(frozen=True)
class PolicyActorConfig:
    """A ``PolicyActor``: the policy's architecture, the observation stack it reads the last frame of, its std."""

    policy: dict = field(default_factory=lambda: PolicyConfig().to_dict())
    frame_stack: int = 1
    init_std: float = 0.15  # pre-tanh std at the start (learned afterwards); fixed for a PolicySource
    action_scale: float = 1.0  # GaussianActor's squash: actions in [-1, 1] (the env maps them onto the joint range)

    def __post_init__(self):
        PolicyConfig.from_dict(dict(self.policy))  # validates
        if not (isinstance(self.frame_stack, int) and self.frame_stack >= 1):
            raise ValueError(f"PolicyActorConfig.frame_stack must be an integer >= 1, got {self.frame_stack!r}")
        if not (math.isfinite(self.init_std) and self.init_std > 0) or self.action_scale != 1.0:
            raise ValueError(f"PolicyActorConfig: init_std > 0 and action_scale 1.0, got {self.init_std}, {self.action_scale}")

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PolicyActorConfig:
        """Inverse of ``to_dict``; unknown keys are an error."""
        if not isinstance(data, dict) or set(data) - {f.name for f in fields(cls)}:
            raise ValueError(f"a PolicyActorConfig has the fields {', '.join(f.name for f in fields(cls))}; got {data!r}")
        return cls(**data)


def _pre_tanh(policy: NanAwarePolicy, obs: torch.Tensor, frame_stack: int) -> torch.Tensor:
    """The policy's last layer (before its ``tanh``) on the newest frame of stacked observations: ``tanh`` of it,
    mapped onto the joint range, is ``policy(dem, proprio)``."""
    c = policy.config
    values, mask, proprio = split_frames(obs.to(torch.float32), frame_stack, c.dem_shape)
    values = values[:, -1].clamp(-c.dem_clip, c.dem_clip) / c.dem_scale  # as NanAwarePolicy.split_dem
    values, mask = policy.complete(values, mask[:, -1], proprio[:, -1])
    features = policy.act(policy.conv_values(values.unsqueeze(1)) * policy.conv_mask(mask.unsqueeze(1))).flatten(1)
    return policy.head(torch.cat((features, proprio[:, -1]), dim=1))


class PolicyActor(GaussianActor):
    """``obs -> (mean, log_std)``: mean = the NaN-aware policy's pre-tanh output, log_std a learned vector.
    ``GaussianActor`` gives ``sample``, ``log_prob`` and ``mean_action`` on top."""

    def __init__(self, config: PolicyActorConfig, policy: NanAwarePolicy | None = None):
        nn.Module.__init__(self)  # GaussianActor's MLP is not built: the policy network takes its place
        self.config = config
        self.policy = policy if policy is not None else NanAwarePolicy(PolicyConfig.from_dict(dict(config.policy)))
        if self.policy.config.members != 1:
            # the actor's mean is one network's pre-tanh output; an ensemble's action is a mean after the tanh
            raise ValueError(f"flipper-CUP fine-tunes a single policy network; this one is an ensemble of "
                             f"{self.policy.config.members} (PolicyConfig.members): give one of its members' checkpoints")
        if self.policy.config.prior != "none" or self.policy.config.rule_features:
            # the actor's mean is the network's pre-tanh output from the DEM features and the proprioceptive vector,
            # mapped onto the joint range; a residual policy's action also holds its prior, and the rule's features
            # are inputs that mapping does not feed
            raise ValueError("flipper-CUP fine-tunes a policy whose network gives the action from the DEM and the "
                             "proprioceptive vector alone; this one has PolicyConfig.prior "
                             f"{self.policy.config.prior!r} and rule_features {self.policy.config.rule_features}")
        self.log_std = nn.Parameter(torch.full((self.policy.config.n_out,), math.log(config.init_std)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = _pre_tanh(self.policy, obs, self.config.frame_stack)
        return mean, self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).expand_as(mean)


class PolicySource(PolicyActor):
    """A frozen policy as a CUP source: a Gaussian with the fixed std ``config.init_std`` around its action."""

    def __init__(self, config: PolicyActorConfig, policy: NanAwarePolicy):
        super().__init__(config, policy)
        self.log_std.requires_grad_(False)
        self.requires_grad_(False)
        self.eval()  # safe: nn.Module.eval() (evaluation mode), not Python's eval


ARCHITECTURES = {"PolicyActor": (PolicyActor, PolicyActorConfig)}


@dataclass
class FlipperCUPConfig:
    """A CUP fine-tuning run: env, imitation policy and sources, SAC and CUP settings, budget."""

    env: FlipperRLConfig = field(default_factory=lambda: FlipperRLConfig(action_mode="continuous", frame_stack=1))
    policy: str = DEFAULT_POLICY  # checkpoint of the imitation policy to fine-tune
    sources: tuple[str, ...] = tuple(f"{DEFAULT_RUN}/iter_{k}/policy" for k in range(1, DEMO_ITERATIONS))
    source_std: float = 0.1
    init_std: float = 0.15
    sac: SACConfig = field(default_factory=lambda: SACConfig(total_steps=40_000, learning_starts=1_000, batch_size=64,
                                                             hidden=(256, 256), lr=3e-4, init_alpha=0.005))
    cup: CUPConfig = field(default_factory=CUPConfig)
    critic_warmup: int = 4_000  # critic-only updates before the actor moves
    actor_lr: float = 3e-5  # a tenth of SAC's: the actor starts from a good policy and should move little
    max_cpu_s: float | None = None
    eval_every: int = 5_000
    val_worlds: int = 4
    val_runs: int = 1

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"env": self.env.to_dict(), "policy": self.policy, "sources": list(self.sources),
                "source_std": self.source_std, "init_std": self.init_std, "sac": self.sac.to_dict(),
                "cup": asdict(self.cup), "critic_warmup": self.critic_warmup, "actor_lr": self.actor_lr,
                "max_cpu_s": self.max_cpu_s, "eval_every": self.eval_every, "val_worlds": self.val_worlds,
                "val_runs": self.val_runs}


class FlipperCUPAgent(CUPAgent):
    """``CUPAgent`` whose actor is a ``PolicyActor`` and whose first ``critic_warmup`` updates train the critics only."""

    def __init__(self, obs_dim: int, actor: PolicyActor, sources: list[PolicySource], config: SACConfig,
                 cup: CUPConfig, critic_warmup: int, actor_lr: float | None = None):
        super().__init__(obs_dim, actor.policy.config.n_out, 1.0, config, list(sources), cup)
        self.actor = actor
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=actor_lr or config.lr)
        self.critic_warmup, self.updates = int(critic_warmup), 0

    def update(self, batch) -> dict:
        """SAC/CUP's update, or the critics' part alone during the warm-up."""
        self.updates += 1
        if self.updates > self.critic_warmup:
            return super().update(batch)
        loss = self.critic_loss(batch)
        self.critic_opt.zero_grad()
        loss.backward()
        self.critic_opt.step()
        with torch.no_grad():
            for net, targ in ((self.q1, self.q1_targ), (self.q2, self.q2_targ)):
                for p, p_t in zip(net.parameters(), targ.parameters(), strict=True):
                    p_t.mul_(1 - self.config.tau).add_(self.config.tau * p)
        return {"critic_loss": loss.item(), "actor_loss": 0.0, "alpha": self.alpha.item(), "guided_fraction": 0.0}


def _load_policy(path: str) -> NanAwarePolicy:
    from flipper_control.checkpoint import checkpoint_paths, load_policy

    if not checkpoint_paths(path)[0].exists():
        raise FileNotFoundError(f"CUP fine-tuning: no policy checkpoint at {path} (the defaults are `make demo`'s "
                                f"{DEFAULT_RUN}/iter_1..{DEMO_ITERATIONS}; run the demo first or set policy and sources)")
    return load_policy(path)[0]


def deterministic(actor: PolicyActor):
    """``act(stacked obs) -> tanh(mean)`` for ``evaluate_agent``."""
    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return actor.mean_action(torch.as_tensor(obs).unsqueeze(0))[0].numpy()
    return act


def build_actor(config: FlipperCUPConfig) -> tuple[PolicyActor, list[PolicySource]]:
    """The target actor (a copy of the imitation policy) and the sources, from their checkpoints."""
    policy = _load_policy(config.policy)
    pc = policy.config.to_dict()
    actor = PolicyActor(PolicyActorConfig(pc, config.env.frame_stack, config.init_std), policy.train())
    sources = [PolicySource(PolicyActorConfig(pc, config.env.frame_stack, config.source_std), _load_policy(p))
               for p in config.sources]
    return actor, sources


def train_flipper_cup(config: FlipperCUPConfig | None = None, seed: int = 0, out: str | Path | None = None,
                      progress: Progress | None = None, simulator=None) -> dict:
    """Fine-tune; returns a record: the actor (best validation weights loaded), curve, steps, CPU and simulated
    seconds, validation scores (the first evaluation, at step 0, is the imitation policy itself)."""
    from sim.world_sets import load_set

    c = config or FlipperCUPConfig()
    if c.env.action_mode != "continuous":
        raise ValueError("CUP needs FlipperRLConfig.action_mode='continuous'")
    cpu0, t0 = time.process_time(), time.perf_counter()
    rng = seed_everything(seed)
    env = FlipperRLEnv(c.env, simulator=simulator)
    val = load_set(c.env.world_set, c.val_worlds, c.env.world_seed + 1)
    actor, sources = build_actor(c)
    obs_dim = env.observation_space.shape[0]
    agent = FlipperCUPAgent(obs_dim, actor, sources, c.sac, c.cup, c.critic_warmup, c.actor_lr)
    memory = ContinuousReplay(c.sac.buffer_size, obs_dim, 4)
    best = {"score": -1.0, "step": None, "state": None}
    evals, val_sim_s, guided, saved = [], 0.0, [], []

    def validate(step: int) -> None:
        nonlocal val_sim_s
        evs, rets, sim_s = evaluate_agent(deterministic(actor), c.env, val, c.val_runs, 5_000_000 + seed, simulator=env.sim)
        val_sim_s += sim_s
        score = float(sum(ev.score for ev in evs))
        evals.append([step, float(np.mean(rets)), score])
        if score > best["score"]:  # a tie keeps the earlier weights: fine-tuning must earn its changes
            best.update(score=score, step=step, state={k: v.clone() for k, v in actor.state_dict().items()})
            if out is not None:
                save_agent(out, actor, algorithm=ALGORITHM, env_id=ENV_ID, architectures=ARCHITECTURES,
                           rl={"frame_stack": c.env.frame_stack, "step": step, "env_config": c.env.to_dict()},
                           metadata={"seed": seed, "config": c.to_dict()})
                saved[:] = [step]

    validate(0)
    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    total, ep_return, step, stop, eval_due, last = c.sac.total_steps, 0.0, 0, "steps", False, {}
    episode_returns, episode_ends, episode_levels = [], [], []
    for step in range(1, total + 1):
        action = agent.act(obs)  # the stochastic actor from the first step: it starts as the imitation policy
        next_obs, reward, terminated, _, info = env.step(action)
        memory.add(obs, action, reward, next_obs, terminated)
        ep_return += reward
        obs = next_obs
        if terminated:
            episode_returns.append(ep_return)
            episode_ends.append(step)
            episode_levels.append(info["level"])
            if eval_due:  # between episodes: validation shares the simulator
                validate(step)
                eval_due = False
            obs, _ = env.reset()
            ep_return = 0.0
        if step > c.sac.learning_starts:
            last = agent.update(to_batch(memory, c.sac.batch_size, rng))
            check_finite_loss(torch.tensor(last["critic_loss"] + last["actor_loss"]), step,
                              str(out) if saved else None, saved[0] if saved else None)
            guided.append(last.get("guided_fraction", 0.0))
        eval_due = eval_due or step % c.eval_every == 0
        if c.max_cpu_s is not None and time.process_time() - cpu0 >= c.max_cpu_s:
            stop = "cpu budget"
            break
        if progress is not None and step % 500 == 0:
            recent = np.mean(episode_returns[-20:]) if episode_returns else 0.0
            progress(step, total, f"return {recent:.1f} best val {best['score']:.2f}")
    if evals[-1][0] != step:
        validate(step)
    actor.load_state_dict(best["state"])
    actor.eval()  # safe: nn.Module.eval()
    return {"actor": actor, "env_steps": step, "stopped_by": stop, "train_sim_seconds": env.sim_seconds_total,
            "val_sim_seconds": val_sim_s, "cpu_seconds": time.process_time() - cpu0,
            "wall_seconds": time.perf_counter() - t0, "best_step": best["step"], "best_val_score": best["score"],
            "val_worlds": [w.name for w in val], "evals": evals, "episode_returns": episode_returns,
            "episode_end_steps": episode_ends, "episode_levels": episode_levels, "last_losses": last,
            "guided_fraction_per_1000_updates": [float(np.mean(guided[i:i + 1000])) for i in range(0, len(guided), 1000)],
            "checkpoint": str(out) if out is not None and saved else None, "config": c.to_dict(), "seed": seed}


def load_actor(path: str | Path) -> tuple[PolicyActor, dict]:
    """A saved fine-tuned actor, checked to be this algorithm's (``CheckpointError`` naming file and field)."""
    return load_agent(path, algorithm=ALGORITHM, architectures=ARCHITECTURES, needed_by=ENV_ID)


def train(env_id: str, *, steps: int | None = None, seed: int = 0, out: str | Path | None = None,
          progress: Progress | None = None, config: FlipperCUPConfig | None = None, eval_runs: int = 2) -> RunResult:
    """``flipper rl train --algo cup --env FlipperTraversal-v0`` (the registry's contract); the evaluation is the
    deterministic actor on the 8 test worlds, ``eval_runs`` runs each (noise seeds 0..), return and Table I score."""
    if env_id not in ENVS:
        raise ValueError(f"unknown environment {env_id!r} for flipper CUP; allowed: {', '.join(ENVS)}")
    c = config or FlipperCUPConfig()
    if steps is not None:
        c = replace(c, sac=SACConfig(**{**asdict(c.sac), "total_steps": int(steps)}))
    rec = train_flipper_cup(c, seed, out, progress)
    return scored_on_test_worlds(ALGORITHM, env_id, seed, deterministic(rec["actor"]), c.env, rec, c.to_dict(), eval_runs)


def evaluate_checkpoint(path: str | Path, episodes: int, seed: int) -> tuple[list[float], int, dict]:
    """``flipper rl eval`` of a fine-tuned actor: deterministic runs on the 8 test worlds, ``ceil(episodes / 8)``
    runs each from noise seed ``seed``, with the env settings it was trained with; (returns, decisions, metadata)."""
    from flipper_control.rl.flipper_env import config_from_checkpoint
    from sim.world_sets import load_set

    actor, meta = load_actor(path)
    env_config = config_from_checkpoint(path, meta)
    _, returns, sim_s = evaluate_agent(deterministic(actor), env_config, load_set("test"), max(1, -(-int(episodes) // 8)),
                                       seed)
    return returns, int(round(sim_s / env_config.dt)), meta
