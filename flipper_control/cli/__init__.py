"""The ``flipper`` command: the parser and ``main()``; each command group lives in its own module.

- ``worlds``: worlds (list, show, export);
- ``evaluate``: sim, eval (run and score controllers and policies);
- ``bench``: bench sim|plan|policy|dem|proxy;
- ``learning``: plan, train-policy, loop, demo;
- ``perception``: record, ingest, replay, proxy-figure (rosbags and the reality proxy).

Every command that produces figures can write them as JSON (``--json PATH``), written atomically and
with the seed and the simulator configuration recorded beside the results. Bad input (an unknown
world, an invalid world file) ends with a one-line message naming what is wrong, exit status 2.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from flipper_control.cli import bench, evaluate, learning, perception, worlds
from sim.world import WorldError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``flipper`` parser with every command group's subcommands."""
    p = argparse.ArgumentParser(prog="flipper", description="Learned flipper control for tracked robots (seed 000 stack).")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (worlds, evaluate, bench, learning, perception):
        group.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one ``flipper`` command; returns its exit status (2 for bad input, 1 for a failed task, 130 on Ctrl-C)."""
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
