"""``flipper worlds``: list the built-in world sets, show a world as YAML, export it as MJCF or the robot as URDF."""

from __future__ import annotations

import argparse
import sys

from flipper_control.cli.common import count, seed
from sim.world import WorldError, dump_world


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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``worlds`` to the ``flipper`` parser."""
    w = sub.add_parser("worlds", help="list, show or export worlds")
    w.add_argument("action", choices=["list", "show", "export"])
    w.add_argument("world", nargs="?", help="world name (stairs_up, proxy/staircase, training/3) or YAML file")
    w.add_argument("--set", choices=["test", "proxy", "training", "steep", "half_steep"], help="only this set (list)")
    w.add_argument("--count", type=count, default=10, help="number of training (or steep) worlds to list")
    w.add_argument("--seed", type=seed, default=0, help="training-world generator seed")
    w.add_argument("--format", choices=["mjcf", "urdf"], default="mjcf", help="export format")
    w.add_argument("--out", help="write the export here instead of stdout")
    w.set_defaults(func=cmd_worlds)
