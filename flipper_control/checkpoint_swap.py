"""Loading and validating the checkpoints ``policy_node`` runs, before one may replace what runs (no ROS import).

A candidate is loaded, its shapes are checked (6 proprioceptive scalars in, 4 angles out, the running policy's and
G's DEM shape) and it makes one decision on a test observation, behind the sim -> real transform G when there is
one (``perception.sim_to_real.SimToReal``); the decision must be 4 finite angles. ``sim.checkpoint_io.checkpoint_signature``
(mtime and size of the weights and the sidecar) tells when the trainer rewrote the files. Any failure is a reason, never
an exception: the caller keeps the old policy. The swap itself -- one reference assignment under a lock, the
record of its ``SwapResult`` -- is ``flipper_control.policy_runtime.PolicyRuntime.swap_checkpoint``. G itself is
loaded by ``load_transform``, at start and when its parameters change; a G that fails to load is refused too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SwapResult", "load_candidate", "load_transform", "validate_policy"]


@dataclass(frozen=True)
class SwapResult:
    """The outcome of ``swap_checkpoint``: accepted, or refused with the reason (the old policy kept)."""

    accepted: bool
    path: str
    reason: str = ""


def validate_policy(policy, transform, safe_posture: Sequence[float], running=None) -> str:
    """Why ``policy`` (behind ``transform``, if any) cannot replace ``running`` ('' when it can): shapes, then one
    decision on a test observation whose flipper angles are ``safe_posture``."""
    pc = policy.config
    if (pc.n_proprio, pc.n_out) != (6, 4):
        return f"the policy takes {pc.n_proprio} scalars and gives {pc.n_out} outputs; this node needs 6 and 4"
    if running is not None and tuple(pc.dem_shape) != tuple(running.config.dem_shape):
        return f"its DEM is {tuple(pc.dem_shape)} cells, the running policy's {tuple(running.config.dem_shape)}"
    if transform is not None and tuple(pc.dem_shape) != tuple(transform.config.dem_shape):
        return f"its DEM is {tuple(pc.dem_shape)} cells, G's {tuple(transform.config.dem_shape)}"
    rows, cols = pc.dem_shape
    dem = np.zeros((rows, cols), dtype=np.float32)
    dem[rows // 2:, :] = 0.2  # a step ahead, and a band nobody saw
    dem[: max(1, rows // 4), :] = np.nan
    proprio = np.array([0.1, -0.05, *safe_posture], dtype=np.float32)
    try:
        x = transform(dem, proprio) if transform is not None else dem
        out = np.asarray(policy.act_numpy(x, proprio), dtype=float)
    except Exception as exc:  # noqa: BLE001 - a checkpoint that cannot decide is refused, whatever it raises
        return f"a test decision failed ({type(exc).__name__}: {exc})"
    if out.shape != (4,) or not np.all(np.isfinite(out)):
        return f"a test decision gave {out.tolist()}, not 4 finite angles"
    return ""


def load_candidate(path: str, validate: Callable[[Any], str]) -> tuple[Any, tuple | None, str]:
    """The slow part of a swap (tens of ms; run outside any lock): (the policy of checkpoint ``path`` or None, the
    signature of its files, why it is refused or ''). ``validate`` gives the verdict on a loaded policy; a missing
    or damaged file is a reason too."""
    from flipper_control.checkpoint import load_policy
    from sim.checkpoint_io import checkpoint_signature

    sig = checkpoint_signature(path)
    try:
        if sig is None:
            raise FileNotFoundError(f"{path}: the weights (.safetensors) or the sidecar (.json) do not exist")
        candidate, _ = load_policy(path)
        return candidate, sig, validate(candidate)
    except Exception as exc:  # noqa: BLE001 - CheckpointError, OSError, anything a damaged file raises
        return None, sig, f"{type(exc).__name__}: {exc}"


def load_transform(gan_checkpoint: str, gan_seed: int):
    """The sim -> real transform G of ``gan_checkpoint``; raises ValueError naming it when it fails to load."""
    from perception.sim_to_real import SimToReal

    try:
        return SimToReal.from_checkpoint(gan_checkpoint, gan_seed)
    except Exception as exc:  # noqa: BLE001 - any load failure is a refusal, with its reason
        raise ValueError(f"gan_checkpoint {gan_checkpoint!r}: {type(exc).__name__}: {exc}") from None
