"""The sim<->real CycleGAN on DEMs of seed 000 (section VII, Fig. 4 and 5): networks and checkpoints. Pure torch,
no ROS; training is in ``perception.gan_training``, the sim -> real transform in ``perception.sim_to_real``.

Representation (Fig. 5). A DEM (rows x cols, NaN where the real lidar saw nothing) and its scalars (pitch,
roll, four flipper angles) enter every network as two channels -- heights with NaN -> 0 (divided by
``height_scale``) and a mask of -1 at NaN cells, +1 elsewhere -- while the scalars skip the convolutions and join
at the fully connected layer.

Generators G (sim -> real) and G_s (real -> sim): size-keeping convolutions with Leaky ReLU, then one fully
connected layer that sees the features, the scalars and a skip connection of the whole input, and outputs the two
channels and the scalars again. The skip part of that layer starts as the identity and the rest at zero, so a
fresh generator is exactly the identity (the paper's initial guess: change the data as little as possible).

Noise input. A deterministic G maps every exact, noise-free patch of flat ground to one and the same output, so it
can only paint a fixed pattern where the lidar leaves random texture (per-cell noise, which cell stays empty); a
two-sample test finds that pattern at once. G therefore also takes ``noise_channels`` planes of N(0, 1) noise,
one number per cell, into its convolutions and its fully connected layer (G_s, towards the noise-free simulator,
takes none). The layer's weights on the noise start at zero like the rest of the non-skip part, so a fresh G is
still exactly the identity whatever the noise. ``sim_to_real.SimToReal`` derives the noise of each DEM from a hash of the DEM,
its scalars and a seed: the same input gives the same output in any batch, order, worker or call.

The mask is discrete. A generator outputs a real number per cell; the cell is NaN where it is negative. In
training, the discriminators and the cycle see the hard mask (exactly -1 or +1, with the heights of NaN cells set
to 0, as in real data -- a soft mask would tell fakes apart by itself), while gradients flow as if the mask were
``tanh`` of that number: the straight-through estimator.

Occlusion hint. Where the lidar sees nothing is mostly geometry: the cells behind a stair nosing going down or
behind a step stand in the shadow of the terrain in front of them, seen from the mast. That is a long-range,
max-like function of a whole column of heights, which a few 3 x 3 convolutions and one linear layer cannot form,
so G learns how *many* cells go NaN but not *which* (at the same pose its NaN F1 was 0.1). With
``occlusion_hint`` G also takes one plane of ``domain_randomization.geometric_occlusion`` of its input (1 where
the terrain hides the cell from the nominal mount turned by the DEM's pitch, 0 elsewhere), computed without
gradient. Its weights start at zero like the noise's, so a fresh G is still the identity; G learns how far to trust
the hint. G_s takes no hint. Off by default: it improved G's NaN placement on same-pose pairs (F1 0.12 -> 0.21) but
not the proxy scores of the policies learnt through G, and it costs 0.2 ms per DEM
(docs/sim2real_experiments.md, "The occlusion hint").

The map's age. A run's point map begins when the run does, so for its first seconds the lidar has not yet seen the
ground behind the robot (on the proxy's runs rows 14-19 miss 94 % of their cells in the first two seconds, 4 % from
the fifth on), and one DEM does not show how long its map has been growing. With ``map_age_s`` > 0 every network
takes one more scalar after the robot's: the map's youth, ``MAP_YOUTH_SCALE`` x (1 - min(age, map_age_s) /
map_age_s), where the age is the time since the run's first DEM. It is 0 on a map older than ``map_age_s``, so a G
with the input behaves there as one without, and it is large at the start because Adam moves each weight by about
its learning rate per step: at 1, G's 300 steps of one loop update could not move the mask of the rows behind the
robot from +1 (seen) to NaN. The datasets count the age in control periods from each trajectory's first state;
``map_youth`` gives the scalar, ``with_map_youth`` appends it. Off by default (docs/sim2real_experiments.md, "The
map's age as G's input").

Discriminators D (real or G(sim)?) and D_s (sim or G_s(real)?): the same convolutions, a hidden fully connected
layer and one logit; pure GAN loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from perception.domain_randomization import geometric_occlusion
from sim.checkpoint_io import load_module, save_module
from sim.config_io import config_from_mapping, is_int

__all__ = ["LEGACY_FIELDS", "MAP_YOUTH_SCALE", "CycleGan", "Discriminator", "GanConfig", "Generator", "GeneratorOutput",
           "decode", "encode", "hint_plane", "load_gan", "map_youth", "save_gan", "with_map_youth", "youth_of"]

# A bound on what a config (or a checkpoint's sidecar) may ask for: building the networks allocates the weights.
MAX_PARAMETERS = 20_000_000
# the map's youth at the first DEM of a run (module docstring: large enough for one loop update to learn from)
MAP_YOUTH_SCALE = 32.0
# the longest map age that may matter (s): a fresh map fills in within seconds
MAX_MAP_AGE_S = 600.0


@dataclass(frozen=True)
class GanConfig:
    """Shapes and sizes of the four networks. ``dem_shape`` and ``n_scalars`` must match the data (20 x 5 DEMs,
    pitch + roll + 4 flipper angles); ``height_scale`` (m) maps heights to network units."""

    dem_shape: tuple[int, int] = (20, 5)
    n_scalars: int = 6
    channels: int = 16  # of every convolution
    conv_layers: int = 3  # size-keeping convolutions before the fully connected layer
    kernel: int = 3  # odd: "same" padding
    negative_slope: float = 0.2  # Leaky ReLU
    # m per unit inside the networks. 1/8 (was 1/2): the sim-to-real gap is centimetres (the lidar's upward bias,
    # noise), which at 1/2 are 0.02 units -- too weak a signal for D and too fine a change for G's Adam steps; the
    # terrain's +-0.5 m are still only +-4 units. A power of two, so that encode/decode are exact (a fresh G bit-exact)
    height_scale: float = 0.125
    disc_hidden: int = 64  # hidden units of the discriminators' fully connected layer
    noise_channels: int = 1  # planes of per-cell N(0, 1) noise into G (0: a deterministic G, as before this field)
    occlusion_hint: bool = False  # G also sees which cells the terrain hides from the lidar (module docstring: off,
    # measured not to help the policy)
    map_age_s: float = 0.0  # > 0: every network also sees the map's youth over this many seconds (module docstring)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dem_shape", tuple(self.dem_shape))
        problems = []
        if len(self.dem_shape) != 2 or not all(is_int(n) and n >= 1 for n in self.dem_shape):
            problems.append(f"dem_shape must be two positive integers, got {self.dem_shape}")
        for name in ("n_scalars", "channels", "conv_layers", "disc_hidden"):
            if not (is_int(getattr(self, name)) and getattr(self, name) >= 1):
                problems.append(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not (is_int(self.noise_channels) and 0 <= self.noise_channels <= 8):
            problems.append(f"noise_channels must be an integer in [0, 8], got {self.noise_channels!r}")
        if not isinstance(self.occlusion_hint, bool):
            problems.append(f"occlusion_hint must be true or false, got {self.occlusion_hint!r}")
        if not (isinstance(self.map_age_s, (int, float)) and not isinstance(self.map_age_s, bool)
                and math.isfinite(self.map_age_s) and 0 <= self.map_age_s <= MAX_MAP_AGE_S):
            problems.append(f"map_age_s must be a number of seconds in [0, {MAX_MAP_AGE_S:g}] (0: no map-age input), got "
                            f"{self.map_age_s!r}")
        if not (is_int(self.kernel) and self.kernel >= 1 and self.kernel % 2 == 1):
            problems.append(f"kernel must be an odd integer >= 1, got {self.kernel!r}")
        if not (math.isfinite(self.negative_slope) and 0 <= self.negative_slope < 1):
            problems.append(f"negative_slope must lie in [0, 1), got {self.negative_slope!r}")
        if not (math.isfinite(self.height_scale) and self.height_scale > 0):
            problems.append(f"height_scale must be a positive number of metres, got {self.height_scale!r}")
        if not problems and self.parameter_count() > MAX_PARAMETERS:
            problems.append(f"{self.parameter_count():,} parameters is more than a DEM CycleGAN needs (at most "
                            f"{MAX_PARAMETERS:,}); lower channels, conv_layers or disc_hidden")
        if problems:
            raise ValueError("GanConfig: " + "; ".join(problems))

    @property
    def cells(self) -> int:
        return self.dem_shape[0] * self.dem_shape[1]

    @property
    def scalar_width(self) -> int:
        """Scalars the networks take: the robot's ``n_scalars``, then the map's youth when ``map_age_s`` > 0."""
        return self.n_scalars + int(self.map_age_s > 0)

    @property
    def width(self) -> int:
        """Length of a flat state: two channels of cells, then the networks' scalars."""
        return 2 * self.cells + self.scalar_width

    def parameter_count(self) -> int:
        """Weights and biases of the four networks, computed without building them."""
        c, k = self.channels, self.kernel

        def convs(in_ch: int) -> int:
            return (in_ch * c * k * k + c) + (self.conv_layers - 1) * (c * c * k * k + c)

        features = c * self.cells + self.scalar_width

        def generator(extra: int) -> int:  # extra input planes: noise and hint
            return convs(2 + extra) + (features + self.width + extra * self.cells) * self.width + self.width

        discriminator = convs(2) + features * self.disc_hidden + self.disc_hidden + self.disc_hidden + 1
        return generator(self.noise_channels + int(self.occlusion_hint)) + generator(0) + 2 * discriminator

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dem_shape"] = list(self.dem_shape)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GanConfig:
        return config_from_mapping(cls, data, "GanConfig")


