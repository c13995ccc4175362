"""The units of work of the sim-to-real half of Algorithm 1, as top-level functions an executor can ship to a worker:
driving the reality proxy to record a rosbag (lines 2 and 9: real trajectories) and updating the CycleGAN on the
newest simulated states and all real ones (line 7). Like ``tasks``, each takes one plain dict with its own seeds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = ["gan_task", "record_task"]


def record_task(task: dict) -> dict:
    """Drive the reality proxy with a controller and record the run as a rosbag2: ``{world, controller: spec,
    bag: PATH, seed}`` and optionally ``reality_config`` (a ``RealityProxyConfig`` mapping). A bag already at
    ``bag`` (a resumed loop) is not recorded again; its summary comes back with ``resumed``.
    Returns ``{"bag", "sim_time", "level", "cpu_s", "resumed"}``."""
    from flipper_control.learning.bags import record_proxy_run
    from flipper_control.learning.tasks import _simulator, controller_from_spec
    from perception.bag_salvage import read_metadata

    bag = Path(task["bag"])
    cpu0 = time.process_time()
    if bag.exists():  # a bag appears only when complete (written under .partial, then renamed)
        duration = read_metadata(bag).get("duration", {}).get("nanoseconds", 0)
        return {"bag": str(bag), "sim_time": duration / 1e9, "level": None, "cpu_s": 0.0, "resumed": True}
    summary = record_proxy_run(task["world"], controller_from_spec(task["controller"]), bag, seed=int(task["seed"]),
                               proxy=_simulator("proxy", task.get("reality_config")))
    return {"bag": str(bag), "sim_time": summary["sim_time"], "level": summary["run"]["level"],
            "cpu_s": time.process_time() - cpu0, "resumed": False}


def gan_task(task: dict) -> dict:
    """Update the CycleGAN (Algorithm 1 line 7): ``{sim: [DATASET...], real: [DATASET...], out: CKPT, start: CKPT or
    None, train: GanTrainConfig dict, seed, randomization: dict or None}``.

    Trajectories are split into training and held-out parts; the held-out transfer metrics compare the exact
    simulated DEMs (identity), G(x_s) and, with ``randomization``, the domain-randomised x_s, against the real ones.
    A GAN whose loss turns non-finite is not saved: the result says ``diverged`` and why, and the caller keeps the
    last good generator. Returns ``{"path", "diverged", "error", "metrics", "history", "cpu_s"}``.
    """
    import numpy as np
    import torch

    from perception.cyclegan import SimToReal, load_gan, save_gan
    from perception.domain_randomization import DomainRandomization, randomize
    from perception.gan_training import GanDivergedError, GanTrainConfig, gan_data, split_by_trajectory, train_gan
    from perception.transfer_metrics import transfer_report
    from planning.dataset import TrajectoryDataset

    cpu0 = time.process_time()
    config = GanTrainConfig.from_dict(task["train"])
    start = load_gan(task["start"])[0] if task.get("start") else None
    gan_config = start.config if start is not None else config.gan

    def load(paths: list[str], what: str):
        data = TrajectoryDataset()
        for p in paths:
            data.extend(TrajectoryDataset.load(p))
        return gan_data(data.arrays(), gan_config, what)

    seed = int(task["seed"])
    rng = np.random.default_rng(seed)
    sim_train, sim_test = split_by_trajectory(load(task["sim"], "simulated states"), config.test_fraction, rng)
    real_train, real_test = split_by_trajectory(load(task["real"], "real states"), config.test_fraction, rng)
    out: dict[str, Any] = {"path": None, "diverged": False, "error": None, "samples_sim": len(sim_train),
                           "samples_real": len(real_train)}
    try:
        gan, report = train_gan(sim_train, real_train, config, seed=seed, gan=start)
    except GanDivergedError as exc:
        return out | {"diverged": True, "error": str(exc), "metrics": None, "history": None,
                      "cpu_s": time.process_time() - cpu0}
    candidates = {"identity": (sim_test.dems, None),
                  "G": (SimToReal(gan.g).transform(sim_test.dems, sim_test.scalars), None)}
    if task.get("randomization") is not None:
        dr = DomainRandomization.from_dict(task["randomization"])
        candidates["randomized"] = (randomize(sim_test.dems, np.random.default_rng(seed), dr, pitch=sim_test.scalars[:, 0]),
                                    None)
    with torch.random.fork_rng(devices=[]):
        metrics = transfer_report((real_test.dems, None), candidates, seed=seed)
    save_gan(task["out"], gan, {"seed": seed, "sim": task["sim"], "real": task["real"], "start": task.get("start"),
                                "train_report": report.to_dict(), "transfer_metrics": metrics})
    return out | {"path": str(task["out"]), "metrics": metrics, "history": report.history,
                  "cpu_s": time.process_time() - cpu0}
