"""``flipper worlds``: list the built-in world sets, show a world as YAML, export it as MJCF or SDF, or the robot as URDF.

``export --format sdf`` writes a Gazebo (gz-sim) world: the terrain and the robot (sim/sdf.py). A set name (test,
proxy, training, ...) or ``--set`` exports every world of the set, one ``NAME.sdf`` each, into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flipper_control.cli.common import count, seed
from flipper_control.progress import Step
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
    if args.action == "export":
        return _export(args)
    if not args.world:
        raise WorldError("<cli>", "world", f"'flipper worlds {args.action}' needs a world name or file")
    print(dump_world(resolve_world(args.world)), end="")
    return 0


def _emit(text: str, out: str | None) -> None:
    if out:
        from sim.io_utils import write_text_atomic

        write_text_atomic(out, text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(text, end="")


def _export(args) -> int:
    """``worlds export``: one world (or the robot alone) to --out or stdout; a whole set to --out-dir (SDF)."""
    from sim.world_sets import BUILTIN_SETS, GENERATED_SETS, load_set, resolve_world

    if args.format in ("urdf", "sdf-model"):  # the robot alone: no world needed
        if args.out_dir:
            raise WorldError("<cli>", "--out-dir", f"--format {args.format} writes one file: use --out")
        if args.format == "urdf":
            from sim.urdf import build_urdf

            _emit(build_urdf(), args.out)
        else:
            from sim.sdf import build_robot_sdf

            _emit(build_robot_sdf(), args.out)
        return 0
    if args.out and args.out_dir:
        raise WorldError("<cli>", "--out-dir", "give --out (one file) or --out-dir (one file per world), not both")
    set_name = args.set or (args.world if args.world in BUILTIN_SETS + GENERATED_SETS else None)
    if args.set and args.world:
        raise WorldError("<cli>", "world", f"give a world or --set {args.set}, not both")
    if not set_name and not args.world:
        raise WorldError("<cli>", "world", f"'flipper worlds export --format {args.format}' needs a world name or file, "
                                           "or a set (--set)")
    if set_name:
        if args.format != "sdf":
            raise WorldError("<cli>", "--set", "exporting a whole set is for --format sdf; export MJCF one world at a time")
        if not args.out_dir:
            raise WorldError("<cli>", "--out-dir", f"exporting the set {set_name!r} writes one file per world: give --out-dir")
        return _export_set(load_set(set_name, args.count, args.seed), Path(args.out_dir))
    if args.out_dir:
        if args.format != "sdf":
            raise WorldError("<cli>", "--out-dir", "--out-dir is for --format sdf; use --out")
        return _export_set([resolve_world(args.world)], Path(args.out_dir))
    world = resolve_world(args.world)
    if args.format == "sdf":
        from sim.sdf import build_world_sdf

        _emit(build_world_sdf(world), args.out)
        return 0
    from sim.mujoco_sim import MujocoSimulator, SimNoise

    sim = MujocoSimulator(noise=SimNoise(enabled=False))
    sim.reset(world)
    _emit(sim.xml, args.out)
    return 0


def _export_set(worlds: list, out_dir: Path) -> int:
    """Every world as ``out_dir/NAME.sdf``: all targets checked first, so a bad folder writes nothing."""
    from sim.io_utils import check_writable, write_text_atomic
    from sim.sdf import build_world_sdf, sdf_file_name

    paths = [out_dir / sdf_file_name(w) for w in worlds]
    seen: dict[Path, str] = {}
    for world, path in zip(worlds, paths, strict=True):
        if path in seen:
            raise WorldError(world.source, "name", f"worlds {seen[path]!r} and {world.name!r} would both be written to {path}")
        seen[path] = world.name
        check_writable(path, "--out-dir")
    with Step("exporting SDF", len(worlds), "world") as step:
        for world, path in zip(worlds, paths, strict=True):
            write_text_atomic(path, build_world_sdf(world))
            step.advance(info=world.name)
        step.finish(f"{len(worlds)} worlds in {out_dir}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``worlds`` to the ``flipper`` parser."""
    w = sub.add_parser("worlds", help="list, show or export worlds")
    w.add_argument("action", choices=["list", "show", "export"])
    w.add_argument("world", nargs="?", help="world name (stairs_up, proxy/staircase, training/3) or YAML file")
    w.add_argument("--set", choices=["test", "proxy", "training", "steep", "half_steep", "steep_kinds"],
                   help="only this set (list); every world of it (export --format sdf, with --out-dir)")
    w.add_argument("--count", type=count, default=10, help="number of generated worlds to list or export")
    w.add_argument("--seed", type=seed, default=0, help="training-world generator seed")
    w.add_argument("--format", choices=["mjcf", "sdf", "urdf", "sdf-model"], default="mjcf",
                   help="export format: mjcf (MuJoCo world + robot), sdf (Gazebo world + robot), urdf or sdf-model "
                        "(the robot alone)")
    w.add_argument("--out", help="write the export here instead of stdout")
    w.add_argument("--out-dir", help="export --format sdf: write each world as OUT_DIR/NAME.sdf (needed for a set)")
    w.set_defaults(func=cmd_worlds)
