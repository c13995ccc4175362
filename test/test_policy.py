"""The NaN-aware policy (seed 000 section VI) and its safetensors + JSON checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flipper_control.checkpoint import CheckpointError, checkpoint_paths, load_policy, save_policy
from flipper_control.controllers import HeuristicController
from flipper_control.policy import (
    TRACK_REACH,
    NanAwarePolicy,
    PolicyConfig,
    PolicyController,
    ensemble_of,
    fill_columns,
    footprint_heights,
)
from sim.dem import DemSpec
from sim.mujoco_sim import MujocoSimulator
from sim.rollout import Trace, run_episode
from sim.world_sets import resolve_world

CFG = PolicyConfig()


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def _policy(seed: int = 0, config: PolicyConfig = CFG) -> NanAwarePolicy:
    torch.manual_seed(seed)
    return NanAwarePolicy(config).eval()  # safe: nn.Module.eval()


def _inputs(batch: int, seed: int = 0, nan_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    dem = rng.normal(-0.09, 0.15, (batch, *CFG.dem_shape)).astype(np.float32)
    dem[rng.random(dem.shape) < nan_fraction] = np.nan
    proprio = np.concatenate([rng.uniform(-0.6, 0.6, (batch, 2)), rng.uniform(-1.2, 1.57, (batch, 4))], axis=1)
    return torch.from_numpy(dem), torch.from_numpy(proprio.astype(np.float32))


def test_output_shape_and_joint_limits():
    policy = _policy()
    dem, proprio = _inputs(64)
    out = policy(dem, proprio)
    assert out.shape == (64, 4)
    assert bool(((out >= CFG.flipper_lower) & (out <= CFG.flipper_upper)).all())
    # a saturated head still lands inside the range, never outside it
    with torch.no_grad():
        policy.head[-1].bias.fill_(1e6)
    assert bool((policy(dem, proprio) <= CFG.flipper_upper).all())


@pytest.mark.parametrize(
    "case", ["all_nan", "partial_nan", "pos_inf", "neg_inf", "mixed_nonfinite", "huge_finite", "nan_proprio"]
)
def test_never_outputs_nan(case):
    policy = _policy()
    dem, proprio = _inputs(8)
    if case == "all_nan":
        dem[:] = float("nan")
    elif case == "partial_nan":
        dem[:, :10] = float("nan")
    elif case == "pos_inf":
        dem[:, 3, 2] = float("inf")
    elif case == "neg_inf":
        dem[:] = float("-inf")
    elif case == "mixed_nonfinite":
        dem[:, ::2] = float("nan")
        dem[:, 1::4] = float("inf")
        dem[:, 3::4] = float("-inf")
    elif case == "huge_finite":
        dem[:, 5] = 1e38
        dem[:, 6] = -1e38
    elif case == "nan_proprio":
        proprio[:, 1] = float("nan")
        proprio[:, 2] = float("inf")
    out = policy(dem, proprio)
    assert bool(torch.isfinite(out).all())
    single = policy.act_numpy(dem[0].numpy(), proprio[0].numpy())
    assert single.shape == (4,) and np.isfinite(single).all()


def test_missing_cell_values_cannot_leak():
    """A non-finite cell counts as not measured whatever it holds; a measured one does matter."""
    policy = _policy()
    dem, proprio = _inputs(1, nan_fraction=0.0)
    outs = []
    for missing in (float("nan"), float("inf"), float("-inf")):
        d = dem.clone()
        d[0, 4, 1] = missing
        outs.append(policy(d, proprio))
        values, mask = policy.split_dem(d, proprio)
        assert values[0, 0, 4, 1] == 0 and mask[0, 0, 4, 1] == 0
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    # NaN and +-inf are the values a missing cell can hold; identical outputs mean none of them leaks,
    # while the two controls below show the cell itself is not ignored
    assert policy.split_dem(dem, proprio)[1].sum() == dem.numel()
    measured_zero = dem.clone()
    measured_zero[0, 4, 1] = 0.0
    assert not torch.equal(policy(measured_zero, proprio), outs[0]), "a missing cell must differ from a measured 0"
    moved = dem.clone()
    moved[0, 4, 1] += 0.3
    assert not torch.equal(policy(moved, proprio), policy(dem, proprio)), "measured heights must reach the output"


def test_fill_columns_interpolates_each_column_between_its_measured_cells():
    nan = float("nan")
    column = [nan, 1.0, nan, nan, 4.0, nan]
    dem = torch.tensor([column, [nan] * 6, [2.0] * 6]).T.unsqueeze(0)  # (1, 6 rows, 3 cols)
    measured = torch.isfinite(dem)
    values = torch.where(measured, dem, 0.0).requires_grad_(True)
    filled = fill_columns(values, measured)
    want = torch.tensor([[1.0, 1.0, 2.0, 3.0, 4.0, 4.0], [0.0] * 6, [2.0] * 6]).T.unsqueeze(0)
    assert torch.equal(filled.detach(), want)  # the nearest beyond the ends, 0 in a column with nothing measured
    filled[0, 2, 0].backward()  # row 2 lies a third of the way from row 1 to row 4
    assert torch.allclose(values.grad[0, :, 0], torch.tensor([0.0, 2 / 3, 0.0, 0.0, 1 / 3, 0.0]))


def test_column_fill_changes_only_what_missing_cells_hold():
    """Same weights: on a fully measured DEM the fills agree; with a lidar shadow, "column" gives the missing cells
    their column's interpolated heights (no edge where the shadow begins), the mask stays, and what a missing cell
    holds (NaN, +-inf) still cannot leak."""
    zero, column = _policy(3), _policy(3, PolicyConfig(nan_fill="column"))
    column.load_state_dict(zero.state_dict())
    dem, proprio = _inputs(4, seed=3, nan_fraction=0.0)
    assert torch.equal(zero(dem, proprio), column(dem, proprio))
    shadow = dem.clone()
    shadow[:, 3:6, :] = float("nan")
    values, mask = column.split_dem(shadow, proprio)
    scaled = dem / CFG.dem_scale
    assert torch.allclose(values[:, 0, 4], scaled[:, 2] + (scaled[:, 6] - scaled[:, 2]) / 2, atol=1e-6)
    assert torch.equal(mask, zero.split_dem(shadow, proprio)[1]) and mask[:, 0, 3:6].sum() == 0
    assert not torch.equal(zero(shadow, proprio), column(shadow, proprio))
    inf = shadow.clone()
    inf[:, 3:6, :] = float("inf")
    assert torch.equal(column(inf, proprio), column(shadow, proprio))
    assert bool(torch.isfinite(column(torch.full_like(dem, float("nan")), proprio)).all())


def test_nan_aware_convolution_numerically():
    """With a summing value filter and a counting mask filter, the product is sum * count per 3x3 patch."""
    cfg = PolicyConfig(conv_channels=2, dem_scale=1.0)
    policy = NanAwarePolicy(cfg)
    with torch.no_grad():
        policy.conv_values.weight.fill_(1.0)
        policy.conv_values.bias.zero_()
        policy.conv_mask.weight.fill_(1.0)
        policy.conv_mask.bias.zero_()
    rng = np.random.default_rng(3)
    dem = rng.uniform(0.0, 0.4, cfg.dem_shape)
    dem[rng.random(dem.shape) < 0.3] = np.nan
    dem[0, :] = np.nan  # a fully missing row at the padded edge
    level = torch.zeros(1, cfg.n_proprio)
    features = policy.encode(torch.tensor(dem[None], dtype=torch.float32), level).detach().numpy().reshape(2, *cfg.dem_shape)
    padded = np.pad(dem, 1, constant_values=np.nan)
    expected = np.zeros(cfg.dem_shape)
    for i in range(cfg.dem_shape[0]):
        for j in range(cfg.dem_shape[1]):
            patch = padded[i : i + 3, j : j + 3]
            expected[i, j] = np.nansum(patch) * np.isfinite(patch).sum()
    np.testing.assert_allclose(features[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features[1], expected, rtol=1e-5, atol=1e-6)


def test_gradients_flow_and_a_tiny_regression_fits():
    torch.manual_seed(0)
    policy = NanAwarePolicy(CFG)
    dem, proprio = _inputs(200, seed=1)
    pitch = proprio[:, :1]
    target = torch.cat([0.2 + 0.8 * torch.tanh(2 * pitch)] * 2 + [-0.5 * pitch] * 2, dim=1)
    loss = torch.nn.functional.mse_loss(policy(dem, proprio), target)
    loss.backward()
    for name, p in policy.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    first = loss.item()
    for _ in range(100):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(policy(dem, proprio), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
    assert loss.item() < first / 100, (first, loss.item())


def test_footprint_plane_is_the_ground_under_the_tracks_in_the_simulators_exact_dems():
    """Driving stairs up and down, the exact DEM's cells under the main tracks lie at or below the tracks' contact
    plane (the tracks rest on that ground) but for a few centimetres (a cell reports the highest point of its 10 cm,
    over which a 30 deg plane rises 3 cm; a nosing between the pseudo-wheels; a riser against a wheel in the end
    rows), and on half of them the two agree within a centimetre; pitches of 30 deg and more are among the states.
    The opposite pitch sign puts 1 % of the cells 33 cm or more above it."""
    spec = DemSpec()
    xs, ys = (torch.from_numpy(a.astype(np.float32)) for a in spec.cell_centers())
    under = (xs.abs() <= TRACK_REACH).numpy()
    assert under.sum(0).tolist() == [6] * spec.cols  # rows 10-15: centres 0.25 m ahead to 0.25 m behind
    diffs, pitches = [], []
    for name in ("stairs_up", "stairs_down"):
        trace = Trace()
        run_episode(MujocoSimulator(), resolve_world(name), HeuristicController(), seed=0, trace=trace)
        for obs in trace.observations[::3]:
            plane = footprint_heights(torch.tensor([obs.pitch]), torch.tensor([obs.roll]), xs, ys, 0.089)[0].numpy()
            diffs.append((obs.dem - plane)[under])
            pitches.append(abs(obs.pitch))
    d = np.concatenate(diffs)
    assert max(pitches) > np.radians(30)
    assert np.percentile(d, 99) < 0.04 and d.max() < 0.1, (np.percentile(d, 99), d.max())  # measured 0.028, 0.085
    assert np.mean(np.abs(d) < 0.01) > 0.5, np.mean(np.abs(d) < 0.01)  # measured 0.56


def test_footprint_completes_only_missing_cells_under_the_tracks():
    """With ``footprint_reach`` the missing cells under the tracks take the contact plane and count as measured: the
    action equals the one on the DEM with those cells set to the plane; cells beyond the reach stay missing, measured
    cells keep their heights, and the default (reach 0) leaves every missing cell missing."""
    off, on = _policy(4), _policy(4, PolicyConfig(footprint_reach=TRACK_REACH))
    on.load_state_dict(off.state_dict())  # buffers of the footprint are not weights: same checkpoint either way
    dem, proprio = _inputs(6, seed=4, nan_fraction=0.3)
    values, mask = on.split_dem(dem, proprio)
    assert mask[:, 0, 10:16].min() == 1  # every cell under the tracks measured or completed
    missing = ~torch.isfinite(dem)
    for rows in (slice(0, 10), slice(16, 20)):
        assert torch.equal(mask[:, 0, rows] == 0, missing[:, rows])
    spec = DemSpec()
    xs, ys = (torch.from_numpy(a.astype(np.float32)) for a in spec.cell_centers())
    plane = footprint_heights(proprio[:, 0], proprio[:, 1], xs, ys, CFG.footprint_depth)
    completed = dem.clone()
    completed[:, 10:16] = torch.where(missing[:, 10:16], plane[:, 10:16], dem[:, 10:16])
    assert torch.allclose(on(dem, proprio), off(completed, proprio), atol=1e-6)
    assert torch.allclose(values[:, 0], on.split_dem(completed, proprio)[0][:, 0], atol=1e-6)
    assert not torch.allclose(on(dem, proprio), off(dem, proprio), atol=1e-4)
    assert torch.equal(off.split_dem(dem, proprio)[1][:, 0] == 0, missing)
    full = torch.nan_to_num(dem, nan=0.1)
    assert torch.equal(on(full, proprio), off(full, proprio))  # nothing missing: nothing to complete


def test_view_from_x_makes_the_policy_blind_behind_it_and_nowhere_else():
    """With ``view_from_x`` the cells whose centre lies further back are missing to the network whatever the DEM holds
    there, even where the footprint would complete them: the action equals that of the same weights without the
    option on the DEM with those cells NaN; a cell in front of the line still moves the action."""
    off = _policy(6)
    on = _policy(6, PolicyConfig(view_from_x=-0.1, footprint_reach=TRACK_REACH))
    on.load_state_dict(off.state_dict())  # the blind cells are a buffer, not weights: same checkpoint either way
    assert on._blind[:, 0].tolist() == [False] * 14 + [True] * 6  # centres at -0.15 m and further back
    dem, proprio = _inputs(5, seed=6, nan_fraction=0.3)
    values, mask = on.split_dem(dem, proprio)
    assert mask[:, 0, 14:].max() == 0 and values[:, 0, 14:].abs().max() == 0  # the footprint's rows 14-15 too
    for behind in (float("nan"), 3.0, -1.0):
        other = dem.clone()
        other[:, 14:] = behind
        assert torch.allclose(on(other, proprio), on(dem, proprio), atol=1e-6)
    # nothing missing in front of the line: the footprint has nothing to complete there, so blind equals missing
    seen = torch.nan_to_num(dem, nan=0.05)
    blinded = seen.clone()
    blinded[:, 14:] = float("nan")
    assert torch.allclose(on(seen, proprio), off(blinded, proprio), atol=1e-6)
    assert not torch.allclose(off(seen, proprio), off(blinded, proprio), atol=1e-4)  # the rows mattered without it
    ahead = dem.clone()
    ahead[:, 13] = 0.4
    assert not torch.allclose(on(ahead, proprio), on(dem, proprio), atol=1e-4)


def test_an_ensemble_acts_as_the_mean_of_its_members_and_round_trips_as_a_checkpoint(tmp_path):
    """``ensemble_of`` gives the mean of the members' actions (on DEMs with NaN, through the footprint too), in the
    batched forward and in act_numpy; saved and loaded it keeps them; one member keeps seed 000's weight names."""
    config = PolicyConfig(conv_channels=4, hidden=(16,), footprint_reach=TRACK_REACH)
    members = [_policy(seed, config) for seed in (1, 2, 3)]
    ensemble = ensemble_of(members)
    assert ensemble.config.members == 3 and ensemble.config.parameter_count() == 3 * config.parameter_count()
    assert sum(p.numel() for p in ensemble.parameters()) == ensemble.config.parameter_count()
    dem, proprio = _inputs(16, seed=7, nan_fraction=0.3)
    mean = torch.stack([m(dem, proprio) for m in members]).mean(0)
    assert torch.allclose(ensemble(dem, proprio), mean, atol=1e-6)
    assert not torch.allclose(mean, members[0](dem, proprio), atol=1e-3)  # the members do differ
    single = ensemble.act_numpy(dem[3].numpy(), proprio[3].numpy())
    assert np.allclose(single, mean[3].detach().numpy(), atol=1e-6)
    save_policy(tmp_path / "ens", ensemble, {"seed": 0})
    loaded, _ = load_policy(tmp_path / "ens")
    assert loaded.config == ensemble.config and torch.equal(loaded(dem, proprio), ensemble(dem, proprio))
    assert not any(k.startswith("member_heads") for k in members[0].state_dict())
    with pytest.raises(ValueError, match="policy 1 differs from policy 0 in hidden"):
        ensemble_of([members[0], _policy(1, PolicyConfig(conv_channels=4, hidden=(8,), footprint_reach=TRACK_REACH))])
    with pytest.raises(ValueError, match="policy 0 is itself an ensemble of 3"):
        ensemble_of([ensemble])
    with pytest.raises(ValueError, match="no policies"):
        ensemble_of([])


