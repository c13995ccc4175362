"""The rosbag and perception commands of ``flipper``: record, ingest, replay and proxy-figure.

Bad input (a missing topic, a damaged bag, an existing output bag) raises a ``ValueError`` subclass that
``cli.main`` turns into one line and exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flipper_control.cli.common import (
    add_controller_args,
    add_reality_config_arg,
    controller,
    err,
    reality_config,
    save_json,
    seconds,
    seed,
)
from flipper_control.progress import Step


# ------------------------------------------------------------------------------------------ record
def record(world_ref: str, controller_name: str, out: str, storage: str = "mcap", seed: int = 0, posture: str | None = None,
           control_dt: float = 0.1, proxy_config=None, max_time: float | None = None) -> dict:
    """What ``flipper record`` (and ``flipper sim --reality proxy --record BAG``) runs: one recorded proxy run."""
    from flipper_control.learning.bags import record_proxy_run
    from sim.reality_proxy import RealityProxy
    from sim.world_sets import resolve_world

    world = resolve_world(world_ref)
    ctrl = controller(controller_name, posture)
    proxy = RealityProxy(config=proxy_config)
    with Step(f"recording {world.name} on the reality proxy", unit="sim s") as step:
        summary = record_proxy_run(world, ctrl, out, storage=storage, seed=seed, control_dt=control_dt, proxy=proxy,
                                   max_time=max_time, progress=lambda t, horizon: step.update(round(t, 1), horizon))
        step.finish(f"{summary['sim_time']:.1f} simulated s")
    return summary


def cmd_record(args) -> int:
    if getattr(args, "clean_partials", None):  # `flipper sim --record` has no such option
        from perception.bag_partials import remove_stale_partials

        parent = Path(args.out).resolve().parent
        for path in remove_stale_partials(parent, unknown_older_than=args.clean_partials):
            err(f"removed {path} (the leftover of a killed recording)")
    out = record(args.world, args.controller, args.out, args.storage, args.seed, args.posture, args.control_dt,
                 reality_config(args), args.max_time)
    run = out["run"]
    print(f"{out['world']} (seed {out['seed']}): {run['level']} {run['distance']:.2f} m in {run['time']:.1f} s")
    print(", ".join(f"{topic} {n}" for topic, n in sorted(out["messages"].items())))
    err(f"wrote {args.out} ({args.storage})")
    return save_json(args.json, out)


# ------------------------------------------------------------------------------------------ ingest
def cmd_ingest(args) -> int:
    from flipper_control.learning.bags import IngestConfig, ingest

    with Step(f"ingesting {len(args.bags)} bag{'s' if len(args.bags) > 1 else ''}", unit="cloud") as step:
        out = ingest(args.bags, args.out, IngestConfig(max_gap=args.max_gap), progress=step, overwrite=args.overwrite)
        step.finish(f"{out['samples']} samples")
    for rep in out["bags"]:
        skips = {**rep["handler_skips"], **rep["pairing_skips"],
                 **{r: sum(c.values()) for r, c in rep["skipped"].items()}}
        extra = ("  skipped: " + ", ".join(f"{r} {n}" for r, n in skips.items())) if skips else ""
        damage = f"  DAMAGED: {'; '.join(rep['errors'])}" if rep["errors"] else ""
        print(f"{rep['path']}: {rep['samples']} samples{extra}{damage}")
    err(f"wrote {out['trajectories']} trajectories ({out['samples']} samples) to {out['dataset']}")
    return 0


# ------------------------------------------------------------------------------------------ replay
def cmd_replay(args) -> int:
    from flipper_control.learning.bags import replay

    out = replay(args.bag, args.out, policy=args.policy, storage=args.storage)
    counts = ", ".join(f"{topic} {n}" for topic, n in sorted(out["messages"].items()))
    skips = ", ".join(f"{r} {n}" for r, n in out["handler_skips"].items()) or "none"
    print(f"{args.out}: {counts} (skipped clouds: {skips})")
    if out["read"]["errors"]:
        print(f"input damaged: {'; '.join(out['read']['errors'])}")
    return save_json(args.json, out)


# ------------------------------------------------------------------------------------------ figure
def cmd_proxy_figure(args) -> int:
    from flipper_control.learning.proxy_figure import proxy_figure
    from sim.world_sets import resolve_world

    world = resolve_world(args.world)
    from sim.reality_proxy import RealityProxy

    proxy = RealityProxy(config=reality_config(args))
    out = proxy_figure(world, args.out, controller(args.controller, args.posture), args.seed, args.control_dt, proxy=proxy)
    print(f"{world.name}: step {out['step']} (t = {out['time']:.1f} s), NaN share {out['nan_share_step']:.2f} there, "
          f"{out['nan_share_run']:.2f} over the run; mean |proxy - exact| {out['mean_abs_error_step'] or 0:.3f} m")
    err(f"wrote {args.out}")
    return save_json(args.json, out)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add record, ingest, replay and proxy-figure to the ``flipper`` parser."""
    r = sub.add_parser("record", help="run a controller on the reality proxy and record a rosbag2")
    r.add_argument("--world", required=True, help="world name or YAML file")
    add_controller_args(r)
    r.add_argument("--out", required=True, help="bag folder to create (must not exist)")
    r.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    r.add_argument("--seed", type=seed, default=0, help="noise seed of the run")
    r.add_argument("--control-dt", type=seconds, default=0.1, help="controller period in seconds")
    r.add_argument("--max-time", type=seconds, help="stop recording after this many simulated seconds")
    r.add_argument("--no-noise", action="store_true", help="ideal proxy: no perturbed dynamics, range noise or drift")
    add_reality_config_arg(r)
    r.add_argument("--clean-partials", type=seconds, nargs="?", const=float("inf"), metavar="SECONDS",
                   help="first remove the .partial folders that killed recordings left beside --out (only those whose "
                        "writer is gone); with SECONDS also those of unknown writer untouched that long")
    r.add_argument("--json", help="write the run summary here")
    r.set_defaults(func=cmd_record)

    i = sub.add_parser("ingest", help="turn rosbags into the real-trajectory dataset (DEMs rebuilt from the clouds)")
    i.add_argument("bags", nargs="+", help="rosbag2 folders (or .mcap/.db3 files)")
    i.add_argument("--out", required=True, help="output folder: real_trajectories.safetensors, ingest_report.json")
    i.add_argument("--max-gap", type=seconds, default=0.1, help="seconds within which a DEM finds its IMU, joint state "
                   "and command")
    i.add_argument("--overwrite", action="store_true", help="replace the dataset and report an earlier ingest wrote "
                   "to --out (by default an existing output is refused, as record and replay refuse an existing bag)")
    i.set_defaults(func=cmd_ingest)

    p = sub.add_parser("replay", help="run the DEM handler (and a policy) over a bag; write the outputs to a new bag")
    p.add_argument("bag", help="input rosbag2 folder (or .mcap/.db3 file)")
    p.add_argument("--out", required=True, help="output bag folder (must not exist)")
    p.add_argument("--policy", help="checkpoint: also publish its flipper commands")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], help="output storage (default: the input's)")
    p.add_argument("--json", help="write counts and the read report here")
    p.set_defaults(func=cmd_replay)

    f = sub.add_parser("proxy-figure", help="simulated vs reality-proxy DEM on stairs and NaN frequency (PNG)")
    f.add_argument("--world", default="staircase", help="world name or YAML file")
    f.add_argument("--out", required=True, help="PNG to write")
    add_controller_args(f)
    f.add_argument("--seed", type=seed, default=0)
    f.add_argument("--control-dt", type=seconds, default=0.1)
    add_reality_config_arg(f)
    f.add_argument("--json", help="write the figure's numbers here")
    f.set_defaults(func=cmd_proxy_figure)
