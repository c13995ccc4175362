"""The DEM CycleGAN (perception.cyclegan, perception.gan_training): representation, identity start, the
straight-through mask, G's noise input and its reproducible draws, the occlusion hint, checkpoints (old ones too), training that
learns a known NaN pattern, the policy-aware task term (lambda_task), and bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from flipper_control.checkpoint import save_policy
from flipper_control.learning.transfer_tasks import PolicyTaskModel, action_gap
from flipper_control.policy import TRACK_REACH, NanAwarePolicy, PolicyConfig
from perception.cyclegan import CycleGan, GanConfig, GeneratorOutput, decode, encode, load_gan, save_gan
from perception.domain_randomization import geometric_occlusion
from perception.gan_training import (
    GanData,
    GanDivergedError,
    GanTrainConfig,
    _cycle,
    _distance_to_input,
    domain_warnings,
    gan_data,
    split_by_trajectory,
    task_inputs,
    train_gan,
)
from perception.sim_to_real import SimToReal, dem_noise
from sim.checkpoint_io import CheckpointError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py
SMALL = GanConfig(channels=4, conv_layers=2, disc_hidden=16)


def _dems(n: int, rng: np.random.Generator, nan_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A step ahead at a random row, on noisy ground; scalars like a driving robot's."""
    dems = rng.normal(-0.1, 0.02, (n, 20, 5)).astype(np.float32)
    edge = rng.integers(2, 12, n)
    for i, e in enumerate(edge):
        dems[i, :e] += rng.uniform(0.1, 0.3)
    if nan_fraction:
        dems[rng.random(dems.shape) < nan_fraction] = np.nan
    return dems, rng.uniform(-0.3, 0.3, (n, 6)).astype(np.float32)


def test_encode_gives_the_papers_two_channels_and_decode_inverts_it():
    dem = torch.tensor([[[0.2, float("nan")], [-0.1, 0.0]]])
    channels, _ = encode(dem, torch.zeros(1, 6), height_scale=0.5)
    assert torch.allclose(channels[0, 0], torch.tensor([[0.4, 0.0], [-0.2, 0.0]]))
    assert channels[0, 1].tolist() == [[1, -1], [1, 1]]
    back = decode(channels, 0.5)
    assert torch.equal(torch.isnan(back), torch.isnan(dem)) and torch.allclose(back.nan_to_num(), dem.nan_to_num())


def test_a_fresh_generator_is_exactly_the_identity_whatever_the_noise():
    """G's weights on its noise (like those on its convolutions' features) start at zero: identity at
    initialisation means the same output as input for every noise draw, not only for zero noise."""
    rng = np.random.default_rng(0)
    dems, scalars = _dems(32, rng, nan_fraction=0.3)
    gan = CycleGan(SMALL)
    assert gan.g.noise_channels == SMALL.noise_channels == 1 and gan.g_s.noise_channels == 0  # sim is deterministic
    for net in (gan.g, gan.g_s):
        for seed in (0, 5):
            out = SimToReal(net, seed=seed).transform(dems, scalars)
            np.testing.assert_array_equal(out, dems)  # NaN in the same cells, heights bit-identical
    channels, s = encode(torch.from_numpy(dems), torch.from_numpy(scalars), SMALL.height_scale)
    loud = 10.0 * torch.randn(32, 1, 20, 5, generator=torch.Generator().manual_seed(0))
    for noise in (None, loud):
        out = gan.g(channels, s, noise)
        assert torch.equal(out.channels, channels) and torch.equal(out.scalars, s)
    with pytest.raises(ValueError, match=r"noise must have shape \(32, 1, 20, 5\)"):
        gan.g(channels, s, loud[:, :, :10])


