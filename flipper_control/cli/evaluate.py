"""``flipper sim`` and ``flipper eval``: run a controller or a policy on worlds and score the runs (Table I and II
layouts), on the exact simulator, the reality proxy, or both side by side."""

from __future__ import annotations

import argparse
import time

from flipper_control.cli.common import (
    add_controller_args,
    add_executor_args,
    add_reality_config_arg,
    controller,
    controller_factory,
    count,
    err,
    reality_config,
    save_json,
    save_output,
    seconds,
    seed,
    simulator,
)
from sim.dem_ablation import PROXY_DEMS


# ------------------------------------------------------------------------------------------ sim
def cmd_sim(args) -> int:
    from flipper_control.learning.evaluation import evaluate
    from sim.world_sets import resolve_world

    if args.record:
        if args.reality != "proxy":
            raise ValueError("--record needs --reality proxy: only the reality proxy produces lidar clouds to record")
        from flipper_control.cli.perception import cmd_record

        args.out, args.max_time = args.record, None
        return cmd_record(args)  # one recorded run (seed --seed)

    if args.reality_config and args.reality != "proxy":
        raise ValueError(f"--reality-config {args.reality_config} sets up the reality proxy, but --reality is "
                         f"{args.reality}: add --reality proxy")
    world = resolve_world(args.world)
    factory = controller_factory(args)
    sim = simulator(args)
    evs = evaluate(factory, [world], args.runs, args.seed, sim=sim, control_dt=args.control_dt)
    ev = evs[0]
    for i, run in enumerate(ev.runs):
        extra = "" if run.level == "good" else "  " + "; ".join(run.reasons)
        print(f"run {i} (seed {run.seed}): {run.level:7s} {run.distance:5.2f} m in {run.time:5.1f} s{extra}")
        for name, sec in run.sections.items():
            print(f"    {name}: {sec['level']}" + (f" ({'; '.join(sec['reasons'])})" if sec["reasons"] else ""))
    print(f"{world.name}: score {ev.score:.2f} over {len(ev.runs)} runs ({args.controller})")
    label = args.controller + (f":{args.posture}" if args.posture else "")
    return save_json(args.json, {"world": world.name, "controller": label, "seed": args.seed, **ev.to_dict(),
                                 "simulator": sim.config_dict()})


# ------------------------------------------------------------------------------------------ eval
def reality_of(world_ref: str, reality: str) -> str:
    """``sim`` or ``proxy`` for a world reference; ``auto`` runs the proxy course (the stand-in for the real
    test obstacles) on the reality proxy and every other world on the exact simulator."""
    if reality != "auto":
        return reality
    from sim.world_sets import builtin_world_names

    course = world_ref == "proxy" or world_ref.startswith("proxy/") or world_ref in builtin_world_names()["proxy"]
    return "proxy" if course else "sim"


def _check_dem_shape(shape, option: str, what: str) -> None:
    """A checkpoint built for another DEM grid than the simulator's (and the proxy's, which builds the same grid) is
    refused before any run, rather than failing in every task."""
    from sim.dem import DemSpec

    if tuple(shape) != DemSpec().shape:
        raise ValueError(f"{option}: {what} for DEMs of {shape[0]} x {shape[1]} cells; the simulator and the reality "
                         f"proxy give {DemSpec().rows} x {DemSpec().cols}")


