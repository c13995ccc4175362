"""The heuristic controller's rule as a batched torch prior: the base action of a residual flipper policy.

With ``PolicyConfig.prior: heuristic`` the network of ``NanAwarePolicy`` learns a correction to what the hand-written
rule (``controllers.HeuristicController``) commands for the same DEM and pitch, and its action is the sum (residual
policy learning). Why: on the reality proxy the rule loses 0.3/8 of its simulated total, the learned policy of issue
15's table 1.2 (7.60 to 6.40), so a learned policy that starts from the rule and only has to learn where the planner's postures
do better than it keeps the rule's robustness wherever the correction is small.

The rule is written again here for batches, because it has to run inside the network's forward pass on a training
batch or on G's output in the GAN's policy-aware loss; ``test_policy_prior`` checks that both give the same angles on
exact and lidar-built DEMs. A single decision (batch of one, no autograd: ``act_numpy`` on the robot) calls the
controller's own ``act_on`` instead: the rule is some fifty tensor operations on a 20 x 5 grid, whose per-call
overhead would cost more than the network, where numpy takes a few microseconds per step. The prior carries no
gradient: its thresholds make it piecewise constant in the heights, and only the residual is learnt.
"""

from __future__ import annotations

import numpy as np
import torch

from flipper_control.controllers import HeuristicConfig, HeuristicController
from sim.dem import DemSpec

__all__ = ["PRIORS", "HeuristicPrior"]

PRIORS = ("none", "heuristic")


def _median_of_measured(heights: torch.Tensor, measured: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of (B, N) ``heights``: the median of the cells where ``measured`` (numpy's: the mean of the two middle
    values for an even count) and whether the row has any measured cell."""
    count = measured.sum(dim=1)
    ordered = torch.where(measured, heights, torch.full_like(heights, float("inf"))).sort(dim=1).values
    last = heights.shape[1] - 1
    low = ordered.gather(1, ((count - 1) // 2).clamp(0, last).unsqueeze(1)).squeeze(1)
    high = ordered.gather(1, (count // 2).clamp(0, last).unsqueeze(1)).squeeze(1)
    has = count > 0
    zero = torch.zeros((), dtype=heights.dtype, device=heights.device)
    return torch.where(has, (low + high) / 2, zero), has


def _single_decision(heights: torch.Tensor) -> bool:
    """One DEM on the CPU without autograd (a decision on the robot): numpy's rule is cheaper than the batched one."""
    return heights.shape[0] == 1 and heights.device.type == "cpu" and not torch.is_grad_enabled()


def _as_dem(heights: torch.Tensor, measured: torch.Tensor) -> np.ndarray:
    """The one DEM of a single decision as the controller reads it: NaN where not measured."""
    return np.where(measured[0].numpy(), heights[0].numpy(), np.nan)


class HeuristicPrior(torch.nn.Module):
    """``HeuristicController.act`` on a batch: (B, rows, cols) heights in metres, the (B, rows, cols) measured mask
    and the (B,) pitch -> (B, 4) flipper angles, unclamped (the policy clamps the sum). ``spec`` is the DEM's
    geometry, which places the rule's windows."""

    def __init__(self, spec: DemSpec, config: HeuristicConfig | None = None):
        super().__init__()
        self.config = c = config or HeuristicConfig()
        self._single = HeuristicController(c, spec)  # refuses a DEM that misses the rule's windows
        x = torch.from_numpy(spec.cell_centers()[0]).flatten()
        under = x.abs() <= c.under
        ahead = (x >= c.look_ahead[0]) & (x <= c.look_ahead[1])
        # not persistent: the DEM's geometry in the policy's config rebuilds them, and checkpoints keep only weights
        self.register_buffer("_under", under.nonzero().squeeze(1), persistent=False)
        self.register_buffer("_ahead", ahead.nonzero().squeeze(1), persistent=False)

    def features(self, heights: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
        """The rule's (rise, drop) (B, 2) in metres, ``HeuristicController.features`` on a batch: the highest measured
        cell of the window ahead above, and its lowest below, the median measured cell under the tracks; both 0 where
        either window has no measured cell."""
        if _single_decision(heights):
            return torch.tensor([self._single.dem_features(_as_dem(heights, measured))], dtype=heights.dtype)
        flat, seen = heights.flatten(1), measured.flatten(1)
        ground, has_ground = _median_of_measured(flat[:, self._under], seen[:, self._under])
        ahead, ahead_seen = flat[:, self._ahead], seen[:, self._ahead]
        has_ahead = ahead_seen.any(dim=1)
        top = torch.where(ahead_seen, ahead, torch.full_like(ahead, -float("inf"))).amax(dim=1)
        bottom = torch.where(ahead_seen, ahead, torch.full_like(ahead, float("inf"))).amin(dim=1)
        valid = has_ground & has_ahead  # nothing seen under or ahead: no obstacle to react to (rise = drop = 0)
        zero = torch.zeros((), dtype=heights.dtype, device=heights.device)
        return torch.stack((torch.where(valid, top - ground, zero), torch.where(valid, ground - bottom, zero)), dim=1)

    def forward(self, heights: torch.Tensor, measured: torch.Tensor, pitch: torch.Tensor,
                features: torch.Tensor | None = None) -> torch.Tensor:
        """The rule's action; ``features``: this batch's ``features`` where the caller has them already (a policy with
        both the prior and ``rule_features``), so that they are not computed twice."""
        if _single_decision(heights):
            action = self._single.act_on(_as_dem(heights, measured), float(pitch[0]))
            return torch.from_numpy(action).to(heights.dtype).unsqueeze(0)
        c = self.config
        rise, drop = (self.features(heights, measured) if features is None else features).unbind(1)

        def const(value: float) -> torch.Tensor:
            return torch.full_like(pitch, value)

        nose_up = -pitch  # REP 103: pitch > 0 is nose down
        front_abs = torch.where(rise > c.rise_threshold, const(c.front_climb),
                                torch.where(drop > c.drop_threshold, const(c.front_descend), const(c.front_neutral)))
        front = front_abs - nose_up  # held in the gravity frame, as the rule does
        descending = (drop > c.drop_threshold) | (nose_up < -c.climb_pitch)
        rear = torch.where(nose_up > c.climb_pitch, const(c.rear_climb),
                           torch.where(descending, const(c.rear_descend), const(c.rear_neutral)))
        return torch.stack((front, front, rear, rear), dim=1)
