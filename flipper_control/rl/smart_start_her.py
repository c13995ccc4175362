"""Smart Start + Hindsight Experience Replay for tabular Q-learning in a grid maze (seed 001, Algorithm 1).

Q-learning over (state, goal): ``q[g]`` is the (n_states, 4) table for reaching goal ``g``; the task's goal is
the maze's, the others exist only for relabelled transitions. The reward is 1 on entering the goal (which
ends the episode), 0 otherwise; an episode lasts at most ``max_steps`` steps.

Each episode but the first (with probability ``eta``; seed 001 uses 1) starts with Smart Start:

1. choose the smart start state among the visited states by the UCB rule
   ``S_ss = argmax_s max_a Q(s, a) + sqrt(c_ss * ln(sum C) / C(s))`` (``smart_start_scores``; the form of
   Smart Start's reference code and of ``planning/smart_start.py``; seed 001's Eq. 1 writes ``c_ss`` outside
   the root, which only rescales the bonus and changes nothing while Q is zero);
2. plan a way there by value iteration on the count-based model ``P(s'|s,a) = C(s,a,s') / C(s,a)`` with
   reward 1 for every transition that enters ``S_ss`` (``plan_to``);
3. follow that plan until ``S_ss`` is reached (or the goal, or the step limit), learning from every step,
   then explore with epsilon-greedy Q-learning for the rest of the episode.

With HER, every transition of a finished episode is also stored with ``her_k`` goals drawn from the states the
episode reached later ("future" strategy) and learnt from with the reward recomputed for that goal
(``relabel``). The relabelled transitions are replayed newest first, so a relabelled reward travels back along
the episode in one sweep, as many random minibatches would. Note what tabular Q means here: a relabelled goal
shares no table entries with the task's goal, so HER speeds the task up only through the relabelled
transitions whose goal *is* the task's goal, i.e. through replaying episodes that reached it.

Seeding: one ``numpy.random.Generator`` drives the behaviour; HER draws its goals from a second generator
spawned from it, so that runs with and without HER take the same actions until their Q tables differ.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from flipper_control.rl.common import RunResult
from flipper_control.rl.gridworld import GridMaze

__all__ = ["ENVS", "EpisodeStats", "QTable", "QTableConfig", "SmartStartHERAgent", "SmartStartHERConfig", "Transition",
           "plan_to", "relabel", "smart_start_scores", "train", "train_smart_start_her"]


@dataclass(frozen=True)
class SmartStartHERConfig:
    """Hyper-parameters (seed 001: eta 1, c_ss 0.1, 1,000-step episodes; HER "future" k 4 from HER's paper)."""

    episodes: int = 300  # training episodes
    max_steps: int = 1000  # steps per episode at most
    alpha: float = 0.1  # Q-learning step size
    gamma: float = 0.99  # discount of the task's Q-learning
    epsilon: float = 0.05  # epsilon-greedy exploration after the smart start phase (ties broken at random)
    smart_start: bool = True  # use Smart Start
    eta: float = 1.0  # probability of a smart start in an episode (never in the first)
    c_ss: float = 0.1  # UCB exploration constant
    her: bool = True  # add hindsight relabelled transitions
    her_k: int = 4  # relabelled goals per transition ("future" strategy)
    vi_gamma: float = 0.95  # discount of the value iteration that plans the way to the smart start state
    vi_tol: float = 1e-8  # value iteration stops when no value moves more than this

    def __post_init__(self) -> None:
        for name in ("episodes", "max_steps"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"SmartStartHERConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.her_k < 0:
            raise ValueError(f"SmartStartHERConfig.her_k must be >= 0, got {self.her_k}")
        for name in ("alpha", "gamma", "vi_gamma"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"SmartStartHERConfig.{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("epsilon", "eta"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SmartStartHERConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.c_ss > 0:
            raise ValueError(f"SmartStartHERConfig.c_ss must be > 0, got {self.c_ss}")
        if self.vi_gamma >= 1.0:
            raise ValueError("SmartStartHERConfig.vi_gamma must be < 1 (value iteration must converge)")


class Transition(NamedTuple):
    """One stored step: state, action, next state, goal, reward for that goal, whether the goal was reached."""

    state: int
    action: int
    next_state: int
    goal: int
    reward: float
    done: bool


class EpisodeStats(NamedTuple):
    """What one episode did: reward (1 if the goal was reached), steps, steps spent in the smart start phase."""

    reward: float
    steps: int
    smart_start_steps: int
    smart_start_state: int  # -1 when the episode had no smart start


def smart_start_scores(values: np.ndarray, counts: np.ndarray, c_ss: float) -> np.ndarray:
    """UCB score ``V(s) + sqrt(c_ss * ln(sum C) / C(s))`` per state; ``-inf`` for unvisited states (C = 0),
    which cannot be chosen because no way to them is known."""
    counts = np.asarray(counts, dtype=np.float64)
    total = max(counts.sum(), 1.0)
    visited = counts > 0
    scores = np.full(counts.shape, -np.inf)
    scores[visited] = values[visited] + np.sqrt(c_ss * math.log(total) / counts[visited])
    return scores


def plan_to(target: int, model: dict[tuple[int, int], dict[int, int]], n_states: int, n_actions: int,
            gamma: float = 0.95, tol: float = 1e-8) -> np.ndarray:
    """Value iteration on the count-based model towards ``target``; returns Q_plan of shape (n_states, n_actions).

    ``model[(s, a)][s']`` counts the observed transitions. Entering ``target`` pays 1 and ends the plan (so
    the plan is the shortest known way); pairs never tried have Q_plan 0, as there is nothing known about them.
    """
    pairs = list(model)
    sa_idx, next_idx, prob = [], [], []
    for k, (s, a) in enumerate(pairs):
        outcomes = model[(s, a)]
        n = sum(outcomes.values())
        for s2, c in outcomes.items():
            sa_idx.append(k)
            next_idx.append(s2)
            prob.append(c / n)
    sa_idx_a, next_a, prob_a = np.asarray(sa_idx), np.asarray(next_idx), np.asarray(prob)
    reward = (next_a == target).astype(np.float64)
    cont = 1.0 - reward  # the plan ends on entering the target
    v = np.zeros(n_states)
    q_pairs = np.zeros(len(pairs))
    for _ in range(10 * n_states + 10):  # a deterministic maze converges in (its diameter + 1) sweeps
        q_pairs = np.bincount(sa_idx_a, weights=prob_a * (reward + gamma * cont * v[next_a]), minlength=len(pairs))
        v_new = np.zeros(n_states)
        np.maximum.at(v_new, [s for s, _ in pairs], q_pairs)
        delta = np.abs(v_new - v).max(initial=0.0)
        v = v_new
        if delta <= tol:
            break
    q_plan = np.zeros((n_states, n_actions))
    if pairs:
        s_arr = np.fromiter((s for s, _ in pairs), dtype=np.int64, count=len(pairs))
        a_arr = np.fromiter((a for _, a in pairs), dtype=np.int64, count=len(pairs))
        q_plan[s_arr, a_arr] = q_pairs
    return q_plan


def relabel(episode: list[tuple[int, int, int]], k: int, rng: np.random.Generator) -> list[Transition]:
    """HER "future" relabelling: for each step t of ``episode`` ((s, a, s') triples), ``k`` transitions whose
    goal is a state the episode reached at a step >= t, with reward 1 (and done) iff s' is that goal.
    Returned newest step first, the order in which they are learnt from."""
    out = []
    n = len(episode)
    for t in range(n - 1, -1, -1):
        s, a, s2 = episode[t]
        for j in rng.integers(t, n, size=k):
            g = episode[int(j)][2]
            hit = s2 == g
            out.append(Transition(s, a, s2, int(g), 1.0 if hit else 0.0, hit))
    return out


class SmartStartHERAgent:
    """Tabular goal-conditioned Q-learning with Smart Start and HER in one ``GridMaze`` (see the module doc)."""

    def __init__(self, maze: GridMaze, config: SmartStartHERConfig, rng: np.random.Generator):
        self.maze, self.config, self.rng = maze, config, rng
        self.her_rng = rng.spawn(1)[0]
        self.goal = maze.goal_state
        self.q: dict[int, np.ndarray] = {}
        self.counts = np.zeros(maze.n_states, dtype=np.int64)  # C(s): visits, the start included
        self.model: dict[tuple[int, int], dict[int, int]] = {}  # C(s, a, s')
        self.episodes_done = 0

    def q_table(self, goal: int) -> np.ndarray:
        """The Q table for ``goal`` (zeros until first learnt from)."""
        table = self.q.get(goal)
        if table is None:
            table = self.q[goal] = np.zeros((self.maze.n_states, self.maze.n_actions))
        return table

    def _argmax(self, row: np.ndarray) -> int:
        best = np.flatnonzero(row == row.max())
        return int(best[0] if len(best) == 1 else self.rng.choice(best))

    def act(self, state: int) -> int:
        """Epsilon-greedy on the task's Q, ties broken at random (so a zero table explores by random walk)."""
        if self.rng.random() < self.config.epsilon:
            return int(self.rng.integers(self.maze.n_actions))
        return self._argmax(self.q_table(self.goal)[state])

    def learn(self, t: Transition) -> None:
        """One Q-learning update for the transition's goal."""
        q = self.q_table(t.goal)
        target = t.reward + (0.0 if t.done else self.config.gamma * q[t.next_state].max())
        q[t.state, t.action] += self.config.alpha * (target - q[t.state, t.action])

    def _observe(self, s: int, a: int, s2: int) -> Transition:
        self.counts[s2] += 1
        outcomes = self.model.setdefault((s, a), {})
        outcomes[s2] = outcomes.get(s2, 0) + 1
        hit = s2 == self.goal
        t = Transition(s, a, s2, self.goal, 1.0 if hit else 0.0, hit)
        self.learn(t)
        return t

    def choose_smart_start(self) -> int:
        """The visited state with the best UCB score (the goal excluded: the episode would end there)."""
        values = self.q_table(self.goal).max(axis=1)
        scores = smart_start_scores(values, self.counts, self.config.c_ss)
        scores[self.goal] = -np.inf
        return self._argmax(scores)

    def run_episode(self) -> EpisodeStats:
        """One episode (Algorithm 1): optional smart start phase, exploration, then HER relabelling."""
        cfg, maze = self.config, self.maze
        s = maze.start_state
        self.counts[s] += 1
        steps, ss_steps, ss_state, reward = 0, 0, -1, 0.0
        episode: list[tuple[int, int, int]] = []
        if cfg.smart_start and self.episodes_done > 0 and self.rng.random() < cfg.eta:
            ss_state = self.choose_smart_start()
            q_plan = plan_to(ss_state, self.model, maze.n_states, maze.n_actions, cfg.vi_gamma, cfg.vi_tol)
            while s != ss_state and steps < cfg.max_steps and q_plan[s].max() > 0:
                a = self._argmax(q_plan[s])
                s2 = maze.step(s, a)
                t = self._observe(s, a, s2)
                episode.append((s, a, s2))
                steps += 1
                ss_steps += 1
                s = s2
                if t.done:
                    reward = 1.0
                    break
        while reward == 0.0 and steps < cfg.max_steps:
            a = self.act(s)
            s2 = maze.step(s, a)
            t = self._observe(s, a, s2)
            episode.append((s, a, s2))
            steps += 1
            s = s2
            if t.done:
                reward = 1.0
        if cfg.her and cfg.her_k > 0:
            for t in relabel(episode, cfg.her_k, self.her_rng):
                self.learn(t)
        self.episodes_done += 1
        return EpisodeStats(reward, steps, ss_steps, ss_state)

    def greedy_path_length(self) -> int:
        """Steps the greedy task policy takes from start to goal (-1 if it does not get there within the limit)."""
        q, s = self.q_table(self.goal), self.maze.start_state
        for n in range(1, self.config.max_steps + 1):
            row = q[s]
            s = self.maze.step(s, int(np.argmax(row)))
            if s == self.goal:
                return n
        return -1


def train_smart_start_her(maze: GridMaze, config: SmartStartHERConfig, seed: int,
                          progress: Callable[[int, int], None] | None = None) -> dict:
    """Train one agent for ``config.episodes`` episodes; returns per-episode rewards and steps, the config and
    the agent (key ``agent``) for inspection."""
    agent = SmartStartHERAgent(maze, config, np.random.default_rng(seed))
    rewards, steps, ss_steps = [], [], []
    for ep in range(config.episodes):
        stats = agent.run_episode()
        rewards.append(stats.reward)
        steps.append(stats.steps)
        ss_steps.append(stats.smart_start_steps)
        if progress is not None:
            progress(ep + 1, config.episodes)
    first = next((i for i, r in enumerate(rewards) if r > 0), -1)
    return {"maze": maze.name, "seed": seed, "config": asdict(config), "rewards": rewards, "steps": steps,
            "smart_start_steps": ss_steps, "first_success_episode": first,
            "env_steps": int(sum(steps)), "greedy_path_length": agent.greedy_path_length(), "agent": agent}


# --- `flipper rl train --algo ss-her` -------------------------------------------------------------------------

ALGORITHM = "ss-her"
ENVS = tuple(f"maze-{name}" for name in ("easy", "medium", "hard"))  # seed 001's grid worlds (gridworld.LAYOUTS)


@dataclass(frozen=True)
class QTableConfig:
    """Shape of a saved Q table (the task goal's): states x actions, and the maze it belongs to."""

    n_states: int
    n_actions: int
    maze: str = "easy"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> QTableConfig:
        """Inverse of ``to_dict``; unknown keys or bad sizes are an error."""
        if not isinstance(data, dict) or set(data) - {"n_states", "n_actions", "maze"}:
            raise ValueError(f"a QTableConfig has n_states, n_actions, maze; got {data!r}")
        c = cls(**data)
        if not all(isinstance(v, int) and v >= 1 for v in (c.n_states, c.n_actions)) or c.n_states > 10_000_000:
            raise ValueError(f"QTableConfig sizes must be integers >= 1 (and sane), got {c}")
        return c


class QTable(torch.nn.Module):
    """The task goal's Q table as a module, so that it is saved like every other checkpoint (safetensors + JSON)."""

    def __init__(self, config: QTableConfig):
        super().__init__()
        self.config = config
        self.q = torch.nn.Parameter(torch.zeros(config.n_states, config.n_actions), requires_grad=False)


def train(env_id: str, *, steps: int | None = None, seed: int = 0, out: str | Path | None = None,
          progress=None, config: SmartStartHERConfig | None = None) -> RunResult:
    """Smart Start + HER on ``maze-<name>`` for ``config.episodes`` episodes or ``steps`` environment steps, whichever
    comes first; the evaluation is the greedy path from the start (deterministic maze: one episode says it all)."""
    from flipper_control.rl.checkpoint import save_agent
    from flipper_control.rl.gridworld import maze, named_maze

    is_file = env_id.endswith((".yaml", ".yml"))
    if env_id not in ENVS and not is_file:
        raise ValueError(f"unknown environment {env_id!r} for --algo {ALGORITHM}; allowed: {', '.join(ENVS)} or a maze "
                         "YAML file")
    t0 = time.perf_counter()
    cfg = config or SmartStartHERConfig()
    m = maze(env_id) if is_file else named_maze(env_id.removeprefix("maze-"))
    agent = SmartStartHERAgent(m, cfg, np.random.default_rng(seed))
    budget = int(steps) if steps is not None else cfg.episodes * cfg.max_steps
    returns, ends, used = [], [], 0
    while len(returns) < cfg.episodes and used < budget:
        stats = agent.run_episode()
        used += stats.steps
        returns.append(stats.reward)
        ends.append(used)
        if progress is not None:
            progress(len(returns), cfg.episodes, f"reward {np.mean(returns[-20:]):.2f}")
    path_len = agent.greedy_path_length()
    solved = 1.0 if path_len > 0 else 0.0
    if out is not None:
        table = QTable(QTableConfig(m.n_states, m.n_actions, m.name))
        table.q.data.copy_(torch.as_tensor(agent.q_table(agent.goal), dtype=torch.float32))
        save_agent(out, table, algorithm=ALGORITHM, env_id=env_id, rl={"step": used},
                   metadata={"seed": seed, "config": asdict(cfg)}, architectures={"QTable": (QTable, QTableConfig)})
    return RunResult(algorithm=ALGORITHM, env=env_id, seed=seed, eval_mean_return=solved, eval_std_return=0.0,
                     eval_episodes=1, env_steps=used, eval_env_steps=path_len if path_len > 0 else cfg.max_steps,
                     seconds=time.perf_counter() - t0, config={**asdict(cfg), "greedy_path_length": path_len,
                                                              "shortest_path_length": m.shortest_path_length()},
                     train_episodes=len(returns), train_mean_return=float(np.mean(returns)) if returns else None,
                     checkpoint=str(out) if out is not None else None,
                     curve={"episode_end_steps": ends, "episode_returns": returns, "evals": [[used, solved]]})