# fields a checkpoint's sidecar may lack, with the value that gives the architecture it was written with
LEGACY_FIELDS = {"noise_channels": 0, "occlusion_hint": False, "map_age_s": 0.0}


class _SavedGanConfig:
    """``GanConfig`` as read from a checkpoint's sidecar: one written before ``noise_channels`` existed holds a
    deterministic G, so a missing field means 0 there (a YAML config that omits it gets the default, 1); likewise
    a missing ``occlusion_hint`` means a G without the hint plane."""

    @staticmethod
    def from_dict(data: dict[str, Any]) -> GanConfig:
        if isinstance(data, dict):
            data = {**LEGACY_FIELDS, **data}
        return GanConfig.from_dict(data)


# ------------------------------------------------------------------------------------------ representation
def encode(dem: torch.Tensor, scalars: torch.Tensor, height_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, R, C) DEMs with NaN and (B, S) scalars -> (B, 2, R, C) channels (heights / scale with NaN -> 0, mask
    -1 at NaN and +1 elsewhere) and the scalars."""
    measured = ~torch.isnan(dem)
    heights = torch.where(measured, dem, torch.zeros_like(dem)) / height_scale
    mask = measured.to(dem.dtype) * 2.0 - 1.0
    return torch.stack([heights, mask], dim=1), scalars


def decode(channels: torch.Tensor, height_scale: float) -> torch.Tensor:
    """(B, 2, R, C) channels -> (B, R, C) DEMs in metres with NaN where the mask channel is negative."""
    return torch.where(channels[:, 1] >= 0, channels[:, 0] * height_scale, torch.full_like(channels[:, 0], math.nan))


def _hard_mask(raw: torch.Tensor) -> torch.Tensor:
    """Straight-through mask: exactly -1 or +1 forward, the gradient of tanh backward (see module docstring)."""
    soft = torch.tanh(raw)
    hard = torch.where(raw >= 0, torch.ones_like(raw), -torch.ones_like(raw))
    return hard + soft - soft.detach()


def hint_plane(dems: np.ndarray, scalars: np.ndarray) -> torch.Tensor:
    """G's occlusion hint for (B, R, C) DEMs in metres with NaN and their (B, S) scalars (pitch first): (B, 1, R, C)
    float32, 1 where the terrain hides the cell from the lidar (``geometric_occlusion``), 0 elsewhere."""
    hidden = geometric_occlusion(dems, np.asarray(scalars[:, 0], dtype=np.float64))
    return torch.from_numpy(hidden.astype(np.float32)[:, None])


def map_youth(age_s: np.ndarray | None, n: int, horizon_s: float) -> np.ndarray:
    """The map's youth of ``n`` DEMs whose maps are ``age_s`` (n,) seconds old: (n, 1) float32, ``MAP_YOUTH_SCALE``
    at age 0 falling linearly to 0 at ``horizon_s`` and beyond. ``age_s`` None means maps older than the horizon
    (the steady state: 0). A negative or non-finite age is a ValueError."""
    if age_s is None:
        return np.zeros((n, 1), np.float32)
    age = np.asarray(age_s, dtype=np.float64).reshape(-1)
    if age.shape != (n,):
        raise ValueError(f"map age: {n} DEMs need {n} ages, got shape {np.shape(age_s)}")
    if not (np.isfinite(age).all() and (age >= 0).all()):
        raise ValueError(f"map age: ages must be finite seconds >= 0, got {age[~(np.isfinite(age) & (age >= 0))][:3]}")
    return youth_of(age, horizon_s).astype(np.float32)[:, None]


def youth_of(age_s, horizon_s: float):
    """The youth formula alone, for checked ages: a number or an array of seconds, the same kind out."""
    return MAP_YOUTH_SCALE * (1.0 - np.minimum(age_s, horizon_s) / horizon_s)


def with_map_youth(scalars: np.ndarray, config: GanConfig, age_s: np.ndarray | None) -> np.ndarray:
    """(N, n_scalars) robot scalars -> the (N, scalar_width) scalars the networks of ``config`` take: the same array
    without a map-age input, else with the map's youth (``map_youth``) appended."""
    scalars = np.asarray(scalars, dtype=np.float32)
    if config.map_age_s <= 0:
        return scalars
    return np.concatenate([scalars, map_youth(age_s, len(scalars), config.map_age_s)], axis=1)


