"""Same-pose pairs of exact and reality-proxy DEMs, and a generator judged on them: evaluation only, never training.

The loop's unpaired transfer metrics compare a few held-out simulated trajectories with a few real ones, and the
sets differ in what they show as well as in how it was sensed: two halves of the real set are told apart about as
well as G(x_s) is (the content floor, ``perception.two_sample``). The reality proxy removes content: at every control
step of a run it has the exact DEM of the simulator and its own lidar-built DEM of the same true pose. A candidate
built from the exact DEMs then differs from the proxy's DEMs in sensing only, which is what G is meant to learn.

- ``pair_task``: one heuristic run on one world (an executor task); ``pair_tasks`` the tasks of a set of worlds,
  ``stack_pairs`` their results as one set; ``collect_pairs`` all of it in this process.
- ``save_pairs`` / ``load_pairs``: the set as safetensors (checked on load), so that a loop collects it once.
- ``paired_summary``: identity, G and domain randomisation against the proxy's DEMs of the same poses: the transfer
  metrics (classifier accuracy, closed shares), where each candidate puts its NaN (F1 against the proxy's NaN
  cells) and how far it moves the heights it keeps.

The CycleGAN never trains on pairs (seed 000 assumes unpaired data); ``flipper bench gan --paired-worlds`` and each
GAN update of a loop with ``transfer.paired_worlds`` > 0 evaluate on them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sim.io_utils import write_bytes_atomic

__all__ = ["PAIR_ARRAYS", "collect_pairs", "load_pairs", "pair_task", "pair_tasks", "paired_summary", "save_pairs",
           "stack_pairs"]

PAIR_ARRAYS = ("exact", "proxy", "scalars", "traj")


def pair_tasks(world_set: str, worlds: int, world_seed: int, seed: int, reality_config: dict | None = None) -> list[dict]:
    """One ``pair_task`` per world of ``worlds`` generated worlds of ``world_set`` (generator seed ``world_seed``);
    run ``i`` draws the proxy's noise from ``seed`` x 1000 + i."""
    from sim.world_sets import generated_worlds

    if not (isinstance(worlds, int) and not isinstance(worlds, bool) and worlds >= 2):
        raise ValueError(f"paired evaluation needs at least 2 worlds (one world shows one kind of terrain, and the "
                         f"bench's real halves compare two), got {worlds!r}")
    return [{"world": world, "seed": seed * 1000 + i, "traj": i, "reality_config": reality_config}
            for i, world in enumerate(generated_worlds(world_set, worlds, seed=world_seed))]


def pair_task(task: dict) -> dict[str, np.ndarray]:
    """The heuristic's run on ``task["world"]`` on the reality proxy: at every step the exact DEM, the proxy's DEM
    and the true scalars (pitch, roll, four flippers), all tagged with the run's ``traj`` number; and its ``cpu_s``."""
    from flipper_control.controllers import HeuristicController
    from flipper_control.learning.proxy_figure import collect_dems
    from sim.reality_config import RealityProxyConfig
    from sim.reality_proxy import RealityProxy

    cpu0 = time.process_time()
    config = task.get("reality_config")
    if isinstance(config, dict):
        config = RealityProxyConfig.from_dict(config)
    run = collect_dems(task["world"], HeuristicController(), seed=int(task["seed"]), proxy=RealityProxy(config=config))
    return {"exact": run["exact"].astype(np.float32), "proxy": run["proxy"].astype(np.float32),
            "scalars": run["scalars"].astype(np.float32), "traj": np.full(len(run["exact"]), int(task["traj"])),
            "cpu_s": time.process_time() - cpu0}


