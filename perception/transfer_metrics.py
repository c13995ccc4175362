"""How far a set of DEMs is from the real set: the yardstick of the sim-to-real CycleGAN (seed 000).

A candidate set (the simulated DEMs x_s themselves, their translation G(x_s), or a domain-randomised x_s,
see ``perception.domain_randomization``) is compared with a set of real DEMs x_r (from the robot or the
reality proxy). Every set is ``dems`` (N, rows, cols) -- 20 x 5 in this project, heights in metres relative
to base_link, NaN where nothing was measured -- and optionally ``scalars`` (N, S): pitch, roll and the four
flipper angles. Both sets must be held out: DEMs that G or the policy was trained on say nothing about how
well it generalises.

Distances (0 = the sets look alike on that aspect; every one is symmetric):

- ``nan_map``: mean over cells of |P_a(NaN in cell) - P_b(NaN in cell)|; in [0, 1]. Where the sets miss cells.
- ``nan_fraction``: 1-D Wasserstein distance between the per-DEM shares of NaN cells; in [0, 1]. How many
  cells a DEM misses, as a distribution (real DEMs come with 0 % NaN and with 50 %, not all with 20 %).
- ``height``: 1-D Wasserstein distance (metres) between the pooled heights of all measured cells. The
  height statistics (noise, bias, the terrain the real robot sees), NaN cells excluded.
- ``sliced_wasserstein``: mean over random unit directions of the 1-D Wasserstein distance between the
  projected DEMs (each DEM as the vector [heights with NaN->0, mask +1 measured / -1 NaN]); catches joint
  structure that the three marginal distances miss, at the price of mixing metres with mask units.
- ``classifier``: a small MLP is trained to tell the two sets apart and scored on held-out DEMs; distance
  = 2 x (accuracy - 0.5), clipped at 0: 0 = indistinguishable (50 %), 1 = trivially separable (100 %).

``transfer_report`` computes all five for several candidates against one real set, plus each candidate's
*closed share* of a baseline candidate's distance (1 - d(candidate) / d(baseline), the baseline being the
untranslated sim set, "identity"): 0 = no better than doing nothing, 1 = indistinguishable from real,
negative = further from real than the baseline. The project's target is a G that closes at least half of
the identity's distance on every metric.

The classifier's accuracy says how far apart the sets are in everything a DEM shows, content included: with
``real_traj`` the report adds its *content floor*, the same test between two trajectory halves of the real set
(``perception.two_sample``): a candidate at that accuracy is as far from the real set as another part of the real
set is, so it, not 50 %, is what an unpaired held-out test can hope for.
Metrics on DEM pairs taken at the same pose (the reality proxy gives both) live in ``perception.paired_metrics``;
the sets' checks and the feature vector of a DEM in ``perception.dem_sets``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import wasserstein_distance

from perception.dem_sets import as_dems, dem_features, dem_pair, dem_set
from perception.two_sample import FLOOR_SPLITS, ClassifierConfig, classifier_two_sample_test, content_floor

__all__ = [
    "METRICS", "METRIC_DESCRIPTIONS", "closed_share", "height_distance", "measured_heights", "nan_fraction_distance",
    "nan_fractions", "nan_map_distance", "nan_probability_map", "sliced_wasserstein_distance", "transfer_report",
]

METRICS = ("nan_map", "nan_fraction", "height", "sliced_wasserstein", "classifier")
METRIC_DESCRIPTIONS = {
    "nan_map": "mean over cells of |P(NaN) candidate - P(NaN) real|, in [0, 1]",
    "nan_fraction": "1-D Wasserstein distance between the per-DEM NaN shares, in [0, 1]",
    "height": "1-D Wasserstein distance between the pooled heights of measured cells, metres",
    "sliced_wasserstein": "mean 1-D Wasserstein distance over random projections of [heights NaN->0, mask +-1]",
    "classifier": "2 x (held-out accuracy of a real-vs-candidate MLP - 0.5), clipped at 0; 0 = indistinguishable",
}


# ---------------------------------------------------------------------------------------------- marginals

def nan_probability_map(dems: Any) -> np.ndarray:
    """Per-cell probability of NaN over a set: (rows, cols) in [0, 1]."""
    return np.isnan(as_dems(dems, "dems")).mean(axis=0)


def nan_map_distance(dems_a: Any, dems_b: Any) -> float:
    """Mean absolute difference of two sets' NaN probability maps, in [0, 1]."""
    a, b = dem_pair(dems_a, dems_b, "dems_a", "dems_b")
    return float(np.abs(np.isnan(a).mean(axis=0) - np.isnan(b).mean(axis=0)).mean())


