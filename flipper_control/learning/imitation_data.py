"""The imitation data's two transformations: the split that keeps whole trajectories on one side, and the left-right
mirror of samples (``imitation``'s docstring says why each exists).
"""

from __future__ import annotations

import numpy as np

from flipper_control.learning.imitation_config import N_BODY
from planning.dataset import DatasetError
from sim.robot import FLIPPER_NAMES

__all__ = ["MIRROR_FLIPPERS", "mirror_arrays", "split_by_trajectory"]

# Index of each flipper's mirror image in FLIPPER_NAMES order (front_left <-> front_right, ...),
# derived from the names so a reordering of FLIPPER_NAMES cannot silently break the augmentation.
MIRROR_FLIPPERS: tuple[int, ...] = tuple(
    FLIPPER_NAMES.index(n.replace("left", "@").replace("right", "left").replace("@", "right")) for n in FLIPPER_NAMES
)
_ROLL = 1  # proprio = [pitch, roll, flipper angles...] (sim.simulator.Observation.proprio)


def split_by_trajectory(traj_id: np.ndarray, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into (train_idx, test_idx), sorted, with every trajectory on one side only.

    Trajectories are shuffled by ``rng`` and the first k of them go to the test side, k (at least one,
    and leaving at least one for training) chosen so that the test share of samples comes closest to
    ``test_fraction``. With a single trajectory no such split exists: the samples are then split in time
    order, the last ``test_fraction`` of them (at least one) for the test side; consecutive samples are
    correlated, so that test error is optimistic (``train_policy`` reports ``split="time"``).
    """
    traj_id = np.asarray(traj_id)
    n = len(traj_id)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    if n < 2:
        raise DatasetError(f"cannot split {n} sample(s) into a training and a test set; collect more trajectories")
    ids, counts = np.unique(traj_id, return_counts=True)
    if len(ids) == 1:
        n_test = min(n - 1, max(1, round(test_fraction * n)))
        return np.arange(n - n_test, dtype=np.int64), np.arange(n - n_test, n, dtype=np.int64)
    order = rng.permutation(len(ids))
    cum = np.cumsum(counts[order])[:-1]  # test samples when the first k+1 shuffled trajectories are held out
    k = int(np.argmin(np.abs(cum - test_fraction * n))) + 1  # first minimum: deterministic tie-break
    test_mask = np.isin(traj_id, ids[order[:k]])
    return np.flatnonzero(~test_mask).astype(np.int64), np.flatnonzero(test_mask).astype(np.int64)


def mirror_arrays(dem: np.ndarray, proprio: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left-right mirror images of samples (leading batch axes allowed); returns new arrays.

    DEM columns reversed (column 0 is the robot's left), roll negated, FL<->FR and RL<->RR swapped in
    the proprioceptive flipper angles and in the action. Mirroring twice gives the input back.
    """
    dem = np.asarray(dem)[..., ::-1].copy()
    proprio = np.array(proprio, copy=True)
    proprio[..., _ROLL] = -proprio[..., _ROLL]
    proprio[..., N_BODY:] = proprio[..., N_BODY + np.asarray(MIRROR_FLIPPERS)]
    action = np.asarray(action)[..., list(MIRROR_FLIPPERS)].copy()
    return dem, proprio, action
