"""Training the DEM CycleGAN (seed 000 section VII, Algorithm 1 line 7) on unpaired simulated and real data.

Losses, per batch of simulated states x_s and real states x_r (each a DEM with its scalars):

- discriminators, pure GAN loss: D tells x_r (1) from G(x_s) (0), D_s tells x_s (1) from G_s(x_r) (0);
- discriminators, optionally (``r1``), the R1 penalty gamma / 2 x E|grad_x D(x)|^2 on real inputs (Mescheder et
  al. 2018): it keeps D from sharpening on single cells faster than G can follow;
- generators: the non-saturating adversarial term (D(G(x_s)) and D_s(G_s(x_r)) towards 1),
  + lambda_p x the distance to the input: mean |height difference| over the cells measured both in the input and
  in the output, and over the scalars -- a generator may hide or invent cells freely (that is its job), but must
  not move the heights it keeps. The default weight is low (0.1) because the gap itself moves heights: the
  proxy's flat ground reads 1-2 cm above the exact one (the highest of noisy returns, another robot height), and
  at lambda_p = 1 the pull of this L1 term (constant, whatever the size of the change) outweighed the
  discriminator's push, so G kept sim's ground level, which alone told its DEMs apart. At 0.1, G also moves the
  terrain: on same-pose proxy pairs the demo's G moves the heights it keeps by 4.4 cm on average (the proxy: 1.3
  cm) and lifts the cells beyond a drop's edge by 20-36 cm, which the unpaired height distance rewards (real DEMs
  seldom show a drop's bottom); on today's networks lambda_p = 1 cuts that to about 2 cm and 3 to a few
  millimetres, but the demo loop's policies scored lower with either (docs/sim2real_experiments.md, "G moves the
  terrain"). With ``height_offset`` (metres the real sensor reads above the simulator on the same ground; the caller
  knows it, e.g. ``flipper_control.learning.sensor_offset`` estimates it from the two unpaired sets) the target is
  input + offset for G and input - offset for G_s: held to it, G keeps the terrain at the sensor's level;
  + lambda_c x the cycle loss: L1 between G_s(G(x_s)) and x_s and between G(G_s(x_r)) and x_r over both channels and
  the scalars, as CycleGAN [10] defines it (the seed's printed formula puts the discriminators' losses on the cycled
  samples there, which does not tie a sample to its own cycle; we keep the reference definition). With
  ``cycle_skips_hidden`` the height term of the simulated cycle G_s(G(x_s)) counts only the cells G kept measured:
  a cell G hides, as the lidar would, has no height for G_s to recover, and counting it pushes G (through the
  mask's straight-through gradient) to hide fewer cells than real DEMs miss;
  + lambda_nan x the share of NaN cells G_s produces (simulated DEMs have none), measured softly on its raw mask;
  + lambda_nan_map x the mean over cells of (P(NaN) in G(x_s) - P(NaN) in the real training set)^2: the batch's
  per-cell share of cells G hides against the same map of the whole real training set (computed once). Both are
  statistics of one domain each, so the method stays unpaired; it is the transfer metric ``nan_map`` made a loss.
  Why: G hides about 5-10 % of the cells whatever the sensor misses (today's proxy about 10 %, a sparser lidar
  19-31 %), and the discriminator alone does not move it; part of that pull is the cycle's (a hidden cell has no
  height for G_s to give back). G's side is counted on its hard mask, so the forward value is the true share, and
  the gradient reaches the raw mask straight through. Squared, not absolute: the absolute gap's constant pull
  overshot the target by about half at weights 10-30. At 30 G hides what the sparser lidar misses, but the policies
  learnt on it scored lower, so it is off (docs/sim2real_experiments.md, "Another sensor");
  + lambda_task x the task-consistency term (policy-aware GAN, seed 000's future work; the task loss of
  RL-CycleGAN, Rao et al. 2020): the mean |pi(G(x_s)) - pi(x_s)| of a frozen task model pi (the policy), so that
  G changes what the lidar would change but not what the policy acts on. The target pi(x_s) is fixed (computed
  once, without gradient); the gradient reaches G through the heights and, straight through, the mask of G(x_s).

The task model is any frozen torch callable ``(heights, measured, scalars) -> actions``: ``heights`` (B, R, C) in
metres with 0 at missing cells, ``measured`` (B, R, C) 1 at measured and 0 at missing cells (exactly 0/1 forward,
with the straight-through gradient of G's mask backward), ``scalars`` (B, S) -> (B, A). Not a DEM with NaN: a NaN
carries no gradient, so a policy fed NaN could not tell G that hiding a cell changed its action. ``perception``
knows no policy; ``flipper_control`` passes its NaN-aware policy in this form. With a task model and lambda_task =
0 the term is only measured (the history's ``task``), and training is bit-identical to training without one.

G takes per-cell N(0, 1) noise (``GanConfig.noise_channels``, see ``perception.cyclegan``), drawn here from the
training generator, fresh for every pass (also for G in the cycle G(G_s(x_r))).

Adam with the CycleGAN defaults (lr 2e-4, betas 0.5, 0.999); gradients clipped. The data is split by trajectory
into training and held-out parts (the held-out part is what transfer metrics use). Every random choice comes from
generators seeded by ``seed``; a loss that turns non-finite stops training with ``GanDivergedError``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from perception.cyclegan import CycleGan, GanConfig, GeneratorOutput, encode, with_map_youth
from perception.map_clock import trajectory_ages
from sim.config_io import config_from_mapping, in_section

__all__ = ["GanData", "GanDivergedError", "GanTrainConfig", "GanTrainReport", "TaskModel", "gan_data", "split_by_trajectory",
           "task_inputs", "train_gan"]

# (heights m with 0 at missing cells, measured 1/0, scalars) -> actions; frozen, differentiable in its inputs
TaskModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class GanDivergedError(FloatingPointError):
    """A loss turned NaN or infinite: the generator is not to be used (the caller keeps its last good one)."""


@dataclass(frozen=True)
class GanTrainConfig:
    """Training settings; ``gan`` gives the networks' shapes (used when no CycleGAN is passed in to continue)."""

    epochs: int = 20
    batch_size: int = 64
    steps_per_epoch: int | None = None  # default: enough batches to see the larger of the two sets once
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lambda_p: float = 0.1  # distance to the input (low: see the module docstring)
    height_offset: float = 0.0  # metres the real sensor reads above the simulator on the same ground (module docstring)
    lambda_c: float = 10.0  # cycle consistency (CycleGAN's default)
    lambda_nan: float = 1.0  # NaN cells that G_s produces
    lambda_nan_map: float = 0.0  # (per-cell NaN share of G(x_s) - of the real set)^2 (module docstring); 0: off
    lambda_task: float = 0.0  # |task model's action on G(x_s) - on x_s| (policy-aware GAN; needs a task model)
    cycle_skips_hidden: bool = False  # the sim cycle's heights count only cells G kept (module docstring)
    r1: float = 1.0  # gamma of the R1 penalty on the discriminators' gradients at real inputs (0: none)
    grad_clip: float = 5.0
    test_fraction: float = 0.2  # trajectories held out of training, for the transfer metrics
    gan: GanConfig = field(default_factory=GanConfig)

    def __post_init__(self) -> None:
        if isinstance(self.gan, Mapping):
            object.__setattr__(self, "gan", in_section("gan", GanConfig.from_dict, dict(self.gan)))
        problems = []
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                problems.append(f"{name} must be an integer >= 1, got {v!r}")
        if self.steps_per_epoch is not None and not (isinstance(self.steps_per_epoch, int) and self.steps_per_epoch >= 1):
            problems.append(f"steps_per_epoch must be an integer >= 1 or null, got {self.steps_per_epoch!r}")
        if not (isinstance(self.height_offset, (int, float)) and not isinstance(self.height_offset, bool)
                and math.isfinite(self.height_offset) and abs(self.height_offset) <= 0.5):
            problems.append(f"height_offset must be a number of metres within +-0.5, got {self.height_offset!r}")
        for name in ("lr", "grad_clip"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                problems.append(f"{name} must be a positive number, got {getattr(self, name)!r}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{name} must lie in [0, 1), got {getattr(self, name)!r}")
        if not isinstance(self.cycle_skips_hidden, bool):
            problems.append(f"cycle_skips_hidden must be true or false, got {self.cycle_skips_hidden!r}")
        for name in ("lambda_p", "lambda_c", "lambda_nan", "lambda_nan_map", "lambda_task", "r1"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                problems.append(f"{name} must be a number >= 0, got {getattr(self, name)!r}")
        if not 0 < self.test_fraction < 1:
            problems.append(f"test_fraction must lie strictly between 0 and 1, got {self.test_fraction!r}")
        if not isinstance(self.gan, GanConfig):
            problems.append(f"gan must be a mapping of GanConfig fields, got {type(self.gan).__name__}")
        if problems:
            raise ValueError("GanTrainConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gan"] = self.gan.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GanTrainConfig:
        return config_from_mapping(cls, data, "GanTrainConfig")


# ------------------------------------------------------------------------------------------ data
@dataclass
class GanData:
    """States of one domain: DEMs (N, R, C) with NaN, scalars (N, S), the trajectory of each sample and its map's
    age (s since its trajectory's first state; default ``trajectory_ages`` of ``traj_id``)."""

    dems: np.ndarray
    scalars: np.ndarray
    traj_id: np.ndarray
    age: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.age is None:
            self.age = trajectory_ages(self.traj_id)

    def __len__(self) -> int:
        return len(self.dems)

    def subset(self, idx: np.ndarray) -> GanData:
        return GanData(self.dems[idx], self.scalars[idx], self.traj_id[idx], self.age[idx])


def gan_data(arrays: Mapping[str, np.ndarray], config: GanConfig, name: str) -> GanData:
    """``GanData`` from training arrays (``dem``, ``proprio``, optional ``traj_id``, as ``TrajectoryDataset.arrays``
    gives them), checked: ``name`` (e.g. "--real data/x.safetensors") names the set in every message."""
    dem, proprio = np.asarray(arrays["dem"], dtype=np.float32), np.asarray(arrays["proprio"], dtype=np.float32)
    n = len(dem)
    traj_id = np.asarray(arrays.get("traj_id", np.zeros(n, np.int64)))
    if n == 0:
        raise ValueError(f"{name}: no samples (a dataset of failed trajectories only?)")
    if dem.shape[1:] != tuple(config.dem_shape):
        raise ValueError(f"{name}: DEMs of {dem.shape[1]} x {dem.shape[2]} cells, the GAN's are "
                         f"{config.dem_shape[0]} x {config.dem_shape[1]} (sim and real data must share one DEM geometry)")
    if proprio.shape != (n, config.n_scalars) or traj_id.shape != (n,):
        raise ValueError(f"{name}: proprio {proprio.shape} / traj_id {traj_id.shape} do not fit {n} DEMs with "
                         f"{config.n_scalars} scalars each")
    if not np.isfinite(proprio).all():
        bad = int((~np.isfinite(proprio)).any(axis=1).sum())
        raise ValueError(f"{name}: non-finite pitch, roll or flipper angles in {bad} samples")
    finite = np.isfinite(dem)
    if not finite.any():
        raise ValueError(f"{name}: no measured cell in any DEM (all NaN): nothing to learn from")
    if np.isinf(dem).any() or (np.abs(np.where(finite, dem, 0.0)) > 10.0).any():
        raise ValueError(f"{name}: DEM heights beyond 10 m or infinite: not a DEM relative to base_link")
    return GanData(dem, proprio, traj_id)


def domain_warnings(sim: GanData, real: GanData) -> list[str]:
    """What looks wrong about a (simulated, real) pair of sets without being an error: exact simulated DEMs miss no
    cell and lidar-built ones miss some, so a simulated set missing more cells than the real one was most likely
    given in the other's place, and a real set missing none gives G no NaN to learn (a DEM builder that fills its
    holes, or simulated data)."""
    sim_nan, real_nan = float(np.isnan(sim.dems).mean()), float(np.isnan(real.dems).mean())
    shares = f"{100 * sim_nan:.1f} % of the simulated cells, {100 * real_nan:.1f} % of the real ones missing"
    if sim_nan > real_nan:
        return [f"the simulated set misses more cells than the real one ({shares}): were --sim and --real swapped?"]
    if real_nan == 0.0:
        return [f"the real set misses no cell ({shares}): G can learn no NaN from it (simulated data, or a DEM "
                "builder that fills its holes?)"]
    return []


def split_by_trajectory(data: GanData, test_fraction: float, rng: np.random.Generator) -> tuple[GanData, GanData]:
    """(train, held-out): whole trajectories on one side (consecutive states are nearly equal, so a per-sample
    split would leak); with one trajectory, the last ``test_fraction`` of its samples are held out."""
    ids = np.unique(data.traj_id)
    if len(ids) == 1:
        n_test = max(1, round(test_fraction * len(data)))
        cut = len(data) - n_test
        return data.subset(np.arange(cut)), data.subset(np.arange(cut, len(data)))
    order = rng.permutation(ids)
    n_test = max(1, round(test_fraction * len(ids)))
    test = np.isin(data.traj_id, order[:n_test])
    return data.subset(np.flatnonzero(~test)), data.subset(np.flatnonzero(test))


# ------------------------------------------------------------------------------------------ losses
def _distance_to_input(inp: torch.Tensor, inp_scalars: torch.Tensor, out: GeneratorOutput,
                       offset: float = 0.0) -> torch.Tensor:
    """Mean |height change - offset| over cells measured in both input and output (``offset`` in the channels'
    units: the change the sensor itself makes), plus mean |scalar change|."""
    both = ((inp[:, 1] > 0) & (out.channels[:, 1].detach() > 0)).to(inp.dtype)
    heights = (torch.abs(out.channels[:, 0] - inp[:, 0] - offset) * both).sum() / both.sum().clamp(min=1.0)
    return heights + torch.abs(out.scalars - inp_scalars).mean()


def _cycle(inp: torch.Tensor, inp_scalars: torch.Tensor, back: GeneratorOutput,
           kept: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between a cycled sample and its input over both channels and the scalars; with ``kept`` (shape (B, R, C):
    1 where the first generator kept the cell measured, 0 where it hid it) the height channel counts only kept cells."""
    error = torch.abs(back.channels - inp)
    if kept is None:
        channels = error.mean()
    else:  # the same normalisation as the plain mean, so the two differ only in the hidden cells' terms
        channels = ((error[:, 0] * kept).sum() + error[:, 1].sum()) / error.numel()
    return channels + torch.abs(back.scalars - inp_scalars).mean()


def task_inputs(channels: torch.Tensor, height_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoded (B, 2, R, C) channels -> what a task model takes: heights in metres (0 at missing cells, as the
    channels hold them) and the measured mask 1/0 (from the +-1 mask channel, keeping its gradient)."""
    return channels[:, 0] * height_scale, (channels[:, 1] + 1.0) / 2.0


def _task_actions(task_model: TaskModel, channels: torch.Tensor, scalars: torch.Tensor, height_scale: float) -> torch.Tensor:
    actions = task_model(*task_inputs(channels, height_scale), scalars)
    if actions.ndim != 2 or actions.shape[0] != channels.shape[0]:
        raise ValueError(f"the task model must return (batch, actions), got {tuple(actions.shape)} for a batch of "
                         f"{channels.shape[0]}")
    return actions


def _gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))


# ------------------------------------------------------------------------------------------ training
@dataclass
class GanTrainReport:
    """Losses per epoch (means over the epoch's batches) and what the run saw."""

    epochs: int
    steps: int
    samples_sim: int
    samples_real: int
    seconds: float
    history: dict[str, list[float]]
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LOSS_NAMES = ("d", "d_s", "g_adv", "g_s_adv", "distance", "cycle", "nan_share_g_s", "nan_share_g")


def train_gan(sim: GanData, real: GanData, config: GanTrainConfig | None = None, seed: int = 0,
              gan: CycleGan | None = None,
              on_epoch: Callable[[int, dict[str, float]], None] | None = None,
              on_step: Callable[[int, int], None] | None = None,
              task_model: TaskModel | None = None) -> tuple[CycleGan, GanTrainReport]:
    """Train (or continue training ``gan``) on the two sets; returns the CycleGAN in eval mode and the report.

    ``on_epoch(epoch, mean losses)`` and ``on_step(step, steps)`` are progress hooks. ``task_model`` (see the module
    docstring) adds lambda_task x |task_model(G(x_s)) - task_model(x_s)| to G's loss, and ``task`` (that mean
    difference, in the model's action units) to the history; ``config.lambda_task`` > 0 needs one. Deterministic
    for a seed and thread count. Raises ``GanDivergedError`` when a loss turns non-finite.
    """
    config = config or GanTrainConfig()
    if config.lambda_task > 0 and task_model is None:
        raise ValueError(f"GanTrainConfig: lambda_task = {config.lambda_task} needs a task model (the policy whose "
                         "actions G must keep), none was given")
    gan = gan if gan is not None else _fresh(config.gan, seed)
    gc = gan.config
    if gan.config.dem_shape != tuple(sim.dems.shape[1:]) or gan.config.dem_shape != tuple(real.dems.shape[1:]):
        raise ValueError(f"the GAN works on {gc.dem_shape} DEMs; sim has {sim.dems.shape[1:]}, real {real.dems.shape[1:]}")
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    xs, ss = encode(torch.from_numpy(sim.dems), torch.from_numpy(with_map_youth(sim.scalars, gc, sim.age)), gc.height_scale)
    xr, sr = encode(torch.from_numpy(real.dems), torch.from_numpy(with_map_youth(real.scalars, gc, real.age)),
                    gc.height_scale)
    opt_g = torch.optim.Adam([*gan.g.parameters(), *gan.g_s.parameters()], lr=config.lr, betas=(config.beta1, config.beta2))
    opt_d = torch.optim.Adam([*gan.d.parameters(), *gan.d_s.parameters()], lr=config.lr, betas=(config.beta1, config.beta2))
    steps = config.steps_per_epoch or max(1, math.ceil(max(len(sim), len(real)) / config.batch_size))
    names = LOSS_NAMES + (("nan_map",) if config.lambda_nan_map > 0 else ()) + (("task",) if task_model is not None else ())
    # the real training set's per-cell NaN share, the target of lambda_nan_map (one domain's statistic: unpaired)
    real_nan_map = (xr[:, 1] < 0).to(xr.dtype).mean(dim=0) if config.lambda_nan_map > 0 else None
    history: dict[str, list[float]] = {name: [] for name in names}
    targets = None
    if task_model is not None:  # pi(x_s): fixed targets, once for the whole set (the model is frozen)
        with torch.no_grad():
            targets = torch.cat([_task_actions(task_model, xs[i:i + 1024], ss[i:i + 1024, :gc.n_scalars], gc.height_scale)
                                 for i in range(0, len(xs), 1024)])
    gan.train()
    for epoch in range(1, config.epochs + 1):
        sums = dict.fromkeys(names, 0.0)
        for step in range(steps):
            i_s = torch.randint(len(sim), (config.batch_size,), generator=gen)
            i_r = torch.randint(len(real), (config.batch_size,), generator=gen)
            losses = _step(gan, config, opt_g, opt_d, xs[i_s], ss[i_s], xr[i_r], sr[i_r], gen,
                           None if targets is None else (task_model, targets[i_s]), real_nan_map)
            for name, value in losses.items():
                sums[name] += value
            if on_step is not None:
                on_step((epoch - 1) * steps + step + 1, config.epochs * steps)
        means = {name: v / steps for name, v in sums.items()}
        for name, v in means.items():
            history[name].append(v)
        if on_epoch is not None:
            on_epoch(epoch, means)
    gan.eval()  # safe: nn.Module.eval()
    report = GanTrainReport(epochs=config.epochs, steps=config.epochs * steps, samples_sim=len(sim), samples_real=len(real),
                            seconds=time.perf_counter() - start, history=history, config=config.to_dict())
    return gan, report


def _fresh(config: GanConfig, seed: int) -> CycleGan:
    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's global torch RNG
        torch.manual_seed(seed)
        return CycleGan(config)


def _noise(gan: CycleGan, batch: int, gen: torch.Generator) -> torch.Tensor | None:
    """Fresh N(0, 1) planes for G's noise input, from the training generator (None for a deterministic G)."""
    n = gan.g.noise_channels
    return torch.randn(batch, n, *gan.config.dem_shape, generator=gen) if n else None


def _step(gan: CycleGan, c: GanTrainConfig, opt_g, opt_d, xs, ss, xr, sr, gen: torch.Generator,
          task: tuple[TaskModel, torch.Tensor] | None = None,
          real_nan_map: torch.Tensor | None = None) -> dict[str, float]:
    """One generator update and one discriminator update; returns the batch's losses. ``task``: the task model and
    its actions on this batch's x_s; ``real_nan_map``: the real set's (R, C) NaN shares, with lambda_nan_map > 0."""
    # generators
    fake_r, fake_s = gan.g(xs, ss, _noise(gan, len(xs), gen)), gan.g_s(xr, sr)
    adv = _gan_loss(gan.d(fake_r.channels, fake_r.scalars), True)
    adv_s = _gan_loss(gan.d_s(fake_s.channels, fake_s.scalars), True)
    offset = c.height_offset / gan.config.height_scale  # G moves kept heights up by it, G_s down
    distance = _distance_to_input(xs, ss, fake_r, offset) + _distance_to_input(xr, sr, fake_s, -offset)
    kept = (fake_r.channels[:, 1].detach() > 0).to(xs.dtype) if c.cycle_skips_hidden else None
    cycle = (_cycle(xs, ss, gan.g_s(fake_r.channels, fake_r.scalars), kept)
             + _cycle(xr, sr, gan.g(fake_s.channels, fake_s.scalars, _noise(gan, len(xr), gen))))
    nan_share = ((1.0 - torch.tanh(fake_s.raw_mask)) / 2.0).mean()
    loss_g = adv + adv_s + c.lambda_p * distance + c.lambda_c * cycle + c.lambda_nan * nan_share
    nan_map_gap = None
    if real_nan_map is not None:  # 1 where G hides a cell: exact forward, the mask's straight-through gradient back
        nan_map_gap = (((1.0 - fake_r.channels[:, 1]) / 2.0).mean(dim=0) - real_nan_map).pow(2).mean()
        loss_g = loss_g + c.lambda_nan_map * nan_map_gap
    task_gap = None
    if task is not None:
        model, target = task
        robot = ss[:, :gan.config.n_scalars]  # the policy takes the robot's scalars, not the map's youth
        if c.lambda_task > 0:
            task_gap = torch.abs(_task_actions(model, fake_r.channels, robot, gan.config.height_scale) - target).mean()
            loss_g = loss_g + c.lambda_task * task_gap
        else:  # measured only: no graph, so the update is the one without a task model, bit for bit
            with torch.no_grad():
                task_gap = torch.abs(_task_actions(model, fake_r.channels, robot, gan.config.height_scale) - target).mean()
    _check_finite(loss_g, "generator loss")
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    torch.nn.utils.clip_grad_norm_([*gan.g.parameters(), *gan.g_s.parameters()], c.grad_clip)
    opt_g.step()
    # discriminators (pure GAN loss, plus the R1 penalty), on the generators' outputs of this step
    if c.r1:
        xr, xs = xr.detach().requires_grad_(True), xs.detach().requires_grad_(True)
    real_r, real_s = gan.d(xr, sr), gan.d_s(xs, ss)
    loss_d = 0.5 * (_gan_loss(real_r, True) + _gan_loss(gan.d(fake_r.channels.detach(), fake_r.scalars.detach()), False))
    loss_d_s = 0.5 * (_gan_loss(real_s, True) + _gan_loss(gan.d_s(fake_s.channels.detach(), fake_s.scalars.detach()), False))
    _check_finite(loss_d + loss_d_s, "discriminator loss")
    penalty = torch.zeros(())
    if c.r1:  # gradients w.r.t. the channels (the scalars are the robot's measurements, the same in both domains)
        grads = torch.autograd.grad([real_r.sum(), real_s.sum()], [xr, xs], create_graph=True)
        penalty = 0.5 * c.r1 * sum(g.pow(2).flatten(1).sum(1).mean() for g in grads)
    opt_d.zero_grad(set_to_none=True)
    (loss_d + loss_d_s + penalty).backward()
    torch.nn.utils.clip_grad_norm_([*gan.d.parameters(), *gan.d_s.parameters()], c.grad_clip)
    opt_d.step()
    losses = {"d": loss_d.item(), "d_s": loss_d_s.item(), "g_adv": adv.item(), "g_s_adv": adv_s.item(),
              "distance": distance.item(), "cycle": cycle.item(),
              "nan_share_g_s": float((fake_s.channels[:, 1] < 0).float().mean()),
              "nan_share_g": float((fake_r.channels[:, 1] < 0).float().mean())}
    if nan_map_gap is not None:
        losses["nan_map"] = nan_map_gap.item()
    if task_gap is not None:
        losses["task"] = task_gap.item()
    return losses


def _check_finite(loss: torch.Tensor, what: str) -> None:
    if not torch.isfinite(loss):
        raise GanDivergedError(f"the CycleGAN's {what} turned {loss.item()}; lower lr or the lambdas")
