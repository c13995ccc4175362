"""``flipper bench sim|policy|dem|proxy|plan|gan|ros|rl``: each measurement beside its baseline in the same run, printed and
optionally written as JSON. The measurements themselves live in ``flipper_control.bench``."""

from __future__ import annotations

import argparse
from pathlib import Path

from flipper_control.cli.common import (
    add_reality_config_arg,
    count,
    max_delay,
    max_delay_kwargs,
    probability,
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
        out = bench_sim(world, repeats=args.repeats)
        step.finish("done")
    base, loop, dem = out["physics_baseline"], out["closed_loop_heuristic"], out["dem"]
    print(f"world {world.name}, one thread (cpu {out['cpu']}), physics step {out['timestep'] * 1e3:g} ms")
    print(f"  closed loop (heuristic):  {loop['steps_per_s']:9.0f} steps/s   real-time factor {loop['real_time_factor']:6.1f}x"
          f"   levels {loop['levels']}")
    print(f"  physics only (baseline):  {base['steps_per_s']:9.0f} steps/s   real-time factor {base['real_time_factor']:6.1f}x"
          f"   the same runs' controls on the bare engine (same trajectory: {base['same_trajectory']}; our overhead "
          f"{1 - loop['steps_per_s'] / base['steps_per_s']:.0%} of the closed loop's time)")
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
    print(f"  ... footprint completed: {r['act_numpy_nan_footprint']['ms_per_decision']:.4f} ms/decision   "
          f"(footprint_reach {r['act_numpy_nan_footprint']['footprint_reach']:.3f} m)")
    print(f"  ... residual on the rule: {r['act_numpy_nan_prior']['ms_per_decision']:.4f} ms/decision   (prior heuristic)")
    for k, v in r["act_numpy_nan_ensemble"].items():
        print(f"  ... ensemble of {k:>2}:     {v['ms_per_decision']:.4f} ms/decision")
    print(f"  baseline plain forward: {r['baseline_forward']['ms_per_decision']:.4f} ms/decision   "
          f"({r['speedup_vs_baseline']:.2f}x slower than act_numpy)")
    print(f"  batched ({r['batched']['batch']}):          {r['batched']['decisions_per_s']:.0f} decisions/s")
    print(f"  peak RSS {r['peak_rss_mib']:.0f} MiB; NaN outputs finite: {r['nan_outputs_finite']}")
    return r


def _bench_gan(args) -> dict:
    from flipper_control.bench.gan import bench_gan

    if args.paired_worlds and not args.gan:
        raise ValueError("--paired-worlds judges a trained generator: give its checkpoint with --gan")
    if args.paired_worlds and args.paired_worlds < 2:
        raise ValueError(f"--paired-worlds must be 0 (off) or at least 2, got {args.paired_worlds}")
    with Step("bench gan", unit="phase") as step:
        r = bench_gan(checkpoint=args.gan, calls=args.calls, repeats=args.repeats, seed=args.seed)
        step.finish("done")
    print(f"sim -> real transform (G{' of ' + args.gan if args.gan else ', untrained'}), one thread, cpu {r['cpu_model']}:")
    print(f"  SimToReal:               {r['sim_to_real']['ms_per_dem']:.4f} ms/DEM   (target <= {r['target_ms']:g} ms)")
    print(f"  policy act_numpy (beside): {r['policy_act_numpy']['ms_per_decision']:.4f} ms/decision")
    print(f"  batched (256):           {r['batched_dems_per_s']:.0f} DEMs/s")
    if args.paired_worlds:
        from flipper_control.bench.gan_paired import format_paired, paired_transfer

        with Step("same-pose pairs on the reality proxy", args.paired_worlds, "run") as step:
            r["paired"] = paired_transfer(args.gan, args.paired_worlds, seed=args.seed, reality_config=reality_config(args),
                                          progress=lambda done, total: step.update(done))
            step.finish(f"{r['paired']['pairs']} pairs")
        print(format_paired(r["paired"]))
    return r


def _bench_plan(args) -> dict:
    from flipper_control.bench.plan import BENCH_WORLD_SEED, bench_plan, print_bench_plan

    world_seed = BENCH_WORLD_SEED if args.world_seed is None else args.world_seed
    r = bench_plan(policy=args.policy, worlds=args.count, world_seed=world_seed, seed=args.seed, budget_cpu_s=args.budget,
                   max_expansions=args.max_expansions, peer=args.peer, executor=args.executor, workers=args.workers,
                   world_sets=tuple(args.world_sets), noise_seeds=args.noise_seeds, repeat_prob=args.repeat_prob,
                   **max_delay_kwargs(args))
    print_bench_plan(r)
    return r


def _bench_ros(args) -> dict:
    from flipper_control.bench.ros import bench_ros

    if args.closed_loop and not args.policy:  # before the latency part: a usage error must not wait for it
        raise ValueError("bench ros --closed-loop needs --policy CKPT (the policy both sides drive with)")
    with Step(f"bench ros, {args.samples} samples per figure (nodes in a network namespace)", unit="phase") as step:
        r = bench_ros(samples=args.samples, seconds=args.samples / 10 + 1.0, seed=args.seed)
        step.finish("done")

    def line(label: str, f: dict | None) -> str:
        if not f or f.get("p50_ms") is None:
            return f"  {label:<34} (no samples)"
        return f"  {label:<34} p50 {f['p50_ms']:7.3f} ms   p99 {f['p99_ms']:7.3f} ms"

    pn, dn = r["policy_node"], r["dem_node"]
    print(f"nodes pinned to cpu {r['node_cpu']} ({r['cpu']}), probe on cpu {r['probe_cpu']}")
    print("policy_node, GridMap -> command:")
    print(line(f"in the node (target p99 <= {pn['target_p99_ms']:g} ms):", pn["in_node"]))
    print(line("round trip over DDS:", pn["round_trip"]))
    print(line("baseline, core in-process:", r["policy_baseline_in_process"]))
    print("dem_node, 0.1 s lidar slice -> GridMap:")
    print(line(f"round trip (target p99 <= {dn['target_p99_ms']:g} ms):", dn["round_trip"]))
    print(line("baseline, core in-process:", r["dem_baseline_in_process"]))
    if args.closed_loop:
        r["closed_loop"] = _closed_loop(args)
    return r


def _closed_loop(args) -> dict:
    """The closed loop over DDS (robot_sim_node + dem_node + policy_node) beside in-process proxy evaluation."""
    from flipper_control.bench.ros_closed_loop import closed_loop_figure
    from sim.world_sets import resolve_worlds

    worlds = args.closed_loop
    total = len(resolve_worlds(worlds))
    with Step(f"bench ros, closed loop over DDS on {total} worlds", total=total, unit="world") as step:
        cl = closed_loop_figure(args.policy, worlds, seed=args.seed, reality_config=args.reality_config or "",
                                progress=lambda done, _n: step.update(done))
        step.finish(f"DDS {cl['dds_total']:.2f}/{cl['max']} vs in process {cl['in_process_total']:.2f}/{cl['max']}")
    for row in cl["worlds"]:
        print(f"  {row['world']:<12} DDS {row['dds']['level']:<8} in process {row['in_process']['level']}")
    print(f"closed loop: gap {cl['gap']:+.2f} (target within {cl['target_gap']:g}), same level on {cl['same_level']}/{cl['max']}")
    return cl


def _bench_rl(args) -> dict:
    from flipper_control.bench.rl import bench_rl, print_bench_rl

    with Step(f"bench rl: {', '.join(args.rl_parts)}", unit="step") as step:
        r = bench_rl(parts=tuple(args.rl_parts), cartpole_steps=args.cartpole_steps, asterix_steps=args.asterix_steps,
                     seed=args.seed, peer=not args.no_rl_peer, progress=step.update)
        step.finish("done")
    print_bench_rl(r)
    if args.json:  # the learning curves of the seed comparisons, beside the JSON
        from flipper_control.bench.rl_cup import plot_cup
        from flipper_control.bench.rl_ss_her import plot_ss_her

        for part, plot in (("ss_her", plot_ss_her), ("cup", plot_cup), ("cup_wall", plot_cup)):
            if part in r:
                png = Path(args.json).with_name(f"{Path(args.json).stem}_{part}.png")
                r[part]["png"] = str(plot(r[part], png))
    return r


BENCHES = {"sim": _bench_sim, "plan": _bench_plan, "policy": _bench_policy, "dem": _bench_dem, "proxy": _bench_proxy,
           "gan": _bench_gan, "ros": _bench_ros, "rl": _bench_rl}


def cmd_bench(args) -> int:
    out = BENCHES[args.what](args)
    status = save_json(args.json, out)
    # the DEM builder must agree with its baseline, the bare engine must retrace the closed loop: a bench that finds
    # either does not fails
    disagrees = (args.what == "dem" and not out["equal_to_baseline"]
                 or args.what == "sim" and not out["physics_baseline"]["same_trajectory"])
    return 1 if disagrees else status


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the ``flipper`` parser."""
    b = sub.add_parser("bench", help="measure speed against baselines")
    b.add_argument("what", choices=list(BENCHES))
    b.add_argument("--world", default="stairs_up")
    b.add_argument("--seconds", type=seconds, default=20.0, help="bench proxy: simulated seconds per run")
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
    b.add_argument("--repeat-prob", type=probability, default=0.0,
                   help="bench plan: probability that a random draw repeats the node's own action (PlannerConfig.repeat_prob)")
    b.add_argument("--peer", choices=["ompl"], help="bench plan: also run OMPL's SST and KPIECE1")
    b.add_argument("--calls", type=count, default=5000, help="bench policy, gan: calls per repeat")
    b.add_argument("--samples", type=count, default=200, help="bench ros: latencies per figure")
    b.add_argument("--rl-parts", nargs="+", choices=["dqn", "sum_tree", "asterix", "ss_her", "cup", "cup_wall", "flipper"],
                   default=["dqn", "sum_tree", "asterix", "ss_her", "cup", "cup_wall"],
                   help="bench rl: DQN on CartPole-v1 beside stable-baselines3, the sum tree's throughput and statistics, "
                        "DDQN + PER on Asterix RAM beside DDQN, Smart Start + HER beside Smart Start, CUP beside SAC (cup_wall: "
                        "behind a wall); "
                        "flipper (after make demo): DDQN + PER and CUP fine-tuning on flippers beside imitation")
    b.add_argument("--cartpole-steps", type=count, default=50_000, help="bench rl: DQN budget on CartPole-v1 (both)")
    b.add_argument("--asterix-steps", type=count, default=150_000, help="bench rl: environment steps of each Asterix run")
    b.add_argument("--no-rl-peer", action="store_true", help="bench rl: skip stable-baselines3's DQN")
    b.add_argument("--closed-loop", nargs="+", metavar="WORLD",
                   help="bench ros: also drive these worlds or sets (e.g. test) over DDS with --policy and compare with "
                        "in-process proxy evaluation")
    b.add_argument("--gan", metavar="CKPT", help="bench gan: a CycleGAN checkpoint (default: an untrained one, same cost)")
    b.add_argument("--paired-worlds", type=int, default=0, metavar="N",
                   help="bench gan: also judge --gan's G on same-pose pairs from N heuristic proxy runs (about 5 s each; "
                        "0: off; at least 2)")
    b.add_argument("--executor", choices=["serial", "process", "ray"], default="process")
    b.add_argument("--workers", type=count)
    b.set_defaults(func=cmd_bench)
