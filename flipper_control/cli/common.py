"""What several ``flipper`` command groups share: messages to stderr, controller and simulator choices, and the
option types and groups that more than one command takes."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_controller_args", "add_executor_args", "controller", "controller_factory", "err", "max_delay",
           "max_delay_kwargs", "simulator"]


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


def simulator(args):
    """The exact simulator, or the reality proxy for ``--reality proxy``; ``--no-noise`` turns the seeded noise
    (or the proxy's perturbations) off."""
    if getattr(args, "reality", "sim") == "proxy":
        from sim.reality_proxy import RealityProxy, RealityProxyConfig

        return RealityProxy(config=RealityProxyConfig.ideal() if args.no_noise else None)
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
    p.add_argument("--workers", type=int, help="parallel workers (default: CPUs available)")


def add_controller_args(p: argparse.ArgumentParser) -> None:
    """``--controller`` and ``--posture`` of the commands that drive a reference controller."""
    p.add_argument("--controller", default="heuristic", help="fixed or heuristic")
    p.add_argument("--posture", help="fixed posture: flat, approach, v")