@pytest.mark.parametrize(
    "bad",
    [
        {"conv_channels": 0},
        {"conv_kernel": 4},
        {"hidden": (0,)},
        {"dem_shape": (20,)},
        {"flipper_lower": 2.0},
        {"dem_scale": 0.0},
        {"n_out": True},
        {"nan_fill": "mean"},
        {"footprint_reach": -0.1},
        {"footprint_reach": True},
        {"footprint_depth": float("nan")},
        {"dem_resolution": 0.0},
        {"dem_front": float("inf")},
        {"members": 0},
        {"view_from_x": float("nan")},
        {"view_from_x": True},
        {"view_from_x": 1.26},
        {"prior": "rule"},
        {"prior": "heuristic", "n_out": 2},
        {"rule_features": 1},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
        PolicyConfig(**bad)


def test_config_dict_round_trip_and_unknown_keys():
    cfg = PolicyConfig(hidden=(32, 16), conv_channels=4, nan_fill="column", footprint_reach=0.339, view_from_x=0.2,
                       prior="heuristic", rule_features=True)
    assert PolicyConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="conv_chanels"):
        PolicyConfig.from_dict({"conv_chanels": 4})
    older = cfg.to_dict()
    for name in ("nan_fill", "footprint_reach", "footprint_depth", "dem_resolution", "dem_front", "members",
                 "view_from_x", "prior", "rule_features"):
        del older[name]  # a checkpoint from before the fields: seed 000's zero fill, no footprint, whole DEM, no prior
    assert PolicyConfig.from_dict(older) == PolicyConfig(hidden=(32, 16), conv_channels=4)


@pytest.fixture
def saved(tmp_path):
    policy = _policy(seed=5, config=PolicyConfig(conv_channels=4, hidden=(16,)))
    meta = {"seed": 5, "data_hash": "abc123", "training": {"lr": 1e-3, "steps": 100}}
    save_policy(tmp_path / "ckpt", policy, meta)
    return tmp_path / "ckpt", policy, meta


def test_save_load_round_trip(saved):
    path, policy, meta = saved
    loaded, loaded_meta = load_policy(path)
    assert loaded_meta == meta and loaded.config == policy.config
    dem, proprio = _inputs(16, seed=2)
    assert torch.equal(loaded(dem, proprio), policy(dem, proprio))
    weights, sidecar = checkpoint_paths(path)
    side = json.loads(sidecar.read_text())
    assert side["architecture"] == "NanAwarePolicy" and side["versions"]["torch"] == torch.__version__
    assert load_policy(weights)[0].config == policy.config  # either file names the checkpoint
    assert not list(path.parent.glob(".*")), "no temporary files left behind"


@pytest.mark.parametrize("keep", [4, 20, 0.5])
def test_truncated_weights_raise(saved, keep):
    path, _, _ = saved
    weights, _ = checkpoint_paths(path)
    data = weights.read_bytes()
    weights.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    with pytest.raises(CheckpointError, match=r"ckpt\.safetensors"):
        load_policy(path)


@pytest.mark.parametrize("which", [".json", ".safetensors"])
def test_missing_file_is_named(saved, which):
    path, _, _ = saved
    checkpoint_paths(path)[which == ".json"].unlink()
    with pytest.raises(CheckpointError, match=rf"missing .*ckpt\{which}"):
        load_policy(path)


def test_config_mismatch_names_the_tensors(saved):
    path, _, _ = saved
    _, sidecar = checkpoint_paths(path)
    side = json.loads(sidecar.read_text())
    side["config"]["conv_channels"] = 8
    sidecar.write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match=r"ckpt\.safetensors.*tensor conv_values\.weight: file has \(4, 1, 3, 3\)"):
        load_policy(path)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda s: "{not json", "not valid JSON"),
        (lambda s: "[1, 2]", "JSON object"),
        (lambda s: {**s, "architecture": "ResNet"}, "unknown architecture 'ResNet'"),
        (lambda s: {**s, "config": {**s["config"], "conv_kernel": 2}}, "conv_kernel must be an odd"),
        (lambda s: {**s, "weights_sha256": "0" * 64}, "another save"),
    ],
)
def test_bad_sidecar_raises(saved, edit, match):
    path, _, _ = saved
    _, sidecar = checkpoint_paths(path)
    new = edit(json.loads(sidecar.read_text()))
    sidecar.write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(CheckpointError, match=match) as info:
        load_policy(path)
    assert "ckpt." in str(info.value)


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(CheckpointError, match="JSON"):
        save_policy(tmp_path / "x", _policy(), {"bad": float("nan")})
    assert not list(tmp_path.iterdir()), "nothing is written when the sidecar cannot be"


def test_controller_on_a_simulated_observation(quiet_sim):
    obs = quiet_sim.reset(resolve_world("flat"))
    controller = PolicyController(_policy())
    controller.reset()
    targets = controller.act(obs)
    assert targets.shape == (4,) and np.isfinite(targets).all()
    assert (targets >= CFG.flipper_lower).all() and (targets <= CFG.flipper_upper).all()
    np.testing.assert_array_equal(targets, controller.act(obs))