def stack_pairs(runs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The runs of ``pair_task`` as one set of pairs."""
    return {k: np.concatenate([r[k] for r in runs]) for k in PAIR_ARRAYS}


def collect_pairs(worlds: int, world_seed: int = 0, seed: int = 0, reality_config=None,
                  progress: Callable[[int, int], None] | None = None,
                  world_set: str = "training") -> dict[str, np.ndarray]:
    """Heuristic runs on ``worlds`` generated worlds on the reality proxy, in this process: ``exact``, ``proxy``
    (N, R, C) DEMs, ``scalars`` (N, 6) and ``traj`` (N,) the run of each step. ``progress(done, total)`` after each
    run. ``reality_config``: a ``RealityProxyConfig`` or its dict (None: today's proxy)."""
    if reality_config is not None and not isinstance(reality_config, dict):
        reality_config = reality_config.to_dict()
    runs = []
    tasks = pair_tasks(world_set, worlds, world_seed, seed, reality_config)
    for i, task in enumerate(tasks):
        runs.append(pair_task(task))
        if progress is not None:
            progress(i + 1, len(tasks))
    return stack_pairs(runs)


def save_pairs(path: str | Path, pairs: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write the pairs (and JSON ``meta``: where they come from) as one safetensors file, atomically."""
    import safetensors.numpy

    arrays = {k: np.ascontiguousarray(pairs[k]) for k in PAIR_ARRAYS}
    return write_bytes_atomic(Path(path), safetensors.numpy.save(arrays, metadata={"meta": json.dumps(meta)}))


def load_pairs(path: str | Path) -> dict[str, np.ndarray]:
    """The pairs ``save_pairs`` wrote, checked: a missing or truncated file, a missing array, or arrays that do not
    describe the same steps is a ValueError naming the file."""
    import safetensors.numpy

    try:
        pairs = safetensors.numpy.load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated or garbled files
        raise ValueError(f"{path}: not a readable pairs file ({exc})") from exc
    missing = [k for k in PAIR_ARRAYS if k not in pairs]
    if missing:
        raise ValueError(f"{path}: pairs file without {', '.join(missing)}")
    n = len(pairs["exact"])
    if (pairs["exact"].ndim != 3 or pairs["proxy"].shape != pairs["exact"].shape or pairs["scalars"].shape[0] != n
            or pairs["traj"].shape != (n,)):
        raise ValueError(f"{path}: the arrays do not pair up (exact {pairs['exact'].shape}, proxy {pairs['proxy'].shape}, "
                         f"scalars {pairs['scalars'].shape}, traj {pairs['traj'].shape})")
    return pairs


def paired_summary(transform: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None,
                   pairs: dict[str, np.ndarray], seed: int = 0, randomization: dict | None = None) -> dict[str, Any]:
    """Identity, ``transform`` (G: exact DEMs, their scalars and their maps' ages in seconds since the run's first
    step in, DEMs with NaN out; None: left out) and, with
    ``randomization`` (a ``DomainRandomization`` dict), the randomised exact DEMs, against the proxy's DEMs of the
    same poses. Returns ``{"pairs", "worlds", "metrics": transfer_report, "nan":
    {candidate: precision, recall, F1, NaN shares}, "height_change": {"real" and candidate: mean |change| ...}}``."""
    from perception.domain_randomization import DomainRandomization, randomize
    from perception.paired_metrics import height_change, paired_nan_agreement
    from perception.transfer_metrics import transfer_report

    exact, proxy, scalars, traj = (pairs[k] for k in PAIR_ARRAYS)
    candidates = {"identity": exact}
    if transform is not None:
        from perception.map_clock import trajectory_ages

        candidates["G"] = transform(exact, scalars, trajectory_ages(traj))  # each run's steps in order from its start
    if randomization is not None:
        dr = DomainRandomization.from_dict(randomization)
        candidates["randomized"] = randomize(exact, np.random.default_rng(seed), dr, pitch=scalars[:, 0])
    measured = {k: (v, None) for k, v in candidates.items() if np.isfinite(v).any()}  # a G that hides all: no metric
    # no content floor: the candidates show the very poses of the proxy's DEMs, so 50 % is the mark here
    report = transfer_report((proxy, None), measured, seed=seed)
    nan = {k: {m: v for m, v in paired_nan_agreement(dems, proxy).items() if m != "agreement_map"}
           for k, dems in candidates.items() if k != "identity"}
    moved = {"real": height_change(proxy, exact)} | {k: height_change(v, exact) for k, v in candidates.items()
                                                      if k != "identity"}
    return {"pairs": int(len(exact)), "worlds": int(len(np.unique(traj))), "metrics": report, "nan": nan,
            "height_change": moved}
