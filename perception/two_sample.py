"""The two-sample classifier test: can a small network tell real DEMs from a candidate set? (seed 000's yardstick)

``classifier_two_sample_test`` trains an MLP on the two sets' ``dem_features`` and reports its accuracy on held-out
DEMs of both: 50 % = indistinguishable, 100 % = trivially separable. It is one of the transfer metrics of
``perception.transfer_metrics`` (distance 2 x (accuracy - 0.5)).

The classifier sees everything a DEM shows, its content as well as how it was sensed. Held-out sets of a loop hold a
few trajectories each, on other worlds and other poses than the other set's, so a classifier can tell them apart by
what they show even when they were sensed alike. ``content_floor`` measures that: the same test between two halves of
one set, split by whole trajectories, so that only content differs. A candidate's accuracy is judged against it:
a transformed simulated set told apart from the real set no better than one half of the real set from the other
is as real as held-out data of this size can show (the same-pose pairs of ``flipper bench gan --paired-worlds``
remove content instead, and there 50 % is the mark).

A hand-written MLP loop rather than a library classifier (scikit-learn is not among our pins): a few dozen lines of
torch, deterministic for a seed on one thread.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest

from perception.dem_sets import as_scalars, dem_features, dem_pair
from sim.config_io import config_from_mapping

__all__ = ["FLOOR_SPLITS", "ClassifierConfig", "classifier_two_sample_test", "content_floor", "trajectory_halves"]

FLOOR_SPLITS = 3  # content_floor: random halvings averaged (one halving's accuracy moves by several points)


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
    rs, cs = as_scalars(real_scalars, len(ra), "real scalars"), as_scalars(candidate_scalars, len(ca), "candidate scalars")
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


def trajectory_halves(traj_id: Any, rng: np.random.Generator) -> np.ndarray | None:
    """A random split of whole trajectories into two halves of about equal sample counts: a boolean (N,) mask of the
    first half, or None with fewer than two trajectories. Trajectories are shuffled by ``rng`` and taken into the
    first half until it holds at least half of the samples (and never all of the trajectories)."""
    traj = np.asarray(traj_id)
    if traj.ndim != 1:
        raise ValueError(f"traj_id must have shape (N,), got {traj.shape}")
    ids, counts = np.unique(traj, return_counts=True)
    if len(ids) < 2:
        return None
    order = rng.permutation(len(ids))
    cum = np.cumsum(counts[order])
    k = int(np.searchsorted(cum, cum[-1] / 2.0)) + 1  # the first k shuffled trajectories reach half of the samples
    return np.isin(traj, ids[order[:min(k, len(ids) - 1)]])


def content_floor(dems: Any, traj_id: Any, seed: int = 0, splits: int = FLOOR_SPLITS,
                  config: ClassifierConfig | None = None) -> dict[str, Any] | None:
    """The classifier test between two halves of one DEM set, split by whole trajectories (``trajectory_halves``),
    averaged over ``splits`` random halvings: how well content alone tells held-out sets apart (see the module
    docstring). None when the set has fewer than two trajectories or a half has too few DEMs for the test.

    Returns ``{"accuracy": mean over splits, "accuracies": [...], "trajectories": n, "n": DEMs}``.
    """
    a = np.asarray(dems)
    traj = np.asarray(traj_id)
    if traj.shape != a.shape[:1]:
        raise ValueError(f"traj_id must give one trajectory per DEM: {a.shape[0]} DEMs, traj_id {traj.shape}")
    if not (isinstance(splits, int) and splits >= 1):
        raise ValueError(f"splits must be an integer >= 1, got {splits!r}")
    cfg = config or ClassifierConfig()
    rng = np.random.default_rng(seed)
    accuracies = []
    for _ in range(splits):
        first = trajectory_halves(traj, rng)
        if first is None or min(first.sum(), (~first).sum()) < cfg.min_per_class:
            return None
        accuracies.append(classifier_two_sample_test(a[first], a[~first], seed=int(rng.integers(2**31)),
                                                     config=cfg)["accuracy"])
    return {"accuracy": float(np.mean(accuracies)), "accuracies": [float(x) for x in accuracies],
            "trajectories": int(len(np.unique(traj))), "n": int(len(a))}
