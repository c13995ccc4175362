"""Which samples imitation training accepts: arrays of the policy's shapes, finite state and action values (only
the DEM may hold NaN), and values inside the robot's ranges. A dataset that fails says what is wrong and where
(sample, trajectory, world), before any training: a unit mix-up (degrees for radians) or garbage would otherwise
train a policy that looks fine by its test error and fails on the robot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from flipper_control.policy import PolicyConfig
from planning.dataset import DatasetError, TrajectoryDataset

__all__ = ["ANGLE_TOLERANCE", "MAX_ATTITUDE", "MAX_DEM_HEIGHT", "Data", "check_training_data", "checked_arrays"]

Data = TrajectoryDataset | Mapping[str, np.ndarray]


def checked_arrays(data: Data, pc: PolicyConfig) -> dict[str, np.ndarray]:
    """Training arrays from a dataset or a mapping, checked; raises ``DatasetError`` saying what is wrong."""
    if isinstance(data, TrajectoryDataset):
        arrays = data.arrays()
        if len(arrays["action"]) == 0:
            failed = sum(1 for t in data.trajectories if not t.success)
            raise DatasetError(
                f"no training samples: the dataset holds {len(data)} trajectories, {failed} failed and none successful "
                "with samples; plan more worlds (or a larger budget) before training"
            )
    elif isinstance(data, Mapping):
        missing = [k for k in ("dem", "proprio", "action") if k not in data]
        if missing:
            raise DatasetError(f"training arrays lack {', '.join(missing)} (need dem, proprio, action and optionally traj_id)")
        arrays = {k: np.asarray(data[k]) for k in ("dem", "proprio", "action")}
        n = len(arrays["action"])
        # without traj_id the samples count as one trajectory (time-ordered split)
        arrays["traj_id"] = np.asarray(data["traj_id"]) if "traj_id" in data else np.zeros(n, np.int64)
    else:
        raise TypeError(f"expected a TrajectoryDataset or a mapping of arrays, got {type(data).__name__}")
    dem, proprio, action, traj_id = (arrays[k] for k in ("dem", "proprio", "action", "traj_id"))
    n = len(action)
    if n == 0:
        raise DatasetError("no training samples: the arrays are empty; collect successful guiding trajectories first")
    expected = ((n, *pc.dem_shape), (n, pc.n_proprio), (n, pc.n_out), (n,))
    if (dem.shape, proprio.shape, action.shape, traj_id.shape) != expected:
        raise DatasetError(
            f"training arrays do not fit the policy: dem {dem.shape}, proprio {proprio.shape}, action {action.shape}, "
            f"traj_id {traj_id.shape}; expected dem (N, {pc.dem_shape[0]}, {pc.dem_shape[1]}), proprio (N, {pc.n_proprio}), "
            f"action (N, {pc.n_out}), traj_id (N,)"
        )
    bad = ~(np.isfinite(proprio).all(axis=1) & np.isfinite(action).all(axis=1))
    if bad.any():
        raise DatasetError(
            f"{int(bad.sum())} of {n} samples have non-finite proprio or action values (first at index {int(np.argmax(bad))}); "
            "only the DEM may hold NaN -- drop or fix those samples"
        )
    _check_ranges(dem, proprio, action, traj_id, pc, data if isinstance(data, TrajectoryDataset) else None)
    # copies: training never aliases the caller's (possibly read-only, e.g. memory-mapped) arrays
    return {
        "dem": np.array(dem, dtype=np.float32, order="C"),
        "proprio": np.array(proprio, dtype=np.float32, order="C"),
        "action": np.array(action, dtype=np.float32, order="C"),
        "traj_id": np.asarray(traj_id),
    }


# How far a sample may leave the robot's ranges before the dataset is refused: a little (sensor noise, a
# controller that overshoots a limit by a few degrees) is normal; a unit mix-up or garbage is not.
ANGLE_TOLERANCE = 0.1  # rad beyond the flipper limits, for recorded angles and commanded targets
MAX_ATTITUDE = math.pi / 2  # |pitch|, |roll| in rad: past this the robot is on its back, not driving
MAX_DEM_HEIGHT = 10.0  # m above or below base_link (a DEM spans 2 m around the robot; a ceiling may be high)


def _check_ranges(dem: np.ndarray, proprio: np.ndarray, action: np.ndarray, traj_id: np.ndarray, pc: PolicyConfig,
                  data: TrajectoryDataset | None) -> None:
    """Raise ``DatasetError`` naming the first sample (and its trajectory) whose values leave the robot's ranges."""
    lo, hi = pc.flipper_lower - ANGLE_TOLERANCE, pc.flipper_upper + ANGLE_TOLERANCE
    joints, att, height = f"[{lo:.2f}, {hi:.2f}] rad", f"[-{MAX_ATTITUDE:.2f}, {MAX_ATTITUDE:.2f}] rad", \
        f"[-{MAX_DEM_HEIGHT:g}, {MAX_DEM_HEIGHT:g}] m (or NaN)"
    with np.errstate(invalid="ignore"):  # NaN DEM cells compare false: they are allowed
        checks = (
            ("action (flipper targets)", (action < lo) | (action > hi), action, joints),
            ("flipper angles", (proprio[:, 2:] < lo) | (proprio[:, 2:] > hi), proprio[:, 2:], joints),
            ("pitch or roll", np.abs(proprio[:, :2]) > MAX_ATTITUDE, proprio[:, :2], att),
            ("DEM heights", np.isinf(dem) | (np.abs(dem) > MAX_DEM_HEIGHT), dem, height),
        )
    for what, outside, values, allowed in checks:
        rows = outside.reshape(len(outside), -1).any(axis=1)
        if rows.any():
            k = int(np.argmax(rows))
            first = values[k].reshape(-1)[outside[k].reshape(-1)][0]
            where = f"sample {k}"
            if data is not None:
                i = int(traj_id[k])
                t = data.trajectories[i]
                where += f" (trajectory {i}, world {t.meta.get('world', '?')!r}, its sample {k - int(np.argmax(traj_id == i))})"
            raise DatasetError(f"{int(rows.sum())} of {len(rows)} samples have {what} outside {allowed}: first at {where}, "
                               f"value {float(first):g}; check the units (radians, metres) or drop those samples")


def check_training_data(data: Data, policy: PolicyConfig | None = None) -> int:
    """Check a dataset (or arrays) as training would, without training: shapes for ``policy``, finite values, and
    ranges (flipper limits with ``ANGLE_TOLERANCE``, pitch and roll, DEM heights); returns the sample count or
    raises ``DatasetError`` saying what is wrong and where."""
    return len(checked_arrays(data, policy or PolicyConfig())["action"])