def cmd_eval(args) -> int:  # safe: the `flipper eval` command, no code evaluation
    from flipper_control.learning.evaluation import WorldEvaluation, loss_lines, score_table, section_table
    from flipper_control.learning.executors import make_executor
    from flipper_control.learning.tasks import eval_task
    from flipper_control.progress import Step
    from sim.world_sets import resolve_worlds

    if args.policy:
        from flipper_control.checkpoint import load_policy

        policy, _ = load_policy(args.policy)  # validate before fanning out
        _check_dem_shape(policy.config.dem_shape, f"--policy {args.policy}", "a policy")
        spec, label = {"kind": "policy", "path": args.policy}, f"policy {args.policy}"
    else:
        kind, _, posture = args.controller.partition(":")
        spec, label = {"kind": kind, "posture": posture or None}, args.controller
        controller(kind, posture or None)
    worlds, realities = [], []
    for ref in args.worlds:  # per reference, so that `auto` can tell the proxy course from the rest
        found = resolve_worlds([ref])
        worlds += found
        realities += [reality_of(ref, args.reality)] * len(found)
    # `both`: every world on the exact simulator and on the reality proxy, side by side (the sim-to-real gap)
    passes = [["sim"] * len(worlds), ["proxy"] * len(worlds)] if args.reality == "both" else [realities]
    if args.transform:
        from perception.cyclegan import load_gan

        gan, _ = load_gan(args.transform)  # a bad checkpoint stops here
        _check_dem_shape(gan.config.dem_shape, f"--transform {args.transform}", "a CycleGAN")
        spec, label = {**spec, "transform": args.transform}, f"{label} through G of {args.transform}"
    proxy_config = reality_config(args)  # a bad file stops here, before any run
    proxy_config = proxy_config.to_dict() if proxy_config is not None else None
    tasks = [{"controller": spec, "world": w, "seeds": [args.seed + r for r in range(args.runs)], "reality": re,
              "reality_config": proxy_config if re == "proxy" else None, "states": bool(args.states)}
             | ({"proxy_dem": args.proxy_dem} if re == "proxy" and args.proxy_dem != "lidar" else {})
             for pass_ in passes for w, re in zip(worlds, pass_, strict=True)]
    on_proxy = [t["world"].name for t in tasks if t["reality"] == "proxy"]
    if args.reality_config and not on_proxy:
        raise ValueError(f"--reality-config {args.reality_config} sets up the reality proxy, but no world runs on it "
                         f"(--reality {args.reality}): add --reality proxy or both, or a proxy world")
    if args.proxy_dem != "lidar":
        if not on_proxy:
            raise ValueError(f"--proxy-dem {args.proxy_dem} takes the reality proxy's DEM apart, but no world runs on "
                             f"it (--reality {args.reality}): add --reality proxy or both, or a proxy world")
        label = f"{label} [proxy DEM: {args.proxy_dem}]"
    if on_proxy and args.reality != "both":
        err(f"reality proxy (perturbed robot, lidar-built DEMs) for: {', '.join(on_proxy)}")
    t0 = time.perf_counter()
    with make_executor(args.executor or "process", args.workers) as ex, Step("evaluating", len(tasks), "world") as step:
        results = ex.map(eval_task, tasks, progress=step)
        step.finish(f"{len(tasks)} world evaluations of {args.runs} runs")
    evs_of = [[WorldEvaluation(w.name, r["runs"]) for w, r in zip(worlds, results[k * len(worlds):(k + 1) * len(worlds)],
                                                                   strict=True)] for k in range(len(passes))]
    columns = {f"{label} ({p[0]})": evs for p, evs in zip(passes, evs_of, strict=True)} if len(passes) > 1 else {label: evs_of[0]}
    print(f"\n{len(worlds)} worlds, {args.runs} runs each (seeds {args.seed}..{args.seed + args.runs - 1}):\n")
    print(score_table(columns))
    if any(w.sections for w in worlds):
        print("\nSections (Table II layout):\n")
        print(section_table(columns))
    lost = loss_lines(columns)
    if lost:
        print("\nWhere the points went (runs per reason; slow: end times and limit; failed runs: where they ended):\n")
        print("\n".join(lost))
    totals = [sum(ev.score for ev in evs) for evs in evs_of]
    if len(passes) > 1:
        print(f"\nsim-to-real gap (sim - proxy): {totals[0] - totals[1]:+.2f} of {len(worlds)}")
    out = {"controller": label, "seed": args.seed, "runs": args.runs, "max": len(worlds),
           "wall_s": round(time.perf_counter() - t0, 2), "reality_config": proxy_config, "proxy_dem": args.proxy_dem}
    from flipper_control.controllers import rule_record

    if args.controller and (rule := rule_record(args.controller)) is not None:
        out["rule"] = rule  # the version and parameters of the rule that ran
    if len(passes) > 1:
        out["by_reality"] = {p[0]: {"total": round(t, 4), "worlds": [ev.to_dict() for ev in evs]}
                             for p, t, evs in zip(passes, totals, evs_of, strict=True)}
        out["gap"] = round(totals[0] - totals[1], 4)
    else:
        out |= {"total": round(totals[0], 4), "reality": dict(zip([w.name for w in worlds], realities, strict=True)),
                "worlds": [ev.to_dict() for ev in evs_of[0]]}
    status = 0
    if args.states:
        from planning.dataset import TrajectoryDataset

        states = TrajectoryDataset([t for r in results for t in r["trajectories"]])
        status, where = save_output(args.states, states.save, "--states")
        err(f"wrote {len(states)} runs' states ({states.n_samples} samples) to {where}")
    return max(status, save_json(args.json, out))


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``sim`` and ``eval`` to the ``flipper`` parser."""
    s = sub.add_parser("sim", help="run a controller on a world and score the runs")
    s.add_argument("--world", required=True, help="world name or YAML file")
    add_controller_args(s)
    s.add_argument("--runs", type=count, default=3)
    s.add_argument("--seed", type=seed, default=0, help="noise seed of the first run (run r uses seed + r)")
    s.add_argument("--control-dt", type=seconds, default=0.1, help="controller period in seconds")
    s.add_argument("--no-noise", action="store_true", help="disable the seeded per-run noise (with --reality proxy: "
                   "no perturbed dynamics, range noise or drift)")
    s.add_argument("--reality", choices=["sim", "proxy"], default="sim",
                   help="sim: the exact simulated DEM; proxy: the reality proxy (perturbed robot, lidar-built DEMs)")
    s.add_argument("--record", metavar="BAG", help="with --reality proxy: record one run as a rosbag2 folder "
                   "(/points, /imu/data, /joint_states, /tf, /tf_static, /cmd_vel, /elevation_map, flipper commands)")
    s.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="rosbag2 storage of --record")
    add_reality_config_arg(s)
    s.add_argument("--json", help="write results here")
    s.set_defaults(func=cmd_sim)

    e = sub.add_parser("eval", help="score a policy or controller on worlds (Table I layout)")
    who = e.add_mutually_exclusive_group(required=True)
    who.add_argument("--policy", help="checkpoint (PATH, PATH.safetensors or PATH.json)")
    who.add_argument("--controller", help="heuristic, heuristic:v1 (the first rule) or fixed:POSTURE")
    e.add_argument("--worlds", nargs="+", default=["test"], help="test, proxy, world names or YAML files")
    e.add_argument("--runs", type=count, default=3)
    e.add_argument("--seed", type=seed, default=0)
    e.add_argument("--json", help="write results here")
    e.add_argument("--reality", choices=["auto", "sim", "proxy", "both"], default="auto",
                   help="sim: the exact simulated DEM; proxy: the reality proxy (perturbed robot, lidar-built DEMs "
                        "with NaN and drift); auto (default): proxy for the proxy course, sim for the rest; "
                        "both: every world on each, side by side, with the sim-to-real gap")
    add_reality_config_arg(e)
    e.add_argument("--proxy-dem", choices=PROXY_DEMS, default="lidar",
                   help="on the reality proxy, the DEM the controller sees: lidar (default, the proxy's own), exact (the "
                        "simulator's exact DEM of the true pose), mask (exact heights, NaN where the lidar missed a cell), "
                        "heights (the lidar's heights, missing cells filled from the exact DEM); which part of the "
                        "lidar-built DEM costs a policy")
    e.add_argument("--transform", metavar="GAN", help="the policy sees every DEM through this CycleGAN's G (sim -> real): "
                   "Table I as the policy will see DEMs on the robot")
    e.add_argument("--states", metavar="DATASET", help="also write every visited state (DEM as the simulator or the proxy "
                   "built it, pitch, roll, flippers, targets) as a trajectory dataset, e.g. for flipper train-gan --sim")
    add_executor_args(e)
    e.set_defaults(func=cmd_eval)
