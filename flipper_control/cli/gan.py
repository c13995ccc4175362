"""``flipper train-gan``: train the sim<->real CycleGAN on a simulated and a real dataset (both trajectory datasets:
planned or rolled-out states, and ``flipper ingest``'s real trajectories), write the checkpoint with the losses per
epoch in its sidecar, and report the transfer metrics on the held-out trajectories. With ``--policy CKPT`` it also
reports how far G moves that policy's action on held-out simulated states, and ``--lambda-task X`` trains G to keep
it (the policy-aware GAN, ``GanTrainConfig.lambda_task``). ``--height-offset auto`` pulls G's kept heights towards the
real sensor's offset, estimated from the two sets (``flipper_control.learning.sensor_offset``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from flipper_control.cli.common import count, err, non_negative, save_json, save_output, seed
from flipper_control.progress import Step


def _load(paths: list[str], option: str, gan_config):
    """The samples of every dataset in ``paths``, checked for the GAN; messages name the option and file."""
    from perception.gan_training import gan_data
    from planning.dataset import TrajectoryDataset

    data = TrajectoryDataset()
    for path in paths:
        data.extend(TrajectoryDataset.load(path))
    return gan_data(data.arrays(), gan_config, f"{option} {' '.join(paths)}")


def cmd_train_gan(args) -> int:
    import numpy as np
    import torch
    import yaml

    from perception.cyclegan import load_gan, save_gan
    from perception.gan_health import judged_report
    from perception.gan_training import GanTrainConfig, domain_warnings, split_by_trajectory, train_gan
    from perception.sim_to_real import SimToReal
    from sim.config_io import in_section

    torch.set_num_threads(1)  # small networks: one thread is faster than two on this class of machine
    cfg = (yaml.safe_load(Path(args.config).read_text()) or {}) if args.config else {}
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    if args.lambda_task is not None:
        if not args.policy:
            raise ValueError("--lambda-task weighs how far G moves a policy's action: it needs --policy CKPT")
        cfg["lambda_task"] = args.lambda_task
    config = in_section(args.config or "options", GanTrainConfig.from_dict, cfg)  # errors name the file
    if config.lambda_task > 0 and not args.policy:
        raise ValueError(f"--config {args.config}: lambda_task = {config.lambda_task} needs --policy CKPT")
    start = None
    if args.resume:
        start, _ = load_gan(args.resume)  # a bad checkpoint stops here, before any work
    gan_config = start.config if start is not None else config.gan
    task_model = policy_info = None
    if args.policy:
        from flipper_control.learning.transfer_tasks import load_task_policy

        task_model, policy_info = load_task_policy(args.policy, gan_config, "--policy")
    sim, real = _load(args.sim, "--sim", gan_config), _load(args.real, "--real", gan_config)
    warnings = domain_warnings(sim, real)
    for warning in warnings:
        err(f"warning: {warning}")
    rng = np.random.default_rng(args.seed)
    sim_train, sim_test = split_by_trajectory(sim, config.test_fraction, rng)
    real_train, real_test = split_by_trajectory(real, config.test_fraction, rng)
    offset = None
    if args.height_offset == "auto":  # the sensor's offset from the training sets, against the ground under the tracks
        from flipper_control.learning.sensor_offset import with_estimated_offset

        config, estimate = with_estimated_offset(config, sim_train, real_train)
        offset = estimate.to_dict()
        err(f"sensor height offset: {100 * estimate.offset_m:+.2f} cm (real ground under the tracks "
            f"{100 * estimate.real_m:+.2f} cm over {estimate.real_dems} DEMs, simulated {100 * estimate.sim_m:+.2f} cm "
            f"over {estimate.sim_dems})")
    elif args.height_offset is not None:
        config = in_section("--height-offset", GanTrainConfig.from_dict, config.to_dict() | {"height_offset": args.height_offset})
    with Step(f"training the CycleGAN ({len(sim_train)} sim, {len(real_train)} real states)", config.epochs, "epoch") as step:
        gan, report = train_gan(sim_train, real_train, config, seed=args.seed, gan=start, task_model=task_model,
                                on_epoch=lambda e, m: step.update(e, info=f"D {m['d']:.3f} G {m['g_adv']:.3f} "
                                                                          f"cycle {m['cycle']:.3f}"
                                                                          + (f" task {m['task']:.4f}" if "task" in m else "")))
        step.finish(f"{report.steps} steps")
    transform = SimToReal(gan.g)
    transformed = transform.transform(sim_test.dems, sim_test.scalars, map_age=sim_test.age)
    # DEMs only: the transform changes the DEM, the robot measures pitch, roll and flippers itself (and the
    # proxy's perturbed dynamics would let a classifier tell the domains apart by those alone)
    metrics, failure = judged_report(real_test.dems, {"identity": sim_test.dems, "G": transformed}, seed=args.seed,
                                     real_traj=real_test.traj_id)
    if failure is not None:  # written anyway (the user asked for it, and may want to look at it); the loop would not use it
        warnings.append(f"this G should not be used: {failure}")
    consistency = None
    if task_model is not None:
        from flipper_control.learning.transfer_tasks import action_gap

        consistency = {"lambda_task": config.lambda_task, "policy": policy_info,
                       "action_gap": action_gap(task_model, sim_test.dems, {"G": transformed}, sim_test.scalars)}
    meta = {"seed": args.seed, "sim": args.sim, "real": args.real, "resumed_from": args.resume,
            "train_report": report.to_dict(), "transfer_metrics": metrics, "task_consistency": consistency,
            "height_offset": offset, "warnings": warnings}
    status, where = save_output(args.out, lambda p: save_gan(p, gan, meta), "checkpoint")
    err(f"wrote {where}.safetensors")
    _print_metrics(metrics)
    if failure is not None:
        err(f"warning: {warnings[-1]}")
    if consistency is not None:
        print(f"\npolicy {args.policy} on {len(sim_test)} held-out simulated states: mean |pi(G(x_s)) - pi(x_s)| = "
              f"{consistency['action_gap']['G']:.4f} rad (lambda_task {config.lambda_task:g})")
    return max(status, save_json(args.json, {"checkpoint": str(where), **meta}))


def _print_metrics(metrics: dict) -> None:
    """The Markdown table of the held-out transfer metrics: distances to the real set, the classifier's accuracy,
    and the share of the identity's distance each candidate closed."""
    names = list(metrics["metrics"])
    print(f"\nheld-out transfer metrics against {metrics['real']['n']} real states "
          f"(NaN share {metrics['real']['nan_share']:.3f}); closed = 1 - d / d(identity):\n")
    print("| candidate | NaN share | " + " | ".join(names) + " | classifier accuracy | closed (min) |")
    print("|---|---:|" + "---:|" * (len(names) + 2))
    for name, c in metrics["candidates"].items():
        closed = [v for v in c["closed_share"].values() if v is not None]
        least = f"{min(closed):.2f}" if closed else "-"
        print(f"| {name} | {c['nan_share']:.3f} | " + " | ".join(f"{c['distances'][m]:.4f}" for m in names)
              + f" | {c['classifier']['accuracy']:.3f} | {least} |")
    floor = metrics.get("content_floor")
    if floor is not None:
        print(f"\nclassifier accuracy between two halves of the held-out real set, split by trajectory (content floor of "
              f"this unpaired test; {floor['trajectories']} trajectories): {floor['accuracy']:.3f}")