def nan_fractions(dems: Any) -> np.ndarray:
    """Share of NaN cells in each DEM: (N,) in [0, 1]."""
    return np.isnan(as_dems(dems, "dems")).mean(axis=(1, 2))


def nan_fraction_distance(dems_a: Any, dems_b: Any) -> float:
    """1-D Wasserstein distance between the two sets' distributions of per-DEM NaN shares, in [0, 1]."""
    a, b = dem_pair(dems_a, dems_b, "dems_a", "dems_b")
    return float(wasserstein_distance(np.isnan(a).mean(axis=(1, 2)), np.isnan(b).mean(axis=(1, 2))))


def measured_heights(dems: Any, what: str = "dems") -> np.ndarray:
    """Heights of every measured (non-NaN) cell of a set, pooled: (M,). A set with no measured cell raises."""
    a = as_dems(dems, what)
    h = a[np.isfinite(a)]
    if h.size == 0:
        raise ValueError(f"{what} has no measured cell: every height is NaN")
    return h


def height_distance(dems_a: Any, dems_b: Any) -> float:
    """1-D Wasserstein distance (metres) between the pooled heights of the measured cells of two sets."""
    a, b = dem_pair(dems_a, dems_b, "dems_a", "dems_b")
    return float(wasserstein_distance(measured_heights(a, "dems_a"), measured_heights(b, "dems_b")))


def sliced_wasserstein_distance(dems_a: Any, dems_b: Any, n_projections: int = 64,
                                seed: int | np.random.Generator = 0, projections: Any = None) -> float:
    """Sliced 1-Wasserstein distance between two DEM sets in the ``dem_features`` space (no scalars).

    The mean over ``n_projections`` random unit directions (uniform on the sphere, drawn from ``seed``) of the
    1-D Wasserstein distance between the projected sets. ``projections`` (P, 2 rows cols) gives the directions
    instead (each normalised to unit length). Costs P sorts of N numbers, so it is cheap for thousands of DEMs.
    """
    a, b = dem_pair(dems_a, dems_b, "dems_a", "dems_b")
    fa, fb = dem_features(a), dem_features(b)
    dim = fa.shape[1]
    if projections is None:
        if int(n_projections) < 1:
            raise ValueError(f"n_projections must be >= 1, got {n_projections}")
        dirs = np.random.default_rng(seed).standard_normal((int(n_projections), dim))
    else:
        dirs = np.asarray(projections, dtype=np.float64)
        if dirs.ndim != 2 or dirs.shape[1] != dim or len(dirs) < 1:
            raise ValueError(f"projections must have shape (P, {dim}) with P >= 1, got {dirs.shape}")
    norms = np.linalg.norm(dirs, axis=1, keepdims=True)
    if not (np.isfinite(norms).all() and (norms > 0).all()):
        raise ValueError("projections must be finite non-zero directions")
    dirs = dirs / norms
    pa, pb = fa @ dirs.T, fb @ dirs.T
    return float(np.mean([wasserstein_distance(pa[:, k], pb[:, k]) for k in range(len(dirs))]))


# ---------------------------------------------------------------------------------------------- report

def closed_share(distance: float, baseline_distance: float) -> float | None:
    """1 - distance / baseline_distance: the share of the baseline's distance a candidate closes.

    1 = indistinguishable from real, 0 = as far as the baseline, negative = further. None when the baseline is
    already at distance 0 (nothing to close).
    """
    if not baseline_distance > 0:
        return None
    return float(1.0 - distance / baseline_distance)


