"""CUP (seed 002) on SAC: guidance selection by the critic, the advantage weight, the KL, a SAC update, a smoke run."""

import math

import numpy as np
import pytest
import torch

from flipper_control.rl.cup import WALL, CUPAgent, CUPConfig, PointGoalEnv, gaussian_kl, guidance_weights, train_target
from flipper_control.rl.sac import ActorConfig, Batch, GaussianActor, SACAgent, SACConfig


def test_guidance_weights_on_a_hand_example():
    values = torch.tensor([[-10.0, -10.0, -10.0],   # the target policy's V(s)
                           [-9.0, -12.0, -10.5],    # source 1
                           [-9.5, -11.0, -9.999]])  # source 2
    choice, weight = guidance_weights(values, beta1=30.0, beta2=3e-3)
    assert choice.tolist() == [1, 0, 2]
    # state 0: EA 1.0 clipped at beta2 |V| = 0.03; state 1: the target wins, no guidance; state 2: EA 0.001 unclipped
    assert weight.tolist() == pytest.approx([30 * 0.03, 0.0, 30 * 0.001], abs=1e-3)


def _fixed_actor(mean0: float) -> GaussianActor:
    """An almost deterministic actor whose pre-squash mean is (mean0, 0) in every state."""
    actor = GaussianActor(ActorConfig(4, 2, (8,)))
    with torch.no_grad():
        actor.head.weight.zero_()
        actor.head.bias.copy_(torch.tensor([mean0, 0.0, -5.0, -5.0]))
    return actor


def _agent_with_critic_a0(sources, target_mean0=0.0):
    """A CUP agent whose critics (and target critics) all compute Q(s, a) = a[0] exactly."""
    agent = CUPAgent(4, 2, 1.0, SACConfig(hidden=(2,), init_alpha=1e-4), sources, CUPConfig())
    for q in (agent.q1, agent.q2, agent.q1_targ, agent.q2_targ):
        first, last = q.net[0], q.net[2]
        with torch.no_grad():
            first.weight.zero_()
            first.weight[0, 4], first.weight[1, 4] = 1.0, -1.0  # relu(a0), relu(-a0)
            first.bias.zero_()
            last.weight.copy_(torch.tensor([[1.0, -1.0]]))
            last.bias.zero_()
    agent.actor = _fixed_actor(target_mean0)
    return agent


def test_guidance_picks_the_source_the_critic_values_most():
    torch.manual_seed(0)
    sources = [_fixed_actor(0.5), _fixed_actor(2.0), _fixed_actor(-1.0)]  # a[0] ~ 0.46, 0.96, -0.76
    agent = _agent_with_critic_a0(sources, target_mean0=0.0)  # the target's a[0] ~ 0
    obs = torch.randn(16, 4)
    values = agent.candidate_values(obs)
    assert values.shape == (4, 16)
    assert values[:, 0].tolist() == pytest.approx([0.0, math.tanh(0.5), math.tanh(2.0), math.tanh(-1.0)], abs=0.03)
    choice, weight = guidance_weights(values, agent.cup.beta1, agent.cup.beta2)
    assert (choice == 2).all() and (weight > 0).all()
    loss, _, info = agent.actor_loss(obs)
    assert info["guided_fraction"] == 1.0 and info["source_share"] == [0.0, 1.0, 0.0]


def test_no_kl_where_the_target_policy_is_best():
    sources = [_fixed_actor(0.5), _fixed_actor(-1.0)]
    agent = _agent_with_critic_a0(sources, target_mean0=3.0)  # the target's a[0] ~ 0.995 beats both
    obs = torch.randn(16, 4)
    torch.manual_seed(1)
    cup_loss, _, info = agent.actor_loss(obs)
    torch.manual_seed(1)
    sac_loss, _, _ = SACAgent.actor_loss(agent, obs)
    assert info["guided_fraction"] == 0.0 and info["mean_weight"] == 0.0
    assert cup_loss.item() == pytest.approx(sac_loss.item(), abs=1e-6)  # exactly SAC's actor loss


def test_gaussian_kl_matches_torch():
    torch.manual_seed(2)
    mp, mq, lp, lq = torch.randn(5, 3), torch.randn(5, 3), 0.3 * torch.randn(5, 3), 0.3 * torch.randn(5, 3)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mp, lp.exp()),
                                            torch.distributions.Normal(mq, lq.exp())).sum(-1)
    assert torch.allclose(gaussian_kl(mp, lp, mq, lq), ref, atol=1e-5)
    assert torch.allclose(gaussian_kl(mp, lp, mp, lp), torch.zeros(5), atol=1e-6)


