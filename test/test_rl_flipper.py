"""The RL toolbox on flippers: the env wrapper's reward and observations, one DDQN update, the CUP source wrapper and
checkpoint round trips (real MuJoCo for the env; a few seconds in all)."""

import math

import numpy as np
import pytest
import torch

from flipper_control.policy import TRACK_REACH, NanAwarePolicy, PolicyConfig
from flipper_control.rl.checkpoint import save_agent
from flipper_control.rl.ddqn_per import td_errors_and_loss
from flipper_control.rl.flipper_cup import ARCHITECTURES as ACTOR_ARCHS
from flipper_control.rl.flipper_cup import PolicyActor, PolicyActorConfig, PolicySource, load_actor
from flipper_control.rl.flipper_ddqn import ARCHITECTURES as Q_ARCHS
from flipper_control.rl.flipper_ddqn import FlipperQConfig, FlipperQNetwork, load_q
from flipper_control.rl.flipper_env import (
    FlipperRLConfig,
    FlipperRLEnv,
    config_from_checkpoint,
    encode_frame,
    frame_size,
    reward_terms,
    split_frames,
)
from flipper_control.rl.replay import Batch
from planning.actions import FINE
from sim.checkpoint_io import CheckpointError
from sim.simulator import FAILED, RUNNING, SUCCESS

CFG = FlipperRLConfig(w_progress=2.0, w_warn=1.5, w_level=5.0, w_fail=4.0)


@pytest.mark.parametrize(("delta", "warns", "status", "level", "want"), [
    (0.25, 0, RUNNING, None, {"progress": 0.5, "safety": 0.0, "level": 0.0}),
    (0.0, 2, RUNNING, None, {"progress": 0.0, "safety": -3.0, "level": 0.0}),
    (0.1, 0, SUCCESS, "good", {"progress": 0.2, "safety": 0.0, "level": 5.0}),
    (0.1, 1, SUCCESS, "unclear", {"progress": 0.2, "safety": -1.5, "level": 2.5}),
    (-0.05, 0, FAILED, "fail", {"progress": -0.1, "safety": 0.0, "level": -4.0}),
])
def test_reward_terms_on_hand_cases(delta, warns, status, level, want):
    got = reward_terms(CFG, delta, warns, status, level)
    assert got == pytest.approx(want)


def test_reward_terms_refuse_a_failed_step_without_level_and_unknown_levels():
    with pytest.raises(ValueError, match="judged level"):
        reward_terms(CFG, 0.0, 0, FAILED, None)
    with pytest.raises(ValueError, match="unknown run level 'great'"):
        reward_terms(CFG, 0.0, 0, SUCCESS, "great")
    with pytest.raises(ValueError, match="w_fail"):
        FlipperRLConfig(w_fail=-1.0)


def test_encode_frame_sets_missing_cells_to_zero_with_mask_zero():
    dem = np.arange(100, dtype=np.float32).reshape(20, 5) / 100
    dem[3, 2], dem[7, 0], dem[19, 4] = np.nan, np.inf, -np.inf
    proprio = np.array([0.1, np.nan, 0.3, 0.4, 0.5, 0.6], dtype=np.float32)
    f = encode_frame(dem, proprio)
    assert f.shape == (frame_size((20, 5)),) and f.dtype == np.float32 and np.all(np.isfinite(f))
    values, mask, prop = split_frames(torch.as_tensor(f).unsqueeze(0), 1, (20, 5))
    bad = ~np.isfinite(dem)
    assert np.all(values[0, 0].numpy()[bad] == 0) and np.all(mask[0, 0].numpy()[bad] == 0)
    assert np.allclose(values[0, 0].numpy()[~bad], dem[~bad]) and np.all(mask[0, 0].numpy()[~bad] == 1)
    assert np.allclose(prop[0, 0].numpy(), [0.1, 0.0, 0.3, 0.4, 0.5, 0.6])


def test_env_stacks_frames_and_pays_the_run_level_on_the_last_step():
    from sim.world_sets import load_set

    flat = [w for w in load_set("test") if w.name == "flat"]
    env = FlipperRLEnv(FlipperRLConfig(frame_stack=3), worlds=flat)
    obs, _ = env.reset(seed=0)
    n = frame_size(env.dem_shape)
    assert obs.shape == (3 * n,) and env.action_space.n == len(FINE) and env.config.dt == FINE.dt
    assert np.array_equal(obs[:n], obs[2 * n:])  # reset repeats the first frame
    obs1, r, term, trunc, info = env.step(FINE.names.index("flat"))
    assert np.array_equal(obs1[:2 * n], obs[n:])  # oldest dropped, the rest shifted
    assert r == pytest.approx(sum(info["reward_terms"].values()))
    assert info["reward_terms"]["progress"] == pytest.approx(info["progress"] - 0.0, abs=0.05)
    assert info["sim_seconds"] == pytest.approx(FINE.dt, abs=0.01)
    total_progress, steps = info["reward_terms"]["progress"], 1
    while not term:
        _, r, term, trunc, info = env.step(FINE.names.index("flat"))
        total_progress += info["reward_terms"]["progress"]
        steps += 1
    assert not trunc and info["level"] in ("good", "unclear", "fail")
    want = 5.0 * {"good": 1.0, "unclear": 0.5, "fail": 0.0}[info["level"]] - (5.0 if info["level"] == "fail" else 0.0)
    assert info["reward_terms"]["level"] == pytest.approx(want)
    assert total_progress == pytest.approx(info["progress"], abs=0.05)
    assert env.sim_seconds_total == pytest.approx(info["time"], abs=1e-6) and steps > 10
    with pytest.raises(ValueError, match="not an index"):
        env.targets(7)


