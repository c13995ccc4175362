"""``flipper bench sim|policy|dem|proxy|plan``: each measurement beside its baseline in the same run, printed and
optionally written as JSON. The measurements themselves live in ``flipper_control.bench``."""

from __future__ import annotations

import argparse

from flipper_control.cli.common import (
    add_reality_config_arg,
    count,
    max_delay,
    max_delay_kwargs,
    reality_config,
    save_json,
    seconds,
    seed,
)
from flipper_control.progress import Step


def _bench_sim(args) -> dict:
    from flipper_control.bench.sim import bench_sim
    from sim.world_sets import resolve_world

    world = resolve_world(args.world)
    with Step(f"bench sim on {world.name}", unit="phase") as step:
        out = bench_sim(world, seconds=args.seconds, repeats=args.repeats)
        step.finish("done")
    base, loop, dem = out["physics_baseline"], out["closed_loop_heuristic"], out["dem"]
    print(f"world {world.name}, one thread (cpu {out['cpu']}), physics step {out['timestep'] * 1e3:g} ms")
    print(f"  physics only (baseline):  {base['steps_per_s']:9.0f} steps/s   real-time factor {base['real_time_factor']:6.1f}x")
    print(f"  closed loop (heuristic):  {loop['steps_per_s']:9.0f} steps/s   real-time factor {loop['real_time_factor']:6.1f}x"
          f"   levels {loop['levels']}")
    print(f"  DEM extraction:           {dem['ms_per_call']:9.4f} ms/call   baseline {dem['baseline_ms_per_call']:.3f} ms/call"
          f"   ({dem['speedup']:.0f}x, equal: {dem['equal_to_baseline']})")
    return out


def _bench_proxy(args) -> dict:
    from flipper_control.bench.proxy import bench_proxy
    from sim.world_sets import resolve_world

    world = resolve_world(args.world)
    with Step(f"bench proxy on {world.name}", unit="phase") as step:
        out = bench_proxy(world, seconds=args.seconds, config=reality_config(args))
        step.finish("done")
    px, mj = out["proxy"], out["mujoco"]
    print(f"world {world.name}, one CPU, heuristic at 10 Hz, >= {args.seconds:g} simulated s each")
    print(f"  plain MuJoCo (baseline): real-time factor {mj['real_time_factor']:6.1f}x   levels {mj['levels']}")
    print(f"  reality proxy:           real-time factor {px['real_time_factor']:6.1f}x   levels {px['levels']}")
    print("  proxy wall time: " + ", ".join(f"{k} {v:.0%}" for k, v in px["wall_share"].items())
          + f"; point map {px['map_points']} points, {px['map_bytes'] / 2**20:.1f} MiB")
    return out


def _bench_dem(args) -> dict:
    from flipper_control.bench.dem import bench_dem, format_report

    with Step(f"bench dem, {args.points} points", unit="phase") as step:
        out = bench_dem(n_points=args.points, repeats=args.repeats, seed=args.seed)
        step.finish("done")
    print(format_report(out))
    return out


def _bench_policy(args) -> dict:
    from flipper_control.bench.policy import bench_policy

    with Step("bench policy", unit="phase") as step:
        r = bench_policy(calls=args.calls, repeats=args.repeats)
        step.finish("done")
    print(f"policy inference, one thread (torch {r['torch']}, {r['params']} parameters, cpu {r['cpu_model']}):")
    print(f"  act_numpy:              {r['act_numpy']['ms_per_decision']:.4f} ms/decision   (target <= {r['target_ms']:g} ms)")
    print(f"  act_numpy, NaN DEMs:    {r['act_numpy_nan']['ms_per_decision']:.4f} ms/decision")
    print(f"  baseline plain forward: {r['baseline_forward']['ms_per_decision']:.4f} ms/decision   "
          f"({r['speedup_vs_baseline']:.2f}x slower than act_numpy)")
    print(f"  batched ({r['batched']['batch']}):          {r['batched']['decisions_per_s']:.0f} decisions/s")
    print(f"  peak RSS {r['peak_rss_mib']:.0f} MiB; NaN outputs finite: {r['nan_outputs_finite']}")
    return r