def _drops(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A drop of 0.2-0.5 m at a random row ahead (the terrain that hides cells from the lidar), some cells NaN."""
    dems = rng.normal(0.0, 0.01, (n, 20, 5)).astype(np.float32)
    for i, edge in enumerate(rng.integers(2, 12, n)):
        dems[i, :edge] -= rng.uniform(0.2, 0.5)
    dems[rng.random(dems.shape) < 0.05] = np.nan
    return dems, np.column_stack([rng.uniform(-0.2, 0.2, (n, 1)), np.zeros((n, 5))]).astype(np.float32)


def test_the_occlusion_hint_is_the_terrains_shadow_and_a_fresh_generator_stays_the_identity():
    config = replace(SMALL, occlusion_hint=True)
    gan = CycleGan(config)
    assert gan.g.occlusion_hint and not gan.g_s.occlusion_hint  # the simulator has no lidar shadow to add
    dems, scalars = _drops(24, np.random.default_rng(3))
    np.testing.assert_array_equal(SimToReal(gan.g).transform(dems, scalars), dems)
    channels, s = encode(torch.from_numpy(dems), torch.from_numpy(scalars), config.height_scale)
    hint = gan.g.hint(channels, s)[:, 0].numpy() == 1.0
    shadow = geometric_occlusion(dems, scalars[:, 0])
    assert shadow.sum() > 24  # the drops do hide cells, so the comparison below means something
    np.testing.assert_array_equal(hint, shadow)
    # the plumbing: a G that trusts the hint fully (mask output -10 x hint) hides exactly the shadowed cells
    cells, features = config.cells, config.channels * config.cells + config.n_scalars
    hint_columns = slice(features + config.noise_channels * cells, features + (config.noise_channels + 1) * cells)
    with torch.no_grad():
        gan.g.fc.weight[cells:2 * cells, hint_columns] = -10.0 * torch.eye(cells)
    out = SimToReal(gan.g).transform(dems, scalars)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(dems) | shadow)
    np.testing.assert_array_equal(out[~np.isnan(out)], dems[~np.isnan(out)])
    one = SimToReal(gan.g)  # the one-DEM path computes the hint itself and hides the same cells
    alone = np.stack([one(d, s) for d, s in zip(dems, scalars, strict=True)])
    np.testing.assert_array_equal(np.isnan(alone), np.isnan(out))
    np.testing.assert_allclose(alone, out, atol=1e-6)


def _noisy_generator() -> CycleGan:
    """A fresh CycleGAN whose G adds 0.1 x its noise to every cell's height (a trained G's use of the noise)."""
    gan = CycleGan(SMALL)
    cells = SMALL.cells
    features = SMALL.channels * cells + SMALL.n_scalars
    with torch.no_grad():
        gan.g.fc.weight[:cells, features:features + cells] = 0.1 * torch.eye(cells)
    return gan


def test_the_transform_draws_the_same_noise_for_the_same_dem_in_any_batch_order_or_call():
    rng = np.random.default_rng(6)
    dems, scalars = _dems(12, rng, nan_fraction=0.1)
    transform = SimToReal(_noisy_generator().g)
    out = transform.transform(dems, scalars)
    assert np.nanstd(out - dems) > 0.005  # the noise reaches the heights (0.1 x N(0, 1) x 0.125 m: 1.25 cm)
    np.testing.assert_array_equal(transform.transform(dems[::-1], scalars[::-1])[::-1], out)  # order does not matter
    np.testing.assert_array_equal(transform.transform(dems[3:5], scalars[3:5]), out[3:5])  # nor the batch
    alone = np.stack([transform(d, s) for d, s in zip(dems, scalars, strict=True)])  # nor the one-DEM fast path
    np.testing.assert_allclose(alone, out, atol=1e-6)
    np.testing.assert_array_equal(np.isnan(alone), np.isnan(dems))
    again = SimToReal(_noisy_generator().g)  # another worker with the same generator
    np.testing.assert_array_equal(again.transform(dems, scalars), out)
    # another seed, or other scalars with the same DEM (the next step on flat ground), give other noise
    other_seed = transform.transform(dems, scalars, seed=1)
    assert not np.allclose(other_seed, out, equal_nan=True)
    np.testing.assert_array_equal(SimToReal(_noisy_generator().g, seed=1).transform(dems, scalars), other_seed)
    assert not np.allclose(transform(dems[0], scalars[0] + 0.01), out[0], equal_nan=True)
    with pytest.raises(ValueError, match="seed must be an integer"):
        transform.transform(dems, scalars, seed=-1)


def test_dem_noise_is_standard_normal_and_independent_between_cells_and_dems():
    rng = np.random.default_rng(7)
    dems, scalars = _dems(400, rng)
    noise = dem_noise(dems, scalars, 2, seed=3)
    assert noise.shape == (400, 2, 20, 5) and noise.dtype == np.float32
    flat = noise.reshape(400, -1)
    assert abs(flat.mean()) < 0.02 and abs(flat.std() - 1.0) < 0.02  # 80,000 draws: 3 standard errors or so
    assert abs(np.mean(flat[:, 0] * flat[:, 1])) < 0.15 and abs(np.mean(flat[:-1] * flat[1:])) < 0.02  # no correlation
    np.testing.assert_array_equal(dem_noise(dems[5:6], scalars[5:6], 2, seed=3), noise[5:6])


def test_the_mask_is_hard_forward_and_passes_gradients_backward():
    gan = CycleGan(SMALL)
    channels, s = encode(torch.from_numpy(_dems(4, np.random.default_rng(1), 0.2)[0]), torch.zeros(4, 6), 0.5)
    out = gan.g(channels, s)
    assert set(out.channels[:, 1].unique().tolist()) <= {-1.0, 1.0}
    assert torch.all(out.channels[:, 0][out.channels[:, 1] < 0] == 0)  # heights of NaN cells are 0, as in real data
    out.channels[:, 1].sum().backward()
    assert gan.g.fc.weight.grad is not None and gan.g.fc.weight.grad.abs().sum() > 0  # tanh's gradient reached the layer


def test_training_learns_a_known_nan_pattern_and_keeps_heights(tmp_path):
    """Real DEMs never see the 4 front rows and lose 10 % of cells elsewhere: G must learn to hide the front rows."""
    rng = np.random.default_rng(2)
    sim_dems, sim_scalars = _dems(600, rng)
    real_dems, real_scalars = _dems(600, rng, nan_fraction=0.1)
    real_dems[:, :4] = np.nan
    sim = GanData(sim_dems, sim_scalars, np.repeat(np.arange(6), 100))
    real = GanData(real_dems, real_scalars, np.repeat(np.arange(6), 100))
    config = GanTrainConfig(epochs=6, steps_per_epoch=40, batch_size=32, gan=SMALL)  # batches of 32: a fast test
    epochs = []
    gan, report = train_gan(sim, real, config, seed=0, on_epoch=lambda e, m: epochs.append(e))
    assert epochs == list(range(1, 7)) and report.steps == 240 and len(report.history["d"]) == 6
    out = SimToReal(gan.g).transform(sim_dems[:200], sim_scalars[:200])
    assert np.isnan(out[:, :4]).mean() > 0.9  # the front rows are hidden
    assert np.isnan(out[:, 4:]).mean() < 0.4  # the rest mostly kept
    assert np.nanmean(np.abs(out - sim_dems[:200])) < 0.05  # kept heights barely move (distance to the input)
    back = SimToReal(gan.g_s).transform(real_dems[:200], real_scalars[:200])
    assert np.isnan(back).mean() < 0.1  # G_s fills NaN cells (the penalty on its NaNs)
    save_gan(tmp_path / "gan", gan, {"train_report": report.to_dict()})
    loaded, meta = load_gan(tmp_path / "gan")
    np.testing.assert_array_equal(SimToReal(loaded.g).transform(sim_dems[:20], sim_scalars[:20]), out[:20])
    one = SimToReal(loaded.g)  # the one-DEM fast path gives what the batch gives, every call a new array
    first = one(sim_dems[0], sim_scalars[0])
    np.testing.assert_allclose(first, out[0], atol=1e-6)
    np.testing.assert_allclose(one(sim_dems[1], sim_scalars[1]), out[1], atol=1e-6)
    np.testing.assert_allclose(first, out[0], atol=1e-6)
    assert meta["train_report"]["history"]["cycle"] == report.history["cycle"]


def test_the_simulated_cycle_can_leave_out_the_heights_of_cells_g_hid():
    """cycle_skips_hidden: a cell G hid has no height for G_s to recover; its error counts nothing, the rest as before."""
    dems, scalars = _dems(2, np.random.default_rng(9))
    inp, s = encode(torch.from_numpy(dems), torch.from_numpy(scalars), 0.5)
    back_channels = inp.clone()
    back_channels[0, 0, 3, 2] += 1.0  # G hid this cell; G_s guessed its height 1 unit off
    back_channels[1, 1, 5, 1] = -1.0  # G_s left a cell missing: a mask error, which always counts
    back = GeneratorOutput(back_channels, s.clone(), back_channels[:, 1])
    kept = torch.ones(2, 20, 5)
    kept[0, 3, 2] = 0.0
    n = inp.numel()
    assert _cycle(inp, s, back).item() == pytest.approx(3.0 / n)  # both errors (the mask's is 2: +1 -> -1)
    assert _cycle(inp, s, back, kept).item() == pytest.approx(2.0 / n)  # the hidden cell's height left out
    assert _cycle(inp, s, back, torch.ones(2, 20, 5)).item() == pytest.approx(_cycle(inp, s, back).item())
    assert GanTrainConfig().cycle_skips_hidden is False  # off by default: the reference CycleGAN cycle


def test_lambda_nan_map_brings_gs_per_cell_nan_share_to_the_real_sets():
    """lambda_nan_map: the batch's per-cell share of cells G hides is pulled to the real training set's map. Real DEMs
    miss half of their 6 rear rows and 5 % elsewhere; with the term, G's NaN map lies clearly closer to theirs, and so
    does the share its rear rows hide. The term's value joins the history only where it is on."""
    rng = np.random.default_rng(5)
    sim_dems, sim_scalars = _dems(400, rng)
    real_dems, real_scalars = _dems(400, rng, nan_fraction=0.05)
    real_dems[:, 14:][rng.random((400, 6, 5)) < 0.5] = np.nan
    sim = GanData(sim_dems, sim_scalars, np.repeat(np.arange(4), 100))
    real = GanData(real_dems, real_scalars, np.repeat(np.arange(4), 100))
    real_map = np.isnan(real_dems).mean(axis=0)
    maps, histories = {}, {}
    for weight in (0.0, 30.0):
        config = GanTrainConfig(epochs=3, steps_per_epoch=40, batch_size=32, gan=SMALL, lambda_nan_map=weight)
        gan, report = train_gan(sim, real, config, seed=0)
        maps[weight] = np.isnan(SimToReal(gan.g).transform(sim_dems[:200], sim_scalars[:200])).mean(axis=0)
        histories[weight] = report.history
    distance = {w: float(np.abs(m - real_map).mean()) for w, m in maps.items()}
    assert distance[30.0] < 0.7 * distance[0.0], distance
    rear_gap = {w: abs(m[14:].mean() - real_map[14:].mean()) for w, m in maps.items()}
    assert rear_gap[30.0] < 0.6 * rear_gap[0.0], rear_gap
    assert "nan_map" in histories[30.0] and "nan_map" not in histories[0.0]
    assert histories[30.0]["nan_map"][-1] < histories[30.0]["nan_map"][0]  # the term itself falls
    assert GanTrainConfig().lambda_nan_map == 0.0  # off by default
    with pytest.raises(ValueError, match="lambda_nan_map must be a number >= 0"):
        GanTrainConfig(lambda_nan_map=-1.0)


