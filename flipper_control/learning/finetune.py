"""Fine-tuning an imitation policy by evolution strategies in simulation through G (``flipper finetune``).

Imitation copies the planner's labels, and the planner's labels leave time on the table: a plan may finish as
late as the schedule allows, so on the stairs the policies learn to climb with the rear flippers half pressed and
finish slow (docs/sim2real_experiments.md, "The labels on the flight"). This step scores the policy by what the
evaluation scores -- each run's level -- plus a little shaping, and moves its weights up that score: Algorithm 1's
imitated policy, improved where its teacher was slack, in the same simulation through G_k that Table I uses (never
on the reality proxy, never on the test worlds).

The method is OpenAI's evolution strategies (Salimans et al. 2017) on the last layer only:

- each generation draws ``pairs`` Gaussian directions ``eps`` and runs the centre ``theta`` and the ``2 * pairs``
  members ``theta +- sigma * eps`` on the same ``worlds_per_generation`` training worlds and noise seeds (common
  random numbers: a member's luck is every member's luck);
- a member's fitness is its mean over those runs of ``level value + progress_weight * share of the world driven -
  lateness_weight * (time / nominal - 1)^+`` (lateness only for runs that did not fail: a fail is already 0);
- the step is Adam's on the antithetic estimate ``sum_i (rank(theta + sigma eps_i) - rank(theta - sigma eps_i))
  eps_i / (2 pairs sigma)``, with centred ranks in [-0.5, 0.5] (the scale of the score does not matter, and one
  lucky run cannot dominate a generation).

Why the last layer: with 16 members a generation, a search over the whole network (206,000 weights) would be a
random walk; its 516 weights already decide how hard each flipper presses for every situation the earlier layers
recognise. Why ES rather than the toolbox's CUP: CUP's fine-tuning of an imitation policy lost stairs_up while its
critic was still learning (docs/rl.md); ES needs no critic, uses only whole-run scores, runs its episodes on the
loop's executor and gives the same weights for the same seed on any of them. The update is a dozen lines of numpy;
the ES libraries (evotorch, cma) are not among the pinned dependencies and would want to own the episode loop.

Resumable: after every generation the state (weights, Adam's moments, the generator's state, the log) is written
atomically beside the output (``<out>.es.json`` + ``<out>.es.safetensors``); a rerun with the same inputs continues
from it, and one with other inputs is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.config_io import config_from_mapping

__all__ = ["FinetuneConfig", "EsState", "episode_fitness", "es_update", "finetune", "member_task", "state_paths"]

# ~0.1 (pre-squash) on an output when the last layer's 128 inputs and bias are of size ~0.5: small enough that the
# members mostly score like the centre, large enough that 10 runs tell them apart
DEFAULT_SIGMA = 0.1 / (0.5 * math.sqrt(129.0))


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of ``finetune`` (the module docstring says what each does)."""

    generations: int = 24
    pairs: int = 8  # antithetic pairs of members per generation
    worlds_per_generation: int = 10  # training worlds each member runs per generation (drawn without replacement)
    training_set: str = "training"  # the generated world set (sim.world_sets.GENERATED_SETS); never the test worlds
    training_worlds: int = 20
    world_seed: int = 0  # the set's generator seed (a loop's iteration k plans on 1000 x its seed + k)
    layers: tuple[str, ...] = ("head.2",)  # parameter names or module prefixes of the policy that move
    sigma: float = DEFAULT_SIGMA  # the members' spread in weight space
    step: float = 0.1 * DEFAULT_SIGMA  # Adam's step size
    progress_weight: float = 0.3
    lateness_weight: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        problems = []
        for name in ("generations", "pairs", "worlds_per_generation", "training_worlds"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                problems.append(f"{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.worlds_per_generation, int) and isinstance(self.training_worlds, int) \
                and self.worlds_per_generation > self.training_worlds:
            problems.append(f"worlds_per_generation ({self.worlds_per_generation}) cannot exceed training_worlds "
                            f"({self.training_worlds})")
        for name in ("sigma", "step"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                problems.append(f"{name} must be a positive number, got {v!r}")
        for name in ("progress_weight", "lateness_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                problems.append(f"{name} must be a number >= 0, got {v!r}")
        if not self.layers or not all(isinstance(n, str) and n for n in self.layers):
            problems.append(f"layers must name at least one parameter or module, got {list(self.layers)!r}")
        from sim.world_sets import GENERATED_SETS

        if self.training_set not in GENERATED_SETS:
            problems.append(f"training_set must be one of {', '.join(GENERATED_SETS)}, got {self.training_set!r}")
        if problems:
            raise ValueError("FinetuneConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        return config_from_mapping(cls, data, "FinetuneConfig")


def tuned_parameters(policy, layers: tuple[str, ...]) -> list[str]:
    """The names of ``policy``'s parameters that ``layers`` select (exact names or module prefixes), in the
    network's order; an unknown name is refused with the names there are."""
    names = [n for n, _ in policy.named_parameters()]
    chosen = []
    for layer in layers:
        hits = [n for n in names if n == layer or n.startswith(layer + ".")]
        if not hits:
            raise ValueError(f"layers: the policy has no parameter or module {layer!r}; its parameters: {', '.join(names)}")
        chosen += [n for n in hits if n not in chosen]
    return [n for n in names if n in chosen]


def _get(policy, names: list[str]) -> np.ndarray:
    params = dict(policy.named_parameters())
    return np.concatenate([params[n].detach().numpy().ravel() for n in names]).astype(np.float64)


def _set(policy, names: list[str], theta: np.ndarray) -> None:
    import torch

    params, i = dict(policy.named_parameters()), 0
    with torch.no_grad():
        for n in names:
            t = params[n]
            t.copy_(torch.from_numpy(np.asarray(theta[i:i + t.numel()]).reshape(t.shape)).float())
            i += t.numel()


# ------------------------------------------------------------------------------------------ the update
@dataclass
class EsState:
    """Where a fine-tuning run stands: the weights, Adam's moments, the generator and the log."""

    theta: np.ndarray
    m: np.ndarray
    v: np.ndarray
    generation: int
    rng_state: dict
    log: list[dict] = field(default_factory=list)


def centred_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks of ``values`` mapped onto [-0.5, 0.5]. Tied values (common: levels are 0, 0.5 or 1) get distinct ranks
    in numpy's default sort order, which is deterministic but not promised to follow their positions."""
    ranks = np.empty(len(values))
    ranks[np.argsort(values)] = np.arange(len(values))
    return ranks / max(len(values) - 1, 1) - 0.5


def es_update(state: EsState, eps: np.ndarray, fitness: np.ndarray, config: FinetuneConfig) -> np.ndarray:
    """One ascent step of ``state`` (in place) from the members' ``fitness`` (plus members, minus members; the
    centre not included) along their directions ``eps`` (pairs, n); returns the gradient estimate."""
    pairs = len(eps)
    ranks = centred_ranks(np.asarray(fitness, dtype=float))
    grad = ((ranks[:pairs] - ranks[pairs:])[:, None] * eps).sum(0) / (2 * pairs * config.sigma)
    t = state.generation + 1
    state.m = 0.9 * state.m + 0.1 * grad
    state.v = 0.999 * state.v + 0.001 * grad ** 2
    m_hat, v_hat = state.m / (1 - 0.9 ** t), state.v / (1 - 0.999 ** t)
    state.theta = state.theta + config.step * m_hat / (np.sqrt(v_hat) + 1e-8)
    state.generation = t
    return grad


def episode_fitness(run, world, config: FinetuneConfig) -> float:
    """One run's fitness: its level value, plus a share of the progress, less the lateness of a run that did not
    fail (both in units of the nominal time and the world's length)."""
    nominal = world.length / world.speed
    late = max(0.0, run.time / nominal - 1.0) if run.level != "fail" else 0.0
    return run.value + config.progress_weight * min(1.0, run.distance / world.length) - config.lateness_weight * late


# ------------------------------------------------------------------------------------------ the episodes
_BASES: dict[tuple, Any] = {}


def member_task(task: dict) -> dict:
    """One member on one world: ``{policy: CKPT, transform: GAN or None, names: [...], theta: array, world: World,
    seed: int, config: FinetuneConfig dict}`` -> ``{fitness, value, level, cpu_s}``. The worker keeps its own copy of
    the policy (never the evaluation's cached one) and writes ``theta`` into the named parameters."""
    from flipper_control.checkpoint import checkpoint_paths, load_policy
    from flipper_control.learning.tasks import ThroughTransform, _simulator, _transform
    from flipper_control.policy import PolicyController
    from sim.rollout import run_episode

    cpu0 = time.process_time()
    weights, _ = checkpoint_paths(task["policy"])
    key = (str(weights), weights.stat().st_mtime)
    if key not in _BASES:
        _BASES.clear()
        _BASES[key] = load_policy(task["policy"])[0]
    policy = _BASES[key]
    _set(policy, task["names"], task["theta"])
    controller = PolicyController(policy)
    if task.get("transform"):
        controller = ThroughTransform(controller, _transform(task["transform"]))
    world = task["world"]
    run = run_episode(_simulator("sim"), world, controller, seed=int(task["seed"]))
    config = FinetuneConfig.from_dict(task["config"])
    return {"fitness": episode_fitness(run, world, config), "value": run.value, "level": run.level,
            "cpu_s": time.process_time() - cpu0}


# ------------------------------------------------------------------------------------------ the run
def state_paths(out: str | Path) -> tuple[Path, Path]:
    """The resumable state's files beside the output checkpoint ``out``."""
    from sim.checkpoint_io import checkpoint_paths

    base = checkpoint_paths(out)[0].with_suffix("")  # PATH and PATH.safetensors name the same checkpoint
    return base.with_name(base.name + ".es.json"), base.with_name(base.name + ".es.safetensors")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _save_state(out: Path, state: EsState, inputs: dict) -> None:
    from safetensors.numpy import save

    from sim.io_utils import write_bytes_atomic, write_json_atomic

    meta_path, arrays_path = state_paths(out)
    arrays = save({"theta": state.theta, "m": state.m, "v": state.v})
    write_bytes_atomic(arrays_path, arrays)
    # the JSON last, with the arrays' hash: a state whose two files do not belong together is not resumed
    write_json_atomic(meta_path, {"inputs": inputs, "generation": state.generation, "rng_state": state.rng_state,
                                  "arrays_sha256": hashlib.sha256(arrays).hexdigest(), "log": state.log})


def _load_state(out: Path, inputs: dict, n: int) -> EsState | None:
    """The saved state of a run with these very ``inputs``, or None where there is none; another run's is refused."""
    from safetensors.numpy import load

    meta_path, arrays_path = state_paths(out)
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arrays_bytes = arrays_path.read_bytes()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{meta_path}: the fine-tuning state cannot be read ({exc}); delete it (and "
                         f"{arrays_path.name}) to start again") from None
    if meta.get("inputs") != inputs:
        changed = sorted(k for k in set(inputs) | set(meta.get("inputs", {})) if inputs.get(k) != meta.get("inputs", {}).get(k))
        raise ValueError(f"{meta_path} is the state of a fine-tuning run with other inputs ({', '.join(changed)} differ); "
                         f"choose another --out or delete it to start again")
    if hashlib.sha256(arrays_bytes).hexdigest() != meta.get("arrays_sha256"):
        raise ValueError(f"{arrays_path} does not match {meta_path.name}; delete both to start again")
    arrays = load(arrays_bytes)
    if any(arrays[k].shape != (n,) for k in ("theta", "m", "v")):
        raise ValueError(f"{arrays_path}: the state holds {arrays['theta'].shape} weights, the layers have {n}")
    return EsState(arrays["theta"], arrays["m"], arrays["v"], int(meta["generation"]), meta["rng_state"], meta["log"])


def finetune(policy_path: str, out: str | Path, config: FinetuneConfig, seed: int = 0, transform: str | None = None,
             executor=None, progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Fine-tune the policy checkpoint ``policy_path`` by ES (module docstring) in simulation, seeing every DEM
    through the CycleGAN checkpoint ``transform`` (None: the exact DEMs), and write the result to checkpoint ``out``.

    ``executor``: a ``flipper_control.learning.executors`` executor for the episodes (default: serial).
    ``progress(generation, generations, log entry)`` after each generation. Returns the run's summary (also in the
    output's sidecar under ``finetune``)."""
    from flipper_control.checkpoint import checkpoint_paths, load_policy, save_policy
    from flipper_control.learning.executors import make_executor
    from sim.world_sets import generated_worlds

    policy, meta = load_policy(policy_path)  # a bad checkpoint stops here
    names = tuned_parameters(policy, config.layers)
    if transform:
        from perception.cyclegan import load_gan

        gan, _ = load_gan(transform)
        if tuple(gan.config.dem_shape) != tuple(policy.config.dem_shape):
            raise ValueError(f"--transform {transform}: the CycleGAN makes {gan.config.dem_shape[0]} x "
                             f"{gan.config.dem_shape[1]} DEMs, the policy takes {policy.config.dem_shape[0]} x "
                             f"{policy.config.dem_shape[1]}")
    out = Path(out)
    theta0 = _get(policy, names)
    # what fixes the search's course: a rerun with the same inputs continues it, with more generations too
    inputs = {"policy_sha256": _sha256(checkpoint_paths(policy_path)[0]), "transform_sha256":
              _sha256(checkpoint_paths(transform)[0]) if transform else None,
              "config": {k: v for k, v in config.to_dict().items() if k != "generations"}, "seed": int(seed)}
    state = _load_state(out, inputs, len(theta0))
    if state is not None and state.generation > config.generations:
        raise ValueError(f"{state_paths(out)[0]}: this run is at generation {state.generation}, past the "
                         f"{config.generations} asked for; ask for {state.generation} or more, or delete it to start again")
    resumed_at = state.generation if state is not None else 0
    if state is None:
        state = EsState(theta0.copy(), np.zeros_like(theta0), np.zeros_like(theta0), 0,
                        np.random.default_rng(seed).bit_generator.state)
    worlds = generated_worlds(config.training_set, config.training_worlds, config.world_seed)
    rng = np.random.default_rng()
    rng.bit_generator.state = state.rng_state
    cfg = config.to_dict()
    owned = executor is None
    executor = executor or make_executor("serial")
    t0, cpu_s = time.perf_counter(), 0.0
    try:
        while state.generation < config.generations:
            g0 = time.perf_counter()
            eps = rng.standard_normal((config.pairs, len(theta0)))
            picked = rng.choice(len(worlds), config.worlds_per_generation, replace=False)
            seeds = rng.integers(0, 10 ** 6, config.worlds_per_generation)
            members = [state.theta + config.sigma * e for e in eps] + [state.theta - config.sigma * e for e in eps]
            members.append(state.theta)  # the centre, scored on the same runs: what the log follows
            tasks = [{"policy": str(policy_path), "transform": transform, "names": names, "theta": theta,
                      "world": worlds[int(w)], "seed": int(s), "config": cfg}
                     for theta in members for w, s in zip(picked, seeds, strict=True)]
            results = executor.map(member_task, tasks)
            k = config.worlds_per_generation
            fitness = np.array([np.mean([r["fitness"] for r in results[i * k:(i + 1) * k]]) for i in range(len(members))])
            value = np.array([np.mean([r["value"] for r in results[i * k:(i + 1) * k]]) for i in range(len(members))])
            cpu_s += sum(r["cpu_s"] for r in results)
            es_update(state, eps, fitness[:-1], config)
            state.rng_state = rng.bit_generator.state
            entry = {"generation": state.generation, "centre_fitness": round(float(fitness[-1]), 4),
                     "centre_value": round(float(value[-1]), 4), "members_value": round(float(value[:-1].mean()), 4),
                     "worlds": [worlds[int(w)].name for w in picked],
                     "drift": round(float(np.linalg.norm(state.theta - theta0) / np.linalg.norm(theta0)), 4),
                     "wall_s": round(time.perf_counter() - g0, 2)}
            state.log.append(entry)
            _save_state(out, state, inputs)
            if progress is not None:
                progress(state.generation, config.generations, entry)
    finally:
        if owned:
            executor.close()
    _set(policy, names, state.theta)
    summary = {"base_policy": str(policy_path), "transform": transform, "seed": int(seed), "config": cfg,
               "tuned_parameters": names, "generations": state.generation, "resumed_at": resumed_at,
               "episodes_this_run": (state.generation - resumed_at) * (2 * config.pairs + 1) * config.worlds_per_generation,
               "cpu_s_this_run": round(cpu_s, 1), "wall_s_this_run": round(time.perf_counter() - t0, 1),
               "drift": round(float(np.linalg.norm(state.theta - theta0) / np.linalg.norm(theta0)), 4), "log": state.log}
    save_policy(out, policy, {**meta, "finetune": summary})
    return summary
