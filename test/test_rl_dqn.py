"""DQN (seed 003) and DDQN + PER (seed 004): targets on hand examples, He initialisation, frame stacks, a short
CartPole run that learns, a short Asterix RAM run, checkpoint round trip and refusals, divergence."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from flipper_control.rl import ddqn_per, dqn
from flipper_control.rl.checkpoint import load_agent, save_agent
from flipper_control.rl.common import DivergedError, FrameStack, evaluate, exponential_epsilon, linear_schedule
from flipper_control.rl.networks import QNetwork, QNetworkConfig
from flipper_control.rl.replay import Batch
from sim.checkpoint_io import CheckpointError


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Table(torch.nn.Module):
    """Q-values looked up by the first observation component (a row index): a hand-made Q-function."""

    def __init__(self, rows):
        super().__init__()
        self.rows = torch.tensor(rows, dtype=torch.float32)

    def forward(self, obs):
        return self.rows[obs[:, 0].long()]


def _batch(obs, actions, rewards, next_obs, dones) -> Batch:
    f = lambda v: np.asarray(v, np.float32)
    return Batch(f(obs), np.asarray(actions, np.int64), f(rewards), f(next_obs), f(dones), np.arange(len(actions)))


def test_double_dqn_target_on_a_hand_example():
    rewards, dones = torch.tensor([1.0, 0.5, 2.0]), torch.tensor([0.0, 1.0, 0.0])
    online = torch.tensor([[3.0, 1.0], [0.0, 9.0], [1.0, 2.0]])  # picks actions 0, 1, 1
    target = torch.tensor([[10.0, 20.0], [30.0, 40.0], [5.0, -4.0]])  # values them 10, 40, -4
    got = ddqn_per.double_dqn_targets(rewards, dones, online, target, gamma=0.9)
    torch.testing.assert_close(got, torch.tensor([1.0 + 0.9 * 10.0, 0.5, 2.0 + 0.9 * -4.0]))
    # plain DQN would take the target's own max: 1 + 0.9 * 20 and 2 + 0.9 * 5; Double DQN must not
    assert got[0] != 1.0 + 0.9 * 20.0 and got[2] != 2.0 + 0.9 * 5.0


def test_dqn_and_ddqn_losses_and_td_errors_by_hand():
    # states 0 and 1; Q_online(0) = [1, 2], Q_online(1) = [4, 3]; Q_target(1) = [0, 10]
    online, target = _Table([[1.0, 2.0], [4.0, 3.0]]), _Table([[0.0, 0.0], [0.0, 10.0]])
    batch = _batch([[0], [0]], [0, 1], [1.0, 0.0], [[1], [1]], [0.0, 1.0])
    # DQN: targets 1 + 0.5 * max(0, 10) = 6 and 0 (terminal); errors 1 - 6 = -5 and 2 - 0 = 2
    huber = lambda d: 0.5 * d * d if abs(d) <= 1 else abs(d) - 0.5
    assert float(dqn.dqn_loss(online, target, batch, 0.5)) == pytest.approx((huber(-5) + huber(2)) / 2)
    # Double DQN: the online net picks action 0 in state 1, the target values it 0: targets 1 and 0
    loss, td = ddqn_per.td_errors_and_loss(online, target, batch, None, 0.5)
    np.testing.assert_allclose(td, [0.0, 2.0])
    assert float(loss) == pytest.approx((0 + huber(2)) / 2)
    # importance weights scale each sample's loss
    loss_w, _ = ddqn_per.td_errors_and_loss(online, target, batch, np.array([1.0, 0.25], np.float32), 0.5)
    assert float(loss_w) == pytest.approx(0.25 * huber(2) / 2)


def test_he_uniform_init_and_seed_004_ram_network_size():
    cfg = QNetworkConfig(640, 9, (128, 128), input_scale=1 / 255)
    net = QNetwork(cfg)
    assert sum(p.numel() for p in net.parameters()) == cfg.n_params == 99_721  # the seed's count for its RAM network
    first = net.net[0].weight.detach()
    bound = math.sqrt(6 / 640)
    assert float(first.abs().max()) <= bound and float(first.abs().max()) > 0.95 * bound
    assert float(first.std()) == pytest.approx(math.sqrt(2 / 640), rel=0.05)  # uniform(-b, b) has std b / sqrt(3)
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in net.net if isinstance(m, torch.nn.Linear))
    # input scaling: RAM bytes of 255 act like 1.0
    x = torch.full((1, 640), 255, dtype=torch.uint8)
    ref = QNetwork(replace(cfg, input_scale=1.0))
    ref.load_state_dict(net.state_dict())
    torch.testing.assert_close(net(x), ref(torch.ones(1, 640)))
    with pytest.raises(ValueError, match="init"):
        QNetworkConfig(4, 2, init="xavier")
    with pytest.raises(ValueError, match="unknown QNetworkConfig field"):
        QNetworkConfig.from_dict({"obs_dim": 4, "n_actions": 2, "layers": 3})


def test_frame_stack_and_schedules():
    fs = FrameStack(3)
    np.testing.assert_array_equal(fs.reset(np.array([1, 2])), [1, 2, 1, 2, 1, 2])
    np.testing.assert_array_equal(fs.push(np.array([3, 4])), [1, 2, 1, 2, 3, 4])
    np.testing.assert_array_equal(fs.push(np.array([5, 6])), [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(fs.push(np.array([7, 8])), [3, 4, 5, 6, 7, 8])
    assert exponential_epsilon(0, 1.0, 0.05, 100) == pytest.approx(1.0)
    assert exponential_epsilon(100, 1.0, 0.05, 100) == pytest.approx(0.05 + 0.95 / math.e)
    assert linear_schedule(50, 1.0, 0.1, 100) == pytest.approx(0.55) and linear_schedule(500, 1.0, 0.1, 100) == 0.1


def test_short_dqn_run_learns_cartpole(tmp_path):
    # a random policy lasts ~22 steps on CartPole; a few seconds of DQN must do far better
    config = replace(dqn.DQNConfig(), hidden=(64, 64), train_every=64, gradient_steps=32, target_update_every=64,
                     eps_decay_steps=1000, eval_every=1_000, eval_episodes=5, final_eval_episodes=10)
    r = dqn.train("CartPole-v1", steps=4_000, seed=0, out=tmp_path / "q", config=config)
    assert r.eval_episodes == 10 and r.env_steps == 4_000 and r.algorithm == "dqn"
    assert r.eval_mean_return > 100, r.curve["evals"]  # measured here: 204 (random: ~22)
    # the checkpoint holds the kept (best) weights: evaluating it gives the reported figure
    net, meta = load_agent(tmp_path / "q", algorithm="dqn", shapes={"obs_dim": 4, "n_actions": 2})
    assert meta["rl"]["step"] == r.best_step and meta["seed"] == 0
    returns, _ = evaluate(net, "CartPole-v1", 10, seed=0 + 2_000_000)
    assert np.mean(returns) == pytest.approx(r.eval_mean_return)


def test_short_ddqn_per_run_on_asterix_ram(tmp_path):
    config = replace(ddqn_per.default_config("Asterix-ram"), learning_starts=200, train_every=2, eval_every=10_000,
                     eval_episodes=1, final_eval_episodes=1, buffer_size=1_000, target_update_every=100)
    r = ddqn_per.train("Asterix-ram", steps=600, seed=1337, out=tmp_path / "a", config=config)
    assert r.env_steps == 600 and r.eval_episodes == 1 and r.eval_mean_return >= 0
    net, meta = load_agent(tmp_path / "a", algorithm="ddqn-per", shapes={"obs_dim": 5 * 128, "n_actions": 9})
    assert meta["rl"]["frame_stack"] == 5 and net.config.input_scale == pytest.approx(1 / 255)
    with pytest.raises(ValueError, match="allowed: Asterix-ram, CartPole-v1"):
        ddqn_per.train("Pong", steps=10)


def test_checkpoint_round_trip_and_refusals(tmp_path):
    torch.manual_seed(0)
    net = QNetwork(QNetworkConfig(4, 2, (16,)))
    save_agent(tmp_path / "c", net, algorithm="dqn", env_id="CartPole-v1", rl={"frame_stack": 1}, metadata={"seed": 3})
    loaded, meta = load_agent(tmp_path / "c", algorithm="dqn", shapes={"obs_dim": 4, "n_actions": 2})
    x = torch.randn(5, 4)
    torch.testing.assert_close(loaded(x), net(x))
    assert meta["seed"] == 3 and meta["rl"] == {"algorithm": "dqn", "env": "CartPole-v1", "frame_stack": 1}
    with pytest.raises(CheckpointError, match=r"c\.json: metadata\.rl\.algorithm is 'dqn', expected 'ddqn-per'"):
        load_agent(tmp_path / "c", algorithm="ddqn-per")
    with pytest.raises(CheckpointError, match=r"c\.json: config\.obs_dim is 4 but Asterix needs 640"):
        load_agent(tmp_path / "c", shapes={"obs_dim": 640, "n_actions": 9}, needed_by="Asterix")
    # a checkpoint of another kind (the flipper policy) is refused, naming the file
    from flipper_control.checkpoint import save_policy
    from flipper_control.policy import NanAwarePolicy

    save_policy(tmp_path / "p", NanAwarePolicy())
    with pytest.raises(CheckpointError, match=r"p\.json: unknown architecture 'NanAwarePolicy'"):
        load_agent(tmp_path / "p")


def test_diverged_run_stops_and_keeps_its_last_good_checkpoint(tmp_path):
    # an absurd learning rate blows the weights up within a few updates
    config = replace(dqn.DQNConfig(), lr=1e30, learning_starts=300, train_every=4, gradient_steps=1, eval_every=10_000,
                     eval_episodes=2, final_eval_episodes=2)
    with pytest.raises(DivergedError, match=r"loss became (nan|inf) at environment step \d+; the last good checkpoint "
                                            r".*ckpt \(step 300\) is kept"):
        dqn.train("CartPole-v1", steps=3_000, seed=0, out=tmp_path / "ckpt", config=config)
    net, meta = load_agent(tmp_path / "ckpt", algorithm="dqn")  # finite weights, checked on load
    assert meta["rl"]["step"] == 300
