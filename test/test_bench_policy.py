"""``bench_policy``: the per-decision timing of the NaN-aware policy reports every figure, finite and positive."""

from __future__ import annotations

import math
import os

import torch

from flipper_control.bench.policy import bench_policy
from flipper_control.policy import NanAwarePolicy, PolicyConfig


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_bench_policy_small_run():
    threads, affinity = torch.get_num_threads(), os.sched_getaffinity(0)
    out = bench_policy(calls=40, repeats=2, seed=1)
    for key in ("torch", "threads", "cpu", "cpu_model", "params", "config", "calls", "repeats", "warmup", "act_numpy",
                "act_numpy_nan", "act_numpy_nan_footprint", "act_numpy_nan_prior", "baseline_forward", "baseline_forward_nan",
                "speedup_vs_baseline", "batched",
                "nan_outputs_finite", "outputs_in_range", "max_abs_diff_vs_baseline", "target_ms", "meets_target",
                "peak_rss_mib"):
        assert key in out, key
    for key in ("act_numpy", "act_numpy_nan", "act_numpy_nan_footprint", "act_numpy_nan_prior", "baseline_forward",
                "baseline_forward_nan"):
        assert _positive(out[key]["ms_per_decision"]) and len(out[key]["ms_repeats"]) == 2
        assert all(_positive(v) for v in out[key]["ms_repeats"])
    assert sorted(out["act_numpy_nan_ensemble"]) == ["10", "2"]
    assert all(_positive(v["ms_per_decision"]) for v in out["act_numpy_nan_ensemble"].values())
    assert _positive(out["batched"]["decisions_per_s"]) and out["batched"]["batch"] == 256
    assert _positive(out["speedup_vs_baseline"]) and _positive(out["peak_rss_mib"])
    assert out["threads"] == 1 and out["torch"] == torch.__version__ and out["cpu_model"]
    assert out["params"] == sum(p.numel() for p in NanAwarePolicy().parameters())
    assert 0.2 < out["act_numpy_nan"]["nan_fraction"] < 0.5
    # the NaN-DEM path gives finite targets inside the joint range, equal to the plain forward call
    assert out["nan_outputs_finite"] and out["outputs_in_range"]
    assert out["max_abs_diff_vs_baseline"] < 1e-6
    assert isinstance(out["meets_target"], bool) and out["target_ms"] == 1.0
    # the process gets its CPUs and torch threads back (later tests start process pools)
    assert torch.get_num_threads() == threads and os.sched_getaffinity(0) == affinity


def test_bench_policy_other_config():
    cfg = PolicyConfig(conv_channels=4, hidden=(16, 16))
    out = bench_policy(cfg, calls=10, repeats=1)
    assert out["config"]["hidden"] == [16, 16] and out["nan_outputs_finite"]
    assert _positive(out["act_numpy"]["ms_per_decision"])
