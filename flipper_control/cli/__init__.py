"""The ``flipper`` command: the parser and ``main()``; each command group lives in its own module.

- ``worlds``: worlds (list, show, export);
- ``evaluate``: sim, eval (run and score controllers and policies);
- ``bench``: bench sim|plan|policy|dem|proxy|gan|ros|rl;
- ``learning``: plan, train-policy, loop, demo;
- ``perception``: record, ingest, replay, proxy-figure (rosbags and the reality proxy);
- ``gan``: train-gan (the sim<->real CycleGAN);
- ``rl``: rl train|eval (the RL toolbox of seeds 001-004);
- ``compare``: compare (transfer modes of loop runs side by side over seeds).

Every command that produces figures can write them as JSON (``--json PATH``), written atomically and
with the seed and the simulator configuration recorded beside the results. Bad input (an unknown
world, an invalid world file) ends with a one-line message naming what is wrong, exit status 2. Ctrl-C ends
with "flipper: interrupted", status 130, and SIGTERM with "flipper: terminated", status 143 (128 + the signal
number): both unwind the command, so worker pools and a Ray instance the command started are stopped first.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import yaml

from flipper_control.cli import bench, compare, evaluate, finetune, gan, learning, perception, rl, worlds
from flipper_control.cli.common import check_outputs
from sim.world import WorldError

__all__ = ["Terminated", "build_parser", "main"]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived. Raised in the main thread, like Ctrl-C's KeyboardInterrupt, so that every ``finally`` and
    ``with`` block runs (executors stop their workers) and no ``except Exception`` swallows it."""


class _Parser(argparse.ArgumentParser):
    """argparse with the one error format of every ``flipper`` message (``flipper: error: ...``), exit status 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"flipper: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``flipper`` parser with every command group's subcommands."""
    p = _Parser(prog="flipper", description="Learned flipper control for tracked robots (seed 000 stack).")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (worlds, evaluate, bench, learning, perception, gan, finetune, rl, compare):
        group.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one ``flipper`` command; returns its exit status (2 for bad input, 1 for a failed task, 130 on Ctrl-C,
    143 on SIGTERM)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage error (status 2) or the help (status 0)
        return exc.code if isinstance(exc.code, int) else 2
    # Python's default for SIGTERM ends the process at once: no finally blocks, so pool workers would be left running.
    # Only the main thread may set handlers; main() called elsewhere (and in-process by tests) keeps the old one after.
    sigterms: list[int] = []

    def on_sigterm(signum, frame) -> None:
        sigterms.append(signum)  # remembered: Ray's wait turns any exception from a signal handler into KeyboardInterrupt
        raise Terminated()

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main else None
    try:
        check_outputs(args)  # an unwritable --json or --out stops here, before the work
        return args.func(args)
    except (WorldError, ValueError, yaml.YAMLError, FileNotFoundError) as exc:
        print(f"flipper: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine, not the input: a full disk, a vanished folder, a lost connection
        print(f"flipper: error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), file=sys.stderr)
        return 1
    except RuntimeError as exc:  # a task that failed in a worker (executors.TaskError) names the task and the error
        if type(exc).__name__ != "TaskError":
            raise
        print(f"flipper: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        if isinstance(exc, Terminated) or sigterms:
            print("flipper: terminated", file=sys.stderr)
            return 128 + signal.SIGTERM
        print("flipper: interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
