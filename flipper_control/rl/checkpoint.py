"""RL checkpoints: a network as safetensors weights plus a JSON sidecar (``sim.checkpoint_io``), with the
algorithm, the environment and what the agent needs to act (frame stack, training step) under ``metadata.rl``.

Loading never unpickles anything. ``load_agent`` checks what ``sim.checkpoint_io`` checks (architecture, tensor
names, shapes, dtypes, finiteness, hash) and then what only the RL side knows: that the checkpoint is an RL one,
of the expected algorithm, and that the network's input and output sizes are those the environment needs.
Each refusal is a ``CheckpointError`` naming the sidecar file and the field.

Other algorithms of the toolbox pass their own ``architectures`` (name -> (module class, config class), the
``sim.checkpoint_io`` contract); the default is the Q-network of DQN and DDQN + PER.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from flipper_control.rl.networks import QNetwork, QNetworkConfig
from sim.checkpoint_io import Architectures, CheckpointError, checkpoint_paths, load_module, save_module

__all__ = ["CheckpointError", "Q_ARCHITECTURES", "check_shapes", "load_agent", "read_rl_metadata", "save_agent"]

Q_ARCHITECTURES: Architectures = {"QNetwork": (QNetwork, QNetworkConfig)}


def save_agent(path: str | Path, module: torch.nn.Module, *, algorithm: str, env_id: str,
               rl: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
               architectures: Architectures = Q_ARCHITECTURES) -> tuple[Path, Path]:
    """Write ``<path>.safetensors`` then ``<path>.json``: ``module`` with ``metadata`` (seed, config...) and, under
    ``metadata["rl"]``, the algorithm, the environment and ``rl`` (frame stack, step...)."""
    meta = dict(metadata or {})
    meta["rl"] = {"algorithm": algorithm, "env": env_id, **(rl or {})}
    return save_module(path, module, architectures, meta)


def read_rl_metadata(sidecar_path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata["rl"]`` of a loaded checkpoint, or a ``CheckpointError`` saying it is not an RL checkpoint."""
    rl = metadata.get("rl")
    if not isinstance(rl, dict) or not isinstance(rl.get("algorithm"), str) or not isinstance(rl.get("env"), str):
        raise CheckpointError(f"{sidecar_path}: metadata.rl (algorithm, env) is missing: not a checkpoint of "
                              "`flipper rl train` (a policy or GAN checkpoint?)")
    return rl


def load_agent(path: str | Path, *, algorithm: str | None = None, shapes: dict[str, int] | None = None,
               needed_by: str = "the environment",
               architectures: Architectures = Q_ARCHITECTURES) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load and check an RL checkpoint; returns (module in eval mode, metadata with ``metadata["rl"]``).

    ``algorithm``: refuse a checkpoint of another algorithm. ``shapes``: config fields the environment fixes
    (``{"obs_dim": 640, "n_actions": 9}``); refuse a network of other sizes, saying it is ``needed_by`` whom.
    """
    _, sidecar_path = checkpoint_paths(path)
    module, metadata = load_module(path, architectures)
    rl = read_rl_metadata(sidecar_path, metadata)
    if algorithm is not None and rl["algorithm"] != algorithm:
        raise CheckpointError(f"{sidecar_path}: metadata.rl.algorithm is {rl['algorithm']!r}, expected {algorithm!r}: "
                              "a checkpoint of another algorithm")
    check_shapes(module, sidecar_path, shapes or {}, needed_by)
    return module, metadata


def check_shapes(module: torch.nn.Module, sidecar_path: Path, shapes: dict[str, int],
                 needed_by: str = "the environment") -> None:
    """A ``CheckpointError`` unless each ``module.config.<field>`` equals ``shapes[field]``."""
    config = getattr(module, "config", None)
    for field, want in shapes.items():
        have = getattr(config, field, None)
        if have != want:
            raise CheckpointError(f"{sidecar_path}: config.{field} is {have!r} but {needed_by} needs {want!r}: a network "
                                  "of another shape")
