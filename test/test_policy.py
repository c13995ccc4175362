"""The NaN-aware policy (seed 000 section VI) and its safetensors + JSON checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flipper_control.checkpoint import CheckpointError, checkpoint_paths, load_policy, save_policy
from flipper_control.policy import NanAwarePolicy, PolicyConfig, PolicyController, fill_columns
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
        values, mask = policy.split_dem(d)
        assert values[0, 0, 4, 1] == 0 and mask[0, 0, 4, 1] == 0
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    # NaN and +-inf are the values a missing cell can hold; identical outputs mean none of them leaks,
    # while the two controls below show the cell itself is not ignored
    assert policy.split_dem(dem)[1].sum() == dem.numel()
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
    values, mask = column.split_dem(shadow)
    scaled = dem / CFG.dem_scale
    assert torch.allclose(values[:, 0, 4], scaled[:, 2] + (scaled[:, 6] - scaled[:, 2]) / 2, atol=1e-6)
    assert torch.equal(mask, zero.split_dem(shadow)[1]) and mask[:, 0, 3:6].sum() == 0
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
    features = policy.encode(torch.tensor(dem[None], dtype=torch.float32)).detach().numpy().reshape(2, *cfg.dem_shape)
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
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
        PolicyConfig(**bad)


def test_config_dict_round_trip_and_unknown_keys():
    cfg = PolicyConfig(hidden=(32, 16), conv_channels=4, nan_fill="column")
    assert PolicyConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="conv_chanels"):
        PolicyConfig.from_dict({"conv_chanels": 4})
    older = cfg.to_dict()
    del older["nan_fill"]  # a checkpoint from before the field: seed 000's zero fill
    assert PolicyConfig.from_dict(older).nan_fill == "zero"


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
