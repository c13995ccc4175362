"""The learning commands of ``flipper``: plan, train-policy, loop, demo and retrain.

Every command that produces figures can write them as JSON (``--json PATH``), atomically, with the seed
recorded. Long work shows progress through ``flipper_control.progress``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from flipper_control.cli.common import (
    add_executor_args,
    add_reality_config_arg,
    count,
    err,
    max_delay,
    max_delay_kwargs,
    reality_config,
    save_json,
    save_output,
    seconds,
    seed,
)
from flipper_control.progress import Step

DEMO_NOTE = "the embedded default loop (configs/demo.yaml); configs/full.yaml is the full-scale run"


# ------------------------------------------------------------------------------------------ plan
def cmd_plan(args) -> int:
    from flipper_control.learning.tasks import plan_task
    from planning.dataset import TrajectoryDataset
    from planning.planner_config import PlannerConfig
    from sim.world_sets import resolve_worlds

    worlds = resolve_worlds(args.world, count=args.count, seed=args.world_seed)
    config = PlannerConfig(action_set=args.action_set, max_expansions=args.max_expansions, max_cpu_s=args.max_cpu_s,
                           **max_delay_kwargs(args))
    if args.policy:
        from flipper_control.checkpoint import load_policy

        load_policy(args.policy)  # a bad checkpoint stops here with its message, before any planning
    # the hand-written rule as the guide: what a loop's ``first_guide: heuristic`` plans iteration 1 with
    guide = {"kind": "heuristic"} if args.heuristic_guide else args.policy
    trajs = []
    with Step("planning", len(worlds), "world") as step:
        for i, w in enumerate(worlds):
            r = plan_task({"world": w, "seed": args.seed + i, "planner": config.to_dict(), "guide": guide})
            t = r["trajectory"]
            m = t.meta
            line = (f"{w.name:16s} {'found' if t.success else 'FAILED':6s} {m['cpu_s']:7.2f} CPU s  "
                    f"{m['expansions']:5d} expansions")
            step.write(line + (f"  {len(t)} samples" if t.success else f"  {t.reason}"), sys.stdout)
            trajs.append(t)
            step.advance()
        step.finish(f"{sum(t.success for t in trajs)}/{len(trajs)} found")
    data = TrajectoryDataset(trajs)
    status = 0
    if args.out:
        status, where = save_output(args.out, data.save, "--out")
        err(f"wrote {len(data)} trajectories ({data.n_samples} samples) to {where}")
    return max(status, save_json(args.json, {"seed": args.seed, "planner": config.to_dict(),
                                             "guide": "heuristic" if args.heuristic_guide else args.policy,
                                             "trajectories": [t.summary() for t in trajs]}))


# ------------------------------------------------------------------------------------------ train-policy
def cmd_train_policy(args) -> int:
    import torch
    import yaml

    from flipper_control.checkpoint import save_policy
    from flipper_control.learning.imitation import train_candidates
    from flipper_control.learning.imitation_config import ImitationConfig
    from flipper_control.learning.training_data import check_training_data
    from planning.dataset import DatasetError, TrajectoryDataset

    torch.set_num_threads(1)  # small networks: one thread is faster than two on this class of machine
    cfg = {}
    if args.config:
        cfg = yaml.safe_load(Path(args.config).read_text()) or {}
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    config = ImitationConfig.from_dict(cfg)
    data = TrajectoryDataset()
    for path in args.data:
        part = TrajectoryDataset.load(path)
        try:  # each file on its own, so that the message names the file that holds a bad sample
            if part.n_samples:  # a file of failed plans adds nothing; the merged data must still have samples
                check_training_data(part, config.policy)
        except DatasetError as exc:
            raise DatasetError(f"{path}: {exc}") from None
        data.extend(part)
    score_fn = None
    if args.select_worlds:
        from flipper_control.learning.evaluation import evaluate
        from flipper_control.policy import PolicyController
        from sim.world_sets import resolve_worlds

        worlds = resolve_worlds(args.select_worlds)

        def score_fn(policy):
            evs = evaluate(lambda: PolicyController(policy), worlds, args.select_runs, args.select_seed)
            return sum(ev.score for ev in evs)
    seeds = [args.seed + i for i in range(args.seeds)]
    with Step(f"training {len(seeds)} candidates", len(seeds) * config.epochs, "epoch") as step:
        def on_candidate(c) -> None:
            extra = f", score {c.score:.4f}" if c.score is not None else ""
            step.write(f"candidate seed {c.seed}: test mse {c.report.test_mse:.5f} (baseline "
                       f"{c.report.baseline_test_mse:.5f}){extra}, {c.report.seconds:.1f} s")

        cands = train_candidates(data, config, seeds=seeds, score_fn=score_fn, keep=args.keep, on_candidate=on_candidate,
                                 on_epoch=lambda seed, epoch, loss: step.advance(info=f"seed {seed} loss {loss:.5f}"))
        step.finish(f"{len(cands)} trained")
    data_hash = data.sha256()
    out = Path(args.out)
    print("| seed | test MSE | baseline MSE | sim score | kept |\n|---:|---:|---:|---:|:---:|")
    kept_paths, status = [], 0
    for c in cands:
        score = "-" if c.score is None else f"{c.score:.2f}"
        print(f"| {c.seed} | {c.report.test_mse:.5f} | {c.report.baseline_test_mse:.5f} | {score} | {'yes' if c.kept else ''} |")
        if c.kept and not args.ensemble:  # an ensemble: all kept as one checkpoint, below
            path = out if not kept_paths else out.with_name(f"{out.name}_{len(kept_paths) + 1}")
            rep = c.report.to_dict()
            rep.pop("loss_history", None)
            meta = {"seed": c.seed, "data_sha256": data_hash, "datasets": [str(p) for p in args.data], "train_report": rep,
                    "score": c.score}
            failed, path = save_output(path, lambda p, c=c, meta=meta: save_policy(p, c.policy, meta), "checkpoint")
            status = max(status, failed)
            kept_paths.append(str(path))
    if args.ensemble:
        from flipper_control.policy import ensemble_of

        kept = [c for c in cands if c.kept]
        meta = {"seeds": [c.seed for c in kept], "data_sha256": data_hash, "datasets": [str(p) for p in args.data],
                "scores": [c.score for c in kept], "test_mse": [c.report.test_mse for c in kept]}
        failed, path = save_output(out, lambda p: save_policy(p, ensemble_of([c.policy for c in kept]), meta), "checkpoint")
        status = max(status, failed)
        kept_paths.append(str(path))
    err(f"kept {sum(c.kept for c in cands)} of {len(cands)}"
        + (" as one ensemble" if args.ensemble else "") + ": " + ", ".join(p + ".safetensors" for p in kept_paths))
    return max(status, save_json(args.json, {"data_sha256": data_hash, "samples": data.n_samples,
                                             "candidates": [c.to_dict() for c in cands], "kept": kept_paths}))


# ------------------------------------------------------------------------------------------ loop / demo
def _print_report(report: dict, out: Path) -> None:
    from flipper_control.learning.report import (
        deployed_line,
        proxy_title,
        table_i,
        table_iii,
        table_paired,
        table_proxy,
        table_transfer,
    )

    print("\nSimulated test worlds (Table I analogue):\n")
    print(table_i(report))
    print("\nPlanning cost per trajectory (Table III analogue):\n")
    print(table_iii(report))
    if report.get("transfer"):
        t = report["transfer"]
        for ref in report["config"]["transfer"]["proxy_eval_worlds"]:
            table = table_proxy(report, ref)
            if table:
                print(f"\n{proxy_title(ref)}:\n\n{table}")
        table = table_transfer(report)
        if table:
            print(f"\nThe generator per iteration (held-out transfer metrics):\n\n{table}")
        table = table_paired(report)
        if table:
            print(f"\nThe generator on same-pose pairs (exact and reality-proxy DEMs):\n\n{table}")
        if t.get("deploy"):
            print(f"\n{deployed_line(report)}")
        print(f"\nreal (reality-proxy) driving used: {t.get('driving_s', 0) / 60:.1f} min"
              + (f"; Fig. 6 analogue: {out / t['figure']}" if t.get("figure") else ""))
    cpu = report.get("cpu_s", {})
    print(f"\nCPU {cpu.get('total', 0):.0f} s ({cpu.get('cpu_hours', 0):.3f} CPU-hours), wall {report.get('wall_s', 0):.0f} s; "
          f"report: {out / 'report.md'}, {out / 'report.json'}, {out / 'learning_curve.png'}")


def _with_overrides(config, args):
    from dataclasses import replace

    changes = {k: v for k, v in (("executor", args.executor), ("workers", args.workers), ("ray_address", args.ray_address)) if v}
    if args.reality_config:
        changes["transfer"] = _with_reality(config.transfer, args.reality_config)
    return replace(config, **changes) if changes else config


def _with_reality(transfer, path: str):
    """The loop's transfer section with ``--reality-config``'s proxy in place of ``transfer.reality`` (it is part of
    the run's configuration: a resumed run with another proxy is refused like any changed field)."""
    from dataclasses import replace

    from sim.reality_config import load_reality_config

    if transfer is None:
        raise ValueError(f"--reality-config {path}: this loop config has no transfer: section, so it runs no reality "
                         "proxy (the simulation-only loop); add one, or leave the option out")
    reality = load_reality_config(path)
    if transfer.reality is not None and transfer.reality != reality:
        err(f"--reality-config {path} replaces the config's transfer.reality")
    return replace(transfer, reality=reality)


def cmd_loop(args) -> int:
    from flipper_control.learning.loop import load_loop_config, run_loop

    config = _with_overrides(load_loop_config(args.config), args)
    report = run_loop(config, args.out)
    _print_report(report, Path(args.out))
    return 0


def cmd_demo(args) -> int:
    from flipper_control.learning.loop import demo_config, run_loop

    config = _with_overrides(demo_config(), args)
    err(f"flipper demo: {DEMO_NOTE}; output in {args.out}")
    t0 = time.perf_counter()
    report = run_loop(config, args.out)
    _print_report(report, Path(args.out))
    err(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0


# ------------------------------------------------------------------------------------------ retrain
def _run_reality(run: Path) -> dict | None:
    """The reality proxy a run scored on: its config's ``transfer.reality`` (None: today's defaults)."""
    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return None  # an older run without its config: today's proxy
    return (config.get("transfer") or {}).get("reality")


def cmd_retrain(args) -> int:
    import yaml

    from flipper_control.learning.evaluation import WorldEvaluation
    from flipper_control.learning.executors import make_executor
    from flipper_control.learning.retrain import (
        paired_summary,
        recorded_candidates,
        retrain_tasks,
        score_key,
        score_tasks,
    )
    from flipper_control.learning.tasks import eval_task, train_task
    from sim.io_utils import write_json_atomic
    from sim.world_sets import resolve_worlds

    def mapping(option: str, text: str | None):
        if text is None:
            return None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{option} {text!r} is not a YAML mapping: {e}") from e

    change, transfer_change = mapping("--change", args.change), mapping("--transfer", args.transfer)
    if change is None and transfer_change is None:
        raise ValueError("flipper retrain needs --change (imitation fields), --transfer (transfer: fields), or both")
    candidates = [c for run in args.run for c in recorded_candidates(run, args.iteration)]
    if args.seeds:
        missing = sorted(set(args.seeds) - {c.seed for c in candidates})
        if missing:
            raise ValueError(f"--seeds {' '.join(map(str, missing))}: no such candidate; the candidates' seeds are "
                             f"{' '.join(str(c.seed) for c in candidates)}")
        candidates = [c for c in candidates if c.seed in args.seeds]
    out = Path(args.out)
    tasks = retrain_tasks(candidates, change, out, transfer_change)  # a bad change stops here, before any work
    if transfer_change is not None:
        change = {"imitation": change, "transfer": transfer_change} if change else {"transfer": transfer_change}
    worlds = resolve_worlds(args.worlds)
    seeds = list(range(args.seed, args.seed + args.runs))
    override = reality_config(args)
    realities = {run: (override.to_dict() if override is not None else _run_reality(run))
                 for run in dict.fromkeys(c.run for c in candidates)}  # each run's config read once
    err(f"retraining {len(tasks)} candidates of {len(args.run)} run(s) with {change}; scoring on {len(worlds)} worlds "
        f"({args.reality}, {args.runs} runs from seed {args.seed}); output in {out}")
    _claim_study(out, change, args.iteration)
    cache_path = out / "scores.json"
    try:
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    except ValueError:
        cache = {}  # half-written by an interrupted study: score again
    checkpoints = [(str(c.checkpoint), c) for c in candidates] + [(t["out"], c) for t, c in zip(tasks, candidates, strict=True)]

    def key(path: str, c) -> str:
        return score_key(path, args.reality, realities[c.run], seeds, [w.name for w in worlds])

    keys = [key(path, c) for path, c in checkpoints[:len(candidates)]]  # the recorded ones; the retrained after training
    for earlier in args.reuse or []:
        found = {k: v for k, v in _study_scores(Path(earlier)).items() if k in keys and k not in cache}
        cache |= found
        err(f"--reuse {earlier}: the scores of {len(found)} recorded candidate(s) taken from there")

    with make_executor(args.executor or "process", args.workers) as ex:
        with Step("retraining", len(tasks), "candidate") as step:
            ex.map(train_task, tasks, progress=step)
            step.finish(f"{len(tasks)} candidates retrained")
        keys += [key(path, c) for path, c in checkpoints[len(candidates):]]
        pending = [(k, path, c) for k, (path, c) in zip(keys, checkpoints, strict=True) if k not in cache]
        work = [t for _, path, c in pending for t in score_tasks(path, c, worlds, seeds, args.reality, realities[c.run])]
        with Step("scoring", len(work), "world") as step:
            results = ex.map(eval_task, work, progress=step) if work else []
            step.finish(f"{len(work)} world evaluations of {args.runs} runs")
    for i, (k, _, _) in enumerate(pending):
        part = results[i * len(worlds):(i + 1) * len(worlds)]
        cache[k] = {w.name: WorldEvaluation(w.name, r["runs"]).score for w, r in zip(worlds, part, strict=True)}
    write_json_atomic(cache_path, cache)
    scores = [cache[k] for k in keys]
    summary = paired_summary(candidates, scores[:len(candidates)], scores[len(candidates):])
    summary |= {"change": change, "reality": args.reality, "runs": args.runs, "seed": args.seed,
                "retrained": [t["out"] for t in tasks]}
    print(_retrain_table(summary))
    write_json_atomic(out / "retrain.json", summary)
    return save_json(args.json, summary)


def _study_scores(folder: Path) -> dict:
    """The score cache of an earlier study's ``--out`` folder (``--reuse``)."""
    path = folder / "scores.json"
    try:
        scores = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--reuse {folder}: no readable {path.name} there (not a `flipper retrain --out` folder, or "
                         f"its study never scored): {e}") from e
    if not isinstance(scores, dict):
        raise ValueError(f"--reuse {folder}: {path} is not a study's score cache (a JSON object was expected)")
    return scores


def _claim_study(out: Path, change, iteration: int | None) -> None:
    """Mark ``out`` as the study of ``change``, or refuse it when it holds another one: its retrained checkpoints
    would be taken for this change's (a checkpoint is kept when its seed, data and DEM transform match)."""
    from sim.io_utils import write_json_atomic

    study = {"change": change, "iteration": iteration}
    marker = out / "study.json"
    try:
        held = json.loads(marker.read_text()) if marker.is_file() else None
    except ValueError:
        held = None  # half-written: nothing was trained under it yet
    if held is not None and held != json.loads(json.dumps(study)):
        raise ValueError(f"--out {out} holds the study of change {held.get('change')} (iteration "
                         f"{held.get('iteration') or 'last'}); give this change {change} another folder")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, study)


def _retrain_table(summary: dict) -> str:
    """The comparison as Markdown: a row per candidate, the means and the paired difference, then each world."""
    lines = ["| candidate | kept | recorded | retrained | difference |", "|---|:---:|---:|---:|---:|"]
    lines += [f"| {r['candidate']} | {'yes' if r['kept'] else ''} | {r['recorded']:.2f} | {r['retrained']:.2f} | "
              f"{r['difference']:+.2f} |" for r in summary["candidates"]]
    se = summary["difference_se"]
    lines.append(f"| **mean of {summary['n']}** | | {summary['recorded_mean']:.2f} | {summary['retrained_mean']:.2f} | "
                 f"{summary['difference_mean']:+.2f}" + (f" +- {se:.2f}" if se is not None else "") + " |")
    level = summary["n"] - summary["ahead"] - summary["behind"]
    lines += ["", f"ahead {summary['ahead']}, behind {summary['behind']}, level {level}",
              "", "| world | recorded | retrained |", "|---|---:|---:|"]
    lines += [f"| {w} | {v['recorded']:.2f} | {v['retrained']:.2f} |" for w, v in summary["worlds"].items()]
    return "\n".join(lines)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the learning commands to the ``flipper`` parser."""
    p = sub.add_parser("plan", help="plan guiding trajectories with the RRT (optionally guided by a policy)")
    p.add_argument("--world", nargs="+", required=True, help="world names, sets (test, proxy, training) or YAML files")
    p.add_argument("--count", type=count, default=4, help="training worlds when 'training' is named")
    p.add_argument("--world-seed", type=seed, default=0, help="training-world generator seed")
    p.add_argument("--action-set", default="coarse", help="coarse (3 x 1000 ms), fine (7 x 200 ms), "
                   "fine_rear (fine, rear pressed), or NAME@DT")
    guides = p.add_mutually_exclusive_group()
    guides.add_argument("--policy", help="guide the expansion with this checkpoint")
    guides.add_argument("--heuristic-guide", action="store_true",
                        help="guide the expansion with the hand-written rule (a loop's first_guide: heuristic)")
    p.add_argument("--max-expansions", type=count, default=3000)
    p.add_argument("--max-cpu-s", type=seconds, default=60.0)
    p.add_argument("--max-delay", type=max_delay,
                   help="seconds a plan may fall behind the nominal schedule, or none for the world's own slack "
                        "(default: the planner's, planning.planner_config.PlannerConfig.max_delay_s)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", help="write the trajectories here (safetensors dataset)")
    p.add_argument("--json", help="write a summary here")
    p.set_defaults(func=cmd_plan)

    t = sub.add_parser("train-policy", help="imitate planned trajectories: train N policies, keep the best")
    t.add_argument("--data", nargs="+", required=True, help="trajectory datasets (aggregated)")
    t.add_argument("--out", required=True, help="checkpoint path of the best policy (the next kept get _2, _3, ...)")
    t.add_argument("--config", help="ImitationConfig YAML (epochs, lr, grad_clip, test_fraction, policy: ...)")
    t.add_argument("--epochs", type=count)
    t.add_argument("--seeds", type=count, default=3, help="policies trained (seed 000: 10)")
    t.add_argument("--keep", type=count, default=1, help="policies kept (seed 000: 2)")
    t.add_argument("--ensemble", action="store_true",
                   help="write the kept policies as one checkpoint whose action is their mean (PolicyConfig.members)")
    t.add_argument("--seed", type=seed, default=0, help="first training seed")
    t.add_argument("--select-worlds", nargs="*", help="rank by simulated score on these worlds (default: by test MSE)")
    t.add_argument("--select-runs", type=count, default=1)
    t.add_argument("--select-seed", type=seed, default=1000)
    t.add_argument("--json", help="write the candidates' reports here")
    t.set_defaults(func=cmd_train_policy)

    lp = sub.add_parser("loop", help="the coarse-to-fine learning loop (resumable: run again with the same --out)")
    lp.add_argument("--config", required=True, help="loop YAML (see configs/demo.yaml, configs/full.yaml)")
    lp.add_argument("--out", required=True)
    lp.add_argument("--ray-address", help="HOST:PORT of a running Ray cluster's head (with --executor ray; token "
                    "authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN, see README)")
    add_executor_args(lp)
    add_reality_config_arg(lp, loop=True)
    lp.set_defaults(func=cmd_loop)

    r = sub.add_parser("retrain", help="train a finished loop iteration's candidates again with one imitation or transfer change "
                       "(the history held fixed) and score both, paired by candidate")
    r.add_argument("run", nargs="+", help="finished `flipper loop --out` folders")
    r.add_argument("--change", metavar="YAML",
                   help="ImitationConfig fields to change, a YAML mapping: '{keyframe_weight: 20}', '{policy: {hidden: [256]}}'")
    r.add_argument("--transfer", metavar="YAML",
                   help="transfer: fields to change (each candidate's DEM transform rebuilt as the loop would have), a "
                        "YAML mapping: '{real_masks: {ahead_s: 2.0}}'")
    r.add_argument("--seeds", nargs="+", type=int, metavar="S", help="retrain only the candidates of these seeds")
    r.add_argument("--out", required=True, help="folder of the retrained checkpoints and the comparison (resumable)")
    r.add_argument("--iteration", type=count, help="the iteration whose candidates are retrained (default: each run's last)")
    r.add_argument("--worlds", nargs="+", default=["test"], help="test, proxy, world names or YAML files (default: test)")
    r.add_argument("--reality", choices=["proxy", "sim"], default="proxy",
                   help="proxy (default): the reality proxy, as the loop's proxy scoring; sim: the simulator, through "
                        "each candidate's own G where it trained on one, as Table I")
    r.add_argument("--runs", type=count, default=5)
    r.add_argument("--seed", type=seed, default=0, help="noise seed of the first run (the loop's proxy scoring: 0)")
    add_reality_config_arg(r)
    r.add_argument("--reuse", nargs="+", metavar="DIR",
                   help="earlier studies' --out folders: the recorded candidates' scores are taken from there where "
                        "the same weights were scored on the same worlds, seeds and reality (half of the scoring)")
    r.add_argument("--json", help="write the comparison here")
    add_executor_args(r)
    r.set_defaults(func=cmd_retrain)

    d = sub.add_parser("demo", help=DEMO_NOTE + " (what `make demo` runs)")
    d.add_argument("--out", default="demo_out")
    d.add_argument("--ray-address", help=argparse.SUPPRESS)
    add_executor_args(d)
    add_reality_config_arg(d, loop=True)
    d.set_defaults(func=cmd_demo)
