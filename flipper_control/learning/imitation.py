"""Imitation training of the NaN-aware flipper policy on guiding trajectories (seed 000 section VI).

The planner's trajectories give (state, action) samples: a 20x5 DEM that may hold NaN, the six
proprioceptive values (pitch, roll, four flipper angles) and the four flipper targets applied from
that state. ``train_policy`` regresses the targets with the mean squared error over the four angles
(or another loss, below), Adam and global gradient-norm clipping, on a split that keeps whole
trajectories on one side (samples of one trajectory are strongly correlated, so a per-sample split
would leak the test set into training). ``train_candidates`` trains one policy per seed and ranks
them -- seed 000 trains ten per iteration and keeps the two that score best on the simulated test
worlds; that score comes from the caller as ``score_fn``.

Left-right mirror augmentation (``mirror``): the robot and its task are symmetric about the x-z
plane, so a sample seen in a mirror is another valid sample. Mirroring flips the DEM columns (column
0 is the robot's left, ``sim.dem``), negates roll and swaps left and right flippers (FL<->FR,
RL<->RR) in both the flipper angles of the state and the action. Pitch is unchanged.

Flipper-angle noise (``flipper_noise``): in the planner's trajectories the flipper targets change rarely, so
the angles in the state nearly equal the label (the demo's final dataset, seed 0: median gap 0.036 rad, 55 % of
samples within 0.05 rad, against a label spread of 0.26 rad) and a network can score well by copying them (the
"copycat" shortcut of behaviour cloning). Such a policy keeps whatever posture it is in, which on the reality
proxy left it climbing a flight with the front flippers at 63 deg where the heuristic holds 10
(docs/sim2real_experiments.md, "Where the proxy points go"). Gaussian noise on the input angles, labels unchanged,
makes the copy wrong by the noise and teaches the network to read the posture from the terrain (DART, Laskey et al. 2017,
perturbs the demonstrator for the same reason; here only the input is perturbed, no new labels are needed).
Measured at demo scale it removes the copy (front-flipper slope on its own input 0.18 -> 0.06 at 0.5 rad) but
does not raise the reality-proxy scores, so it is off by default (docs/sim2real_experiments.md, "Breaking the copy").

The loss (``loss``): the labels are the planner's discrete postures, and where plans disagree on similar states
(one dive pressed the rear flippers on a flight, another left them level) the squared error learns the mean of
the two, a posture no plan chose: on the test flight the policies held the rear at -3 to -5 deg where the labels
said -11.5 or 0, and climbing with the rear half pressed is what makes them slow (docs/sim2real_experiments.md,
"Why the learned policies climb stairs_up slowly"). The absolute error (``l1``) learns the median instead, per
flipper, which is the posture most labels hold; ``huber`` is squared within ``huber_delta`` of the label and
absolute beyond. torch's own losses compute all three. Measured on the last candidates of eight demo loops, ``l1``
does not help (-0.12 +- 0.18 on the reality proxy's test worlds): on the flight most labels hold the rear level, so
its median is level too, and the policies copy their own rear angle besides (docs/sim2real_experiments.md, "The
labels on the flight"). ``mse`` stays the default.

Keyframes (``keyframe_weight``): the copy above has a second side. In a plan a posture is held for several control
steps, so many samples' targets equal the angles the flippers already have, and the samples where the plan changes
posture (the keyframes, where the terrain decides) share the mean with them; a network that copies its angles is
wrong only there. (In the demo's last dataset, seed 0, 44 % of the samples are more than 0.1 rad from their target:
the flippers' lag spreads each change over several steps.) Keyframe-focused imitation (Wen et al.,
"Keyframe-Focused Visual Imitation Learning", ICML 2021) counters the copycat by upweighting the samples whose
action the history does not predict.
Here the history is the state's flipper angles, so a sample's loss counts 1 + ``keyframe_weight`` x the mean gap
between its targets and those angles (radians), normalised by the batch's total weight; the inputs, the labels
and every random draw stay as they are (0, the default, is the unweighted loss, bit for bit). Measured by
retraining the last candidates of six demo loops (``flipper retrain``), it does not raise the reality-proxy scores
(K = 20: -0.03 +- 0.10, K = 5: -0.10 +- 0.10), so it is off (docs/sim2real_experiments.md, "Keyframes in imitation").

Determinism: every random choice (weight initialisation, split, batch order, which samples are
mirrored, the flipper-angle noise) comes from generators seeded by the caller's seed (the split from ``split_seed``, see
``ImitationConfig``), so a rerun gives bit-identical weights. That holds for a fixed thread count;
call ``torch.set_num_threads(1)`` first -- it is also the fastest setting for this small network
(thread hand-offs cost more than the arithmetic) -- this module does not change global torch state.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from flipper_control.learning.imitation_config import N_BODY, ImitationConfig
from flipper_control.learning.imitation_data import MIRROR_FLIPPERS, mirror_arrays, split_by_trajectory
from flipper_control.learning.training_data import Data, checked_arrays
from flipper_control.policy import NanAwarePolicy
from sim.config_io import is_int

__all__ = [
    "TrainReport",
    "Candidate",
    "split_by_trajectory",
    "mirror_arrays",
    "train_policy",
    "train_candidates",
    "evaluate_mse",
    "keyframe_weights",
    "stderr_progress",
    "MIRROR_FLIPPERS",
]

Progress = Callable[[str], None]
EpochHook = Callable[[int, int, float], None]  # (seed, epoch, mean training loss of the epoch)

_EVAL_CHUNK = 4096  # samples per forward pass when evaluating: bounds the conv activations' memory


@dataclass
class TrainReport:
    """What one training run did and how well the result fits; errors are in rad^2 (MSE) and rad (RMSE)."""

    seed: int
    samples_train: int
    samples_test: int
    trajectories_train: int
    trajectories_test: int
    split: str  # "trajectory" (whole trajectories per side) or "time" (single trajectory: first part / last part)
    train_loss: float  # mean loss over the last epoch's batches (mirrored samples included)
    train_mse: float  # final network on the (unmirrored) training samples
    test_mse: float
    test_rmse: float
    test_rmse_per_flipper: list[float]  # order of FLIPPER_NAMES
    baseline_test_mse: float  # predicting the mean training action for every test sample
    baseline_test_rmse: float
    epochs: int
    steps: int  # optimiser steps
    seconds: float  # wall time of the training loop and evaluation
    threads: int  # torch.get_num_threads() during training (timings depend on it)
    grad_clip: float
    clipped_fraction: float  # share of steps whose gradient norm exceeded grad_clip
    grad_norm_max: float  # largest gradient norm before clipping
    dem_nan_fraction: float  # share of DEM cells that are not finite (missing measurements)
    loss_history: list[float] = field(default_factory=list)  # mean training loss per epoch
    config: dict[str, Any] = field(default_factory=dict)  # ImitationConfig.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready mapping."""
        return asdict(self)


