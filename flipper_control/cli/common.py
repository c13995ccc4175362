"""What several ``flipper`` command groups share: messages to stderr, controller and simulator choices, and the
option types and groups that more than one command takes."""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

from sim.io_utils import OutputError, check_writable, write_json_atomic

__all__ = ["add_controller_args", "add_executor_args", "add_reality_config_arg", "check_outputs", "controller",
           "controller_factory", "count", "err", "max_delay", "max_delay_kwargs", "reality_config", "save_json",
           "save_output", "seconds", "seed", "simulator"]


def err(msg: str) -> None:
    """A message for the user on stderr (results go to stdout)."""
    print(msg, file=sys.stderr, flush=True)


def controller(name: str, posture: str | None):
    """A reference controller by name (heuristic, fixed) and posture."""
    from flipper_control.controllers import make_controller

    return make_controller(name, posture)


def controller_factory(args):
    """A factory of fresh controllers from ``--controller``/``--posture``, validated once, early."""
    controller(args.controller, args.posture)
    return lambda: controller(args.controller, args.posture)


def reality_config(args):
    """The reality proxy's config of a command: ``--reality-config FILE``, the ideal proxy for ``--no-noise``, or
    None (today's defaults). Both options at once are refused: which one was meant is not clear."""
    from sim.reality_config import RealityProxyConfig, load_reality_config

    path, ideal = getattr(args, "reality_config", None), getattr(args, "no_noise", False)
    if path and ideal:
        raise ValueError("--reality-config and --no-noise both set the proxy's noise: give one (--no-noise is the ideal "
                         "proxy: no perturbed dynamics, range noise, dropouts or drift)")
    if path:
        return load_reality_config(path)
    return RealityProxyConfig.ideal() if ideal else None


def add_reality_config_arg(p: argparse.ArgumentParser, loop: bool = False) -> None:
    """``--reality-config`` of the commands that run the reality proxy (``loop``: it replaces ``transfer.reality``)."""
    p.add_argument("--reality-config", metavar="YAML", help="the reality proxy's perturbations, lidar, odometry and DEM "
                   "builder settings (RealityProxyConfig fields; default: today's; see README)"
                   + ("; replaces the config's transfer.reality" if loop else ""))


def simulator(args):
    """The exact simulator, or the reality proxy for ``--reality proxy``; ``--no-noise`` turns the seeded noise
    (or the proxy's perturbations) off."""
    if getattr(args, "reality", "sim") == "proxy":
        from sim.reality_proxy import RealityProxy

        return RealityProxy(config=reality_config(args))
    from sim.mujoco_sim import MujocoSimulator, SimNoise

    return MujocoSimulator(noise=SimNoise(enabled=not args.no_noise))


def max_delay(text: str) -> float | str:
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


def max_delay_kwargs(args) -> dict:
    """``{max_delay_s: ...}`` when ``--max-delay`` was given, else nothing (the planner's default applies)."""
    if args.max_delay is None:
        return {}
    return {"max_delay_s": None if args.max_delay == "none" else args.max_delay}


def add_executor_args(p: argparse.ArgumentParser) -> None:
    """``--executor`` and ``--workers`` of the commands that fan tasks out."""
    p.add_argument("--executor", choices=["serial", "process", "ray"],
                   help="where tasks run (default: the config's, else process)")
    p.add_argument("--workers", type=count, help="parallel workers (default: CPUs available)")


def add_controller_args(p: argparse.ArgumentParser) -> None:
    """``--controller`` and ``--posture`` of the commands that drive a reference controller."""
    p.add_argument("--controller", default="heuristic", help="fixed or heuristic")
    p.add_argument("--posture", help="fixed: the posture (flat, approach, v); heuristic: an earlier version of the rule (v1)")


def save_json(path: str | None, data) -> int:
    """Write a finished command's ``--json`` result (see ``save_output``); returns the command's exit status."""
    if not path:
        return 0
    return save_output(path, lambda p: write_json_atomic(p, data), "--json")[0]