def test_one_ddqn_update_moves_q_towards_the_target():
    torch.manual_seed(0)
    cfg = FlipperQConfig(n_actions=7, frame_stack=2)
    q_net, target_net = FlipperQNetwork(cfg), FlipperQNetwork(cfg)
    rng = np.random.default_rng(0)
    obs = np.repeat(rng.normal(0, 0.2, (1, cfg.obs_dim)).astype(np.float32), 4, axis=0)
    nxt = rng.normal(0, 0.2, (4, cfg.obs_dim)).astype(np.float32)
    batch = Batch(obs, np.full(4, 3), np.full(4, 10.0, dtype=np.float32), nxt, np.zeros(4, np.float32), np.arange(4))
    with torch.no_grad():
        before = q_net(torch.as_tensor(obs[:1]))[0].clone()
    loss, td = td_errors_and_loss(q_net, target_net, batch, np.ones(4, np.float32), 0.99)
    assert np.all(td < 0)  # Q(s, 3) starts below a target that includes r = 10
    opt = torch.optim.SGD(q_net.parameters(), lr=1e-3)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = q_net(torch.as_tensor(obs[:1]))[0]
    assert after[3] > before[3]  # the taken action's value went up, towards the target
    _, td_after = td_errors_and_loss(q_net, target_net, batch, None, 0.99)
    assert np.abs(td_after).mean() < np.abs(td).mean()


def _policy_and_obs(frame_stack=2, fill=None):
    torch.manual_seed(1)
    policy = NanAwarePolicy(PolicyConfig(**(fill or {}))).eval()
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(frame_stack):
        dem = rng.normal(0, 0.3, (20, 5)).astype(np.float32)
        dem[rng.random((20, 5)) < 0.2] = np.nan
        frames.append((dem, rng.normal(0, 0.3, 6).astype(np.float32)))
    obs = np.concatenate([encode_frame(d, p) for d, p in frames])
    return policy, frames, obs


@pytest.mark.parametrize("fill", [{"nan_fill": "zero"}, {"nan_fill": "column"}, {"footprint_reach": TRACK_REACH}])
def test_cup_source_mean_is_the_imitation_policys_action(fill):
    policy, frames, obs = _policy_and_obs(fill=fill)
    src = PolicySource(PolicyActorConfig(policy.config.to_dict(), frame_stack=2, init_std=0.1), policy)
    env_like = FlipperRLEnv.__new__(FlipperRLEnv)  # only the joint-range mapping is needed: no simulator
    env_like._mid, env_like._half = (1.57 + -1.2) / 2, (1.57 - -1.2) / 2
    env_like.config = FlipperRLConfig(action_mode="continuous")
    with torch.no_grad():
        mean_action = src.mean_action(torch.as_tensor(obs).unsqueeze(0))[0].numpy()
        _, log_std = src(torch.as_tensor(obs).unsqueeze(0))
    want = policy.act_numpy(*frames[-1])  # the newest frame decides, as the memoryless policy does
    assert np.allclose(env_like.targets(mean_action), want, atol=1e-5)
    assert torch.allclose(log_std, torch.full((1, 4), math.log(0.1)))
    assert not any(p.requires_grad for p in src.parameters())


def test_cup_refuses_an_ensemble_policy():
    policy = NanAwarePolicy(PolicyConfig(members=2)).eval()  # safe: nn.Module.eval()
    with pytest.raises(ValueError, match="ensemble of 2"):
        PolicySource(PolicyActorConfig(policy.config.to_dict(), frame_stack=1, init_std=0.1), policy)


def test_checkpoint_round_trip_and_wrong_algorithm_refused(tmp_path):
    torch.manual_seed(2)
    net = FlipperQNetwork(FlipperQConfig(n_actions=7, frame_stack=3))
    x = torch.randn(5, net.config.obs_dim)
    save_agent(tmp_path / "q", net, algorithm="flipper-ddqn-per", env_id="FlipperTraversal-v0", architectures=Q_ARCHS,
               rl={"frame_stack": 3})
    loaded, meta = load_q(tmp_path / "q")
    assert torch.equal(loaded(x), net(x)) and meta["rl"]["frame_stack"] == 3
    with pytest.raises(CheckpointError, match=r"q\.json: metadata.rl.env_config is missing"):
        config_from_checkpoint(tmp_path / "q", meta)  # flipper rl eval could not rebuild its env
    meta["rl"]["env_config"] = {"frame_stack": 3, "w_level": 2.0}
    assert config_from_checkpoint(tmp_path / "q", meta) == FlipperRLConfig(frame_stack=3, w_level=2.0)
    policy, _, obs = _policy_and_obs(1)
    actor = PolicyActor(PolicyActorConfig(PolicyConfig().to_dict(), frame_stack=1), policy)
    with torch.no_grad():
        actor.log_std.fill_(-1.7)
    save_agent(tmp_path / "a", actor, algorithm="flipper-cup", env_id="FlipperTraversal-v0", architectures=ACTOR_ARCHS)
    back, _ = load_actor(tmp_path / "a")
    o = torch.as_tensor(obs).unsqueeze(0)
    assert all(torch.equal(a, b) for a, b in zip(back(o), actor(o), strict=True))
    save_agent(tmp_path / "other", net, algorithm="ddqn-per", env_id="Asterix-ram", architectures=Q_ARCHS)
    with pytest.raises(CheckpointError, match="metadata.rl.algorithm is 'ddqn-per', expected 'flipper-ddqn-per'"):
        load_q(tmp_path / "other")
    with pytest.raises(CheckpointError, match="FlipperQNetwork"):
        load_actor(tmp_path / "q")  # a Q-network is not an actor
