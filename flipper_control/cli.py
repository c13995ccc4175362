"""The `flipper` command line: worlds, simulation runs and benchmarks; the learning commands are in cli_learning.

Every command that produces figures can write them as JSON (``--json PATH``), written atomically and
with the seed and the simulator configuration recorded beside the results. Bad input (an unknown
world, an invalid world file) ends with a one-line message naming what is wrong, exit status 2.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from flipper_control.cli_learning import add_bench_args, add_parsers
from flipper_control.cli_perception import add_parsers as add_perception_parsers
from sim.world import WorldError, dump_world


def _controller_factory(args):
    from flipper_control.controllers import make_controller

    make_controller(args.controller, args.posture)  # validate once, early
    return lambda: make_controller(args.controller, args.posture)


def _simulator(args):
    if getattr(args, "reality", "sim") == "proxy":
        from sim.reality_proxy import RealityProxy, RealityProxyConfig

        return RealityProxy(config=RealityProxyConfig.ideal() if args.no_noise else None)
    from sim.mujoco_sim import MujocoSimulator, SimNoise

    return MujocoSimulator(noise=SimNoise(enabled=not args.no_noise))


# ------------------------------------------------------------------------------------------ worlds
def cmd_worlds(args) -> int:
    from sim.world_sets import BUILTIN_SETS, GENERATED_SETS, load_set, resolve_world

    if args.action == "list":
        sets = [args.set] if args.set else list(BUILTIN_SETS) + list(GENERATED_SETS)
        for set_name in sets:
            worlds = load_set(set_name, args.count, args.seed)
            label = f"{set_name} (seed {args.seed}, {args.count} worlds)" if set_name in GENERATED_SETS else set_name
            print(f"{label}:")
            for w in worlds:
                print(f"  {w.name:16s} {w.length:5.1f} m  {w.description}")
        return 0
    if not args.world:
        raise WorldError("<cli>", "world", f"'flipper worlds {args.action}' needs a world name or file")
    world = resolve_world(args.world)
    if args.action == "show":
        print(dump_world(world), end="")
        return 0
    # export
    if args.format == "urdf":
        from sim.urdf import build_urdf

        text = build_urdf()
    else:
        from sim.mujoco_sim import MujocoSimulator, SimNoise

        sim = MujocoSimulator(noise=SimNoise(enabled=False))
        sim.reset(world)
        text = sim.xml
    if args.out:
        from sim.io_utils import write_text_atomic

        write_text_atomic(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


# ------------------------------------------------------------------------------------------ sim
def cmd_sim(args) -> int:
    from flipper_control.evaluation import evaluate
    from sim.io_utils import write_json_atomic
    from sim.world_sets import resolve_world

    if args.record:
        if args.reality != "proxy":
            raise ValueError("--record needs --reality proxy: only the reality proxy produces lidar clouds to record")
        from flipper_control.cli_perception import cmd_record

        args.out, args.max_time = args.record, None
        return cmd_record(args)  # one recorded run (seed --seed)

    world = resolve_world(args.world)
    factory = _controller_factory(args)
    sim = _simulator(args)
    evs = evaluate(factory, [world], args.runs, args.seed, sim=sim, control_dt=args.control_dt, progress=False)
    ev = evs[0]
    for i, run in enumerate(ev.runs):
        extra = "" if run.level == "good" else "  " + "; ".join(run.reasons)
        print(f"run {i} (seed {run.seed}): {run.level:7s} {run.distance:5.2f} m in {run.time:5.1f} s{extra}")
        for name, sec in run.sections.items():
            print(f"    {name}: {sec['level']}" + (f" ({'; '.join(sec['reasons'])})" if sec["reasons"] else ""))
    print(f"{world.name}: score {ev.score:.2f} over {len(ev.runs)} runs ({args.controller})")
    if args.json:
        label = args.controller + (f":{args.posture}" if args.posture else "")
        write_json_atomic(args.json, {"world": world.name, "controller": label, "seed": args.seed, **ev.to_dict(),
                                      "simulator": sim.config_dict()})
    return 0


# ------------------------------------------------------------------------------------------ bench
def cmd_bench(args) -> int:
    if args.what == "policy":
        from flipper_control.cli_learning import cmd_bench_policy

        return cmd_bench_policy(args)
    if args.what == "plan":
        from flipper_control.cli_learning import cmd_bench_plan

        return cmd_bench_plan(args)
    if args.what == "dem":
        from perception.bench_dem import run_bench_dem

        return run_bench_dem(args.points, args.repeats, args.seed, args.json)
    from flipper_control.bench import bench_sim
    from sim.io_utils import write_json_atomic
    from sim.world_sets import resolve_world

    world = resolve_world(args.world)
    if args.what == "proxy":
        from sim.reality_proxy import bench_proxy

        out = bench_proxy(world, seconds=args.seconds)
        px, mj = out["proxy"], out["mujoco"]
        print(f"world {world.name}, one CPU, heuristic at 10 Hz, >= {args.seconds:g} simulated s each")
        print(f"  plain MuJoCo (baseline): real-time factor {mj['real_time_factor']:6.1f}x   levels {mj['levels']}")
        print(f"  reality proxy:           real-time factor {px['real_time_factor']:6.1f}x   levels {px['levels']}")
        print("  proxy wall time: " + ", ".join(f"{k} {v:.0%}" for k, v in px["wall_share"].items())
              + f"; point map {px['map_points']} points, {px['map_bytes'] / 2**20:.1f} MiB")
        if args.json:
            write_json_atomic(args.json, out)
        return 0
    out = bench_sim(world, seconds=args.seconds, repeats=args.repeats)
    base, loop, dem = out["physics_baseline"], out["closed_loop_heuristic"], out["dem"]
    print(f"world {world.name}, one thread (cpu {out['cpu']}), physics step {out['timestep'] * 1e3:g} ms")
    print(f"  physics only (baseline):  {base['steps_per_s']:9.0f} steps/s   real-time factor {base['real_time_factor']:6.1f}x")
    print(f"  closed loop (heuristic):  {loop['steps_per_s']:9.0f} steps/s   real-time factor {loop['real_time_factor']:6.1f}x"
          f"   levels {loop['levels']}")
    print(f"  DEM extraction:           {dem['ms_per_call']:9.4f} ms/call   baseline {dem['baseline_ms_per_call']:.3f} ms/call"
          f"   ({dem['speedup']:.0f}x, equal: {dem['equal_to_baseline']})")
    if args.json:
        write_json_atomic(args.json, out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flipper", description="Learned flipper control for tracked robots (seed 000 stack).")
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worlds", help="list, show or export worlds")
    w.add_argument("action", choices=["list", "show", "export"])
    w.add_argument("world", nargs="?", help="world name (stairs_up, proxy/staircase, training/3) or YAML file")
    w.add_argument("--set", choices=["test", "proxy", "training", "steep", "half_steep"], help="only this set (list)")
    w.add_argument("--count", type=int, default=10, help="number of training (or steep) worlds to list")
    w.add_argument("--seed", type=int, default=0, help="training-world generator seed")
    w.add_argument("--format", choices=["mjcf", "urdf"], default="mjcf", help="export format")
    w.add_argument("--out", help="write the export here instead of stdout")
    w.set_defaults(func=cmd_worlds)

    s = sub.add_parser("sim", help="run a controller on a world and score the runs")
    s.add_argument("--world", required=True, help="world name or YAML file")
    s.add_argument("--controller", default="heuristic", help="fixed or heuristic")
    s.add_argument("--posture", help="fixed posture: flat, approach, v")
    s.add_argument("--runs", type=int, default=3)
    s.add_argument("--seed", type=int, default=0, help="noise seed of the first run (run r uses seed + r)")
    s.add_argument("--control-dt", type=float, default=0.1, help="controller period in seconds")
    s.add_argument("--no-noise", action="store_true", help="disable the seeded per-run noise (with --reality proxy: "
                   "no perturbed dynamics, range noise or drift)")
    s.add_argument("--reality", choices=["sim", "proxy"], default="sim",
                   help="sim: the exact simulated DEM; proxy: the reality proxy (perturbed robot, lidar-built DEMs)")
    s.add_argument("--record", metavar="BAG", help="with --reality proxy: record one run as a rosbag2 folder "
                   "(/points, /imu/data, /joint_states, /tf, /tf_static, /cmd_vel, /elevation_map, flipper commands)")
    s.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="rosbag2 storage of --record")
    s.add_argument("--json", help="write results here")
    s.set_defaults(func=cmd_sim)

    b = sub.add_parser("bench", help="measure speed against baselines")
    b.add_argument("what", choices=["sim", "plan", "policy", "dem", "proxy"])
    b.add_argument("--world", default="stairs_up")
    b.add_argument("--seconds", type=float, default=20.0, help="simulated seconds of the physics baseline")
    b.add_argument("--repeats", type=int, default=3, help="closed-loop runs (sim), timing repeats (policy, dem)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--points", type=int, default=1_000_000, help="bench dem: points per cloud")
    b.add_argument("--json", help="write figures here")
    add_bench_args(b)
    b.set_defaults(func=cmd_bench)
    add_parsers(sub)
    add_perception_parsers(sub)  # record, ingest, replay, proxy-figure
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "runs", 1) is not None and getattr(args, "runs", 1) < 1:
        print("flipper: error: --runs must be >= 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (WorldError, ValueError, yaml.YAMLError, FileNotFoundError) as exc:
        print(f"flipper: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a task that failed in a worker (executors.TaskError) names the task and the error
        if type(exc).__name__ != "TaskError":
            raise
        print(f"flipper: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flipper: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
