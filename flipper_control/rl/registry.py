"""The algorithms of ``flipper rl train`` and the environments each accepts; the evaluators of ``flipper rl eval``.

Adding an algorithm is two lines: import its module, and add ``"name": (module.train, module.ENVS)`` to
``ALGORITHMS``. The contract of a train function (``TrainFn``)::

    train(env_id: str, *, steps: int | None = None, seed: int = 0, out: str | Path | None = None,
          progress: Progress | None = None) -> common.RunResult

- ``env_id`` is one of the algorithm's allowed environments (checked here before the call; the function may
  check again);
- ``steps`` caps the environment steps (None: the algorithm's default budget for that environment);
- ``seed`` seeds every random choice (``common.seed_everything``);
- ``out`` is a checkpoint prefix (``out.safetensors`` + ``out.json``, written with ``checkpoint.save_agent``
  so that ``metadata.rl`` names the algorithm and environment); None: no checkpoint;
- ``progress(done, total, info)`` is called now and then (``Step.update`` under the command);
- it returns a ``RunResult`` (``eval_mean_return``, ``eval_episodes``, ``env_steps``, ``seconds``, ``config``,
  ``curve`` ... : the command writes it as the JSON and draws the PNG from ``curve``), and raises
  ``common.DivergedError`` when a loss becomes NaN/inf (the last good checkpoint kept), ``ValueError`` for bad
  input (a message naming what and where).

``EVALUATORS`` (optional per algorithm) maps the ``metadata.rl.algorithm`` of a checkpoint to
``evaluate(path, episodes, seed) -> (returns, env_steps, metadata)``, for ``flipper rl eval``
(``evaluate_checkpoint`` picks the evaluator from the checkpoint's sidecar). An algorithm without one is
trained but not evaluable from the command line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flipper_control.rl import cup, ddqn_per, dqn, flipper_cup, flipper_ddqn, smart_start_her
from flipper_control.rl.common import RunResult, check_env

__all__ = ["ALGORITHMS", "EVALUATORS", "TrainFn", "evaluate_checkpoint", "evaluate_q_checkpoint", "resolve"]

TrainFn = Callable[..., RunResult]


def _by_env(*routes: tuple[TrainFn, tuple[str, ...]]) -> tuple[TrainFn, tuple[str, ...]]:
    """One --algo name over several modules: the train function of the module whose environments hold env_id."""
    def train(env_id: str, **kwargs) -> RunResult:
        for fn, envs in routes:
            if env_id in envs:
                return fn(env_id, **kwargs)
        raise ValueError(f"unknown environment {env_id!r}; allowed: {', '.join(e for _, es in routes for e in es)}")
    return train, tuple(e for _, envs in routes for e in envs)

# name -> (train function, allowed environments)
ALGORITHMS: dict[str, tuple[TrainFn, tuple[str, ...]]] = {
    "dqn": (dqn.train, dqn.ENVS),
    "ddqn-per": _by_env((ddqn_per.train, ddqn_per.ENVS), (flipper_ddqn.train, flipper_ddqn.ENVS)),
    "ss-her": (smart_start_her.train, smart_start_her.ENVS),
    "cup": _by_env((cup.train, cup.ENVS), (flipper_cup.train, flipper_cup.ENVS)),
}


def resolve(algorithm: str, env_id: str) -> TrainFn:
    """The train function of ``algorithm`` after checking that it accepts ``env_id``; a ``ValueError`` naming the
    allowed algorithms or environments otherwise."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r} (--algo); allowed: {', '.join(ALGORITHMS)}")
    train, envs = ALGORITHMS[algorithm]
    if algorithm == "ss-her" and env_id.endswith((".yaml", ".yml")):
        return train  # a maze file of the user's (rl.gridworld's format); train() loads and checks it
    check_env(env_id, envs, algorithm)
    return train


def evaluate_q_checkpoint(path: str | Path, episodes: int, seed: int) -> tuple[list[float], int, dict[str, Any]]:
    """Greedy evaluation of a Q-network checkpoint (DQN, DDQN, DDQN + PER) on the environment it was trained on,
    with its frame stack; the network's sizes are checked against that environment first."""
    from flipper_control.rl.checkpoint import check_shapes, load_agent, read_rl_metadata
    from flipper_control.rl.common import evaluate, make_env, obs_spec
    from sim.checkpoint_io import checkpoint_paths

    sidecar = checkpoint_paths(path)[1]
    net, meta = load_agent(path)
    rl = read_rl_metadata(sidecar, meta)
    check_env(rl["env"])
    frame_stack = int(rl.get("frame_stack", 1))
    env = make_env(rl["env"])
    obs_dim, n_actions, _ = obs_spec(env)
    env.close()
    check_shapes(net, sidecar, {"obs_dim": obs_dim * frame_stack, "n_actions": n_actions},
                 f"{rl['env']} with a frame stack of {frame_stack}")
    epsilon = float(meta.get("config", {}).get("eval_epsilon", 0.0))
    returns, steps = evaluate(net, rl["env"], episodes, seed, frame_stack, epsilon)
    return returns, steps, meta


# metadata.rl.algorithm -> evaluate(path, episodes, seed)
EVALUATORS: dict[str, Callable[[str | Path, int, int], tuple[list[float], int, dict[str, Any]]]] = {
    "dqn": evaluate_q_checkpoint,
    "ddqn": evaluate_q_checkpoint,
    "ddqn-per": evaluate_q_checkpoint,
    "flipper-ddqn-per": flipper_ddqn.evaluate_checkpoint,
    "flipper-cup": flipper_cup.evaluate_checkpoint,
}


def evaluate_checkpoint(path: str | Path, episodes: int, seed: int) -> tuple[list[float], int, dict[str, Any]]:
    """Evaluate any toolbox checkpoint with the evaluator of the algorithm its sidecar names; returns (returns,
    environment steps, ``metadata.rl``). A ``CheckpointError`` (a ``ValueError``) names the file and the field."""
    from flipper_control.rl.checkpoint import read_rl_metadata
    from sim.checkpoint_io import CheckpointError, checkpoint_paths

    sidecar = checkpoint_paths(path)[1]
    if not sidecar.is_file():
        raise CheckpointError(f"incomplete checkpoint {path}: missing {sidecar}")
    try:
        data = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{sidecar}: the sidecar is not valid JSON ({exc})") from None
    meta = data.get("metadata") if isinstance(data, dict) else None
    rl = read_rl_metadata(sidecar, meta if isinstance(meta, dict) else {})
    if rl["algorithm"] not in EVALUATORS:
        raise CheckpointError(f"{sidecar}: metadata.rl.algorithm {rl['algorithm']!r} has no evaluator; "
                              f"flipper rl eval knows: {', '.join(EVALUATORS)}")
    returns, steps, _ = EVALUATORS[rl["algorithm"]](path, episodes, seed)
    return returns, steps, rl
