"""Guiding trajectories and the trajectory dataset (seed 000, Algorithm 1: tau_p).

A ``Trajectory`` is what one planner run returns: the states x (DEM, pitch, roll, flipper angles) seen
every control period along the found path, the action a (four flipper targets) applied from each state,
and metadata (world, seed, CPU seconds, expansions, success and, for a failure, why).

A ``TrajectoryDataset`` is many trajectories stored as one safetensors file: the per-sample arrays are
concatenated and indexed by ``traj_id``; per-trajectory metadata is JSON in the safetensors header.
safetensors (not npz/pickle) because loading it cannot run code, and a truncated file is detected.
Only successful trajectories carry samples into training; failed ones keep their metadata for the
planning statistics (success rate, CPU time).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from sim.io_utils import write_bytes_atomic

__all__ = ["Trajectory", "TrajectoryDataset", "DatasetError", "FORMAT"]

FORMAT = "flipper_learning.trajectories/1"
_ARRAYS = ("dem", "proprio", "action", "traj_id")
# metadata that measures the machine, not the data: left out of ``sha256`` so that two bit-identical runs (same
# config, seed and code) report the same dataset hash whatever their CPU times
_MEASURED_META = ("cpu_s",)


class DatasetError(ValueError):
    """A dataset file is missing, unreadable, truncated or inconsistent."""


@dataclass
class Trajectory:
    """One planned (guiding) trajectory. Arrays have one row per control period along the path."""

    dem: np.ndarray  # (T, rows, cols) float32, heights relative to base_link (may hold NaN for real DEMs)
    proprio: np.ndarray  # (T, 6) float32: pitch, roll, four flipper angles
    action: np.ndarray  # (T, 4) float32: the flipper targets applied from that state
    success: bool
    reason: str = ""  # why planning failed ("" on success)
    meta: dict[str, Any] = field(default_factory=dict)  # world, seed, cpu_s, expansions, action_set, ...

    def __post_init__(self) -> None:
        self.dem = np.asarray(self.dem, dtype=np.float32)
        self.proprio = np.asarray(self.proprio, dtype=np.float32).reshape(-1, 6)
        self.action = np.asarray(self.action, dtype=np.float32).reshape(-1, 4)
        n = len(self.action)
        if self.dem.ndim != 3 or len(self.dem) != n or len(self.proprio) != n:
            raise DatasetError(f"trajectory arrays disagree: dem {self.dem.shape}, proprio {self.proprio.shape}, "
                               f"action {self.action.shape}")

    def __len__(self) -> int:
        return len(self.action)

    @classmethod
    def failed(cls, reason: str, dem_shape: tuple[int, int], meta: dict[str, Any] | None = None) -> Trajectory:
        """A failed planning result: no samples, only the reason and the metadata."""
        return cls(np.zeros((0, *dem_shape), np.float32), np.zeros((0, 6), np.float32), np.zeros((0, 4), np.float32),
                   success=False, reason=reason, meta=dict(meta or {}))

    def summary(self) -> dict[str, Any]:
        return {"success": self.success, "reason": self.reason, "samples": len(self), **self.meta}


class TrajectoryDataset:
    """An ordered collection of trajectories; saved and loaded as one safetensors file."""

    def __init__(self, trajectories: list[Trajectory] | None = None):
        self.trajectories: list[Trajectory] = list(trajectories or [])

    def __len__(self) -> int:
        return len(self.trajectories)

    def extend(self, other: TrajectoryDataset | list[Trajectory]) -> TrajectoryDataset:
        """Aggregate (seed 000 aggregates the data of all iterations); returns self."""
        self.trajectories.extend(other.trajectories if isinstance(other, TrajectoryDataset) else other)
        return self

    @property
    def successful(self) -> list[Trajectory]:
        return [t for t in self.trajectories if t.success and len(t)]

    @property
    def n_samples(self) -> int:
        return sum(len(t) for t in self.successful)

    def arrays(self) -> dict[str, np.ndarray]:
        """Training arrays over successful trajectories: dem, proprio, action and traj_id (index into
        ``trajectories``), concatenated in trajectory order."""
        ok = [(i, t) for i, t in enumerate(self.trajectories) if t.success and len(t)]
        if not ok:
            shape = self.trajectories[0].dem.shape[1:] if self.trajectories else (0, 0)
            return {"dem": np.zeros((0, *shape), np.float32), "proprio": np.zeros((0, 6), np.float32),
                    "action": np.zeros((0, 4), np.float32), "traj_id": np.zeros(0, np.int32)}
        return {
            "dem": np.concatenate([t.dem for _, t in ok]),
            "proprio": np.concatenate([t.proprio for _, t in ok]),
            "action": np.concatenate([t.action for _, t in ok]),
            "traj_id": np.concatenate([np.full(len(t), i, np.int32) for i, t in ok]),
        }

    # ------------------------------------------------------------------ files
    def _payload(self) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        """The arrays and the per-trajectory header that ``to_bytes`` stores (failed trajectories add no rows)."""
        ts = self.trajectories
        shape = next((t.dem.shape[1:] for t in ts), (0, 0))
        arrays = {
            "dem": np.concatenate([t.dem for t in ts]) if ts else np.zeros((0, *shape), np.float32),
            "proprio": np.concatenate([t.proprio for t in ts]) if ts else np.zeros((0, 6), np.float32),
            "action": np.concatenate([t.action for t in ts]) if ts else np.zeros((0, 4), np.float32),
            "traj_id": np.concatenate([np.full(len(t), i, np.int32) for i, t in enumerate(ts)]) if ts else np.zeros(0, np.int32),
        }
        header = [{"success": t.success, "reason": t.reason, "samples": len(t), "meta": t.meta} for t in self.trajectories]
        return {k: np.ascontiguousarray(v) for k, v in arrays.items()}, header

    def to_bytes(self) -> bytes:
        """All trajectories (failed ones too, without samples) as safetensors bytes.

        Not byte-stable: safetensors writes its metadata map in a per-call random order, so two calls may
        return different (equally valid) bytes. Use ``sha256`` to identify the content.
        """
        arrays, header = self._payload()
        return safetensors.numpy.save(arrays, metadata={"format": FORMAT, "trajectories": json.dumps(header)})

    def save(self, path: str | Path) -> Path:
        """Write atomically; returns the path."""
        return write_bytes_atomic(path, self.to_bytes())

    def sha256(self) -> str:
        """Content hash, recorded in checkpoints as the data they were trained on.

        Hashes a canonical serialisation (format, the trajectory header as sorted JSON, then each array's
        name, dtype, shape and bytes) rather than ``to_bytes()``, whose metadata order varies from call to
        call; equal datasets give equal hashes, also across save/load and processes. Timings in the metadata
        (``cpu_s``) are not hashed: they differ between two runs that planned the very same trajectories.
        """
        arrays, header = self._payload()
        header = [h | {"meta": {k: v for k, v in h["meta"].items() if k not in _MEASURED_META}} for h in header]
        h = hashlib.sha256()
        h.update(FORMAT.encode())
        h.update(json.dumps(header, sort_keys=True).encode())
        for name in _ARRAYS:
            a = arrays[name]
            h.update(f"\n{name} {a.dtype.str} {a.shape}\n".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    @classmethod
    def load(cls, path: str | Path) -> TrajectoryDataset:
        """Read a dataset written by ``save``; raises ``DatasetError`` naming the file and the problem."""
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"{path}: no such dataset file")
        try:
            with safetensors.safe_open(str(path), framework="numpy") as fh:
                header = fh.metadata() or {}
                arrays = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no iterator)
        except Exception as exc:  # safetensors raises its own error types for truncated/garbled files
            raise DatasetError(f"{path}: not a readable safetensors dataset ({exc})") from exc
        if "format" not in header:  # a checkpoint's weights (policy or CycleGAN) are safetensors files too
            raise DatasetError(f"{path}: not a trajectory dataset (no format in its metadata, expected {FORMAT!r}; "
                               "a checkpoint's weights?)")
        if header["format"] != FORMAT:
            raise DatasetError(f"{path}: format {header['format']!r}, expected {FORMAT!r}")
        missing = [k for k in _ARRAYS if k not in arrays]
        if missing:
            raise DatasetError(f"{path}: missing arrays {missing}")
        try:
            entries = json.loads(header.get("trajectories", "[]"))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: trajectory metadata is not valid JSON ({exc})") from exc
        # a hand-edited or foreign header must fail as a DatasetError, not as a KeyError/TypeError below
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("samples"), int) and e["samples"] >= 0 and "success" in e for e in entries
        ):
            raise DatasetError(f"{path}: trajectory metadata must be a list of objects with 'success' and 'samples' >= 0")
        dem, proprio, action, traj_id = (arrays[k] for k in _ARRAYS)
        n = len(action)
        if len(dem) != n or len(proprio) != n or len(traj_id) != n or dem.ndim != 3:
            raise DatasetError(f"{path}: array lengths disagree (dem {dem.shape}, proprio {proprio.shape}, "
                               f"action {action.shape}, traj_id {traj_id.shape})")
        if sum(e["samples"] for e in entries) != n:
            raise DatasetError(f"{path}: trajectory metadata counts do not add up to the {n} samples stored")
        if not (np.all(np.isfinite(proprio)) and np.all(np.isfinite(action))):
            raise DatasetError(f"{path}: non-finite values in proprio or action")
        out, start = [], 0
        for i, e in enumerate(entries):
            k = int(e["samples"])
            if k and not np.all(traj_id[start:start + k] == i):
                raise DatasetError(f"{path}: traj_id does not match the metadata at trajectory {i}")
            out.append(Trajectory(dem[start:start + k], proprio[start:start + k], action[start:start + k],
                                  success=bool(e["success"]), reason=str(e.get("reason", "")), meta=dict(e.get("meta", {}))))
            start += k
        return cls(out)