@dataclass
class Candidate:
    """One trained policy of ``train_candidates``: its seed, the policy, its report and its score."""

    seed: int
    policy: NanAwarePolicy
    report: TrainReport
    score: float | None  # score_fn(policy) (higher is better); None when ranked by test_mse alone
    kept: bool = False  # among the ``keep`` best

    def to_dict(self) -> dict[str, Any]:
        """The seed, score, kept flag and report (the policy itself goes into a checkpoint); JSON-safe:
        a non-finite score becomes the string "nan", "inf" or "-inf"."""
        score = self.score if self.score is None or math.isfinite(self.score) else str(self.score)
        return {"seed": self.seed, "score": score, "kept": self.kept, "report": self.report.to_dict()}


def stderr_progress(line: str) -> None:
    """A ``progress`` callback that prints each line to stderr."""
    print(line, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- training
@torch.no_grad()
def evaluate_mse(policy: NanAwarePolicy, dem: np.ndarray | torch.Tensor, proprio: np.ndarray | torch.Tensor,
                 action: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-flipper mean squared error (n_out,) of ``policy`` on the samples, float64, evaluated in chunks."""
    dem, proprio, action = (torch.as_tensor(np.asarray(a, np.float32)) if not isinstance(a, torch.Tensor) else a
                            for a in (dem, proprio, action))
    total = torch.zeros(action.shape[1], dtype=torch.float64)
    for s in range(0, len(action), _EVAL_CHUNK):
        err = policy(dem[s:s + _EVAL_CHUNK], proprio[s:s + _EVAL_CHUNK]) - action[s:s + _EVAL_CHUNK]
        total += (err.double() ** 2).sum(dim=0)
    return (total / max(1, len(action))).numpy()


def _regression_loss(output: torch.Tensor, label: torch.Tensor, config: ImitationConfig,
                     weight: torch.Tensor | None = None) -> torch.Tensor:
    """The training loss of ``config.loss`` over a batch (module docstring, "The loss"); with ``weight`` (B,) the
    weighted mean of the samples' losses (each the mean over the targets), "Keyframes"."""
    functional = torch.nn.functional
    reduction = "mean" if weight is None else "none"
    if config.loss == "l1":
        loss = functional.l1_loss(output, label, reduction=reduction)
    elif config.loss == "huber":
        loss = functional.huber_loss(output, label, delta=config.huber_delta, reduction=reduction)
    else:
        loss = functional.mse_loss(output, label, reduction=reduction)
    if weight is None:
        return loss
    return (loss.mean(dim=1) * weight).sum() / weight.sum()


def keyframe_weights(proprio: torch.Tensor, action: torch.Tensor, keyframe_weight: float) -> torch.Tensor:
    """Each sample's weight in the loss: 1 + ``keyframe_weight`` x the mean |target - flipper angle| over the four
    flippers (radians; the state's angles are ``proprio[:, N_BODY:]``). The same for a sample and its mirror image,
    which swaps left and right in both."""
    gap = (action.double() - proprio[:, N_BODY:].double()).abs().mean(dim=1)
    return (1.0 + keyframe_weight * gap).to(torch.float32)


@dataclass
class _Prepared:
    """Checked arrays as tensors plus the split; shared by all candidates of ``train_candidates``."""

    dem: torch.Tensor
    proprio: torch.Tensor
    action: torch.Tensor
    train_idx: np.ndarray
    test_idx: np.ndarray
    split: str
    trajectories_train: int
    trajectories_test: int
    dem_nan_fraction: float


def _prepare(data: Data, config: ImitationConfig, split_seed: int) -> _Prepared:
    arrays = checked_arrays(data, config.policy)
    traj_id = arrays["traj_id"]
    train_idx, test_idx = split_by_trajectory(traj_id, config.test_fraction, np.random.default_rng(split_seed))
    single = len(np.unique(traj_id)) == 1
    return _Prepared(
        dem=torch.from_numpy(arrays["dem"]),
        proprio=torch.from_numpy(arrays["proprio"]),
        action=torch.from_numpy(arrays["action"]),
        train_idx=train_idx,
        test_idx=test_idx,
        split="time" if single else "trajectory",
        trajectories_train=len(np.unique(traj_id[train_idx])),
        trajectories_test=len(np.unique(traj_id[test_idx])),
        dem_nan_fraction=float(np.mean(~np.isfinite(arrays["dem"]))),
    )


def _check_seed(seed: object) -> int:
    if not (is_int(seed) and 0 <= seed < 2**63):
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return int(seed)


def _train_prepared(p: _Prepared, config: ImitationConfig, seed: int, progress: Progress | None,
                    on_epoch: EpochHook | None = None) -> tuple[NanAwarePolicy, TrainReport]:
    start = time.perf_counter()
    # initialise the weights from the seed without disturbing the caller's global torch RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = NanAwarePolicy(config.policy)
    gen = torch.Generator().manual_seed(seed)  # batch order and mirror choices
    policy.train()

    tr = torch.from_numpy(p.train_idx)
    dem, proprio, action = p.dem[tr], p.proprio[tr], p.action[tr]
    if config.mirror:
        # mirrored copies of the whole training set, made once; each batch picks per sample which one to use
        m_dem, m_proprio, m_action = (torch.from_numpy(a) for a in mirror_arrays(dem.numpy(), proprio.numpy(), action.numpy()))
    # computed from the clean angles: the flipper noise perturbs the input, not which samples are keyframes
    weight = keyframe_weights(proprio, action, config.keyframe_weight) if config.keyframe_weight > 0 else None
    n_train = len(tr)
    n_epoch = n_train if config.samples_per_epoch is None else min(n_train, config.samples_per_epoch)
    te = torch.from_numpy(p.test_idx)
    test = (p.dem[te], p.proprio[te], p.action[te])

    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    params = [q for q in policy.parameters() if q.requires_grad]
    steps = clipped = 0
    grad_norm_max = 0.0
    history: list[float] = []
    for epoch in range(1, config.epochs + 1):
        perm = torch.randperm(n_train, generator=gen)[:n_epoch]
        flip = torch.rand(n_epoch, generator=gen) < 0.5 if config.mirror else None
        loss_sum = 0.0
        for s in range(0, n_epoch, config.batch_size):
            idx = perm[s:s + config.batch_size]
            if flip is None:
                xb, pb, yb = dem[idx], proprio[idx], action[idx]
            else:
                f = flip[s:s + config.batch_size]
                xb = torch.where(f[:, None, None], m_dem[idx], dem[idx])
                pb = torch.where(f[:, None], m_proprio[idx], proprio[idx])
                yb = torch.where(f[:, None], m_action[idx], action[idx])
            if config.flipper_noise > 0:
                noise = torch.randn(len(idx), pb.shape[1] - N_BODY, generator=gen, dtype=pb.dtype) * config.flipper_noise
                pb = torch.cat([pb[:, :N_BODY], pb[:, N_BODY:] + noise], dim=1)
            loss = _regression_loss(policy(xb, pb), yb, config, None if weight is None else weight[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(params, config.grad_clip))
            loss_value = loss.item()
            if not (math.isfinite(norm) and math.isfinite(loss_value)):
                raise FloatingPointError(f"seed {seed}, epoch {epoch}: non-finite loss or gradient (loss {loss_value}, "
                                         f"gradient norm {norm}); lower lr")
            optimizer.step()
            steps += 1
            clipped += norm > config.grad_clip
            grad_norm_max = max(grad_norm_max, norm)
            loss_sum += loss_value * len(idx)
        history.append(loss_sum / n_epoch)
        if on_epoch is not None:
            on_epoch(seed, epoch, history[-1])
        if progress is not None and (epoch % config.log_every == 0 or epoch == config.epochs):
            test_mse = float(evaluate_mse(policy, *test).mean())
            progress(f"seed {seed}: epoch {epoch}/{config.epochs} train loss {history[-1]:.5f} test mse {test_mse:.5f} "
                     f"({time.perf_counter() - start:.1f} s)")

    policy.eval()  # safe: nn.Module.eval()
    per_flipper = evaluate_mse(policy, *test)
    train_mse = float(evaluate_mse(policy, dem, proprio, action).mean())
    baseline = ((test[2].double() - action.double().mean(dim=0)) ** 2).mean().item()
    test_mse = float(per_flipper.mean())
    report = TrainReport(
        seed=seed,
        samples_train=n_train,
        samples_test=len(te),
        trajectories_train=p.trajectories_train,
        trajectories_test=p.trajectories_test,
        split=p.split,
        train_loss=history[-1],
        train_mse=train_mse,
        test_mse=test_mse,
        test_rmse=math.sqrt(test_mse),
        test_rmse_per_flipper=[math.sqrt(v) for v in per_flipper.tolist()],
        baseline_test_mse=baseline,
        baseline_test_rmse=math.sqrt(baseline),
        epochs=config.epochs,
        steps=steps,
        seconds=time.perf_counter() - start,
        threads=torch.get_num_threads(),
        grad_clip=config.grad_clip,
        clipped_fraction=clipped / max(1, steps),
        grad_norm_max=grad_norm_max,
        dem_nan_fraction=p.dem_nan_fraction,
        loss_history=history,
        config=config.to_dict(),
    )
    return policy, report


def train_policy(data: Data, config: ImitationConfig | None = None, seed: int = 0,
                 progress: Progress | None = None, on_epoch: EpochHook | None = None) -> tuple[NanAwarePolicy, TrainReport]:
    """Train one ``NanAwarePolicy`` by imitation; returns (policy in eval mode, report).

    ``data`` is a ``TrajectoryDataset`` (its successful trajectories) or a mapping with ``dem`` (N, rows,
    cols; NaN allowed), ``proprio`` (N, 6), ``action`` (N, 4) and optionally ``traj_id`` (N,) (absent:
    one trajectory). Raises ``DatasetError`` when there are no samples, when proprio/action hold
    non-finite values or when the shapes do not fit ``config.policy``. Deterministic for a fixed
    ``seed`` and thread count (set ``torch.set_num_threads(1)`` before calling); ``progress`` receives
    a line every ``config.log_every`` epochs (``stderr_progress`` prints it); ``on_epoch(seed, epoch, loss)`` is
    called after every epoch (a progress bar's hook).
    """
    config = config or ImitationConfig()
    seed = _check_seed(seed)
    split_seed = seed if config.split_seed is None else config.split_seed
    return _train_prepared(_prepare(data, config, split_seed), config, seed, progress, on_epoch)


def train_candidates(data: Data, config: ImitationConfig | None = None, seeds: Sequence[int] = tuple(range(10)),
                     score_fn: Callable[[NanAwarePolicy], float] | None = None, keep: int = 2,
                     progress: Progress | None = None, on_epoch: EpochHook | None = None,
                     on_candidate: Callable[[Candidate], None] | None = None) -> list[Candidate]:
    """Train one policy per seed and rank them, best first; the ``keep`` best have ``kept=True``.

    With ``score_fn(policy) -> float`` (higher is better; seed 000 uses the simulated test-world score)
    candidates are ordered by score, ties by lower ``test_mse``, then lower seed; a NaN score ranks last.
    Without it they are ordered by ``test_mse``, then seed. The data is checked and split once; with
    ``config.split_seed`` set (the default) all candidates share the same test set. ``split_seed=None``
    splits with the first seed, for the same reason. ``progress`` receives the epoch lines of ``train_policy`` and
    one line per finished candidate; ``on_epoch`` is ``train_policy``'s hook; ``on_candidate`` receives each
    candidate when it is trained (and scored).
    """
    config = config or ImitationConfig()
    seeds = [_check_seed(s) for s in seeds]
    if not seeds:
        raise ValueError("train_candidates needs at least one seed")
    if len(set(seeds)) != len(seeds):
        duplicates = sorted({s for s in seeds if seeds.count(s) > 1})
        raise ValueError(f"train_candidates: duplicate seeds {duplicates} would train identical policies")
    if not (is_int(keep) and keep >= 1):
        raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
    prepared = _prepare(data, config, seeds[0] if config.split_seed is None else config.split_seed)
    candidates = []
    for seed in seeds:
        policy, report = _train_prepared(prepared, config, seed, progress, on_epoch)
        score = None
        if score_fn is not None:
            score = float(score_fn(policy))
            policy.eval()  # safe: nn.Module.eval(); the scorer must not leave it in training mode
        candidates.append(Candidate(seed=seed, policy=policy, report=report, score=score))
        if on_candidate is not None:
            on_candidate(candidates[-1])
        if progress is not None:
            extra = f", score {score:.4f}" if score is not None else ""
            progress(f"candidate seed {seed}: test mse {report.test_mse:.5f} (baseline {report.baseline_test_mse:.5f}){extra}, "
                     f"{report.seconds:.1f} s")

    def key(c: Candidate) -> tuple:
        if c.score is None:
            return (0, 0.0, c.report.test_mse, c.seed)
        nan = math.isnan(c.score)
        return (int(nan), 0.0 if nan else -c.score, c.report.test_mse, c.seed)

    candidates.sort(key=key)
    for c in candidates[:keep]:
        c.kept = True
    return candidates