def transfer_report(real: Any, candidates: dict[str, Any], seed: int = 0, baseline: str | None = "identity",
                    classifier: ClassifierConfig | None = None, n_projections: int = 64,
                    target_share: float = 0.5, real_traj: Any = None) -> dict[str, Any]:
    """Every metric of every candidate against the real set, JSON-ready.

    ``real`` and each candidate are ``(dems, scalars)`` pairs (scalars may be None; the classifier uses them
    when both sides have them). All candidates are measured with the same ``seed`` (same projections, same
    subsampling and split where sizes agree), so that their differences are not sampling luck.

    Returns::

        {"seed", "baseline", "target_share", "metrics": {name: description},
         "real": {"n", "nan_share"},
         "content_floor": {accuracy, accuracies, trajectories, n} or None,
         "candidates": {name: {"n", "nan_share",
                               "distances": {metric: d},           # see METRIC_DESCRIPTIONS; 0 = like real
                               "classifier": {accuracy, p_value, train_accuracy, n_train, n_test},
                               "closed_share": {metric: 1 - d / d_baseline or None},
                               "meets_target": every defined closed share >= target_share}}}

    ``baseline`` names the candidate the closed shares refer to (the untranslated sim set); None omits
    ``closed_share`` and ``meets_target``. A metric on which the baseline is already at distance 0 has no
    closed share (None) and does not count for ``meets_target``.

    ``real_traj`` (N,), the trajectory of each real DEM, adds ``content_floor``: the classifier's accuracy between
    two halves of the real set split by trajectory (``perception.two_sample.content_floor``, DEMs only), the
    accuracy that content alone gives an unpaired test of these sets; without it (or with one real trajectory),
    ``content_floor`` is None.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        # an int, not a Generator: every candidate must see the same projections and the same split
        raise ValueError(f"seed must be an integer, got {type(seed).__name__}")
    if not isinstance(candidates, dict) or not candidates:
        raise ValueError("candidates must be a non-empty mapping of name -> (dems, scalars)")
    if baseline is not None and baseline not in candidates:
        raise ValueError(f"baseline {baseline!r} is not among the candidates ({', '.join(map(str, candidates))})")
    r_dems, r_scalars = dem_set(real, "real")
    measured_heights(r_dems, "real dems")  # a real set with no measured cell cannot be compared
    floor = None
    if real_traj is not None:
        if np.shape(real_traj) != (len(r_dems),):
            raise ValueError(f"real_traj must give the trajectory of each of the {len(r_dems)} real DEMs, got shape "
                             f"{np.shape(real_traj)}")
        floor = content_floor(r_dems, real_traj, seed=int(seed), splits=FLOOR_SPLITS, config=classifier)
    results: dict[str, Any] = {}
    for name, pair in candidates.items():
        c_dems, c_scalars = dem_set(pair, f"candidate {name!r}")
        if c_dems.shape[1:] != r_dems.shape[1:]:
            raise ValueError(f"candidate {name!r} dems are on a {c_dems.shape[1:]} grid, the real ones on {r_dems.shape[1:]}")
        both = r_scalars.shape[1] > 0 and c_scalars.shape[1] > 0
        if both and c_scalars.shape[1] != r_scalars.shape[1]:
            raise ValueError(f"candidate {name!r} has {c_scalars.shape[1]} scalars per DEM, the real set {r_scalars.shape[1]}")
        clf = classifier_two_sample_test(r_dems, c_dems, r_scalars if both else None, c_scalars if both else None,
                                         seed=seed, config=classifier)
        distances = {
            "nan_map": nan_map_distance(r_dems, c_dems),
            "nan_fraction": nan_fraction_distance(r_dems, c_dems),
            "height": float(wasserstein_distance(measured_heights(r_dems, "real dems"),
                                                 measured_heights(c_dems, f"candidate {name!r} dems"))),
            "sliced_wasserstein": sliced_wasserstein_distance(r_dems, c_dems, n_projections, seed),
            "classifier": clf.pop("distance"),
        }
        results[str(name)] = {"n": len(c_dems), "nan_share": float(np.isnan(c_dems).mean()), "distances": distances,
                              "classifier": clf}
    if baseline is not None:
        base = results[str(baseline)]["distances"]
        for entry in results.values():
            shares = {m: closed_share(entry["distances"][m], base[m]) for m in METRICS}
            entry["closed_share"] = shares
            known = [s for s in shares.values() if s is not None]
            entry["meets_target"] = bool(known) and all(s >= target_share for s in known)
    return {"seed": int(seed), "baseline": baseline,
            "target_share": float(target_share), "metrics": dict(METRIC_DESCRIPTIONS),
            "real": {"n": len(r_dems), "nan_share": float(np.isnan(r_dems).mean())}, "content_floor": floor,
            "candidates": results}