def test_sac_updates_reduce_the_critic_loss_on_a_fixed_batch():
    torch.manual_seed(3)
    agent = SACAgent(4, 2, 1.0, SACConfig(hidden=(32, 32), lr=3e-3))
    g = torch.Generator().manual_seed(4)
    obs = torch.randn(64, 4, generator=g)
    batch = Batch(obs, torch.rand(64, 2, generator=g) * 2 - 1, 2.0 * obs[:, 0], torch.randn(64, 4, generator=g),
                  torch.zeros(64))

    def loss() -> float:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(5)  # the same next-action samples for both measurements
            return agent.critic_loss(batch).item()

    before = loss()
    for _ in range(40):
        info = agent.update(batch)
    assert np.isfinite(info["critic_loss"])
    assert loss() < 0.25 * before


def test_point_goal_env_rewards_getting_closer():
    env = PointGoalEnv(goal=(0.0, 1.2))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4,) and np.abs(obs[:2]).max() <= 0.05
    rewards, info = [], {}
    for _ in range(env.horizon):
        obs, r, terminated, truncated, info = env.step(np.array([0.0, 1.0]) if obs[1] < 1.2 else np.array([0.0, -1.0]))
        rewards.append(r)
    assert truncated and not terminated
    assert rewards[10] > rewards[0]  # moving towards the goal raises the reward (-distance)
    assert info["distance"] < 0.3


def _drive(env: PointGoalEnv, heading) -> np.ndarray:
    obs, _ = env.reset(seed=0)
    for _ in range(env.horizon):
        obs, *_ = env.step(np.asarray(heading(obs)))
    return obs


def test_the_wall_stops_the_straight_path_and_lets_the_sources_path_pass():
    up = _drive(PointGoalEnv(wall=WALL), lambda obs: [0.0, 1.0])
    assert abs(up[1] - (WALL[0] - 1e-3)) < 1e-9 and up[3] == pytest.approx(0.0, abs=0.1)  # stuck below the wall
    assert _drive(PointGoalEnv(), lambda obs: [0.0, 1.0])[1] > 1.9  # no wall: straight through
    # towards the up-left source's goal the path passes beside the wall
    beside = _drive(PointGoalEnv(goal=(-0.5, 1.1), wall=WALL), lambda obs: np.clip([-0.5 - obs[0], 1.1 - obs[1]], -1, 1))
    assert beside[1] > 0.9 and beside[0] < -WALL[1]
    # from above, the wall stops a point coming down, just above it
    env = PointGoalEnv(wall=WALL)
    assert env._stop_at_wall(np.array([0.0, 0.7]), np.array([0.0, 0.5]))[1] == pytest.approx(WALL[0] + 1e-3)


def test_cup_smoke_run_trains_and_logs_guidance():
    sources = [_fixed_actor(0.0)]
    agent, record = train_target(sources, SACConfig(total_steps=120, learning_starts=60, eval_every=60, eval_episodes=1,
                                                    hidden=(16, 16), batch_size=32), seed=0)
    assert isinstance(agent, CUPAgent)
    assert [e[0] for e in record["evals"]] == [60, 120]
    assert len(record["guided_fraction"]) == 1 and 0.0 <= record["guided_fraction"][0] <= 1.0
    assert all(np.isfinite(v) for v in (record["last_losses"]["critic_loss"], record["last_losses"]["actor_loss"]))


def test_bench_cup_on_the_wall_task_reports_it():
    from flipper_control.bench.rl_cup import bench_cup

    small = SACConfig(total_steps=120, learning_starts=60, eval_every=60, eval_episodes=1, hidden=(16, 16), batch_size=32)
    r = bench_cup(seeds=1, steps=120, source_steps=80, config=small, final_episodes=2, wall=True)
    assert r["task"]["env"] == "PointGoalWall-v0" and r["task"]["wall"] == {"y": WALL[0], "half_width": WALL[1]}
    assert set(r["summary"]) == {"sac", "cup"} and len(r["runs"]["cup"]) == 1
    # the untrained-ish "down" source ends below the start: far worse on the target than the others can be
    assert r["sources"]["down"]["on_target_return"] < -50
