"""The units of work of the sim-to-real half of Algorithm 1, as top-level functions an executor can ship to a worker:
driving the reality proxy to record a rosbag (lines 2 and 9: real trajectories) and updating the CycleGAN on the
newest simulated states and all real ones (line 7). Like ``tasks``, each takes one plain dict with its own seeds.

Also the policy as the CycleGAN's task model (the policy-aware GAN, ``GanTrainConfig.lambda_task``): ``perception``
knows no policy, so the policy is wrapped here into the ``(heights, measured, scalars) -> actions`` form that
``perception.gan_training`` takes, and ``action_gap`` measures on held-out states how far a transform moves it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: a worker that only records bags needs no torch
    import numpy as np
    import torch

    from flipper_control.policy import NanAwarePolicy

__all__ = ["PolicyTaskModel", "action_gap", "gan_task", "load_task_policy", "record_task"]


class PolicyTaskModel:
    """A frozen ``NanAwarePolicy`` as a task model: ``(heights, measured, scalars) -> actions`` with gradients w.r.t.
    heights and mask, where the policy's own ``forward`` takes DEMs with NaN (which carry no gradient).

    It runs ``NanAwarePolicy.forward_parts`` (what ``forward`` runs after splitting a DEM with NaN at the cells
    where ``measured`` is 0) on the clipped, scaled heights and ``measured``. ``measured`` may carry a
    straight-through gradient (G's mask): the mask convolution is linear in it, so hiding or revealing a cell has
    a gradient. The policy's weights are frozen (no gradient is
    kept for them) and it stays in eval mode.
    """

    def __init__(self, policy: NanAwarePolicy):
        self.policy = policy.eval()  # safe: nn.Module.eval(), not Python eval
        for p in self.policy.parameters():
            p.requires_grad_(False)

    def __call__(self, heights: torch.Tensor, measured: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        c = self.policy.config
        # heights are 0 at missing cells already (the GAN's channels hold them so); as split_dem then clamp and scale
        values, mask = self.policy.complete(heights.clamp(-c.dem_clip, c.dem_clip) / c.dem_scale, measured, scalars)
        return self.policy.forward_parts(values.unsqueeze(1), mask.unsqueeze(1), scalars)


def load_task_policy(path: str, gan_config, where: str) -> tuple[PolicyTaskModel, dict[str, Any]]:
    """The policy checkpoint at ``path`` as a task model for a GAN of ``gan_config``, and what the GAN's sidecar
    records of it (path and weights sha256). ``where`` (e.g. "--policy") names the source in every message."""
    from flipper_control.checkpoint import checkpoint_paths, load_policy

    try:
        policy, _ = load_policy(path)
    except ValueError as exc:  # CheckpointError included: say which option named the file
        raise ValueError(f"{where} {path}: {exc}") from None
    c = policy.config
    if tuple(c.dem_shape) != tuple(gan_config.dem_shape) or c.n_proprio != gan_config.n_scalars:
        raise ValueError(f"{where} {path}: the policy takes {c.dem_shape[0]} x {c.dem_shape[1]} DEMs and {c.n_proprio} "
                         f"scalars, the GAN's states are {gan_config.dem_shape[0]} x {gan_config.dem_shape[1]} with "
                         f"{gan_config.n_scalars}")
    sidecar = json.loads(checkpoint_paths(path)[1].read_text())  # load_policy checked the weights against this hash
    return PolicyTaskModel(policy), {"path": str(path), "weights_sha256": sidecar["weights_sha256"]}


def action_gap(task: PolicyTaskModel, reference: np.ndarray, candidates: dict[str, np.ndarray], scalars: np.ndarray) -> dict:
    """Mean |pi(candidate) - pi(reference)| (radians, over states and flippers) for (N, R, C) DEMs with NaN that
    share ``scalars``: how far each transform moves the policy's action. Through the policy's own NaN path."""
    import numpy as np
    import torch

    policy = task.policy
    with torch.inference_mode():
        s = torch.from_numpy(np.ascontiguousarray(scalars, dtype=np.float32))
        ref = policy(torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32)), s)
        return {name: float(torch.abs(policy(torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32)), s) - ref).mean())
                for name, d in candidates.items()}


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
    None, train: GanTrainConfig dict, seed, randomization: dict or None}`` and optionally ``policy: CKPT`` (the
    current policy pi_k: the task model of ``lambda_task``, which needs it; without it no action gap is measured)
    and ``estimate_height_offset: true`` (``train``'s ``height_offset`` replaced by the sensor's offset estimated from
    the training sets, ``flipper_control.learning.sensor_offset``; the result's ``height_offset`` records it, or, with
    ``offset_m`` None, why none could be estimated: that update keeps ``train``'s value).

    Trajectories are split into training and held-out parts; the held-out transfer metrics compare the exact
    simulated DEMs (identity), G(x_s) and, with ``randomization``, the domain-randomised x_s, against the real ones;
    with a policy, ``task_consistency`` gives the policy's mean action change each of them causes on x_s.
    A GAN whose loss turns non-finite, or whose held-out metrics show it collapsed or drifted away from the real DEMs
    (``perception.gan_health``), is not saved: the result says ``diverged`` and why, and the caller keeps the last
    good generator. Returns ``{"path", "diverged", "error", "metrics", "task_consistency", "history", "cpu_s",
    "held_out"}`` (``held_out``: trajectories and states of each held-out set; ``metrics["content_floor"]``: the
    classifier between two trajectory halves of the held-out real set) and, with ``pairs`` (a ``paired_eval``
    pairs file), ``paired``: identity, G and the randomisation judged on same-pose pairs (``paired_summary``; with
    ``shadows: true``, the ``gan_shadows`` of the loop, G's DEMs as imitation sees them, with the terrain's shadows).
    """
    import numpy as np
    import torch

    from perception.cyclegan import load_gan, save_gan
    from perception.domain_randomization import DomainRandomization, randomize
    from perception.gan_health import judged_report
    from perception.gan_training import GanDivergedError, GanTrainConfig, gan_data, split_by_trajectory, train_gan
    from perception.sim_to_real import SimToReal
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
    offset = None
    if task.get("estimate_height_offset"):  # the sensor's offset from the sets G trains on (sensor_offset)
        from flipper_control.learning.sensor_offset import with_estimated_offset

        try:
            config, estimate = with_estimated_offset(config, sim_train, real_train)
            offset = estimate.to_dict()
        except ValueError as exc:  # no level ground in a set: this update trains without, and says why
            offset = {"offset_m": None, "error": str(exc)}
    task_model, policy_info = None, None
    if task.get("policy"):
        task_model, policy_info = load_task_policy(task["policy"], gan_config, "policy")
    elif config.lambda_task > 0:
        raise ValueError(f"gan.lambda_task = {config.lambda_task} needs the current policy (the task's 'policy'), none given")
    out: dict[str, Any] = {"path": None, "diverged": False, "error": None, "samples_sim": len(sim_train),
                           "samples_real": len(real_train), "task_consistency": None,
                           # what the held-out metrics stand on: a test on two trajectories says less than on twenty
                           "held_out": {"sim_trajectories": len(np.unique(sim_test.traj_id)), "sim_states": len(sim_test),
                                        "real_trajectories": len(np.unique(real_test.traj_id)),
                                        "real_states": len(real_test)},
                           "height_offset": offset}
    try:
        gan, report = train_gan(sim_train, real_train, config, seed=seed, gan=start, task_model=task_model)
    except GanDivergedError as exc:
        return out | {"diverged": True, "error": str(exc), "metrics": None, "history": None,
                      "cpu_s": time.process_time() - cpu0}
    transform = SimToReal(gan.g)  # one transform for the held-out states and the same-pose pairs
    candidates = {"identity": sim_test.dems, "G": transform.transform(sim_test.dems, sim_test.scalars, map_age=sim_test.age)}
    if task.get("randomization") is not None:
        dr = DomainRandomization.from_dict(task["randomization"])
        candidates["randomized"] = randomize(sim_test.dems, np.random.default_rng(seed), dr, pitch=sim_test.scalars[:, 0])
    with torch.random.fork_rng(devices=[]):
        metrics, failure = judged_report(real_test.dems, candidates, seed=seed, real_traj=real_test.traj_id)
    consistency = None
    if task_model is not None:
        consistency = {"lambda_task": config.lambda_task, "policy": policy_info,
                       "action_gap": action_gap(task_model, sim_test.dems, candidates, sim_test.scalars)}
    if task.get("pairs") and failure is None:  # same-pose pairs: content equal, sensing judged alone
        from flipper_control.learning.paired_eval import load_pairs, paired_summary

        def judged(dems, scalars, map_age):
            return transform.transform(dems, scalars, map_age=map_age)

        if task.get("shadows"):  # gan_shadows: imitation sees G's DEMs with the terrain's shadows; judge those
            from flipper_control.learning.tasks import with_shadows

            def judged(dems, scalars, map_age):
                return with_shadows(transform.transform(dems, scalars, map_age=map_age), dems, scalars[:, 0],
                                    task.get("randomization"))

        with torch.random.fork_rng(devices=[]):
            out["paired"] = paired_summary(judged, load_pairs(task["pairs"]), seed=seed,
                                           randomization=task.get("randomization"))
        out["paired"]["shadows"] = bool(task.get("shadows"))
    if failure is not None:  # finite losses, but a G worse than none: not saved, like a non-finite one
        return out | {"diverged": True, "error": failure, "metrics": metrics, "task_consistency": consistency,
                      "history": report.history, "cpu_s": time.process_time() - cpu0}
    save_gan(task["out"], gan, {"seed": seed, "sim": task["sim"], "real": task["real"], "start": task.get("start"),
                                "train_report": report.to_dict(), "transfer_metrics": metrics,
                                "task_consistency": consistency})
    return out | {"path": str(task["out"]), "metrics": metrics, "task_consistency": consistency, "history": report.history,
                  "cpu_s": time.process_time() - cpu0}
