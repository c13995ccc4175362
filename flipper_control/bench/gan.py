"""`flipper bench gan`: the cost of the sim -> real transform (the CycleGAN's generator G, ``perception.cyclegan.
SimToReal``) per DEM on one core, beside the policy's decision (``NanAwarePolicy.act_numpy``) in the same run: on
the robot's side of the loop both run once per DEM. The issue's target is at most 0.5 ms per DEM."""

from __future__ import annotations

import numpy as np

from flipper_control.bench.common import cpu_model, one_core_one_thread
from flipper_control.bench.policy import _policy_inputs, _time_per_call

__all__ = ["bench_gan"]

TARGET_MS = 0.5


def bench_gan(checkpoint: str | None = None, calls: int = 5000, repeats: int = 3, seed: int = 0) -> dict:
    """Milliseconds per DEM of ``SimToReal`` (a checkpoint's G, or a fresh CycleGAN's, which costs the same) and of
    the policy, medians over ``repeats`` of ``calls`` calls after a warm-up; plus batched DEMs per second."""
    import time

    import torch

    from flipper_control.policy import NanAwarePolicy, PolicyConfig
    from perception.cyclegan import CycleGan, load_gan
    from perception.sim_to_real import SimToReal

    if calls < 1 or repeats < 1:
        raise ValueError(f"calls and repeats must be >= 1, got {calls} and {repeats}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gan = load_gan(checkpoint)[0] if checkpoint else CycleGan()
        policy = NanAwarePolicy(PolicyConfig()).eval()  # safe: nn.Module.eval()
    transform = SimToReal(gan.g)
    dems, scalars = _policy_inputs(policy.config, 256, np.random.default_rng(seed), 0.0)
    with one_core_one_thread() as cpu:
        for call in (transform, policy.act_numpy):
            _time_per_call(call, dems, scalars, min(200, calls))
        gan_ms, policy_ms, batch_rate = [], [], []
        for _ in range(repeats):
            gan_ms.append(_time_per_call(transform, dems, scalars, calls) * 1e3)
            policy_ms.append(_time_per_call(policy.act_numpy, dems, scalars, calls) * 1e3)
            t0 = time.perf_counter()
            transform.transform(dems, scalars)
            batch_rate.append(len(dems) / (time.perf_counter() - t0))
    ms, pol = float(np.median(gan_ms)), float(np.median(policy_ms))
    return {"checkpoint": checkpoint, "cpu": cpu, "cpu_model": cpu_model(), "torch": torch.__version__, "calls": calls,
            "repeats": repeats, "generator_parameters": int(sum(p.numel() for p in gan.g.parameters())),
            "sim_to_real": {"ms_per_dem": ms, "ms_repeats": gan_ms},
            "policy_act_numpy": {"ms_per_decision": pol, "ms_repeats": policy_ms},
            "batched_dems_per_s": float(np.median(batch_rate)), "target_ms": TARGET_MS, "meets_target": ms <= TARGET_MS}