def test_the_pull_to_the_input_is_towards_input_plus_the_sensor_offset():
    """height_offset: G may move the heights it keeps by the sensor's offset for free, and pays for any other change;
    the scalars and the cells hidden in either DEM count as before."""
    dems, scalars = _dems(3, np.random.default_rng(5))
    inp, s = encode(torch.from_numpy(dems), torch.from_numpy(scalars), 0.125)
    lifted = inp.clone()
    lifted[:, 0] += 0.02 / 0.125  # every height 2 cm up, in the channels' units
    out = GeneratorOutput(lifted, s.clone(), lifted[:, 1])
    assert _distance_to_input(inp, s, out).item() == pytest.approx(0.16, rel=1e-5)
    assert _distance_to_input(inp, s, out, 0.16).item() == pytest.approx(0.0, abs=1e-6)
    assert _distance_to_input(inp, s, out, -0.16).item() == pytest.approx(0.32, rel=1e-5)  # G_s's direction
    with pytest.raises(ValueError, match="height_offset must be a number of metres within"):
        GanTrainConfig(height_offset=0.8)
    with pytest.raises(ValueError, match="height_offset must be a number"):
        GanTrainConfig(height_offset=True)
    assert GanTrainConfig().height_offset == 0.0


def test_a_held_generator_moves_kept_heights_by_the_sensor_offset():
    """Real DEMs read 4 cm above simulated ones of the same kind: held to its input (lambda_p 3), G keeps the
    simulator's level without the offset and lifts its DEMs by about 4 cm with it; G_s lowers them."""
    rng = np.random.default_rng(6)
    sim_dems, sim_scalars = _dems(400, rng)
    real_dems, real_scalars = _dems(400, rng)
    real_dems += 0.04
    sim, real = GanData(sim_dems, sim_scalars, np.zeros(400, np.int64)), GanData(real_dems, real_scalars, np.zeros(400, np.int64))
    lift = {}
    for offset in (0.0, 0.04):
        config = GanTrainConfig(epochs=4, steps_per_epoch=40, batch_size=32, lambda_p=3.0, height_offset=offset, gan=SMALL)
        gan, _ = train_gan(sim, real, config, seed=0)
        lift[offset] = float(np.nanmean(SimToReal(gan.g).transform(sim_dems[:200], sim_scalars[:200]) - sim_dems[:200]))
        if offset:
            back = SimToReal(gan.g_s).transform(real_dems[:200], real_scalars[:200])
            assert np.nanmean(back - real_dems[:200]) == pytest.approx(-0.04, abs=0.012)
    assert abs(lift[0.0]) < 0.012 and lift[0.04] == pytest.approx(0.04, abs=0.012)


