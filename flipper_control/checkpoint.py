"""Policy checkpoints: the NaN-aware policy as safetensors weights plus a JSON sidecar (``sim.checkpoint_io``);
loading never unpickles anything and checks the weights against the sidecar's config and hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flipper_control.policy import NanAwarePolicy, PolicyConfig
from sim.checkpoint_io import CheckpointError, checkpoint_paths, load_module, save_module

__all__ = ["CheckpointError", "save_policy", "load_policy", "checkpoint_paths", "ARCHITECTURES"]

ARCHITECTURES = {"NanAwarePolicy": (NanAwarePolicy, PolicyConfig)}  # name -> (module class, config class)


def save_policy(path: str | Path, policy: NanAwarePolicy, metadata: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``<path>.safetensors`` then ``<path>.json``; returns both paths (see ``sim.checkpoint_io.save_module``)."""
    return save_module(path, policy, ARCHITECTURES, metadata)


def load_policy(path: str | Path) -> tuple[NanAwarePolicy, dict[str, Any]]:
    """Load and validate a checkpoint written by ``save_policy``; returns (policy in eval mode, metadata).

    Every failure is a ``CheckpointError`` naming the offending file (and tensor, where it applies).
    """
    return load_module(path, ARCHITECTURES)
