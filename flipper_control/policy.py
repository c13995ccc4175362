"""The NaN-aware flipper policy of seed 000 section VI: DEM + pitch, roll, flipper angles -> 4 flipper targets.

The DEM is split into its values (missing cells set to 0, or with ``nan_fill: column`` interpolated along their
column, ``fill_columns``) and a mask (1 measured, 0 missing); each
goes through its own convolution and the two outputs are multiplied, so that from that layer on no
NaN exists in the network. The product is flattened, concatenated with the 1D inputs and mapped by
fully connected layers to four flipper angles squashed into the joint range.

With ``members`` > 1 the network is an ensemble: that many independent copies of the two convolutions and the
dense layers (their convolutions stacked as the output channels of one), and the action is the mean of their
actions (``ensemble_of`` builds one from separately trained policies). Averaging policies trained from different
seeds on the same data lowers the part of the imitation error that depends on the seed, where a closed loop
compounds it.

With ``footprint_reach`` > 0 the missing cells under the main tracks are first given the height of the tracks'
contact plane, known from the robot's pitch and roll (``footprint_heights``), and count as measured: the lidar
cannot see under the robot, but the robot stands on that ground.

With ``view_from_x`` set the policy is blind to the cells whose centre lies further back than that (metres ahead of
base_link; negative: behind): they enter the network as missing whatever the DEM holds, so their heights and NaN
pattern cannot move the action. Why: the ground behind and under the robot is where the lidar's picture depends
most on where the map began (at a run's start 96 % of the cells behind the robot are missing on the reality proxy),
which neither G nor the simulator can know, while the terrain the flippers are about to meet lies ahead.

With ``prior: heuristic`` the policy is residual: its action is the heuristic controller's (computed from the same
completed DEM and the pitch, ``policy_prior.HeuristicPrior``) plus what the network adds, up to the joint range's half
either way, clamped to the joint range. The network then learns where the planner's postures differ from the rule.
With ``rule_features`` the dense layers also take the rule's two terrain features (``HeuristicPrior.features``: the
rise ahead and the drop ahead of the ground under the tracks, each a max or min over measured cells and so untouched by
which cells are missing) beside pitch, roll and the flipper angles.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
from torch import nn

from flipper_control.dem_completion import fill_columns, footprint_heights
from flipper_control.policy_prior import PRIORS, HeuristicPrior
from sim.config_io import config_from_mapping
from sim.dem import DemSpec
from sim.robot import RobotSpec
from sim.simulator import Observation

__all__ = ["NAN_FILLS", "TRACK_REACH", "PolicyConfig", "NanAwarePolicy", "PolicyController", "ensemble_of",
           "fill_columns", "footprint_heights"]

NAN_FILLS = ("zero", "column")

# metres from base_link to either end of the default robot's main tracks (wheel centres +- half the wheel base, plus a
# wheel radius): the ``footprint_reach`` that covers the ground under the tracks and nothing beyond it
TRACK_REACH = RobotSpec.wheel_base / 2 + RobotSpec.wheel_radius


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_length(x: object) -> bool:
    """A finite number (true/false are not lengths)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# A bound on the network a config (or a checkpoint's sidecar) may ask for: building it allocates the weights, and a
# typo or a hostile file (hidden: [100000000]) would otherwise exhaust memory before any message could say why.
MAX_PARAMETERS = 20_000_000