def _offset(text: str) -> str | float:
    """``--height-offset``: 'auto' or a number of metres."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or metres (e.g. 0.013), got {text!r}") from None


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``train-gan`` to the ``flipper`` parser."""
    g = sub.add_parser("train-gan", help="train the sim<->real CycleGAN on unpaired simulated and real datasets")
    g.add_argument("--sim", nargs="+", required=True, help="trajectory datasets of simulated states (exact DEMs)")
    g.add_argument("--real", nargs="+", required=True, help="real trajectory datasets (flipper ingest's output)")
    g.add_argument("--out", required=True, help="checkpoint path (PATH.safetensors + PATH.json)")
    g.add_argument("--config", help="GanTrainConfig YAML (epochs, batch_size, lr, lambda_p, lambda_c, lambda_nan, gan: ...)")
    g.add_argument("--epochs", type=count)
    g.add_argument("--resume", metavar="CKPT", help="continue training this CycleGAN checkpoint (Algorithm 1 line 7)")
    g.add_argument("--policy", metavar="CKPT", help="a policy checkpoint: report how far G moves its action on held-out "
                                                    "simulated states (and the task model of --lambda-task)")
    g.add_argument("--lambda-task", type=non_negative, metavar="X",
                   help="weight of |pi(G(x_s)) - pi(x_s)| in G's loss for the --policy pi (policy-aware GAN; default: "
                        "the config's lambda_task, 0)")
    g.add_argument("--height-offset", type=_offset, metavar="auto|METRES",
                   help="how far above the simulator the real sensor reads the ground: lambda_p pulls G's kept heights "
                        "towards input + offset; 'auto' estimates it from the two training sets against the ground "
                        "under the tracks (default: the config's height_offset, 0)")
    g.add_argument("--seed", type=seed, default=0)
    g.add_argument("--json", help="write the training report and the transfer metrics here")
    g.set_defaults(func=cmd_train_gan)
