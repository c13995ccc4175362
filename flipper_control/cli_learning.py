"""The learning commands of ``flipper``: plan, train-policy, eval, loop, demo, and bench plan/policy.

Kept apart from ``cli.py`` (worlds, sim, the parser) so that each file holds one idea. Every command that
produces figures can write them as JSON (``--json PATH``), atomically, with the seed recorded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sim.io_utils import write_json_atomic

DEMO_NOTE = "the embedded default loop (configs/demo.yaml); configs/full.yaml is the full-scale run"


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ plan
def cmd_plan(args) -> int:
    from flipper_control.loop_tasks import plan_task
    from planning.dataset import TrajectoryDataset
    from planning.rrt import PlannerConfig
    from sim.world_sets import resolve_worlds

    worlds = resolve_worlds(args.world, count=args.count, seed=args.world_seed)
    config = PlannerConfig(action_set=args.action_set, max_expansions=args.max_expansions, max_cpu_s=args.max_cpu_s,
                           **_max_delay_kwargs(args))
    if args.policy:
        from flipper_control.checkpoint import load_policy

        load_policy(args.policy)  # a bad checkpoint stops here with its message, before any planning
    trajs = []
    for i, w in enumerate(worlds):
        r = plan_task({"world": w, "seed": args.seed + i, "planner": config.to_dict(), "guide": args.policy})
        t = r["trajectory"]
        m = t.meta
        line = f"{w.name:16s} {'found' if t.success else 'FAILED':6s} {m['cpu_s']:7.2f} CPU s  {m['expansions']:5d} expansions"
        print(line + (f"  {len(t)} samples" if t.success else f"  {t.reason}"), flush=True)
        trajs.append(t)
    data = TrajectoryDataset(trajs)
    if args.out:
        data.save(args.out)
        _err(f"wrote {len(data)} trajectories ({data.n_samples} samples) to {args.out}")
    if args.json:
        write_json_atomic(args.json, {"seed": args.seed, "planner": config.to_dict(), "guide": args.policy,
                                      "trajectories": [t.summary() for t in trajs]})
    return 0


# ------------------------------------------------------------------------------------------ train-policy
def cmd_train_policy(args) -> int:
    import torch
    import yaml

    from flipper_control.checkpoint import save_policy
    from flipper_control.imitation import ImitationConfig, stderr_progress, train_candidates
    from planning.dataset import TrajectoryDataset

    torch.set_num_threads(1)  # small networks: one thread is faster than two on this class of machine
    data = TrajectoryDataset()
    for path in args.data:
        data.extend(TrajectoryDataset.load(path))
    cfg = {}
    if args.config:
        cfg = yaml.safe_load(Path(args.config).read_text()) or {}
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    config = ImitationConfig.from_dict(cfg)
    score_fn = None
    if args.select_worlds:
        from flipper_control.evaluation import evaluate
        from flipper_control.policy import PolicyController
        from sim.world_sets import resolve_worlds

        worlds = resolve_worlds(args.select_worlds)

        def score_fn(policy):
            evs = evaluate(lambda: PolicyController(policy), worlds, args.select_runs, args.select_seed, progress=False)
            return sum(ev.score for ev in evs)
    seeds = [args.seed + i for i in range(args.seeds)]
    cands = train_candidates(data, config, seeds=seeds, score_fn=score_fn, keep=args.keep, progress=stderr_progress)
    data_hash = data.sha256()
    out = Path(args.out)
    print("| seed | test MSE | baseline MSE | sim score | kept |\n|---:|---:|---:|---:|:---:|")
    kept_paths = []
    for c in cands:
        score = "-" if c.score is None else f"{c.score:.2f}"
        print(f"| {c.seed} | {c.report.test_mse:.5f} | {c.report.baseline_test_mse:.5f} | {score} | {'yes' if c.kept else ''} |")
        if c.kept:
            path = out if not kept_paths else out.with_name(f"{out.name}_{len(kept_paths) + 1}")
            rep = c.report.to_dict()
            rep.pop("loss_history", None)
            save_policy(path, c.policy, {"seed": c.seed, "data_sha256": data_hash, "datasets": [str(p) for p in args.data],
                                         "train_report": rep, "score": c.score})
            kept_paths.append(str(path))
    _err(f"kept {len(kept_paths)} of {len(cands)}: " + ", ".join(p + ".safetensors" for p in kept_paths))
    if args.json:
        write_json_atomic(args.json, {"data_sha256": data_hash, "samples": data.n_samples,
                                      "candidates": [c.to_dict() for c in cands], "kept": kept_paths})
    return 0


# ------------------------------------------------------------------------------------------ eval
def reality_of(world_ref: str, reality: str) -> str:
    """``sim`` or ``proxy`` for a world reference; ``auto`` runs the proxy course (the stand-in for the real
    test obstacles) on the reality proxy and every other world on the exact simulator."""
    if reality != "auto":
        return reality
    return "proxy" if world_ref == "proxy" or world_ref.startswith("proxy/") else "sim"


def cmd_eval(args) -> int:  # safe: the `flipper eval` command, no code evaluation
    from flipper_control.evaluation import WorldEvaluation, score_table, section_table
    from flipper_control.executors import make_executor
    from flipper_control.loop_tasks import eval_task
    from sim.world_sets import resolve_worlds

    if args.policy:
        from flipper_control.checkpoint import load_policy

        load_policy(args.policy)  # validate before fanning out
        spec, label = {"kind": "policy", "path": args.policy}, f"policy {args.policy}"
    else:
        kind, _, posture = args.controller.partition(":")
        spec, label = {"kind": kind, "posture": posture or None}, args.controller
        from flipper_control.controllers import make_controller

        make_controller(kind, posture or None)
    worlds, realities = [], []
    for ref in args.worlds:  # per reference, so that `auto` can tell the proxy course from the rest
        found = resolve_worlds([ref])
        worlds += found
        realities += [reality_of(ref, args.reality)] * len(found)
    # `both`: every world on the exact simulator and on the reality proxy, side by side (the sim-to-real gap)
    passes = [["sim"] * len(worlds), ["proxy"] * len(worlds)] if args.reality == "both" else [realities]
    tasks = [{"controller": spec, "world": w, "seeds": [args.seed + r for r in range(args.runs)], "reality": re}
             for pass_ in passes for w, re in zip(worlds, pass_, strict=True)]
    on_proxy = [t["world"].name for t in tasks if t["reality"] == "proxy"]
    if on_proxy and args.reality != "both":
        _err(f"reality proxy (perturbed robot, lidar-built DEMs) for: {', '.join(on_proxy)}")
    t0 = time.perf_counter()
    with make_executor(args.executor or "process", args.workers) as ex:
        results = ex.map(eval_task, tasks, progress=lambda d, n: _err(f"  evaluated {d}/{n} worlds"))
    evs_of = [[WorldEvaluation(w.name, r["runs"]) for w, r in zip(worlds, results[k * len(worlds):(k + 1) * len(worlds)],
                                                                   strict=True)] for k in range(len(passes))]
    columns = {f"{label} ({p[0]})": evs for p, evs in zip(passes, evs_of, strict=True)} if len(passes) > 1 else {label: evs_of[0]}
    print(f"\n{len(worlds)} worlds, {args.runs} runs each (seeds {args.seed}..{args.seed + args.runs - 1}):\n")
    print(score_table(columns))
    if any(w.sections for w in worlds):
        print("\nSections (Table II layout):\n")
        print(section_table(columns))
    totals = [sum(ev.score for ev in evs) for evs in evs_of]
    if len(passes) > 1:
        print(f"\nsim-to-real gap (sim - proxy): {totals[0] - totals[1]:+.2f} of {len(worlds)}")
    if args.json:
        out = {"controller": label, "seed": args.seed, "runs": args.runs, "max": len(worlds),
               "wall_s": round(time.perf_counter() - t0, 2)}
        if len(passes) > 1:
            out["by_reality"] = {p[0]: {"total": round(t, 4), "worlds": [ev.to_dict() for ev in evs]}
                                 for p, t, evs in zip(passes, totals, evs_of, strict=True)}
            out["gap"] = round(totals[0] - totals[1], 4)
        else:
            out |= {"total": round(totals[0], 4), "reality": dict(zip([w.name for w in worlds], realities, strict=True)),
                    "worlds": [ev.to_dict() for ev in evs_of[0]]}
        write_json_atomic(args.json, out)
    return 0


# ------------------------------------------------------------------------------------------ loop / demo
def _print_report(report: dict, out: Path) -> None:
    from flipper_control.loop_report import table_i, table_iii

    print("\nSimulated test worlds (Table I analogue):\n")
    print(table_i(report))
    print("\nPlanning cost per trajectory (Table III analogue):\n")
    print(table_iii(report))
    cpu = report.get("cpu_s", {})
    print(f"\nCPU {cpu.get('total', 0):.0f} s ({cpu.get('cpu_hours', 0):.3f} CPU-hours), wall {report.get('wall_s', 0):.0f} s; "
          f"report: {out / 'report.md'}, {out / 'report.json'}, {out / 'learning_curve.png'}")


def _with_overrides(config, args):
    from dataclasses import replace

    changes = {k: v for k, v in (("executor", args.executor), ("workers", args.workers), ("ray_address", args.ray_address)) if v}
    return replace(config, **changes) if changes else config


def cmd_loop(args) -> int:
    from flipper_control.loop import load_loop_config, run_loop

    config = _with_overrides(load_loop_config(args.config), args)
    report = run_loop(config, args.out)
    _print_report(report, Path(args.out))
    return 0


def cmd_demo(args) -> int:
    from flipper_control.loop import demo_config, run_loop

    config = _with_overrides(demo_config(), args)
    _err(f"flipper demo: {DEMO_NOTE}; output in {args.out}")
    t0 = time.perf_counter()
    report = run_loop(config, args.out)
    _print_report(report, Path(args.out))
    _err(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0


# ------------------------------------------------------------------------------------------ bench
def cmd_bench_policy(args) -> int:
    from flipper_control.bench import bench_policy

    r = bench_policy(calls=args.calls, repeats=args.repeats)
    print(f"policy inference, one thread (torch {r['torch']}, {r['params']} parameters, cpu {r['cpu_model']}):")
    print(f"  act_numpy:              {r['act_numpy']['ms_per_decision']:.4f} ms/decision   (target <= {r['target_ms']:g} ms)")
    print(f"  act_numpy, NaN DEMs:    {r['act_numpy_nan']['ms_per_decision']:.4f} ms/decision")
    print(f"  baseline plain forward: {r['baseline_forward']['ms_per_decision']:.4f} ms/decision   "
          f"({r['speedup_vs_baseline']:.2f}x slower than act_numpy)")
    print(f"  batched ({r['batched']['batch']}):          {r['batched']['decisions_per_s']:.0f} decisions/s")
    print(f"  peak RSS {r['peak_rss_mib']:.0f} MiB; NaN outputs finite: {r['nan_outputs_finite']}")
    if args.json:
        write_json_atomic(args.json, r)
    return 0


def cmd_bench_plan(args) -> int:
    from flipper_control.bench_plan import BENCH_WORLD_SEED, bench_plan, print_bench_plan

    world_seed = BENCH_WORLD_SEED if args.world_seed is None else args.world_seed
    r = bench_plan(policy=args.policy, worlds=args.count, world_seed=world_seed, seed=args.seed, budget_cpu_s=args.budget,
                   max_expansions=args.max_expansions, peer=args.peer, executor=args.executor, workers=args.workers,
                   world_sets=tuple(args.world_sets), noise_seeds=args.noise_seeds, **_max_delay_kwargs(args))
    print_bench_plan(r)
    if args.json:
        write_json_atomic(args.json, r)
    return 0


# ------------------------------------------------------------------------------------------ parser
def _max_delay(text: str) -> float | str:
    """``--max-delay``: seconds, or ``none`` for only the world's own slack."""
    if text.strip().lower() in ("none", "null"):
        return "none"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'none', got {text!r}") from None
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return value


