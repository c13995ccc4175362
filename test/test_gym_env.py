"""Tests of the gymnasium environment ``flipper_control.gym_env.FlipperEnv`` (FlipperTraversal-v0)."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from flipper_control.gym_env import ENV_ID, FlipperEnv, RewardConfig, reward_terms
from sim.simulator import FAILED, SUCCESS
from sim.world_sets import resolve_world


def run_fixed(env: FlipperEnv, world: str, action, seed: int = 0) -> tuple[float, dict, int]:
    """Total reward, last info and number of steps of one episode with a constant action."""
    env.reset(seed=seed, options={"world": world})
    total, steps = 0.0, 0
    while True:
        _, reward, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float32))
        total += reward
        steps += 1
        assert not truncated
        if terminated:
            return total, info, steps
        assert steps < 1000, "episode did not terminate"


@pytest.fixture
def env() -> FlipperEnv:
    return FlipperEnv()


@pytest.mark.filterwarnings("ignore:.*symmetric and normalized space")
def test_check_env_passes():
    env = gymnasium.make(ENV_ID)  # made, so that the checker also sees the spec and its render modes
    check_env(env.unwrapped)
    env.close()


def test_spaces(env):
    assert env.observation_space["dem"].shape == env.sim.dem_spec.shape
    assert env.observation_space["proprio"].shape == (6,)
    np.testing.assert_array_equal(env.action_space.low, np.float32(env.sim.robot.flipper_lower))
    np.testing.assert_array_equal(env.action_space.high, np.float32(env.sim.robot.flipper_upper))
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert info["world"] in [w.name for w in env.worlds] and info["world_index"] is not None


def test_flat_world_succeeds_with_positive_reward(env):
    total, info, steps = run_fixed(env, "flat", [0.3, 0.3, 0.3, 0.3])
    assert info["status"] == SUCCESS
    assert info["result"]["level"] == "good" and info["result"]["world"] == "flat"
    assert total > 0
    assert steps == pytest.approx(3.0 / 0.3 / env.control_dt, abs=3)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4, dtype=np.float32))


def test_flat_posture_fails_on_step_up_and_earns_less(env):
    flat_total, _, _ = run_fixed(env, "flat", [0.0, 0.0, 0.0, 0.0])
    step_total, info, _ = run_fixed(env, "step_up", [0.0, 0.0, 0.0, 0.0])
    assert info["status"] == FAILED
    assert info["result"]["level"] == "fail" and info["result"]["reasons"]
    assert info["reward_terms"]["fail"] == -env.reward_config.fail
    assert step_total < flat_total


def rollout(env: FlipperEnv, seed: int, actions: np.ndarray) -> tuple[list, list, dict]:
    obs, info = env.reset(seed=seed)
    observations, rewards = [obs], []
    for action in actions:
        obs, reward, terminated, _, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        if terminated:
            break
    return observations, rewards, info


def test_same_seed_is_bit_for_bit_reproducible():
    actions = np.random.default_rng(0).uniform(-1.2, 1.57, size=(20, 4)).astype(np.float32)
    env_a, env_b = FlipperEnv(), FlipperEnv()
    obs_a, rew_a, info_a = rollout(env_a, 11, actions)
    obs_b, rew_b, info_b = rollout(env_b, 11, actions)
    obs_c, rew_c, info_c = rollout(env_a, 11, actions)  # same env again, after a finished rollout
    assert info_a["world"] == info_b["world"] == info_c["world"]
    assert info_a["noise_seed"] == info_b["noise_seed"] == info_c["noise_seed"]
    assert len(rew_a) == 20
    assert rew_a == rew_b == rew_c
    for a, b, c in zip(obs_a, obs_b, obs_c, strict=True):
        for key in ("dem", "proprio"):
            assert np.array_equal(a[key], b[key]) and np.array_equal(a[key], c[key])
    _, other = env_a.reset(seed=12)
    assert other["noise_seed"] != info_a["noise_seed"]


def test_out_of_range_actions_are_clipped(env):
    env.reset(seed=0, options={"world": "flat"})
    obs, reward, _, _, info = env.step(np.array([10.0, -10.0, 5.0, -5.0], dtype=np.float32))
    lo, hi = env.sim.robot.flipper_lower, env.sim.robot.flipper_upper
    np.testing.assert_array_equal(env.sim.targets, [hi, lo, hi, lo])
    assert np.isfinite(reward) and env.observation_space.contains(obs)
    assert info["reward_terms"]["flipper_change"] == pytest.approx(-env.reward_config.flipper_change * 2 * (hi - lo))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))


def test_world_options(env):
    names = [w.name for w in env.worlds]
    _, info = env.reset(seed=0, options={"world": 4})
    assert info["world"] == names[4] and info["world_index"] == 4
    _, info = env.reset(seed=0, options={"world": "stairs_down"})
    assert info["world"] == "stairs_down"
    _, info = env.reset(options={"world": resolve_world("proxy/P"), "noise_seed": 5})
    assert info["world_index"] is None and info["noise_seed"] == 5
    with pytest.raises(ValueError, match="not one of"):
        env.reset(options={"world": "no_such_world"})
    with pytest.raises(ValueError, match="out of range"):
        env.reset(options={"world": len(names)})


def test_world_choice_is_uniform_over_worlds(env):
    seen = {env.reset(seed=s)[1]["world"] for s in range(60)}
    assert seen == {w.name for w in env.worlds}


def test_gymnasium_make():
    env = gymnasium.make(ENV_ID, worlds=[resolve_world("flat")], control_dt=0.2)
    obs, info = env.reset(seed=1)
    assert info["world"] == "flat" and env.observation_space.contains(obs)
    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs) and not truncated and not terminated
    env.close()
    env = gymnasium.make(f"flipper_control.gym_env:{ENV_ID}")
    env.reset(seed=0)
    env.close()


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="render_mode"):
        FlipperEnv(render_mode="human")
    with pytest.raises(ValueError, match="control_dt"):
        FlipperEnv(control_dt=0.0)
    with pytest.raises(ValueError, match="at least one world"):
        FlipperEnv(worlds=[])
    with pytest.raises(ValueError, match="pitch"):
        RewardConfig(pitch=-1.0)
    with pytest.raises(RuntimeError, match="before reset"):
        FlipperEnv().step(np.zeros(4))


@pytest.mark.parametrize("status, bonus", [("running", 0.0), (SUCCESS, 10.0), (FAILED, -10.0)])
def test_reward_terms(status, bonus):
    cfg = RewardConfig()
    terms = reward_terms(cfg, 0.03, np.array([0.1, -0.1, 0.0, 0.2]), -0.2, status, 0.1)
    assert terms["progress"] == pytest.approx(0.03)
    assert terms["flipper_change"] == pytest.approx(-0.05 * 0.4)
    assert terms["pitch"] == pytest.approx(-0.1 * 0.2 * 0.1)
    assert terms["success"] + terms["fail"] == bonus
