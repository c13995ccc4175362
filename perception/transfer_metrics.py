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

Metrics on DEM pairs taken at the same pose (the reality proxy gives both) live in ``perception.paired_metrics``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest, wasserstein_distance

from sim.config_io import config_from_mapping

__all__ = [
    "METRICS", "METRIC_DESCRIPTIONS", "ClassifierConfig", "classifier_two_sample_test", "closed_share", "dem_pair",
    "dem_features", "height_distance", "measured_heights", "nan_fraction_distance", "nan_fractions",
    "nan_map_distance", "nan_probability_map", "sliced_wasserstein_distance",
    "transfer_report",
]

METRICS = ("nan_map", "nan_fraction", "height", "sliced_wasserstein", "classifier")
METRIC_DESCRIPTIONS = {
    "nan_map": "mean over cells of |P(NaN) candidate - P(NaN) real|, in [0, 1]",
    "nan_fraction": "1-D Wasserstein distance between the per-DEM NaN shares, in [0, 1]",
    "height": "1-D Wasserstein distance between the pooled heights of measured cells, metres",
    "sliced_wasserstein": "mean 1-D Wasserstein distance over random projections of [heights NaN->0, mask +-1]",
    "classifier": "2 x (held-out accuracy of a real-vs-candidate MLP - 0.5), clipped at 0; 0 = indistinguishable",
}


# ---------------------------------------------------------------------------------------------- validation

def _dems(dems: Any, what: str) -> np.ndarray:
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
    a, b = _dems(a, what_a), _dems(b, what_b)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"{what_a} and {what_b} must be on the same grid, got {a.shape[1:]} and {b.shape[1:]}")
    return a, b


def _scalars(scalars: Any, n: int, what: str) -> np.ndarray:
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


def _set(pair: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A ``(dems, scalars)`` pair (scalars may be None) as validated arrays."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{what} must be a (dems, scalars) pair, got {type(pair).__name__}")
    dems = _dems(pair[0], f"{what} dems")
    return dems, _scalars(pair[1], len(dems), f"{what} scalars")


# ---------------------------------------------------------------------------------------------- marginals

def nan_probability_map(dems: Any) -> np.ndarray:
    """Per-cell probability of NaN over a set: (rows, cols) in [0, 1]."""
    return np.isnan(_dems(dems, "dems")).mean(axis=0)


def nan_map_distance(dems_a: Any, dems_b: Any) -> float:
    """Mean absolute difference of two sets' NaN probability maps, in [0, 1]."""
    a, b = dem_pair(dems_a, dems_b, "dems_a", "dems_b")
    return float(np.abs(np.isnan(a).mean(axis=0) - np.isnan(b).mean(axis=0)).mean())


def nan_fractions(dems: Any) -> np.ndarray:
    """Share of NaN cells in each DEM: (N,) in [0, 1]."""
    return np.isnan(_dems(dems, "dems")).mean(axis=(1, 2))


def nan_fraction_distance(dems_a: Any, dems_b: Any) -> float:
    """1-D Wasserstein distance between the two sets' distributions of per-DEM NaN shares, in [0, 1]."""
    a, b = dem_pair(dems_a, dems_b, "dems_a", "dems_b")
    return float(wasserstein_distance(np.isnan(a).mean(axis=(1, 2)), np.isnan(b).mean(axis=(1, 2))))


def measured_heights(dems: Any, what: str = "dems") -> np.ndarray:
    """Heights of every measured (non-NaN) cell of a set, pooled: (M,). A set with no measured cell raises."""
    a = _dems(dems, what)
    h = a[np.isfinite(a)]
    if h.size == 0:
        raise ValueError(f"{what} has no measured cell: every height is NaN")
    return h


def height_distance(dems_a: Any, dems_b: Any) -> float:
    """1-D Wasserstein distance (metres) between the pooled heights of the measured cells of two sets."""
    a, b = dem_pair(dems_a, dems_b, "dems_a", "dems_b")
    return float(wasserstein_distance(measured_heights(a, "dems_a"), measured_heights(b, "dems_b")))


def dem_features(dems: Any, scalars: Any = None) -> np.ndarray:
    """Each DEM as a flat vector: [heights with NaN->0, mask (+1 measured, -1 NaN), scalars]; (N, 2 rows cols + S).

    The two channels are the GAN's input encoding (seed 000 Fig. 5): the mask carries what NaN means, so a
    height of 0 and a missing cell stay distinguishable.
    """
    a = _dems(dems, "dems")
    s = _scalars(scalars, len(a), "scalars")
    nan = np.isnan(a)
    n = len(a)
    return np.concatenate([np.where(nan, 0.0, a).reshape(n, -1), np.where(nan, -1.0, 1.0).reshape(n, -1), s], axis=1)


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


