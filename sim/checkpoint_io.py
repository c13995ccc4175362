"""Checkpoints of torch modules as safetensors weights plus a JSON sidecar; loading never unpickles anything.

A checkpoint ``P`` is two files: ``P.safetensors`` (the tensors) and ``P.json`` (architecture, config,
versions, the weights' sha256 and the caller's metadata such as seed, data hash and training config).
Both are written atomically, the weights first and the sidecar last, so a sidecar on disk means a
complete checkpoint, and the sha256 catches a weights file replaced by a later, interrupted save. On load
the config is validated, the module is built from it and every tensor must match it in name, shape and dtype
and be finite. The policy (``flipper_control.checkpoint``) and the CycleGAN (``perception.cyclegan``) use it;
it lives in ``sim``, the lowest layer, so that both can.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch

from sim.io_utils import write_bytes_atomic, write_text_atomic

__all__ = ["CheckpointError", "FORMAT_VERSION", "checkpoint_paths", "checkpoint_signature", "load_module", "save_module"]

FORMAT_VERSION = 1
_SUFFIXES = (".safetensors", ".json")
# name -> (module class, config class); a config class has from_dict, a module has .config with to_dict
Architectures = dict[str, tuple[type, type]]


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, corrupt or does not match its architecture."""


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, sidecar) of a checkpoint; ``path`` may name either file or the common stem."""
    path = Path(path)
    if path.suffix in _SUFFIXES:
        path = path.with_suffix("")
    return Path(f"{path}.safetensors"), Path(f"{path}.json")


def checkpoint_signature(path: str | Path) -> tuple | None:
    """(mtime_ns, size) of the weights and the sidecar of checkpoint ``path``; None while either is missing. A
    watcher compares signatures to tell when a writer (the trainer) replaced the files."""
    try:
        return tuple((s.st_mtime_ns, s.st_size) for s in (p.stat() for p in checkpoint_paths(path)))
    except OSError:
        return None


def _architecture_name(module: torch.nn.Module, architectures: Architectures) -> str:
    for name, (cls, _) in architectures.items():
        if type(module) is cls:
            return name
    raise CheckpointError(f"cannot save a {type(module).__name__}; known architectures: {', '.join(architectures)}")


def save_module(path: str | Path, module: torch.nn.Module, architectures: Architectures,
                metadata: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``<path>.safetensors`` then ``<path>.json``; returns both paths.

    ``module`` must be an instance of one of ``architectures`` and carry its ``config``. ``metadata`` must be
    JSON-serialisable without NaN/inf (seed, data hash, training config...); it is checked before anything is
    written.
    """
    weights_path, sidecar_path = checkpoint_paths(path)
    if metadata is not None and not isinstance(metadata, dict):
        raise CheckpointError(f"{sidecar_path}: metadata must be a dict, got {type(metadata).__name__}")
    name = _architecture_name(module, architectures)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    weights = safetensors.torch.save(tensors, metadata={"architecture": name, "format_version": str(FORMAT_VERSION)})
    sidecar = {
        "format_version": FORMAT_VERSION,
        "architecture": name,
        "config": module.config.to_dict(),
        "weights_file": weights_path.name,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "versions": {"torch": torch.__version__, "safetensors": safetensors.__version__, "numpy": np.__version__},
        "metadata": metadata if metadata is not None else {},
    }
    try:
        text = json.dumps(sidecar, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{sidecar_path}: metadata is not JSON-serialisable ({exc}); use plain numbers, strings, lists, dicts"
        ) from None
    write_bytes_atomic(weights_path, weights)
    write_text_atomic(sidecar_path, text)
    return weights_path, sidecar_path


def _read_sidecar(sidecar_path: Path) -> dict:
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{sidecar_path}: the sidecar is not valid JSON ({exc})") from None
    if not isinstance(sidecar, dict):
        raise CheckpointError(f"{sidecar_path}: the sidecar must be a JSON object, got {type(sidecar).__name__}")
    missing = [k for k in ("format_version", "architecture", "config", "weights_sha256") if k not in sidecar]
    if missing:
        raise CheckpointError(f"{sidecar_path}: the sidecar lacks {', '.join(missing)}; "
                              "not a checkpoint sidecar (another JSON file?)")
    if sidecar["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{sidecar_path}: format_version {sidecar['format_version']!r} is not supported (expected {FORMAT_VERSION})"
        )
    return sidecar


def _check_tensors(weights_path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    problems = [f"missing tensor {k} {tuple(v.shape)}" for k, v in expected.items() if k not in tensors]
    problems += [f"unexpected tensor {k} {tuple(v.shape)}" for k, v in tensors.items() if k not in expected]
    for k, want in expected.items():
        v = tensors.get(k)
        if v is not None and (v.shape != want.shape or v.dtype != want.dtype):
            problems.append(f"tensor {k}: file has {tuple(v.shape)} {v.dtype}, config needs {tuple(want.shape)} {want.dtype}")
    if problems:
        raise CheckpointError(f"{weights_path}: weights do not match the sidecar's config: " + "; ".join(problems))
    bad = [k for k, v in tensors.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{weights_path}: non-finite values in tensor(s) {', '.join(bad)}")


def load_module(path: str | Path, architectures: Architectures) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load and validate a checkpoint written by ``save_module``; returns (module in eval mode, metadata).

    Every failure is a ``CheckpointError`` naming the offending file (and tensor, where it applies).
    """
    weights_path, sidecar_path = checkpoint_paths(path)
    missing = [str(p) for p in (weights_path, sidecar_path) if not p.is_file()]
    if missing:
        raise CheckpointError(f"incomplete checkpoint {path}: missing {' and '.join(missing)}")
    sidecar = _read_sidecar(sidecar_path)
    name = sidecar["architecture"]
    if name not in architectures:
        raise CheckpointError(f"{sidecar_path}: unknown architecture {name!r}; known here: {', '.join(architectures)} "
                              "(a checkpoint of another kind?)")
    module_cls, config_cls = architectures[name]
    try:
        config = config_cls.from_dict(sidecar["config"])
    except ValueError as exc:
        raise CheckpointError(f"{sidecar_path}: invalid config: {exc}") from None
    data = weights_path.read_bytes()
    try:
        tensors = safetensors.torch.load(data)  # safe: safetensors parser, no pickle
    except Exception as exc:  # the parser raises several types for truncated or garbled files
        raise CheckpointError(f"{weights_path}: not a readable safetensors file, truncated or corrupt ({exc})") from None
    module = module_cls(config)
    _check_tensors(weights_path, tensors, module.state_dict())
    digest = hashlib.sha256(data).hexdigest()
    if digest != sidecar["weights_sha256"]:
        raise CheckpointError(
            f"{weights_path}: sha256 {digest[:12]}... differs from the one recorded in {sidecar_path} "
            f"({str(sidecar['weights_sha256'])[:12]}...): the weights belong to another save"
        )
    module.load_state_dict(tensors, strict=True)
    metadata = sidecar.get("metadata", {})
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{sidecar_path}: metadata must be a JSON object, got {type(metadata).__name__}")
    return module.eval(), metadata  # safe: nn.Module.eval(), not Python eval