def save_output(path: str | Path, write, what: str) -> tuple[int, Path]:
    """``write(path)`` for a finished result; returns (exit status, where it went). The target was checked before
    the run (``check_outputs``), but a disk can fill or a folder vanish during it: then the result goes beside the
    target, else into the current folder, else into the temp folder (as ``NAME-unsaved-TIME``), the message says
    where, and the status is 1, so a finished run is never lost and a script still sees that it went wrong."""
    target = Path(path)
    try:
        write(target)
        return 0, target
    except OSError as exc:  # OutputError included
        problem = exc.strerror or str(exc)
    name = f"{target.stem}-unsaved-{time.strftime('%Y%m%d-%H%M%S')}{target.suffix}"
    for folder in (target.parent, Path.cwd(), Path(tempfile.gettempdir())):
        try:
            write(folder / name)
        except OSError:
            continue
        err(f"flipper: could not write {what} {path} ({problem}); the results are in {folder / name}")
        return 1, folder / name
    raise OSError(f"could not write {what} {path} ({problem}) nor a copy in {target.parent}, {Path.cwd()} or the temp folder")


def _integer_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, with a message that names the option (argparse adds it)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text}")
        return value

    parse.__doc__ = f"{what}: an integer >= {minimum}."
    return parse


seed = _integer_at_least(0, "A seed option (numpy and torch take no negative seeds)")
count = _integer_at_least(1, "A count option (runs, worlds, workers, epochs, ...)")


def seconds(text: str) -> float:
    """A duration option: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text}")
    return value


def non_negative(text: str) -> float:
    """A weight or margin option: a finite number >= 0 (argparse names the option in its message)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def probability(text: str) -> float:
    """A probability option: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


# Files each command writes under --out (a file, a checkpoint prefix, or a folder), checked before the work starts.
def _checkpoint_files(out: str, extra: tuple[str, ...] = ()) -> list[Path]:
    """The files of checkpoint ``out`` (``PATH``, ``PATH.safetensors`` and ``PATH.json`` name the same one), and
    those beside it with the ``extra`` endings."""
    stem = Path(out).with_suffix("") if Path(out).suffix in (".safetensors", ".json") else Path(out)
    return [Path(f"{stem}.safetensors"), Path(f"{stem}.json")] + [Path(f"{stem}{end}") for end in extra]


_OUT_FILES = {
    "plan": lambda out: [out],
    "proxy-figure": lambda out: [out],
    "worlds": lambda out: [out],
    "train-policy": lambda out: _checkpoint_files(out),
    "train-gan": lambda out: _checkpoint_files(out),
    "finetune": lambda out: _checkpoint_files(out, (".es.json", ".es.safetensors")),
    "loop": lambda out: [Path(out) / "config.json"],
    "demo": lambda out: [Path(out) / "config.json"],
    "ingest": lambda out: [Path(out) / "ingest_report.json"],
    "record": lambda out: [Path(out) / "metadata.yaml"],
    "replay": lambda out: [Path(out) / "metadata.yaml"],
    "compare": lambda out: [out],
    "retrain": lambda out: [Path(out) / "retrain.json", Path(out) / "scores.json"],
}


def check_outputs(args) -> None:
    """Raise ``OutputError`` (exit 2) for a ``--json`` or ``--out`` target that cannot be written: a read-only
    file, a folder in its place, a folder that takes no files. Checked before any work, so that a long run never
    ends in an unwritable target."""
    for option in ("json", "states"):
        if getattr(args, option, None):
            check_writable(getattr(args, option), f"--{option}")
    out = getattr(args, "out", None)
    if out and args.command in _OUT_FILES:
        for path in _OUT_FILES[args.command](out):
            check_writable(path, "--out")
            for option in ("json", "states"):  # e.g. --out policy --json policy.json: the report would replace the sidecar
                other = getattr(args, option, None)
                if other and Path(other).resolve() == Path(path).resolve():
                    raise OutputError(f"--{option} {other} is a file that --out {out} writes; choose another path")