# ---------------------------------------------------------------------------------------------- classifier

@dataclass(frozen=True)
class ClassifierConfig:
    """The two-sample classifier test: an MLP on ``dem_features`` (standardised on the training split).

    - ``hidden``: width of its two hidden layers; ``epochs``, ``batch_size``, ``lr``, ``weight_decay``: Adam.
    - ``test_fraction``: share of each class held out for the reported accuracy.
    - ``max_per_class``: each set is subsampled to at most this many DEMs (a few thousand give an accuracy
      within about +-2 % at a cost of about a second on one core).
    - ``min_per_class``: fewer DEMs than this in either set is refused (the accuracy would be noise).
    """

    hidden: int = 64
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    test_fraction: float = 0.3
    max_per_class: int = 3000
    min_per_class: int = 10

    def __post_init__(self) -> None:
        ints = {"hidden": 1, "epochs": 1, "batch_size": 1, "max_per_class": 2, "min_per_class": 2}
        bad = [f"{k} must be an integer >= {lo}" for k, lo in ints.items()
               if isinstance(getattr(self, k), bool) or not isinstance(getattr(self, k), int) or getattr(self, k) < lo]
        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad.append(f"lr must be > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            bad.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 < self.test_fraction < 1:
            bad.append(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if bad:
            raise ValueError("ClassifierConfig: " + "; ".join(bad))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ClassifierConfig:
        return config_from_mapping(cls, data, "classifier config")


def classifier_two_sample_test(real_dems: Any, candidate_dems: Any, real_scalars: Any = None, candidate_scalars: Any = None,
                               seed: int | np.random.Generator = 0, config: ClassifierConfig | None = None) -> dict[str, Any]:
    """Train an MLP to tell real DEMs from candidate DEMs; report its accuracy on held-out DEMs of both.

    Classes are balanced (the larger set is subsampled without replacement to the smaller one's size, capped
    at ``config.max_per_class``), so 0.5 is chance. One permutation of positions splits both classes into
    train and test, so with sets of equal size DEM i of each set lands on the same side: two identical sets
    then give exactly 0.5 (each held-out DEM is met twice with both labels), and index-paired sets cannot leak
    a pair across the split. Scalars take part when both sets have them (pass None for neither).

    Deterministic for a seed: the subsampling, the split, the initial weights and the batches all come from
    ``seed``, and torch runs on one thread meanwhile (its reductions depend on the thread count).

    Returns ``accuracy`` (held-out, balanced), ``distance`` (2 x (accuracy - 0.5) clipped at 0),
    ``p_value`` (one-sided binomial test of accuracy > 0.5), ``train_accuracy``, ``n_train`` and ``n_test``
    (DEMs per class).
    """
    import torch

    cfg = config or ClassifierConfig()
    ra, ca = dem_pair(real_dems, candidate_dems, "real dems", "candidate dems")
    rs, cs = _scalars(real_scalars, len(ra), "real scalars"), _scalars(candidate_scalars, len(ca), "candidate scalars")
    if rs.shape[1] != cs.shape[1]:
        raise ValueError(f"real and candidate scalars must have the same width, got {rs.shape[1]} and {cs.shape[1]}")
    n = min(len(ra), len(ca), cfg.max_per_class)
    if n < cfg.min_per_class:
        raise ValueError(f"the classifier test needs at least {cfg.min_per_class} DEMs per set, got {len(ra)} real and "
                         f"{len(ca)} candidate")
    rng = np.random.default_rng(seed)

    def take(m: int) -> np.ndarray:
        # keep the given order when nothing is dropped, so that equal-sized sets stay paired by index
        return np.arange(m) if m == n else np.sort(rng.choice(m, n, replace=False))

    ia, ib = take(len(ra)), take(len(ca))
    xa, xb = dem_features(ra[ia], rs[ia]), dem_features(ca[ib], cs[ib])
    n_test = min(n - 1, max(1, round(cfg.test_fraction * n)))
    perm = rng.permutation(n)
    test, train = perm[:n_test], perm[n_test:]
    x_train = np.concatenate([xa[train], xb[train]])
    y_train = np.concatenate([np.ones(len(train)), np.zeros(len(train))])
    x_test = np.concatenate([xa[test], xb[test]])
    y_test = np.concatenate([np.ones(n_test), np.zeros(n_test)])
    mean = x_train.mean(axis=0)
    # a floor of 1 cm / 0.01 rad: a feature constant in the training split (a cell never NaN) must not blow up
    std = np.maximum(x_train.std(axis=0), 1e-2)
    t = lambda x: torch.as_tensor((x - mean) / std, dtype=torch.float32)  # noqa: E731
    xt, yt, xv = t(x_train), torch.as_tensor(y_train, dtype=torch.float32), t(x_test)

    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = _mlp(xt.shape[1], cfg.hidden, gen)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        for _ in range(cfg.epochs):
            order = torch.randperm(len(xt), generator=gen)
            for start in range(0, len(xt), cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                opt.zero_grad()
                loss_fn(model(xt[idx]).squeeze(1), yt[idx]).backward()
                opt.step()
        with torch.no_grad():
            pred_test = (model(xv).squeeze(1) > 0).numpy()
            pred_train = (model(xt).squeeze(1) > 0).numpy()
    finally:
        torch.set_num_threads(threads)
    correct = int((pred_test == (y_test > 0.5)).sum())
    accuracy = correct / len(y_test)
    return {"accuracy": float(accuracy), "distance": float(max(0.0, 2.0 * (accuracy - 0.5))),
            "p_value": float(binomtest(correct, len(y_test), 0.5, alternative="greater").pvalue),
            "train_accuracy": float((pred_train == (y_train > 0.5)).mean()), "n_train": int(len(train)),
            "n_test": int(n_test)}


def _mlp(dim: int, hidden: int, gen):
    """Two hidden ReLU layers; weights drawn from ``gen`` (PyTorch's default Linear init), not the global RNG."""
    import torch

    # skip_init: Linear's own initialisation would draw from (and advance) torch's global RNG
    linear = lambda i, o: torch.nn.utils.skip_init(torch.nn.Linear, i, o)  # noqa: E731
    layers = [linear(dim, hidden), torch.nn.ReLU(), linear(hidden, hidden), torch.nn.ReLU(), linear(hidden, 1)]
    with torch.no_grad():
        for layer in layers:
            if isinstance(layer, torch.nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.uniform_(-bound, bound, generator=gen)
    return torch.nn.Sequential(*layers)


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
                    target_share: float = 0.5) -> dict[str, Any]:
    """Every metric of every candidate against the real set, JSON-ready.

    ``real`` and each candidate are ``(dems, scalars)`` pairs (scalars may be None; the classifier uses them
    when both sides have them). All candidates are measured with the same ``seed`` (same projections, same
    subsampling and split where sizes agree), so that their differences are not sampling luck.

    Returns::

        {"seed", "baseline", "target_share", "metrics": {name: description},
         "real": {"n", "nan_share"},
         "candidates": {name: {"n", "nan_share",
                               "distances": {metric: d},           # see METRIC_DESCRIPTIONS; 0 = like real
                               "classifier": {accuracy, p_value, train_accuracy, n_train, n_test},
                               "closed_share": {metric: 1 - d / d_baseline or None},
                               "meets_target": every defined closed share >= target_share}}}

    ``baseline`` names the candidate the closed shares refer to (the untranslated sim set); None omits
    ``closed_share`` and ``meets_target``. A metric on which the baseline is already at distance 0 has no
    closed share (None) and does not count for ``meets_target``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        # an int, not a Generator: every candidate must see the same projections and the same split
        raise ValueError(f"seed must be an integer, got {type(seed).__name__}")
    if not isinstance(candidates, dict) or not candidates:
        raise ValueError("candidates must be a non-empty mapping of name -> (dems, scalars)")
    if baseline is not None and baseline not in candidates:
        raise ValueError(f"baseline {baseline!r} is not among the candidates ({', '.join(map(str, candidates))})")
    r_dems, r_scalars = _set(real, "real")
    measured_heights(r_dems, "real dems")  # a real set with no measured cell cannot be compared
    results: dict[str, Any] = {}
    for name, pair in candidates.items():
        c_dems, c_scalars = _set(pair, f"candidate {name!r}")
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
            "real": {"n": len(r_dems), "nan_share": float(np.isnan(r_dems).mean())}, "candidates": results}