def _conv_stack(config: GanConfig, in_ch: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(config.conv_layers):
        layers += [nn.Conv2d(in_ch, config.channels, config.kernel, padding=config.kernel // 2),
                   nn.LeakyReLU(config.negative_slope)]
        in_ch = config.channels
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------------------ networks
class GeneratorOutput(NamedTuple):
    channels: torch.Tensor  # (B, 2, R, C): heights / scale (0 at NaN), hard mask (-1 NaN, +1 measured)
    scalars: torch.Tensor  # (B, S)
    raw_mask: torch.Tensor  # (B, R, C): negative = NaN; what the NaN penalty of G_s acts on


class Generator(nn.Module):
    """G or G_s (Fig. 5): convolutions on the two channels (and ``noise_channels`` noise planes, and the occlusion
    hint plane), one fully connected layer over the features, the scalars, the noise, the hint and a skip of the
    whole input; identity at initialisation, whatever the noise. ``noise_channels`` and ``occlusion_hint`` default
    to the config's (G); G_s is built with neither."""

    def __init__(self, config: GanConfig, noise_channels: int | None = None, occlusion_hint: bool | None = None):
        super().__init__()
        self.config = config
        self.noise_channels = config.noise_channels if noise_channels is None else int(noise_channels)
        self.occlusion_hint = config.occlusion_hint if occlusion_hint is None else bool(occlusion_hint)
        extra = self.noise_channels + int(self.occlusion_hint)
        self.convs = _conv_stack(config, 2 + extra)
        features = config.channels * config.cells + config.scalar_width
        self.fc = nn.Linear(features + extra * config.cells + config.width, config.width)
        with torch.no_grad():  # identity: the skip part passes the input through, the rest starts at zero
            self.fc.weight.zero_()
            self.fc.bias.zero_()
            self.fc.weight[:, features + extra * config.cells:] = torch.eye(config.width)

    def hint(self, channels: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        """(B, 1, R, C): 1 where the terrain of the input hides the cell from the lidar, 0 elsewhere (no gradient;
        the pitch is the first scalar)."""
        with torch.no_grad():
            dems = decode(channels.detach(), self.config.height_scale).numpy()
            return hint_plane(dems, scalars.detach().numpy())

    def raw(self, planes: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        """The fully connected layer's output (B, 2 * cells + S) for the stacked input planes (B, 2 + extra, R, C):
        the two channels, then the noise planes, then the hint. Heights / scale, then the real-valued mask (negative
        = NaN), then the scalars; ``forward`` and the one-DEM path of ``SimToReal`` share it."""
        b = planes.shape[0]
        channels, extra = planes[:, :2], planes[:, 2:]
        return self.fc(torch.cat([self.convs(planes).reshape(b, -1), scalars, extra.reshape(b, -1),
                                  channels.reshape(b, -1), scalars], dim=1))

    def forward(self, channels: torch.Tensor, scalars: torch.Tensor, noise: torch.Tensor | None = None,
                hint: torch.Tensor | None = None) -> GeneratorOutput:
        """(B, 2, R, C), (B, S) and noise (B, noise_channels, R, C) -> the output channels, scalars and real-valued
        mask. The channels' mask is the straight-through hard mask and their heights are 0 where it says NaN, as in
        encoded real data. ``noise`` None means zeros: G's noise-free mean behaviour (figures, old callers).
        ``hint`` (B, 1, R, C) is the occlusion hint if the caller has it already (``hint_plane`` of the DEMs);
        None computes it from ``channels``."""
        b = channels.shape[0]
        rows, cols = self.config.dem_shape
        planes = [channels]  # the input planes, in the order of the fully connected layer's columns
        if self.noise_channels:
            if noise is None:
                noise = channels.new_zeros(b, self.noise_channels, rows, cols)
            elif noise.shape != (b, self.noise_channels, rows, cols):
                raise ValueError(f"Generator: noise must have shape {(b, self.noise_channels, rows, cols)}, got "
                                 f"{tuple(noise.shape)}")
            planes.append(noise)
        if self.occlusion_hint:
            planes.append(self.hint(channels, scalars) if hint is None else hint)
        out = self.raw(torch.cat(planes, dim=1) if len(planes) > 1 else channels, scalars)
        cells = self.config.cells
        heights, raw_mask = out[:, :cells].reshape(b, rows, cols), out[:, cells:2 * cells].reshape(b, rows, cols)
        mask = _hard_mask(raw_mask)
        heights = heights * (mask + 1.0) / 2.0  # 0 at NaN cells, forward exactly; gradient through the mask's tanh
        return GeneratorOutput(torch.stack([heights, mask], dim=1), out[:, 2 * cells:], raw_mask)


class Discriminator(nn.Module):
    """D or D_s: the same convolutions, a hidden fully connected layer, one logit (real = positive)."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.config = config
        self.convs = _conv_stack(config)
        features = config.channels * config.cells + config.scalar_width
        self.head = nn.Sequential(nn.Linear(features, config.disc_hidden), nn.LeakyReLU(config.negative_slope),
                                  nn.Linear(config.disc_hidden, 1))

    def forward(self, channels: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        b = channels.shape[0]
        return self.head(torch.cat([self.convs(channels).reshape(b, -1), scalars], dim=1)).squeeze(1)


class CycleGan(nn.Module):
    """The four networks of Fig. 4 in one module, so that one checkpoint holds a training state to continue."""

    def __init__(self, config: GanConfig | None = None):
        super().__init__()
        self.config = config or GanConfig()
        self.g = Generator(self.config)  # sim -> real, with noise: the lidar's randomness
        self.g_s = Generator(self.config, noise_channels=0, occlusion_hint=False)  # real -> sim: deterministic
        self.d = Discriminator(self.config)  # real data vs G(sim)
        self.d_s = Discriminator(self.config)  # sim data vs G_s(real)


ARCHITECTURES = {"CycleGan": (CycleGan, _SavedGanConfig)}


def save_gan(path: str | Path, gan: CycleGan, metadata: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write the CycleGAN as ``<path>.safetensors`` + ``<path>.json`` (``sim.checkpoint_io``)."""
    return save_module(path, gan, ARCHITECTURES, metadata)


def load_gan(path: str | Path) -> tuple[CycleGan, dict[str, Any]]:
    """Load and check a CycleGAN checkpoint; a policy checkpoint or one of another DEM size is refused by name."""
    return load_module(path, ARCHITECTURES)
