"""Sets of DEMs as the transfer metrics take them: checked arrays and the flat feature vector of each DEM.

A set is ``dems`` (N, rows, cols) -- 20 x 5 in this project, heights in metres relative to base_link, NaN where
nothing was measured -- and optionally ``scalars`` (N, S): pitch, roll and the four flipper angles. The checks
name the set in their messages, so that a caller's mix-up (sets on other grids, infinite heights, scalars of
another length) says which input is wrong. Shared by the unpaired distances (``perception.transfer_metrics``), the
two-sample classifier (``perception.two_sample``) and the same-pose metrics (``perception.paired_metrics``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_dems", "as_scalars", "dem_features", "dem_pair", "dem_set"]


def as_dems(dems: Any, what: str) -> np.ndarray:
    """``dems`` as float64 (N, rows, cols) with N >= 1, NaN allowed, infinities refused."""
    try:
        a = np.asarray(dems, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a numeric array of shape (N, rows, cols), got {type(dems).__name__}") from None
    if a.ndim != 3 or min(a.shape) < 1:
        raise ValueError(f"{what} must have shape (N, rows, cols) with N >= 1 (e.g. (N, 20, 5)), got {a.shape}")
    if np.isinf(a).any():
        raise ValueError(f"{what} holds infinite heights; unmeasured cells must be NaN")
    return a


def dem_pair(a: Any, b: Any, what_a: str, what_b: str) -> tuple[np.ndarray, np.ndarray]:
    """Two DEM sets on the same grid."""
    a, b = as_dems(a, what_a), as_dems(b, what_b)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"{what_a} and {what_b} must be on the same grid, got {a.shape[1:]} and {b.shape[1:]}")
    return a, b


def as_scalars(scalars: Any, n: int, what: str) -> np.ndarray:
    """``scalars`` as float64 (n, S); None gives (n, 0)."""
    if scalars is None:
        return np.zeros((n, 0))
    try:
        s = np.asarray(scalars, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a numeric array of shape (N, S), got {type(scalars).__name__}") from None
    if s.ndim != 2 or s.shape[0] != n:
        raise ValueError(f"{what} must have shape ({n}, S) to match its {n} DEMs, got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"{what} must be finite (pitch, roll and flipper angles are always known)")
    return s


def dem_set(pair: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A ``(dems, scalars)`` pair (scalars may be None) as validated arrays."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{what} must be a (dems, scalars) pair, got {type(pair).__name__}")
    dems = as_dems(pair[0], f"{what} dems")
    return dems, as_scalars(pair[1], len(dems), f"{what} scalars")


def dem_features(dems: Any, scalars: Any = None) -> np.ndarray:
    """Each DEM as a flat vector: [heights with NaN->0, mask (+1 measured, -1 NaN), scalars]; (N, 2 rows cols + S).

    The two channels are the GAN's input encoding (seed 000 Fig. 5): the mask carries what NaN means, so a
    height of 0 and a missing cell stay distinguishable.
    """
    a = as_dems(dems, "dems")
    s = as_scalars(scalars, len(a), "scalars")
    nan = np.isnan(a)
    n = len(a)
    return np.concatenate([np.where(nan, 0.0, a).reshape(n, -1), np.where(nan, -1.0, 1.0).reshape(n, -1), s], axis=1)
