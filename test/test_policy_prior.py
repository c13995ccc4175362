"""The residual policy's prior (``PolicyConfig.prior: heuristic``): the batched rule equals the heuristic controller
on simulated and lidar-like DEMs, a policy whose residual is zero acts as the controller, and the residual learns."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from flipper_control.controllers import HeuristicConfig, HeuristicController
from flipper_control.policy import NanAwarePolicy, PolicyConfig
from flipper_control.policy_prior import HeuristicPrior
from flipper_control.rl.flipper_cup import PolicyActor, PolicyActorConfig
from sim.dem import DemSpec
from sim.mujoco_sim import MujocoSimulator
from sim.rollout import Trace, run_episode
from sim.world_sets import resolve_world

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def observations():
    """Every third observation of the heuristic driving three test worlds (climbs, descents, level ground), and the
    same DEMs with holes: random cells, the whole window under the tracks, the whole window ahead."""
    obs = []
    for name in ("stairs_up", "stairs_down", "step_down"):
        trace = Trace()
        run_episode(MujocoSimulator(), resolve_world(name), HeuristicController(), seed=1, trace=trace)
        obs += trace.observations[::3]
    rng = np.random.default_rng(3)
    dems = np.stack([o.dem for o in obs])
    holed = dems.copy()
    holed[rng.random(holed.shape) < 0.4] = np.nan
    x = DemSpec().cell_centers()[0][:, 0]
    no_ground, nothing_ahead = dems.copy(), dems.copy()
    no_ground[:, np.abs(x) <= 0.25] = np.nan
    nothing_ahead[:, (x >= 0.30) & (x <= 0.95)] = np.nan
    pitch = np.array([o.pitch for o in obs])
    return obs, [dems, holed, no_ground, nothing_ahead], pitch


def test_the_batched_prior_is_the_heuristic_controller(observations):
    obs, variants, pitch = observations
    controller = HeuristicController()
    prior = HeuristicPrior(DemSpec())
    branches = set()
    for dems in variants:
        expected = []
        for o, dem in zip(obs, dems, strict=True):
            expected.append(controller.act(replace(o, dem=dem)))
        t = torch.from_numpy(dems)
        got = prior(torch.nan_to_num(t), torch.isfinite(t), torch.from_numpy(pitch)).numpy()
        np.testing.assert_allclose(got, np.array(expected), atol=1e-12)
        features = prior.features(torch.nan_to_num(t), torch.isfinite(t)).numpy()
        np.testing.assert_allclose(features, [controller.dem_features(dem) for dem in dems], atol=1e-12)
        with torch.no_grad():  # a single decision takes numpy's path: the same angles
            one = prior(torch.nan_to_num(t[:1]), torch.isfinite(t[:1]), torch.from_numpy(pitch[:1]))
        np.testing.assert_allclose(one.numpy(), got[:1], atol=1e-12)
        branches |= {tuple(np.round(a + [-o.pitch, -o.pitch, 0, 0], 6)) for a, o in zip(expected, obs, strict=True)}
    fronts, rears = {b[0] for b in branches}, {b[2] for b in branches}
    c = HeuristicConfig()  # every branch of the rule was compared
    assert fronts == {c.front_climb, c.front_neutral, c.front_descend} and rears == {c.rear_climb, c.rear_neutral}, branches


def test_a_residual_policy_with_a_zero_residual_acts_as_the_heuristic(observations):
    obs, (dems, holed, *_), pitch = observations
    torch.manual_seed(0)
    policy = NanAwarePolicy(PolicyConfig(prior="heuristic")).eval()  # safe: nn.Module.eval()
    controller = HeuristicController()
    lower, upper = policy.config.flipper_lower, policy.config.flipper_upper
    for d in (dems, holed):
        proprio = torch.tensor(np.stack([o.proprio() for o in obs]), dtype=torch.float32)
        proprio[:, 0] = torch.from_numpy(pitch)
        with torch.no_grad():
            learnt = policy(torch.from_numpy(d), proprio)
            policy.head[-1].weight.zero_()
            policy.head[-1].bias.zero_()
            zero = policy(torch.from_numpy(d), proprio)
        expected = []
        for o, dem in zip(obs, d, strict=True):
            expected.append(np.clip(controller.act(replace(o, dem=dem)), lower, upper))
        np.testing.assert_allclose(zero.numpy(), np.array(expected), atol=1e-5)
        assert (learnt - zero).abs().max() > 1e-3  # a random residual moves the action away from the rule
        torch.manual_seed(0)
        policy = NanAwarePolicy(PolicyConfig(prior="heuristic")).eval()  # safe: nn.Module.eval()


def test_the_residual_learns_and_the_prior_carries_no_gradient(observations):
    """A few steps of imitation move a residual policy towards labels away from the rule (the loss falls twentyfold),
    and no gradient passes through the rule: with the network's last layer zeroed the action is the rule's, which
    follows the pitch one to one on the front flippers, yet its gradient with respect to the inputs is zero."""
    obs, (dems, *_), pitch = observations
    torch.manual_seed(1)
    policy = NanAwarePolicy(PolicyConfig(prior="heuristic", hidden=(32,), conv_channels=4))
    dem = torch.from_numpy(dems).float()
    proprio = torch.tensor(np.stack([o.proprio() for o in obs]), dtype=torch.float32)
    labels = torch.tensor([[0.4, 0.4, -0.5, -0.5]]).expand(len(obs), 4)
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(policy(dem, proprio), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 20, (losses[0], losses[-1])
    with torch.no_grad():
        policy.head[-1].weight.zero_()
        policy.head[-1].bias.zero_()
    level = proprio.clone().requires_grad_()
    policy(dem, level)[:, :2].sum().backward()  # the rule's front angle is front_abs + pitch
    assert level.grad is not None and torch.count_nonzero(level.grad) == 0


def test_rule_features_reach_the_dense_layers_and_nothing_else_of_the_dem_does_when_the_rest_is_zeroed(observations):
    """With ``rule_features`` the dense layers take the rule's rise and drop: with every other input's weights zeroed,
    DEMs of equal rise and drop give equal actions whatever else they hold, and a larger rise moves the action."""
    config = PolicyConfig(rule_features=True, hidden=())
    torch.manual_seed(2)
    policy = NanAwarePolicy(config).eval()  # safe: nn.Module.eval()
    assert config.parameter_count() == sum(p.numel() for p in policy.parameters())
    assert config.parameter_count() == PolicyConfig(hidden=()).parameter_count() + 2 * 4
    with torch.no_grad():
        policy.head[-1].weight[:, :-2].zero_()
    obs, (dems, *_), _ = observations
    dem = torch.from_numpy(dems[:1]).float()
    proprio = torch.tensor(obs[0].proprio(), dtype=torch.float32)[None]
    other = dem.clone()
    x = DemSpec().cell_centers()[0][:, 0]
    other[0, x < -0.3] += 0.2  # behind the rule's windows: the rise and drop are unchanged
    other[0, 0, 0] = float("nan")
    with torch.no_grad():
        a, b = policy(dem, proprio), policy(other, proprio)
        higher = dem.clone()
        higher[0, (x >= 0.3) & (x <= 0.95)] += 0.3  # the window ahead rises: so does the rule's rise
        c = policy(higher, proprio)
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 1e-3


def test_prior_with_rule_features_computes_the_features_once_and_acts_as_with_fresh_ones(observations, monkeypatch):
    """With both the prior and ``rule_features`` a batch's forward pass computes the rule's rise and drop once (the
    dense layers' input and the prior's base action share them), and the action is what the prior computes from
    scratch plus the residual."""
    torch.manual_seed(3)
    config = PolicyConfig(prior="heuristic", rule_features=True, hidden=(16,), conv_channels=4)
    policy = NanAwarePolicy(config).eval()  # safe: nn.Module.eval()
    obs, (dems, *_), _ = observations
    dem = torch.from_numpy(dems[:8]).float()
    proprio = torch.tensor(np.stack([o.proprio() for o in obs[:8]]), dtype=torch.float32)
    calls = []
    original = HeuristicPrior.features
    monkeypatch.setattr(HeuristicPrior, "features", lambda self, *a: calls.append(1) or original(self, *a))
    with torch.no_grad():
        action = policy(dem, proprio)
    assert len(calls) == 1
    c = policy.config
    with torch.no_grad():  # the same action from scratch: the rule's own features for the prior and the dense input
        values, mask = policy.split_dem(dem, proprio)
        heights, measured = (values * c.dem_scale).squeeze(1), mask.squeeze(1) > 0.5
        base = policy.rule(heights, measured, proprio[:, 0])
        rule = policy.rule.features(heights, measured)
        features = policy.act(policy.conv_values(values) * policy.conv_mask(mask)).flatten(1)
        inputs_1d = torch.cat((proprio, rule.clamp(-c.dem_clip, c.dem_clip) / c.dem_scale), dim=1)
        residual = policy._joints(policy.head(torch.cat((features, inputs_1d), dim=1)))
    assert len(calls) == 3
    assert residual.abs().max() > 1e-3  # a residual that matters: the comparison below can tell
    torch.testing.assert_close(action, (base + residual).clamp(c.flipper_lower, c.flipper_upper))


def test_flipper_cup_refuses_a_policy_with_the_rule():
    for extra in ({"prior": "heuristic"}, {"rule_features": True}):
        config = PolicyActorConfig(policy=PolicyConfig(**extra).to_dict())
        with pytest.raises(ValueError, match="prior"):
            PolicyActor(config)
