"""``flipper finetune``: improve an imitation policy by evolution strategies in simulation through G
(``flipper_control.learning.finetune``), e.g. a loop's final policy with that iteration's CycleGAN:

    flipper finetune --policy runs/demo/iter_4/policy --transform runs/demo/iter_4/gan.safetensors \\
        --seed 0 --out runs/demo/finetuned

One bar step per generation (the centre's mean level value on that generation's runs beside it); the state is
kept after every generation, so an interrupted run continues where it stopped when started again with the same
inputs. The output is an ordinary policy checkpoint whose sidecar records the base policy, the transform, the
settings, the seed and every generation's log under ``finetune``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flipper_control.cli.common import add_executor_args, count, err, save_json, seed
from flipper_control.progress import Step, on_terminal


def cmd_finetune(args) -> int:
    import yaml

    from flipper_control.learning.executors import make_executor
    from flipper_control.learning.finetune import FinetuneConfig, finetune
    from sim.config_io import in_section

    data = (yaml.safe_load(Path(args.config).read_text()) or {}) if args.config else {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {args.config}: expected a mapping of FinetuneConfig fields, got {type(data).__name__}")
    if args.generations is not None:
        data["generations"] = args.generations
    if args.world_seed is not None:
        data["world_seed"] = args.world_seed
    config = in_section(args.config or "options", FinetuneConfig.from_dict, data)  # errors name the file
    runs = (2 * config.pairs + 1) * config.worlds_per_generation
    err(f"fine-tuning {args.policy} ({', '.join(config.layers)}) by ES: {config.generations} generations of {runs} runs "
        f"on {config.training_set} worlds (seed {config.world_seed}), "
        + (f"DEMs through G of {args.transform}" if args.transform else "exact DEMs (no --transform)"))
    lines = not on_terminal()  # a log file gets one line per generation: a run takes minutes to hours

    def progress(g: int, n: int, entry: dict) -> None:
        info = f"centre {entry['centre_value']:.2f} members {entry['members_value']:.2f}"
        step.update(g, info=info)
        if lines:
            err(f"generation {g}/{n}: mean level value on its runs: {info}; weights moved {100 * entry['drift']:.1f} % "
                f"({entry['wall_s']:.0f} s)")

    with make_executor(args.executor or "process", args.workers) as ex, \
            Step("fine-tuning", config.generations, "generation") as step:
        summary = finetune(args.policy, args.out, config, seed=args.seed, transform=args.transform, executor=ex,
                           progress=progress)
        step.finish(f"{summary['generations']} generations"
                    + (f" (resumed at {summary['resumed_at']})" if summary["resumed_at"] else ""))
    log = summary["log"]
    first, last = log[0], log[-1]
    print(f"finetuned policy {args.out}: {len(summary['tuned_parameters'])} tensors moved by {100 * summary['drift']:.1f} % "
          f"of their norm; the centre's mean level value per generation {first['centre_value']:.2f} (generation 1) -> "
          f"{last['centre_value']:.2f} (generation {last['generation']}), on {config.worlds_per_generation} drawn "
          f"worlds each; {summary['cpu_s_this_run']:.0f} CPU-s this run")
    err("score it where it matters: flipper eval --policy " + str(args.out) + " --worlds test --reality proxy --runs 5")
    return save_json(args.json, summary)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``finetune`` to the ``flipper`` parser."""
    f = sub.add_parser("finetune", help="improve a policy by evolution strategies in simulation (through G)")
    f.add_argument("--policy", required=True, metavar="CKPT", help="the policy checkpoint to start from")
    f.add_argument("--transform", metavar="GAN", help="the policy sees every DEM through this CycleGAN's G (sim -> "
                                                    "real), as in Table I; default: the exact simulated DEMs")
    f.add_argument("--out", required=True, metavar="CKPT", help="the fine-tuned checkpoint (PATH.safetensors + "
                                                               "PATH.json; the resumable state beside it: PATH.es.*)")
    f.add_argument("--config", metavar="YAML", help="FinetuneConfig fields (generations, pairs, worlds_per_generation, "
                                                   "training_set, training_worlds, world_seed, layers, sigma, step, "
                                                   "progress_weight, lateness_weight)")
    f.add_argument("--generations", type=count, help="default: the config's, 24")
    f.add_argument("--world-seed", type=seed, help="the training worlds' generator seed (a loop's iteration k planned "
                                                   "on 1000 x its seed + k); default: the config's, 0")
    f.add_argument("--seed", type=seed, default=0, help="the search's seed (directions, worlds and noise seeds drawn)")
    add_executor_args(f)
    f.add_argument("--json", help="write the run's summary (settings, log per generation) here")
    f.set_defaults(func=cmd_finetune)
