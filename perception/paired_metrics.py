"""Sim-to-real metrics on DEM pairs taken at the same pose: evaluation only, never training.

The reality proxy gives, at every step of a run, the exact simulated DEM and the proxy's lidar-built DEM of the same
true pose. Such pairs show what the unpaired distances of ``perception.transfer_metrics`` cannot: whether a
transformation changes a DEM the way the sensor does, cell by cell. The CycleGAN must never train on pairs -- it is
built to learn from unpaired sets, which is all the real robot provides.

- ``paired_nan_agreement``: how well a transformation places its NaN cells against the real DEM's.
- ``height_change``: how far a transformation moves the heights it keeps away from the exact DEM. Applied to the
  real DEMs themselves it measures the sensor's own change (noise, the highest-return bias, edge smear: about 1 cm
  on the proxy); a generator that moves heights much further changes the terrain, not its sensing. Unpaired height
  distances reward such changes: a real set has few measured cells at the bottom of a drop (the lidar cannot see
  them), so a generator that *raises* those cells matches the real height distribution as well as one that hides
  them, and the policy then learns on a shallower drop than the one it will meet.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perception.dem_sets import dem_pair

__all__ = ["height_change", "paired_nan_agreement"]


def _same_poses(a: Any, b: Any, what_a: str, what_b: str) -> tuple[np.ndarray, np.ndarray]:
    """Two DEM sets that pair up one to one (same grid and the same number of DEMs)."""
    a, b = dem_pair(a, b, what_a, what_b)
    if a.shape != b.shape:
        raise ValueError(f"{what_a} and {what_b} must be pairs (same shape), got {a.shape} and {b.shape}")
    return a, b


def paired_nan_agreement(transformed_dems: Any, real_dems: Any) -> dict[str, Any]:
    """How well a transformation places NaN, judged on DEM pairs taken at the same pose.

    ``transformed_dems[i]`` is G applied to the simulated DEM at pose i, ``real_dems[i]`` the real (proxy) DEM
    at the same pose.

    Returns (JSON-ready):

    - ``agreement``: share of all cells where both are NaN or both measured; ``agreement_map`` the same per
      cell (rows x cols nested list).
    - ``precision``: of the cells G made NaN, the share that are NaN in the real DEM (None if G made none);
      ``recall``: of the real NaN cells, the share G made NaN (None if the real DEMs have none); ``f1``.
    - ``predicted_nan_share`` / ``real_nan_share``; ``height_mae``: mean |difference| in metres over the cells
      measured in both (None if there are none); ``n_pairs``.
    """
    t, r = _same_poses(transformed_dems, real_dems, "transformed_dems", "real_dems")
    pt, pr = np.isnan(t), np.isnan(r)
    same = pt == pr
    tp = int((pt & pr).sum())
    n_pred, n_real = int(pt.sum()), int(pr.sum())
    precision = tp / n_pred if n_pred else None
    recall = tp / n_real if n_real else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    both = ~pt & ~pr
    return {"n_pairs": len(t), "agreement": float(same.mean()), "agreement_map": same.mean(axis=0).tolist(),
            "precision": None if precision is None else float(precision), "recall": None if recall is None else float(recall),
            "f1": None if f1 is None else float(f1), "predicted_nan_share": float(pt.mean()),
            "real_nan_share": float(pr.mean()),
            "height_mae": float(np.abs(t[both] - r[both]).mean()) if both.any() else None}


def height_change(dems: Any, exact_dems: Any, threshold_m: float = 0.05) -> dict[str, Any]:
    """How far ``dems`` move the heights they keep from ``exact_dems`` of the same poses (pairs, NaN-free exact).

    Over the cells measured in ``dems`` (a NaN cell was hidden, not moved): ``mean_m`` the mean signed change
    (metres, + = raised), ``mean_abs_m`` the mean |change|, ``p95_abs_m`` its 95th percentile, ``share_over`` the
    share of those cells moved by more than ``threshold_m``, and ``cells`` how many were compared (JSON-ready;
    the statistics are None when no cell is measured).
    """
    d, e = _same_poses(dems, exact_dems, "dems", "exact_dems")
    if np.isnan(e).any():
        raise ValueError("exact_dems must be complete (the simulator's exact DEMs have no NaN cell)")
    if not (np.isfinite(threshold_m) and threshold_m > 0):
        raise ValueError(f"threshold_m must be a positive number of metres, got {threshold_m!r}")
    kept = ~np.isnan(d)
    change = d[kept] - e[kept]
    if not change.size:
        return {"cells": 0, "threshold_m": float(threshold_m), "mean_m": None, "mean_abs_m": None, "p95_abs_m": None,
                "share_over": None}
    size = np.abs(change)
    return {"cells": int(change.size), "threshold_m": float(threshold_m), "mean_m": float(change.mean()),
            "mean_abs_m": float(size.mean()), "p95_abs_m": float(np.percentile(size, 95)),
            "share_over": float((size > threshold_m).mean())}