def _max_delay_kwargs(args) -> dict:
    """``{max_delay_s: ...}`` when ``--max-delay`` was given, else nothing (the planner's default applies)."""
    if args.max_delay is None:
        return {}
    return {"max_delay_s": None if args.max_delay == "none" else args.max_delay}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the learning commands to the ``flipper`` parser."""
    def executor_args(p):
        p.add_argument("--executor", choices=["serial", "process", "ray"],
                       help="where tasks run (default: the config's, else process)")
        p.add_argument("--workers", type=int, help="parallel workers (default: CPUs available)")

    p = sub.add_parser("plan", help="plan guiding trajectories with the RRT (optionally guided by a policy)")
    p.add_argument("--world", nargs="+", required=True, help="world names, sets (test, proxy, training) or YAML files")
    p.add_argument("--count", type=int, default=4, help="training worlds when 'training' is named")
    p.add_argument("--world-seed", type=int, default=0, help="training-world generator seed")
    p.add_argument("--action-set", default="coarse", help="coarse (3 x 1000 ms), fine (7 x 200 ms), or NAME@DT")
    p.add_argument("--policy", help="guide the expansion with this checkpoint")
    p.add_argument("--max-expansions", type=int, default=3000)
    p.add_argument("--max-cpu-s", type=float, default=60.0)
    p.add_argument("--max-delay", type=_max_delay,
                   help="seconds a plan may fall behind the nominal schedule, or none for the world's own slack "
                        "(default: the planner's, planning.rrt.PlannerConfig.max_delay_s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the trajectories here (safetensors dataset)")
    p.add_argument("--json", help="write a summary here")
    p.set_defaults(func=cmd_plan)

    t = sub.add_parser("train-policy", help="imitate planned trajectories: train N policies, keep the best")
    t.add_argument("--data", nargs="+", required=True, help="trajectory datasets (aggregated)")
    t.add_argument("--out", required=True, help="checkpoint path of the best policy (the next kept get _2, _3, ...)")
    t.add_argument("--config", help="ImitationConfig YAML (epochs, lr, grad_clip, test_fraction, policy: ...)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--seeds", type=int, default=3, help="policies trained (seed 000: 10)")
    t.add_argument("--keep", type=int, default=1, help="policies kept (seed 000: 2)")
    t.add_argument("--seed", type=int, default=0, help="first training seed")
    t.add_argument("--select-worlds", nargs="*", help="rank by simulated score on these worlds (default: by test MSE)")
    t.add_argument("--select-runs", type=int, default=1)
    t.add_argument("--select-seed", type=int, default=1000)
    t.add_argument("--json", help="write the candidates' reports here")
    t.set_defaults(func=cmd_train_policy)

    e = sub.add_parser("eval", help="score a policy or controller on worlds (Table I layout)")
    who = e.add_mutually_exclusive_group(required=True)
    who.add_argument("--policy", help="checkpoint (PATH, PATH.safetensors or PATH.json)")
    who.add_argument("--controller", help="heuristic or fixed:POSTURE")
    e.add_argument("--worlds", nargs="+", default=["test"], help="test, proxy, world names or YAML files")
    e.add_argument("--runs", type=int, default=3)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", help="write results here")
    e.add_argument("--reality", choices=["auto", "sim", "proxy", "both"], default="auto",
                   help="sim: the exact simulated DEM; proxy: the reality proxy (perturbed robot, lidar-built DEMs "
                        "with NaN and drift); auto (default): proxy for the proxy course, sim for the rest; "
                        "both: every world on each, side by side, with the sim-to-real gap")
    executor_args(e)
    e.set_defaults(func=cmd_eval)

    lp = sub.add_parser("loop", help="the coarse-to-fine learning loop (resumable: run again with the same --out)")
    lp.add_argument("--config", required=True, help="loop YAML (see configs/demo.yaml, configs/full.yaml)")
    lp.add_argument("--out", required=True)
    lp.add_argument("--ray-address", help="an existing Ray cluster (with --executor ray)")
    executor_args(lp)
    lp.set_defaults(func=cmd_loop)

    d = sub.add_parser("demo", help=DEMO_NOTE + " (what `make demo` runs)")
    d.add_argument("--out", default="demo_out")
    d.add_argument("--ray-address", help=argparse.SUPPRESS)
    executor_args(d)
    d.set_defaults(func=cmd_demo)


def add_bench_args(b: argparse.ArgumentParser) -> None:
    """Options of ``flipper bench plan|policy`` (``bench sim`` options live in cli.py)."""
    b.add_argument("--policy", help="bench plan: the guiding policy (default: the last policy of demo_out)")
    b.add_argument("--count", type=int, default=8, help="bench plan: worlds per set")
    b.add_argument("--world-sets", nargs="+", default=["training", "steep"],
                   help="bench plan: world sets to plan on (training: the default loop distribution; steep: the "
                        "hardest half of its stairs, steps and drops; half_steep: the two in turn, what configs/full.yaml "
                        "trains on)")
    b.add_argument("--world-seed", type=int,
                   help="bench plan: world generator seed (default 999: worlds the shipped loop configs never train on)")
    b.add_argument("--budget", type=float, default=60.0, help="bench plan: CPU seconds per trajectory")
    b.add_argument("--max-expansions", type=int, default=20000, help="bench plan: expansions per trajectory")
    b.add_argument("--max-delay", type=_max_delay,
                   help="bench plan: seconds a plan may fall behind the nominal schedule, or none for the world's own "
                        "slack (default: the planner's)")
    b.add_argument("--noise-seeds", type=int, default=1,
                   help="bench plan: plan every world with this many noise seeds (search cost varies a lot with the "
                        "seed); medians run over all")
    b.add_argument("--peer", choices=["ompl"], help="bench plan: also run OMPL's SST and KPIECE1")
    b.add_argument("--calls", type=int, default=5000, help="bench policy: decisions per repeat")
    b.add_argument("--executor", choices=["serial", "process", "ray"], default="process")
    b.add_argument("--workers", type=int)
