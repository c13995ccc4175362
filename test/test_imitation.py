"""Imitation training of the NaN-aware policy (seed 000 section VI): learning, split, determinism, mirroring, clipping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from flipper_control.checkpoint import load_policy, save_policy
from flipper_control.learning.imitation import (
    MIRROR_FLIPPERS,
    evaluate_mse,
    keyframe_weights,
    mirror_arrays,
    split_by_trajectory,
    train_candidates,
    train_policy,
)
from flipper_control.learning.imitation_config import ImitationConfig
from flipper_control.policy import PolicyConfig
from planning.dataset import DatasetError, Trajectory, TrajectoryDataset

SMALL = PolicyConfig(conv_channels=4, hidden=(32,))  # a few ms per epoch on tiny data
FAST = ImitationConfig(epochs=3, batch_size=64, policy=SMALL)
MEDIUM = PolicyConfig(conv_channels=8, hidden=(64,))  # enough to learn the synthetic rule in about a second


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def _rule(dem: np.ndarray, proprio: np.ndarray) -> np.ndarray:
    """A left-right symmetric synthetic expert: each front flipper rises with the highest cell ahead on its
    side, the rear flippers follow pitch and (with opposite signs) roll."""
    ahead = dem[:, :8]  # rows 0..7: the 0.8 m ahead of the DEM's front edge
    left = np.nanmax(np.where(np.isfinite(ahead[..., :2]), ahead[..., :2], -1.0), axis=(1, 2))
    right = np.nanmax(np.where(np.isfinite(ahead[..., 3:]), ahead[..., 3:], -1.0), axis=(1, 2))
    pitch, roll = proprio[:, 0], proprio[:, 1]
    return np.stack([2.5 * left, 2.5 * right, -1.2 * pitch + 0.6 * roll, -1.2 * pitch - 0.6 * roll], axis=1).astype(np.float32)


def _synthetic(n_traj: int = 30, length: int = 50, seed: int = 0, nan_fraction: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = n_traj * length
    dem = rng.normal(-0.09, 0.05, (n, 20, 5)).astype(np.float32)
    # an obstacle of random height in some rows ahead, on a random side, so the rule depends on the DEM
    heights = rng.uniform(0.0, 0.4, n).astype(np.float32)
    cols = rng.integers(0, 5, n)
    rows = rng.integers(0, 8, n)
    dem[np.arange(n), rows, cols] = heights
    if nan_fraction:
        dem[rng.random(dem.shape) < nan_fraction] = np.nan
    proprio = np.concatenate([rng.uniform(-0.4, 0.4, (n, 2)), rng.uniform(-1.0, 1.0, (n, 4))], axis=1).astype(np.float32)
    return {"dem": dem, "proprio": proprio, "action": _rule(dem, proprio), "traj_id": np.repeat(np.arange(n_traj), length)}


def test_learns_a_synthetic_rule_far_better_than_the_mean():
    data = _synthetic()
    config = ImitationConfig(epochs=25, batch_size=128, lr=3e-3, policy=MEDIUM)
    policy, report = train_policy(data, config, seed=0)
    assert report.split == "trajectory" and report.samples_train + report.samples_test == len(data["action"])
    assert report.trajectories_train + report.trajectories_test == 30
    assert report.test_mse < 0.1 * report.baseline_test_mse, report.to_dict()  # about 0.02 in practice
    assert report.test_rmse == pytest.approx(report.test_mse**0.5)
    assert len(report.loss_history) == 25 and report.loss_history[-1] < report.loss_history[0]
    assert not policy.training
    json.dumps(report.to_dict(), allow_nan=False)  # goes into checkpoint sidecars and reports


def test_split_keeps_whole_trajectories_on_one_side():
    rng = np.random.default_rng(3)
    traj_id = np.repeat(np.arange(40), rng.integers(1, 60, 40))
    train, test = split_by_trajectory(traj_id, 0.25, np.random.default_rng(0))
    assert len(train) + len(test) == len(traj_id) and len(np.intersect1d(train, test)) == 0
    assert not set(traj_id[train]) & set(traj_id[test])
    assert abs(len(test) / len(traj_id) - 0.25) < 0.05
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    # reproducible from the generator's seed, different for another seed
    again = split_by_trajectory(traj_id, 0.25, np.random.default_rng(0))
    assert np.array_equal(again[1], test)
    assert not np.array_equal(split_by_trajectory(traj_id, 0.25, np.random.default_rng(1))[1], test)
    # two trajectories: one each side, whatever the fraction
    train, test = split_by_trajectory(np.array([0, 0, 0, 5, 5]), 0.01, np.random.default_rng(0))
    assert len(set(np.array([0, 0, 0, 5, 5])[test])) == 1 and len(train) + len(test) == 5


def test_single_trajectory_splits_in_time_order_and_says_so():
    train, test = split_by_trajectory(np.zeros(10, int), 0.2, np.random.default_rng(0))
    assert train.tolist() == list(range(8)) and test.tolist() == [8, 9]
    data = _synthetic(n_traj=1, length=100)
    _, report = train_policy(data, FAST, seed=0)
    assert report.split == "time" and (report.samples_train, report.samples_test) == (80, 20)
    assert (report.trajectories_train, report.trajectories_test) == (1, 1)
    with pytest.raises(DatasetError, match="cannot split 1 sample"):
        split_by_trajectory(np.zeros(1, int), 0.2, np.random.default_rng(0))


def test_deterministic_for_a_seed_and_different_for_another():
    data = _synthetic(n_traj=6, length=40)
    a, ra = train_policy(data, FAST, seed=7)
    b, rb = train_policy(data, FAST, seed=7)
    c, _ = train_policy(data, FAST, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ra.test_mse == rb.test_mse and ra.loss_history == rb.loss_history
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    # the caller's global RNG is left alone
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_policy(data, FAST, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_samples_per_epoch_caps_each_epoch_with_a_fresh_subset():
    data = _synthetic(n_traj=10, length=40)  # 400 samples, 320 of them for training
    _, full = train_policy(data, FAST, seed=3)
    _, uncapped = train_policy(data, ImitationConfig(epochs=3, batch_size=64, policy=SMALL, samples_per_epoch=10_000), seed=3)
    # a cap above the training set changes nothing, not even the random stream
    assert uncapped.loss_history == full.loss_history and uncapped.steps == full.steps == 3 * 5
    capped_cfg = ImitationConfig(epochs=3, batch_size=64, policy=SMALL, samples_per_epoch=100)
    _, capped = train_policy(data, capped_cfg, seed=3)
    assert capped.samples_train == full.samples_train == 320
    assert capped.steps == 3 * 2  # 100 samples per epoch: batches of 64 and 36
    assert capped.loss_history != full.loss_history
    _, again = train_policy(data, capped_cfg, seed=3)
    assert again.loss_history == capped.loss_history  # the subsets come from the seeded generator


def test_mirror_is_an_involution_and_respects_a_symmetric_rule():
    assert MIRROR_FLIPPERS == (1, 0, 3, 2)
    data = _synthetic(n_traj=2, length=20, nan_fraction=0.2)
    dem, proprio, action = data["dem"], data["proprio"], data["action"]
    m_dem, m_proprio, m_action = mirror_arrays(dem, proprio, action)
    # twice is the identity (NaN compare equal here), and the inputs are untouched
    back = mirror_arrays(m_dem, m_proprio, m_action)
    for orig, again in zip((dem, proprio, action), back, strict=True):
        np.testing.assert_array_equal(orig, again)
    np.testing.assert_array_equal(m_dem[:, :, 0], dem[:, :, 4])  # column 0 (left) <- column 4 (right)
    np.testing.assert_array_equal(m_proprio[:, :2], proprio[:, :2] * np.array([1, -1], np.float32))  # pitch kept, roll negated
    np.testing.assert_array_equal(m_proprio[:, 2:], proprio[:, [3, 2, 5, 4]])
    np.testing.assert_array_equal(m_action, action[:, [1, 0, 3, 2]])
    # the expert is symmetric: its action on the mirrored state is the mirrored (swapped) action
    np.testing.assert_allclose(_rule(m_dem, m_proprio), m_action, atol=1e-6)
    # one sample, no batch axis
    one = mirror_arrays(dem[0], proprio[0], action[0])
    np.testing.assert_array_equal(one[2], action[0, [1, 0, 3, 2]])


def test_mirror_augmentation_teaches_the_unseen_side():
    """Trained only on obstacles to the left and positive roll, the policy learns the right side from the mirror."""
    data = _synthetic(n_traj=20)
    dem, proprio = data["dem"], data["proprio"]
    dem[..., 3:] = np.minimum(dem[..., 3:], 0.0)  # no obstacle on the right-hand columns
    proprio[:, 1] = np.abs(proprio[:, 1])
    train = {"dem": dem, "proprio": proprio, "action": _rule(dem, proprio), "traj_id": data["traj_id"]}
    unseen = mirror_arrays(dem, proprio, train["action"])  # the same situations, mirrored: obstacles right, roll < 0
    errors = {}
    for mirror in (False, True):
        config = ImitationConfig(epochs=20, batch_size=128, lr=3e-3, mirror=mirror, policy=MEDIUM)
        policy, _ = train_policy(train, config, seed=0)
        errors[mirror] = evaluate_mse(policy, *unseen)
    assert errors[True].mean() < 0.2 * errors[False].mean(), errors
    assert errors[True][1] < 0.1 * errors[False][1]  # front-right flipper: never saw an obstacle on its side


def test_flipper_noise_breaks_the_copycat_shortcut():
    """When the state's flipper angles equal the label (a posture held for a while), copying them is a perfect
    shortcut; noise on those inputs makes the network read the posture from the DEM, which shows when the input
    angles disagree with the DEM (the robot in the wrong posture)."""
    data = _synthetic(n_traj=20)
    data["proprio"][:, 2:] = data["action"]  # the robot already holds the label's posture
    rng = np.random.default_rng(1)
    off = {k: v.copy() for k, v in data.items()}
    off["proprio"][:, 2:] = rng.uniform(-1.0, 1.0, off["proprio"][:, 2:].shape)  # a posture the DEM does not ask for
    errors = {}
    for noise in (0.0, 0.5):
        config = ImitationConfig(epochs=20, batch_size=128, lr=3e-3, flipper_noise=noise, policy=MEDIUM)
        policy, report = train_policy(data, config, seed=0)
        assert report.config["flipper_noise"] == noise
        errors[noise] = float(evaluate_mse(policy, off["dem"], off["proprio"], off["action"]).mean())
    assert errors[0.5] < 0.5 * errors[0.0], errors


def _median_rear(data: dict[str, np.ndarray], **setting) -> float:
    """The median rear-flipper output over ``data``'s states of a policy trained on it with one imitation ``setting``
    (40 epochs; the report records the setting)."""
    config = ImitationConfig(epochs=40, batch_size=128, lr=3e-3, policy=MEDIUM, **setting)
    policy, report = train_policy(data, config, seed=0)
    assert all(report.config[name] == value for name, value in setting.items())
    with torch.no_grad():
        out = policy(torch.from_numpy(data["dem"]), torch.from_numpy(data["proprio"])).numpy()
    return float(np.median(out[:, 2:]))


def test_l1_loss_keeps_the_posture_most_labels_hold_where_mse_averages():
    """Two postures labelled on the same states, 70 % and 30 % of the samples (as where a planner's dives pressed the
    rear flippers in most plans and left them level in the rest): the squared error learns their mean, the absolute
    error their median, the majority posture; Huber with a small delta sits near the median too."""
    rng = np.random.default_rng(0)
    data = _synthetic(n_traj=20, length=50)
    majority = rng.random(len(data["action"])) < 0.7
    pressed, level = -0.2, 0.0  # rear targets, rad
    data["action"][:, 2:] = np.where(majority, pressed, level)[:, None]
    rear = {loss: _median_rear(data, loss=loss) for loss in ("mse", "l1", "huber")}
    assert rear["mse"] == pytest.approx(0.7 * pressed + 0.3 * level, abs=0.02), rear
    assert rear["l1"] == pytest.approx(pressed, abs=0.02), rear
    assert rear["huber"] < 0.7 * pressed + 0.3 * level - 0.015, rear  # past the mean, towards the median


def test_keyframe_weight_counts_the_samples_that_change_posture_more():
    """Samples that hold their posture (targets equal to the state's angles) and, on the same kind of states, 30 %
    that press the rear flippers to -0.2 rad from level: the plain loss learns the mean of the rear targets, the
    keyframe-weighted one the mean weighted by 1 + k x the gap (0.1 rad over four flippers for the pressed ones)."""
    rng = np.random.default_rng(0)
    data = _synthetic(n_traj=20, length=50)
    data["proprio"][:, 4:] = 0.0  # the rear flippers level in every state
    data["action"][:, :2] = data["proprio"][:, 2:4]  # the front held where it is: no gap there
    pressed = rng.random(len(data["action"])) < 0.3
    data["action"][:, 2:] = np.where(pressed, -0.2, 0.0)[:, None]
    rear = {k: _median_rear(data, keyframe_weight=k) for k in (0.0, 20.0)}
    w = 1.0 + 20.0 * 0.1  # the pressed samples' weight
    assert rear[0.0] == pytest.approx(0.3 * -0.2, abs=0.02), rear
    assert rear[20.0] == pytest.approx(0.3 * w * -0.2 / (0.7 + 0.3 * w), abs=0.02), rear


def test_keyframe_weights_are_one_plus_k_times_the_mean_gap_and_mirror_invariant():
    data = _synthetic(n_traj=2, length=20)
    proprio, action = torch.from_numpy(data["proprio"]), torch.from_numpy(data["action"])
    weight = keyframe_weights(proprio, action, 5.0)
    expected = 1.0 + 5.0 * np.abs(data["action"] - data["proprio"][:, 2:]).mean(axis=1)
    np.testing.assert_allclose(weight.numpy(), expected, rtol=1e-6)
    _, m_proprio, m_action = mirror_arrays(data["dem"], data["proprio"], data["action"])
    torch.testing.assert_close(keyframe_weights(torch.from_numpy(m_proprio), torch.from_numpy(m_action), 5.0), weight)


def test_gradient_clipping_bounds_every_step():
    """A spy on every optimiser step measures the global gradient norm the optimiser actually uses."""
    data = _synthetic(n_traj=4, length=40)
    norms: list[float] = []

    def spy(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(q) for q in grads]))))

    handle = register_optimizer_step_pre_hook(spy)
    try:
        _, report = train_policy(data, ImitationConfig(epochs=2, batch_size=32, grad_clip=1e-3, policy=SMALL), seed=0)
        clipped = list(norms)
        norms.clear()
        _, free = train_policy(data, ImitationConfig(epochs=2, batch_size=32, grad_clip=1e3, policy=SMALL), seed=0)
    finally:
        handle.remove()
    assert len(clipped) == report.steps > 0
    assert max(clipped) <= 1e-3 * (1 + 1e-4)
    # the clip had work to do: unclipped gradients of the same run are far larger, and the report says so
    assert min(norms) > 1e-2 and report.clipped_fraction == 1.0 and report.grad_norm_max > 1e-2
    assert free.clipped_fraction == 0.0


def test_empty_and_nonfinite_data_raise_dataset_error():
    with pytest.raises(DatasetError, match="no training samples.*0 trajectories"):
        train_policy(TrajectoryDataset([]), FAST)
    failed = TrajectoryDataset([Trajectory.failed("time limit", (20, 5)), Trajectory.failed("rollover", (20, 5))])
    with pytest.raises(DatasetError, match="2 failed and none successful"):
        train_policy(failed, FAST)
    data = _synthetic(n_traj=3, length=10)
    with pytest.raises(DatasetError, match="arrays are empty"):
        train_policy({k: v[:0] for k, v in data.items()}, FAST)
    data["action"][[4, 17], 2] = np.nan
    data["proprio"][17, 0] = np.inf
    with pytest.raises(DatasetError, match="2 of 30 samples have non-finite proprio or action.*index 4"):
        train_policy(data, FAST)
    wrong = _synthetic(n_traj=3, length=10)
    wrong["dem"] = wrong["dem"][:, :10]
    with pytest.raises(DatasetError, match=r"dem \(30, 10, 5\)"):
        train_policy(wrong, FAST)


def test_trains_from_a_dataset_with_failed_trajectories():
    data = _synthetic(n_traj=4, length=25)
    trajs = [Trajectory(data["dem"][i * 25:(i + 1) * 25], data["proprio"][i * 25:(i + 1) * 25],
                        data["action"][i * 25:(i + 1) * 25], success=True) for i in range(4)]
    dataset = TrajectoryDataset([Trajectory.failed("budget", (20, 5)), *trajs])
    _, report = train_policy(dataset, FAST, seed=1)
    assert report.samples_train + report.samples_test == 100 and report.trajectories_train + report.trajectories_test == 4


def test_nan_dems_train_without_nan_outputs(tmp_path):
    data = _synthetic(n_traj=6, length=40, nan_fraction=0.3)
    data["dem"][:10] = np.nan  # whole DEMs missing too
    lines: list[str] = []
    policy, report = train_policy(data, ImitationConfig(epochs=4, batch_size=64, log_every=2, policy=SMALL), seed=0,
                                  progress=lines.append)
    assert report.dem_nan_fraction > 0.3
    assert np.isfinite([report.train_loss, report.train_mse, report.test_mse]).all()
    assert all(bool(torch.isfinite(p).all()) for p in policy.parameters())
    with torch.no_grad():
        out = policy(torch.from_numpy(data["dem"]), torch.from_numpy(data["proprio"]))
    assert bool(torch.isfinite(out).all())
    assert [line.split(":")[1].split()[1] for line in lines] == ["2/4", "4/4"]
    # the report is checkpoint metadata; the checkpoint reproduces the policy
    save_policy(tmp_path / "p", policy, metadata={"imitation": report.to_dict()})
    loaded, meta = load_policy(tmp_path / "p")
    assert meta["imitation"]["seed"] == 0
    with torch.no_grad():
        assert torch.equal(loaded(torch.from_numpy(data["dem"]), torch.from_numpy(data["proprio"])), out)


def test_candidates_ranked_by_score_then_test_mse():
    data = _synthetic(n_traj=6, length=30)
    scores = iter([0.2, 0.9, 0.5, 0.9, float("nan")])
    calls: list[bool] = []

    def score_fn(policy):
        calls.append(policy.training)
        return next(scores)

    cands = train_candidates(data, FAST, seeds=[4, 1, 2, 3, 0], score_fn=score_fn, keep=2)
    assert calls == [False] * 5  # scored in eval mode, once per seed
    by_seed = {c.seed: c for c in cands}
    tied = sorted([1, 3], key=lambda s: (by_seed[s].report.test_mse, s))
    assert [c.seed for c in cands] == [*tied, 2, 4, 0]  # NaN score last
    assert [c.kept for c in cands] == [True, True, False, False, False]
    # all candidates share one test set, so their test errors are comparable
    assert len({(c.report.samples_test, c.report.trajectories_test) for c in cands}) == 1
    assert json.loads(json.dumps([c.to_dict() for c in cands], allow_nan=False))[-1]["score"] == "nan"


def test_candidates_without_score_rank_by_test_mse():
    data = _synthetic(n_traj=6, length=30)
    cands = train_candidates(data, FAST, seeds=[0, 1, 2], keep=5)
    assert [c.report.test_mse for c in cands] == sorted(c.report.test_mse for c in cands)
    assert all(c.kept and c.score is None for c in cands)
    with pytest.raises(ValueError, match="duplicate seeds"):
        train_candidates(data, FAST, seeds=[1, 1])
    with pytest.raises(ValueError, match="keep"):
        train_candidates(data, FAST, seeds=[1], keep=0)


def test_config_round_trip_and_validation():
    config = ImitationConfig(epochs=5, mirror=False, policy=SMALL)
    text = json.dumps(config.to_dict(), allow_nan=False)
    assert ImitationConfig.from_dict(json.loads(text)) == config
    assert ImitationConfig.from_dict({"policy": {"hidden": [8]}}).policy.hidden == (8,)
    with pytest.raises(ValueError, match="unknown field.*bach_size, epocs"):
        ImitationConfig.from_dict({"epocs": 3, "bach_size": 2})
    with pytest.raises(ValueError, match="policy: unknown field.*hiden"):
        ImitationConfig.from_dict({"policy": {"hiden": [8]}})
    for bad, message in [
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"lr": -1.0}, "lr must be a positive"),
        ({"grad_clip": float("inf")}, "grad_clip must be a positive finite"),
        ({"test_fraction": 1.0}, "test_fraction must lie strictly between 0 and 1"),
        ({"mirror": "yes"}, "mirror must be true or false"),
        ({"batch_size": 2.5, "weight_decay": -1}, "batch_size.*weight_decay"),
        ({"policy": {"n_out": 3}}, "mirror needs"),
        ({"samples_per_epoch": 0}, "samples_per_epoch must be an integer >= 1 or null"),
        ({"flipper_noise": -0.1}, "flipper_noise must be a std in radians"),
        ({"loss": "l2"}, "loss must be one of mse, l1, huber, got 'l2'"),
        ({"loss": "huber", "huber_delta": 0}, "huber_delta must be a positive number of radians"),
        ({"flipper_noise": 5.0}, "flipper_noise must be a std in radians"),
        ({"mirror": False, "flipper_noise": 0.2, "policy": {"n_proprio": 2}}, "flipper_noise needs policy.n_proprio == 6"),
        ({"keyframe_weight": -1.0}, "keyframe_weight must be a number between 0 and 1000"),
        ({"keyframe_weight": float("nan")}, "keyframe_weight must be a number between 0 and 1000"),
        ({"mirror": False, "keyframe_weight": 5.0, "policy": {"n_proprio": 2}}, "keyframe_weight needs policy.n_proprio == 6"),
        ({"policy": {"members": 2}}, "policy.members must be 1, got 2: an ensemble averages policies trained one by one"),
    ]:
        with pytest.raises(ValueError, match=message):
            ImitationConfig.from_dict(bad)


# ------------------------------------------------------------------------------------------ ranges
@pytest.mark.parametrize(
    "key, index, value, what",
    [
        ("action", (7, 2), 1.0e6, "action (flipper targets)"),
        ("action", (3, 0), -1.4, "action (flipper targets)"),  # 0.2 rad past the lower limit
        ("proprio", (11, 3), 90.0, "flipper angles"),  # degrees where radians belong
        ("proprio", (5, 0), 3.0, "pitch or roll"),
        ("dem", (9, 4, 2), 1.0e6, "DEM heights"),
        ("dem", (2, 0, 0), -np.inf, "DEM heights"),
    ],
)
def test_samples_outside_the_robots_ranges_are_refused_with_what_and_where(key, index, value, what):
    data = _synthetic(n_traj=3, length=20)
    data[key][index] = value
    with pytest.raises(DatasetError) as info:
        train_policy(data, FAST)
    message = str(info.value)
    assert f"1 of 60 samples have {what} outside" in message and f"first at sample {index[0]}," in message


def test_small_excursions_past_the_limits_are_tolerated():
    data = _synthetic(n_traj=3, length=20)
    data["action"][0, 0] = PolicyConfig().flipper_upper + 0.05  # an overshoot of 3 degrees
    data["dem"][1, 0, 0] = np.nan  # NaN cells are what the policy is made for
    train_policy(data, ImitationConfig(epochs=1, batch_size=64, policy=SMALL))


def test_a_bad_sample_of_a_dataset_names_its_trajectory_and_world():
    data = _synthetic(n_traj=2, length=10)
    trajs = [Trajectory(data["dem"][i * 10:(i + 1) * 10], data["proprio"][i * 10:(i + 1) * 10],
                        data["action"][i * 10:(i + 1) * 10], success=True, meta={"world": f"w{i}"}) for i in range(2)]
    trajs[1].action[4, 1] = 7.0
    with pytest.raises(DatasetError, match=r"first at sample 14 \(trajectory 1, world 'w1', its sample 4\), value 7"):
        train_policy(TrajectoryDataset(trajs), FAST)