def test_training_is_deterministic_for_a_seed():
    """Batches and G's noise come from the seed (the R1 penalty adds no randomness)."""
    rng = np.random.default_rng(3)
    sim = GanData(*_dems(100, rng), np.zeros(100, np.int64))
    real = GanData(*_dems(100, rng, 0.2), np.zeros(100, np.int64))
    config = GanTrainConfig(epochs=1, steps_per_epoch=5, batch_size=16, gan=SMALL)
    a, _ = train_gan(sim, real, config, seed=7)
    b, _ = train_gan(sim, real, config, seed=7)
    c, _ = train_gan(sim, real, config, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_a_diverging_gan_raises_instead_of_returning_garbage():
    rng = np.random.default_rng(4)
    sim = GanData(*_dems(50, rng), np.zeros(50, np.int64))
    real = GanData(*_dems(50, rng, 0.2), np.zeros(50, np.int64))
    gan = CycleGan(SMALL)
    with torch.no_grad():
        gan.g.fc.bias[0] = float("inf")
    with pytest.raises(GanDivergedError, match="generator loss turned nan"):
        train_gan(sim, real, GanTrainConfig(epochs=1, steps_per_epoch=2, gan=SMALL), gan=gan)


def test_bad_data_is_refused_naming_the_set():
    rng = np.random.default_rng(5)
    dems, scalars = _dems(10, rng)
    with pytest.raises(ValueError, match=r"--real x: DEMs of 10 x 5 cells, the GAN's are 20 x 5"):
        gan_data({"dem": dems[:, :10], "proprio": scalars}, GanConfig(), "--real x")
    with pytest.raises(ValueError, match="--real x: no measured cell in any DEM"):
        gan_data({"dem": np.full_like(dems, np.nan), "proprio": scalars}, GanConfig(), "--real x")
    with pytest.raises(ValueError, match="--sim y: no samples"):
        gan_data({"dem": dems[:0], "proprio": scalars[:0]}, GanConfig(), "--sim y")
    with pytest.raises(ValueError, match="SimToReal: DEMs"):
        SimToReal(CycleGan(SMALL).g).transform(dems[:, :10], scalars)


def test_sets_that_look_swapped_or_hole_free_are_warned_about_and_a_usual_pair_is_not():
    rng = np.random.default_rng(6)
    exact, lidar = (GanData(*_dems(8, rng, nan), np.arange(8)) for nan in (0.0, 0.1))
    assert domain_warnings(exact, lidar) == []
    swapped = domain_warnings(lidar, exact)
    assert len(swapped) == 1 and "were --sim and --real swapped?" in swapped[0] and "0.0 % of the real" in swapped[0]
    hole_free = domain_warnings(exact, GanData(*_dems(8, rng), np.arange(8)))
    assert len(hole_free) == 1 and "the real set misses no cell" in hole_free[0]


def test_a_checkpoint_from_before_the_noise_input_loads_as_the_deterministic_generator(tmp_path):
    old = GanConfig(channels=4, conv_layers=2, disc_hidden=16, noise_channels=0)
    save_gan(tmp_path / "old", CycleGan(old))
    sidecar = json.loads((tmp_path / "old.json").read_text())
    del sidecar["config"]["noise_channels"]  # what a sidecar written before the fields holds
    del sidecar["config"]["occlusion_hint"]
    (tmp_path / "old.json").write_text(json.dumps(sidecar))
    loaded, _ = load_gan(tmp_path / "old")
    assert loaded.config == old and loaded.g.noise_channels == 0 and loaded.g.occlusion_hint is False
    rng = np.random.default_rng(8)
    dems, scalars = _dems(4, rng)
    np.testing.assert_array_equal(SimToReal(loaded.g).transform(dems, scalars), dems)
    assert GanConfig.from_dict({"channels": 4}).noise_channels == 1  # a config file that leaves it out: the default


def test_a_policy_checkpoint_is_not_a_gan(tmp_path):
    save_policy(tmp_path / "policy", NanAwarePolicy())
    with pytest.raises(CheckpointError, match="unknown architecture 'NanAwarePolicy'"):
        load_gan(tmp_path / "policy")


def test_split_keeps_trajectories_whole():
    data = GanData(np.zeros((10, 20, 5), np.float32), np.zeros((10, 6), np.float32), np.repeat(np.arange(5), 2))
    train, test = split_by_trajectory(data, 0.2, np.random.default_rng(0))
    assert len(train) + len(test) == 10 and not set(train.traj_id) & set(test.traj_id)


def test_config_bounds_and_parameter_count():
    for config in (GanConfig(), GanConfig(noise_channels=0), GanConfig(noise_channels=3),
                   GanConfig(occlusion_hint=True), GanConfig(noise_channels=0, occlusion_hint=True)):
        assert config.parameter_count() == sum(p.numel() for p in CycleGan(config).parameters())
    with pytest.raises(ValueError, match="occlusion_hint must be true or false"):
        GanConfig(occlusion_hint="yes")
    with pytest.raises(ValueError, match="kernel must be an odd integer"):
        GanConfig(kernel=4)
    with pytest.raises(ValueError, match=r"noise_channels must be an integer in \[0, 8\]"):
        GanConfig(noise_channels=-1)
    with pytest.raises(ValueError, match="r1 must be a number >= 0"):
        GanTrainConfig(r1=-1.0)
    with pytest.raises(ValueError, match="cycle_skips_hidden must be true or false"):
        GanTrainConfig(cycle_skips_hidden=1)
    with pytest.raises(ValueError, match="more than a DEM CycleGAN needs"):
        GanConfig(channels=2000)


# ------------------------------------------------------------------------------------------ policy-aware GAN
def _front_policy() -> NanAwarePolicy:
    """A hand-set policy that acts on the 4 front rows only: every flipper = squash(0.1 x sum over those 20 cells of
    (height / 0.5 m + 1) x measured - 2.2), about mid-range on sim's flat ground, far off when the rows are hidden."""
    policy = NanAwarePolicy(PolicyConfig(conv_channels=1, conv_kernel=1, hidden=()))
    with torch.no_grad():
        policy.conv_values.weight.fill_(1.0)
        policy.conv_values.bias.fill_(1.0)
        policy.conv_mask.weight.fill_(1.0)
        policy.conv_mask.bias.fill_(0.0)
        weights = torch.zeros(20, 5)
        weights[:4] = 0.1
        policy.head[0].weight.zero_()
        policy.head[0].weight[:, :100] = weights.flatten()
        policy.head[0].bias.fill_(-2.2)
    return policy


def _front_rows_hidden(n: int, seed: int) -> tuple[GanData, GanData]:
    """Sim: exact DEMs; real: the 4 front rows never seen and 10 % of the rest lost (one trajectory each)."""
    rng = np.random.default_rng(seed)
    sim_dems, sim_scalars = _dems(n, rng)
    real_dems, real_scalars = _dems(n, rng, nan_fraction=0.1)
    real_dems[:, :4] = np.nan
    return (GanData(sim_dems, sim_scalars, np.zeros(n, np.int64)), GanData(real_dems, real_scalars, np.zeros(n, np.int64)))


@pytest.mark.parametrize("fill", [{"nan_fill": "zero"}, {"nan_fill": "column"},
                                  {"nan_fill": "column", "footprint_reach": TRACK_REACH}, {"members": 2}])
def test_the_policy_as_task_model_acts_as_on_dems_with_nan_and_passes_gradients_through_heights_and_mask(fill):
    """The task model's (heights, measured) path equals the policy's own NaN path (with each completion of the
    missing cells), and G's heights and (straight through) mask both get a gradient from the policy's action -- a
    NaN DEM would give the mask none."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        policy = NanAwarePolicy(PolicyConfig(**fill))
    dems, scalars = _dems(16, np.random.default_rng(10), nan_fraction=0.3)
    task = PolicyTaskModel(policy)
    channels, s = encode(torch.from_numpy(dems), torch.from_numpy(scalars), SMALL.height_scale)
    expected = policy(torch.from_numpy(dems), s)
    assert torch.allclose(task(*task_inputs(channels, SMALL.height_scale), s), expected, atol=1e-6)
    assert not any(p.requires_grad for p in policy.parameters())  # frozen: G's optimiser cannot move it
    gan = CycleGan(SMALL)
    out = gan.g(channels, s)
    task(*task_inputs(out.channels, SMALL.height_scale), s).sum().backward()
    grad = gan.g.fc.weight.grad
    cells = SMALL.cells
    assert grad[:cells].abs().sum() > 0 and grad[cells:2 * cells].abs().sum() > 0  # heights rows, mask rows


def test_lambda_task_zero_with_a_task_model_trains_bit_identically_to_none_and_only_measures():
    sim, real = _front_rows_hidden(100, 11)
    config = GanTrainConfig(epochs=1, steps_per_epoch=5, batch_size=16, gan=SMALL)
    plain, plain_report = train_gan(sim, real, config, seed=3)
    measured, report = train_gan(sim, real, config, seed=3, task_model=PolicyTaskModel(_front_policy()))
    a, b = plain.state_dict(), measured.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "task" not in plain_report.history and len(report.history["task"]) == 1
    assert all(report.history[k] == plain_report.history[k] for k in plain_report.history)
    with pytest.raises(ValueError, match="lambda_task = 1.0 needs a task model"):
        train_gan(sim, real, GanTrainConfig(epochs=1, steps_per_epoch=1, gan=SMALL, lambda_task=1.0))
    with pytest.raises(ValueError, match="lambda_task must be a number >= 0"):
        GanTrainConfig(lambda_task=-0.5)


def test_lambda_task_keeps_the_policys_action_where_the_plain_gan_changes_it():
    """Real DEMs never show the front rows the policy acts on: the plain G learns to hide them and moves the
    policy's action by about 1.4 rad; with lambda_task the same seed and steps keep the action within 0.05 rad."""
    sim, real = _front_rows_hidden(300, 2)
    task = PolicyTaskModel(_front_policy())
    test_dems, test_scalars = _dems(100, np.random.default_rng(9))
    gaps, fronts = {}, {}
    for lam in (0.0, 5.0):
        config = GanTrainConfig(epochs=3, steps_per_epoch=20, batch_size=32, gan=SMALL, lambda_task=lam)
        gan, report = train_gan(sim, real, config, seed=0, task_model=task)
        out = SimToReal(gan.g).transform(test_dems, test_scalars)
        gaps[lam] = action_gap(task, test_dems, {"G": out}, test_scalars)["G"]
        fronts[lam] = np.isnan(out[:, :4]).mean()
    assert gaps[0.0] > 0.5 and fronts[0.0] > 0.5  # the plain GAN hides the front rows, the action follows
    assert gaps[5.0] < 0.05 and gaps[5.0] < 0.1 * gaps[0.0] and fronts[5.0] < 0.1