@dataclass(frozen=True)
class PolicyConfig:
    """Architecture of ``NanAwarePolicy``; everything a checkpoint needs to rebuild the network."""

    dem_shape: tuple[int, int] = (DemSpec.rows, DemSpec.cols)  # DEM cells (rows along x, cols across)
    conv_channels: int = 16  # output channels of each of the two convolutions (values, mask)
    conv_kernel: int = 3  # odd: 'same' padding keeps the DEM size
    hidden: tuple[int, ...] = (128,)  # widths of the hidden fully connected layers; () = one linear layer
    n_proprio: int = 6  # pitch, roll, four flipper angles (``Observation.proprio``)
    n_out: int = 4  # flipper targets, order of ``sim.robot.FLIPPER_NAMES``
    flipper_lower: float = RobotSpec.flipper_lower  # rad: outputs never leave [lower, upper]
    flipper_upper: float = RobotSpec.flipper_upper
    dem_scale: float = 0.5  # metres: heights are divided by this before the convolution
    dem_clip: float = 5.0  # metres: heights beyond +-dem_clip are clipped (keeps huge values finite)
    negative_slope: float = 0.01  # of the Leaky ReLU nonlinearities
    # what a missing cell's value is before the value convolution (the mask is the same either way): "zero" (seed
    # 000), or "column": interpolated along its DEM column (the driving direction) between the nearest measured
    # cells, the nearest one's height beyond them, 0 in a column with none (``fill_columns``)
    nan_fill: str = "zero"
    # metres ahead of and behind base_link (cell centres) within which a missing cell takes the main tracks' contact
    # plane (``footprint_heights``) and counts as measured; 0: off (seed 000), TRACK_REACH: under the main tracks
    footprint_reach: float = 0.0
    footprint_depth: float = RobotSpec.wheel_radius  # metres from base_link down to the tracks' contact plane
    dem_resolution: float = DemSpec.resolution  # the DEM's cell size and front edge (``DemSpec``): where cells lie
    dem_front: float = DemSpec.front
    members: int = 1  # independent networks whose actions are averaged (an ensemble, ``ensemble_of``); 1: seed 000
    # metres ahead of base_link (negative: behind) of the rearmost cell centres the policy sees; cells further back
    # count as missing whatever the DEM holds; null: the whole DEM (seed 000)
    view_from_x: float | None = None
    # the base action the network's output is added to: "none" (seed 000: the network's output is the action) or
    # "heuristic" (a residual policy on ``controllers.HeuristicController``'s rule, ``policy_prior``)
    prior: str = "none"
    # the heuristic rule's rise and drop ahead (metres, scaled as the heights) join the 1D inputs; false: seed 000
    rule_features: bool = False

    def __post_init__(self) -> None:
        # JSON gives lists: accept them, keep the dataclass hashable
        object.__setattr__(self, "dem_shape", tuple(self.dem_shape))
        object.__setattr__(self, "hidden", tuple(self.hidden))
        problems = []
        if len(self.dem_shape) != 2 or not all(_is_int(n) and n >= 1 for n in self.dem_shape):
            problems.append(f"dem_shape must be two positive integers (rows, cols), got {self.dem_shape}")
        if not (_is_int(self.members) and self.members >= 1):
            problems.append(f"members must be an integer >= 1, got {self.members!r}")
        if not (_is_int(self.conv_channels) and self.conv_channels >= 1):
            problems.append(f"conv_channels must be an integer >= 1, got {self.conv_channels!r}")
        if not (_is_int(self.conv_kernel) and self.conv_kernel >= 1 and self.conv_kernel % 2 == 1):
            problems.append(f"conv_kernel must be an odd integer >= 1 (for 'same' padding), got {self.conv_kernel!r}")
        if not all(_is_int(n) and n >= 1 for n in self.hidden):
            problems.append(f"hidden must be a list of integers >= 1 (or empty), got {list(self.hidden)}")
        for name in ("n_proprio", "n_out"):
            if not (_is_int(getattr(self, name)) and getattr(self, name) >= 1):
                problems.append(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        lo, hi = self.flipper_lower, self.flipper_upper
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            problems.append(f"flipper_lower < flipper_upper must be finite radians, got [{lo}, {hi}]")
        for name in ("dem_scale", "dem_clip", "dem_resolution"):
            value = getattr(self, name)
            if not (_is_length(value) and value > 0):
                problems.append(f"{name} must be a positive number of metres, got {value!r}")
        for name in ("footprint_reach", "footprint_depth"):
            value = getattr(self, name)
            if not (_is_length(value) and value >= 0):
                problems.append(f"{name} must be a non-negative number of metres, got {value!r}")
        if not _is_length(self.dem_front):
            problems.append(f"dem_front must be a finite number of metres, got {self.dem_front!r}")
        elif self.view_from_x is not None:
            front_centre = self.dem_front - self.dem_resolution / 2 if _is_length(self.dem_resolution) else None
            if not _is_length(self.view_from_x):
                problems.append(f"view_from_x must be a finite number of metres or null, got {self.view_from_x!r}")
            elif front_centre is not None and self.view_from_x > front_centre:
                problems.append(f"view_from_x {self.view_from_x} m would leave the policy no cell to see: the DEM's "
                                f"front row is centred {front_centre:.3f} m ahead of base_link")
        if self.prior not in PRIORS:
            problems.append(f"prior must be one of {', '.join(PRIORS)}, got {self.prior!r}")
        elif self.prior == "heuristic" and (self.n_out != 4 or not _is_int(self.n_proprio) or self.n_proprio < 1):
            problems.append(f"prior 'heuristic' commands four flippers from the pitch: it needs n_out 4 and n_proprio "
                            f">= 1, got {self.n_out!r} and {self.n_proprio!r}")
        if not isinstance(self.rule_features, bool):
            problems.append(f"rule_features must be true or false, got {self.rule_features!r}")
        if self.nan_fill not in NAN_FILLS:
            problems.append(f"nan_fill must be one of {', '.join(NAN_FILLS)}, got {self.nan_fill!r}")
        if not (math.isfinite(self.negative_slope) and 0 <= self.negative_slope < 1):
            problems.append(f"negative_slope must lie in [0, 1), got {self.negative_slope!r}")
        if not problems and self.parameter_count() > MAX_PARAMETERS:
            problems.append(f"{self.parameter_count():,} parameters is more than a flipper policy needs (at most "
                            f"{MAX_PARAMETERS:,}; the default has {PolicyConfig().parameter_count():,}): lower hidden, "
                            "conv_channels or dem_shape")
        if problems:
            raise ValueError("PolicyConfig: " + "; ".join(problems))

    def parameter_count(self) -> int:
        """Weights and biases of the network this config builds (``NanAwarePolicy``), computed without building it."""
        rows, cols = self.dem_shape
        convs = 2 * (self.conv_channels * self.conv_kernel ** 2 + self.conv_channels)
        widths = [self.conv_channels * rows * cols + self.n_inputs_1d(), *self.hidden, self.n_out]
        member = convs + sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
        return self.members * member

    def n_inputs_1d(self) -> int:
        """Inputs of the dense layers beside the DEM features: the proprioceptive vector and the rule's features."""
        return self.n_proprio + (2 if self.rule_features is True else 0)

    def to_dict(self) -> dict:
        """Plain JSON-ready mapping (tuples become lists)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict) -> PolicyConfig:
        """Inverse of ``to_dict``; unknown keys are an error (a typo must not fall back to a default)."""
        return config_from_mapping(cls, data, "PolicyConfig")


class NanAwarePolicy(nn.Module):
    """Seed 000 section VI regressor from a DEM that may hold NaN to four flipper targets.

    Why the product normalises by the measured cells: a missing cell is 0 in the value matrix, so it
    adds nothing to the value convolution, and 0 in the mask, so the mask convolution's output at a
    position is a learned function of which and how many cells of that patch are measured. Multiplying
    the two rescales every patch's height response by that function of its measured cells (the seed's
    "normalising each patch by the number of measured values"); a learned affine map cannot be an exact
    ``1/n``, but it lets the network weight a patch by how much of it was observed and tell a missing
    cell from a measured height of 0. Non-finite cells (NaN, +-inf) all count as not measured, so the
    value a missing cell holds can never reach the output.

    ``forward(dem (B, rows, cols), proprio (B, n_proprio)) -> (B, n_out)`` in radians, always finite
    and inside ``[flipper_lower, flipper_upper]``.
    """

    def __init__(self, config: PolicyConfig | None = None):
        super().__init__()
        self.config = c = config or PolicyConfig()
        pad = c.conv_kernel // 2
        # one input channel: the members' convolutions are independent blocks of output channels of one convolution
        self.conv_values = nn.Conv2d(1, c.members * c.conv_channels, c.conv_kernel, padding=pad)
        self.conv_mask = nn.Conv2d(1, c.members * c.conv_channels, c.conv_kernel, padding=pad)
        self.act = nn.LeakyReLU(c.negative_slope)
        rows, cols = c.dem_shape
        self.head = self._dense()
        # the other members' dense layers; absent with one member, so that its weights keep seed 000's names
        self.member_heads = nn.ModuleList(self._dense() for _ in range(c.members - 1))
        # cell centres in the DEM's yaw frame and the cells under the footprint (buffers: they follow .to(device);
        # not persistent: the config rebuilds them, and checkpoints keep only weights)
        spec = DemSpec(rows=rows, cols=cols, resolution=c.dem_resolution, front=c.dem_front)
        centres = spec.cell_centers()
        grid_x, grid_y = (torch.from_numpy(a.astype(np.float32)) for a in centres)
        self.register_buffer("_cell_x", grid_x, persistent=False)
        self.register_buffer("_cell_y", grid_y, persistent=False)
        self.register_buffer("_footprint", grid_x.abs() <= c.footprint_reach, persistent=False)
        blind = grid_x < c.view_from_x if c.view_from_x is not None else torch.zeros_like(grid_x, dtype=torch.bool)
        self.register_buffer("_blind", blind, persistent=False)
        # the rule, where the action or the inputs use it (no weights: it is rebuilt from the config)
        self.rule = HeuristicPrior(spec) if c.prior == "heuristic" or c.rule_features else None
        self._residual = c.prior == "heuristic"
        self._mid = (c.flipper_upper + c.flipper_lower) / 2
        self._half = (c.flipper_upper - c.flipper_lower) / 2
        # single-decision input buffers, reused by act_numpy (the numpy views share their memory)
        self._dem_t = torch.zeros((1, rows, cols), dtype=torch.float32)
        self._proprio_t = torch.zeros((1, c.n_proprio), dtype=torch.float32)
        self._dem_np = self._dem_t.numpy()
        self._proprio_np = self._proprio_t.numpy()

    def _dense(self) -> nn.Sequential:
        """One member's fully connected layers: its DEM features and the 1D inputs -> n_out values before tanh."""
        c = self.config
        layers: list[nn.Module] = []
        width = c.conv_channels * c.dem_shape[0] * c.dem_shape[1] + c.n_inputs_1d()
        for h in c.hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(c.negative_slope)]
            width = h
        layers.append(nn.Linear(width, c.n_out))
        return nn.Sequential(*layers)

    def split_dem(self, dem: torch.Tensor, proprio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, mask), each (B, 1, rows, cols): values normalised with missing cells completed
        (``complete``: the footprint, then ``nan_fill``), mask 1/0. ``proprio`` (B, n_proprio) gives pitch, roll."""
        measured = torch.isfinite(dem)
        c = self.config
        values = torch.where(measured, dem, 0.0).clamp(-c.dem_clip, c.dem_clip) / c.dem_scale
        values, mask = self.complete(values, measured.to(dem.dtype), proprio)
        return values.unsqueeze(1), mask.unsqueeze(1)

    def complete(self, values: torch.Tensor, mask: torch.Tensor, proprio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, mask) (B, rows, cols) as the two convolutions take them, from clipped, scaled heights (0 at
        missing cells) and the mask (1 measured, 0 missing; it may be G's soft straight-through one: a cell counts
        as measured where it is above 0.5), with ``proprio`` (B, n_proprio) giving pitch and roll.

        With ``footprint_reach`` > 0 the missing cells under the footprint take the tracks' contact plane
        (``footprint_heights``) and become measured (where the mask is soft, the footprint's cells are 1 and carry
        no gradient); then ``nan_fill`` "column" fills the cells still missing along each column (``fill_columns``);
        "zero" leaves them at 0. Last, the cells behind ``view_from_x`` become missing (0 in both).
        """
        c = self.config
        if c.footprint_reach > 0:
            missing = (mask <= 0.5) & self._footprint
            plane = footprint_heights(proprio[:, 0], proprio[:, 1], self._cell_x, self._cell_y, c.footprint_depth)
            values = torch.where(missing, plane.to(values.dtype).clamp(-c.dem_clip, c.dem_clip) / c.dem_scale, values)
            mask = torch.where(missing, torch.ones((), dtype=mask.dtype, device=mask.device), mask)
        if c.nan_fill == "column":
            values = fill_columns(values, mask > 0.5)
        if c.view_from_x is not None:  # last: neither the footprint nor the fill may reveal a blind cell
            zero = torch.zeros((), dtype=values.dtype, device=values.device)
            values = torch.where(self._blind, zero, values)
            mask = torch.where(self._blind, zero.to(mask.dtype), mask)
        return values, mask

    def encode(self, dem: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """The NaN-free DEM features (B, members * conv_channels * rows * cols) that enter the dense layers (member
        by member)."""
        values, mask = self.split_dem(dem, proprio)
        return self.act(self.conv_values(values) * self.conv_mask(mask)).flatten(1)

    def forward(self, dem: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        c = self.config
        if dem.shape[1:] != c.dem_shape or proprio.shape[1:] != (c.n_proprio,) or dem.shape[0] != proprio.shape[0]:
            raise ValueError(
                f"NanAwarePolicy expects dem (B, {c.dem_shape[0]}, {c.dem_shape[1]}) and proprio (B, {c.n_proprio}), "
                f"got {tuple(dem.shape)} and {tuple(proprio.shape)}"
            )
        dtype = self.conv_values.weight.dtype
        dem, proprio = dem.to(dtype), proprio.to(dtype)
        # proprioception comes from encoders and the IMU: a glitch must not turn into a NaN command
        proprio = torch.nan_to_num(proprio, nan=0.0, posinf=0.0, neginf=0.0)
        values, mask = self.split_dem(dem, proprio)
        return self.forward_parts(values, mask, proprio)

    def forward_parts(self, values: torch.Tensor, mask: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """``forward`` after the DEM's split: (B, 1, rows, cols) clipped and scaled heights (completed as by
        ``complete``), the (B, 1, rows, cols) mask (1 measured, 0 missing) and the NaN-free (B, n_proprio) vector
        -> actions.
        The mask may carry a gradient (the CycleGAN's policy-aware loss hides and reveals cells through it).
        With ``prior`` "heuristic" the action is the rule's on these heights and mask plus the network's residual."""
        c = self.config
        features = self.act(self.conv_values(values) * self.conv_mask(mask)).flatten(1)
        inputs_1d, rule = proprio, None
        if c.rule_features:
            with torch.no_grad():  # maxima and minima over the measured cells: no gradient needed through the mask
                rule = self.rule.features((values * c.dem_scale).squeeze(1), mask.squeeze(1) > 0.5)
            inputs_1d = torch.cat((proprio, rule.clamp(-c.dem_clip, c.dem_clip) / c.dem_scale), dim=1)
        if c.members == 1:  # the hot path of a single policy: no stacking
            action = self._joints(self.head(torch.cat((features, inputs_1d), dim=1)))
        else:
            parts = features.view(features.shape[0], c.members, -1)  # channel blocks, member by member
            action = torch.stack([self._joints(head(torch.cat((parts[:, j], inputs_1d), dim=1)))
                                  for j, head in enumerate((self.head, *self.member_heads))]).mean(0)
        if self._residual:
            with torch.no_grad():  # piecewise constant in the heights: nothing to learn through it
                base = self.rule((values * c.dem_scale).squeeze(1), mask.squeeze(1) > 0.5, proprio[:, 0], features=rule)
            action = base + action
        # the clamp removes float rounding at saturation, and keeps a prior plus its residual inside the joint range
        return action.clamp(c.flipper_lower, c.flipper_upper)

    def _joints(self, z: torch.Tensor) -> torch.Tensor:
        """Dense outputs -> flipper angles: tanh maps them onto the open joint range (with a prior: onto a residual
        of up to the range's half either way, centred on 0)."""
        if self._residual:
            return self._half * torch.tanh(z)
        return self._mid + self._half * torch.tanh(z)

    def act_numpy(self, dem: np.ndarray, proprio: np.ndarray) -> np.ndarray:
        """One decision from a (rows, cols) DEM and the (n_proprio,) vector -> (n_out,) float64 radians.

        Copies the inputs into preallocated CPU buffers (so not thread-safe: one policy per thread)
        and runs without autograd.
        """
        dem = np.asarray(dem)
        proprio = np.asarray(proprio)
        c = self.config
        if dem.shape != c.dem_shape or proprio.shape != (c.n_proprio,):
            raise ValueError(
                f"act_numpy expects dem {c.dem_shape} and proprio ({c.n_proprio},), got {dem.shape} and {proprio.shape}"
            )
        np.copyto(self._dem_np[0], dem, casting="unsafe")
        np.copyto(self._proprio_np[0], proprio, casting="unsafe")
        with torch.inference_mode():
            out = self.forward(self._dem_t, self._proprio_t)
        return out[0].numpy().astype(np.float64)


def ensemble_of(policies: list[NanAwarePolicy]) -> NanAwarePolicy:
    """One ``NanAwarePolicy`` with ``members = len(policies)`` whose action is the mean of the given single policies'
    actions (their weights copied; they must share one config with ``members`` 1)."""
    if not policies:
        raise ValueError("ensemble_of: no policies given")
    first = policies[0].config
    for k, p in enumerate(policies):
        if p.config.members != 1:
            raise ValueError(f"ensemble_of: policy {k} is itself an ensemble of {p.config.members}")
        if p.config != first:
            diff = [f.name for f in fields(PolicyConfig) if getattr(p.config, f.name) != getattr(first, f.name)]
            raise ValueError(f"ensemble_of: policy {k} differs from policy 0 in {', '.join(diff)}")
    ensemble = NanAwarePolicy(replace(first, members=len(policies)))
    with torch.no_grad():
        for name in ("conv_values", "conv_mask"):
            conv = getattr(ensemble, name)
            conv.weight.copy_(torch.cat([getattr(p, name).weight for p in policies]))
            conv.bias.copy_(torch.cat([getattr(p, name).bias for p in policies]))
        for head, p in zip((ensemble.head, *ensemble.member_heads), policies, strict=True):
            head.load_state_dict(p.head.state_dict())
    return ensemble.eval()  # safe: nn.Module.eval()


class PolicyController:
    """The controller protocol (``reset``, ``act``) around a ``NanAwarePolicy``: one decision per observation."""

    def __init__(self, policy: NanAwarePolicy):
        self.policy = policy.eval()  # safe: nn.Module.eval()

    def reset(self) -> None:
        pass  # the policy is memoryless: each decision depends only on the current observation

    def act(self, obs: Observation) -> np.ndarray:
        return self.policy.act_numpy(obs.dem, obs.proprio())
