"""``flipper rl train|eval``: the RL toolbox of seeds 001-004 (``flipper_control.rl``) on its benchmarks.

``flipper rl train --algo A --env E [--steps N] [--seed S] [--out CKPT] [--json PATH] [--plot PNG]`` trains one
algorithm of ``flipper_control.rl.registry.ALGORITHMS`` with a progress bar, writes the kept (best) weights as
checkpoint ``CKPT`` (safetensors + JSON sidecar), the results as JSON (``eval_mean_return``, ``eval_episodes``,
``env_steps``, ``seconds``, ``seed``, ``config``, the learning curve's data) and the learning curve as a PNG
(``--plot``, default: the JSON's path with ``.png``). ``flipper rl eval CKPT`` evaluates a checkpoint greedily.

An unknown algorithm or environment is refused naming the allowed ones (exit 2); a diverged run (NaN/inf loss)
stops with a message naming the step and the checkpoint kept (exit 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flipper_control.cli.common import count, err, save_json, save_output, seed
from flipper_control.progress import Step
from sim.io_utils import OutputError, check_writable

__all__ = ["add_parsers"]


def _check_targets(args) -> Path | None:
    """Check ``--out``, ``--plot`` (and that no two targets are one file) before any work; returns the PNG path."""
    plot = Path(args.plot) if args.plot else (Path(args.json).with_suffix(".png") if args.json else None)
    targets = {"--json": args.json, "--plot": plot}
    if args.out:
        targets.update({"--out": f"{args.out}.safetensors", "--out ": f"{args.out}.json"})
    seen: dict[Path, str] = {}
    for option, path in targets.items():
        if not path:
            continue
        check_writable(path, option.strip())
        resolved = Path(path).resolve()
        if resolved in seen:
            raise OutputError(f"{option.strip()} {path} is also the file of {seen[resolved]}; choose another path")
        seen[resolved] = option.strip()
    return plot


def cmd_train(args) -> int:
    import torch

    from flipper_control.rl.common import DivergedError, save_learning_curve
    from flipper_control.rl.registry import resolve

    train = resolve(args.algo, args.env)  # unknown algorithm or environment: stops here, naming the allowed ones
    plot = _check_targets(args)
    torch.set_num_threads(1)  # small networks: one thread is faster than two on this class of machine
    label = f"rl train {args.algo} on {args.env} (seed {args.seed})"
    try:
        with Step(label, args.steps, "step") as step:
            result = train(args.env, steps=args.steps, seed=args.seed, out=args.out, progress=step.update)
            step.finish(f"{result.env_steps} steps, eval mean return {result.eval_mean_return:.1f} "
                        f"over {result.eval_episodes} episodes")
    except DivergedError as exc:
        err(f"flipper: error: {exc}")
        return 1
    status = 0
    if plot is not None:
        status, where = save_output(plot, lambda p: save_learning_curve(p, result), "--plot")
        err(f"wrote {where}")
    solved = f", solved at step {result.solved_at_step}" if result.solved_at_step is not None else ""
    print(f"{result.algorithm} on {result.env}, seed {result.seed}: eval mean return {result.eval_mean_return:.1f} "
          f"+- {result.eval_std_return:.1f} over {result.eval_episodes} episodes (weights of step {result.best_step}); "
          f"{result.env_steps} environment steps{solved}, {result.seconds:.0f} s"
          + (f"; mean training episode return {result.train_mean_return:.1f}" if result.train_mean_return is not None else ""))
    if result.checkpoint:
        print(f"checkpoint {result.checkpoint}.safetensors")
    return max(status, save_json(args.json, result.to_dict()))


def cmd_eval(args) -> int:
    import numpy as np
    import torch

    from flipper_control.rl.registry import evaluate_checkpoint

    torch.set_num_threads(1)
    with Step(f"rl eval {args.checkpoint} ({args.episodes} episodes)", unit="phase") as step:
        returns, steps, rl = evaluate_checkpoint(args.checkpoint, args.episodes, args.seed)
        step.finish(f"{steps} steps")
    out = {"checkpoint": str(args.checkpoint), "algorithm": rl["algorithm"], "env": rl["env"], "seed": args.seed,
           "eval_mean_return": float(np.mean(returns)), "eval_std_return": float(np.std(returns)),
           "eval_episodes": len(returns), "eval_returns": returns, "env_steps": steps}
    print(f"{rl['algorithm']} on {rl['env']}: mean return {out['eval_mean_return']:.1f} +- {out['eval_std_return']:.1f} "
          f"over {len(returns)} episodes ({steps} steps)")
    return save_json(args.json, out)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``rl train`` and ``rl eval`` to the ``flipper`` parser."""
    p = sub.add_parser("rl", help="the RL toolbox (DQN, DDQN + PER, Smart Start + HER, CUP) on its benchmarks")
    rl_sub = p.add_subparsers(dest="rl_command", required=True)
    t = rl_sub.add_parser("train", help="train one algorithm on one environment")
    t.add_argument("--algo", required=True, help="dqn, ddqn-per, ... (flipper_control/rl/registry.py)")
    t.add_argument("--env", required=True, help="CartPole-v1 (dqn, ddqn-per), Asterix-ram (ddqn-per), ...")
    t.add_argument("--steps", type=count, help="environment steps at most (default: the algorithm's budget)")
    t.add_argument("--seed", type=seed, default=0)
    t.add_argument("--out", metavar="CKPT", help="checkpoint prefix: CKPT.safetensors + CKPT.json (the best weights)")
    t.add_argument("--json", help="write the results here")
    t.add_argument("--plot", metavar="PNG", help="learning curve (default: the --json path with .png)")
    t.set_defaults(func=cmd_train)
    e = rl_sub.add_parser("eval", help="evaluate a checkpoint of `flipper rl train`")
    e.add_argument("checkpoint", help="checkpoint prefix or either of its files")
    e.add_argument("--episodes", type=count, default=100)
    e.add_argument("--seed", type=seed, default=0)
    e.add_argument("--json", help="write the results here")
    e.set_defaults(func=cmd_eval)