def _bench_gan(args) -> dict:
    from flipper_control.bench.gan import bench_gan

    with Step("bench gan", unit="phase") as step:
        r = bench_gan(checkpoint=args.gan, calls=args.calls, repeats=args.repeats, seed=args.seed)
        step.finish("done")
    print(f"sim -> real transform (G{' of ' + args.gan if args.gan else ', untrained'}), one thread, cpu {r['cpu_model']}:")
    print(f"  SimToReal:               {r['sim_to_real']['ms_per_dem']:.4f} ms/DEM   (target <= {r['target_ms']:g} ms)")
    print(f"  policy act_numpy (beside): {r['policy_act_numpy']['ms_per_decision']:.4f} ms/decision")
    print(f"  batched (256):           {r['batched_dems_per_s']:.0f} DEMs/s")
    return r


def _bench_plan(args) -> dict:
    from flipper_control.bench.plan import BENCH_WORLD_SEED, bench_plan, print_bench_plan

    world_seed = BENCH_WORLD_SEED if args.world_seed is None else args.world_seed
    r = bench_plan(policy=args.policy, worlds=args.count, world_seed=world_seed, seed=args.seed, budget_cpu_s=args.budget,
                   max_expansions=args.max_expansions, peer=args.peer, executor=args.executor, workers=args.workers,
                   world_sets=tuple(args.world_sets), noise_seeds=args.noise_seeds, **max_delay_kwargs(args))
    print_bench_plan(r)
    return r


BENCHES = {"sim": _bench_sim, "plan": _bench_plan, "policy": _bench_policy, "dem": _bench_dem, "proxy": _bench_proxy,
           "gan": _bench_gan}


def cmd_bench(args) -> int:
    out = BENCHES[args.what](args)
    status = save_json(args.json, out)
    # the DEM builder must agree with its baseline: a bench that finds it does not fails
    return 1 if args.what == "dem" and not out["equal_to_baseline"] else status


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the ``flipper`` parser."""
    b = sub.add_parser("bench", help="measure speed against baselines")
    b.add_argument("what", choices=list(BENCHES))
    b.add_argument("--world", default="stairs_up")
    b.add_argument("--seconds", type=seconds, default=20.0, help="simulated seconds of the physics baseline")
    b.add_argument("--repeats", type=count, default=3, help="closed-loop runs (sim), timing repeats (policy, dem)")
    b.add_argument("--seed", type=seed, default=0)
    b.add_argument("--points", type=count, default=1_000_000, help="bench dem: points per cloud")
    b.add_argument("--json", help="write figures here")
    add_reality_config_arg(b)
    b.add_argument("--policy", help="bench plan: the guiding policy (default: the last policy of demo_out)")
    b.add_argument("--count", type=count, default=8, help="bench plan: worlds per set")
    b.add_argument("--world-sets", nargs="+", default=["training", "steep"],
                   help="bench plan: world sets to plan on (training: the default loop distribution; steep: the "
                        "hardest half of its stairs, steps and drops; half_steep: the two in turn, what configs/full.yaml "
                        "trains on)")
    b.add_argument("--world-seed", type=seed,
                   help="bench plan: world generator seed (default 999: worlds the shipped loop configs never train on)")
    b.add_argument("--budget", type=seconds, default=60.0, help="bench plan: CPU seconds per trajectory")
    b.add_argument("--max-expansions", type=count, default=20000, help="bench plan: expansions per trajectory")
    b.add_argument("--max-delay", type=max_delay,
                   help="bench plan: seconds a plan may fall behind the nominal schedule, or none for the world's own "
                        "slack (default: the planner's)")
    b.add_argument("--noise-seeds", type=count, default=1,
                   help="bench plan: plan every world with this many noise seeds (search cost varies a lot with the "
                        "seed); medians run over all")
    b.add_argument("--peer", choices=["ompl"], help="bench plan: also run OMPL's SST and KPIECE1")
    b.add_argument("--calls", type=count, default=5000, help="bench policy, gan: calls per repeat")
    b.add_argument("--gan", metavar="CKPT", help="bench gan: a CycleGAN checkpoint (default: an untrained one, same cost)")
    b.add_argument("--executor", choices=["serial", "process", "ray"], default="process")
    b.add_argument("--workers", type=count)
    b.set_defaults(func=cmd_bench)
