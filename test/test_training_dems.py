"""What imitation trains on in the sim-to-real loop (``TransferSteps.dem_transform`` and
``tasks.transformed_training_data``): which G and which real collections an iteration uses, the exact and
domain-randomised shares, the terrain's shadows on G's share, and several draws per planned state. The loop runs
themselves are in test_transfer_loop.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flipper_control.learning.tasks import transformed_training_data
from flipper_control.learning.transfer import TransferSteps
from flipper_control.learning.transfer_config import TransferConfig
from perception.domain_randomization import DomainRandomization, geometric_occlusion
from planning.dataset import Trajectory, TrajectoryDataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def test_real_masks_borrow_only_from_collections_driven_before_the_iteration(tmp_path):
    for c in range(3):  # a resumed run may already hold later collections
        (tmp_path / f"real_{c}").mkdir()
        (tmp_path / f"real_{c}" / "collection.json").write_text(json.dumps({"dataset": f"real_{c}.safetensors"}))
    steps = TransferSteps(TransferConfig(real_masks={}, real_every=2), 0, tmp_path, ex=None, evaluate=None, step=None)
    seen = {k: steps.dem_transform(k, seed=5)["real_masks"]["datasets"] for k in (1, 2, 3, 5)}
    assert seen == {1: ["real_0.safetensors"], 2: ["real_0.safetensors"], 3: ["real_0.safetensors", "real_1.safetensors"],
                    5: ["real_0.safetensors", "real_1.safetensors", "real_2.safetensors"]}


def test_exact_share_leaves_that_share_of_the_training_dems_exact(tmp_path):
    (tmp_path / "iter_1").mkdir()  # G_1 exists: iteration 2 imitates through it
    (tmp_path / "iter_1" / "gan_update.json").write_text(json.dumps({"path": "g1"}))
    steps = TransferSteps(TransferConfig(exact_share=0.3), 0, tmp_path, ex=None, evaluate=None, step=None)
    assert steps.dem_transform(2, seed=5) == {"kind": "gan", "path": "g1", "exact_share": 0.3, "seed": 5}
    assert TransferSteps(TransferConfig(), 0, tmp_path, None, None, None).dem_transform(2, 5) == {"kind": "gan", "path": "g1"}
    rng = np.random.default_rng(0)  # the identity G (path None) under borrowed real masks, then the exact share
    exact = rng.normal(size=(400, 20, 5)).astype(np.float32)
    data = TrajectoryDataset([Trajectory(exact, np.zeros((400, 6)), np.zeros((400, 4)), True)])
    real = TrajectoryDataset([Trajectory(np.where(rng.random((50, 20, 5)) < 0.4, np.nan, 0.0), np.zeros((50, 6)),
                                         np.zeros((50, 4)), True)])
    real.save(tmp_path / "real.safetensors")
    spec = {"kind": "gan", "path": None, "real_masks": {"config": {}, "datasets": [str(tmp_path / "real.safetensors")],
                                                        "seed": 1}}
    masked = transformed_training_data(data, spec)["dem"]
    assert np.isnan(masked).any(axis=(1, 2)).all()
    mixed = transformed_training_data(data, spec | {"exact_share": 0.3, "seed": 2})["dem"]
    whole = ~np.isnan(mixed).any(axis=(1, 2))
    assert 0.2 < whole.mean() < 0.4  # about the share asked for ...
    np.testing.assert_array_equal(mixed[whole], exact[whole])  # ... and those DEMs are the exact ones
    np.testing.assert_array_equal(mixed[~whole], masked[~whole])  # the rest as without the option
    again = transformed_training_data(data, spec | {"exact_share": 0.3, "seed": 2})["dem"]
    np.testing.assert_array_equal(np.isnan(again), np.isnan(mixed))  # the choice is the seed's
    with pytest.raises(ValueError, match="exact_share must be a fraction in"):
        TransferConfig(exact_share=1.5)
    with pytest.raises(ValueError, match="exact_share needs mode gan"):
        TransferConfig(mode="identity", exact_share=0.5)


def test_randomize_share_domain_randomises_that_share_and_leaves_the_rest_to_g(tmp_path):
    steps = TransferSteps(TransferConfig(randomize_share=0.4), 0, tmp_path, ex=None, evaluate=None, step=None)
    first = steps.dem_transform(1, seed=5)  # G_0 is the identity, yet the share is randomised in iteration 1 too
    assert first["path"] is None and first["randomize_share"] == 0.4 and first["seed"] == 5
    assert first["randomization"] == DomainRandomization().to_dict()
    # a raised step in the DEM's front rows: randomisation hides cells (occlusion, rear block) and adds noise
    exact = np.zeros((300, 20, 5), np.float32)
    exact[:, 3, :] = 0.3
    exact[:, :3, :] = 0.25
    data = TrajectoryDataset([Trajectory(exact, np.zeros((300, 6)), np.zeros((300, 4)), True)])
    original = exact.copy()
    mixed = transformed_training_data(data, first)["dem"]
    # the trajectory's own DEMs are not written into (G_0 leaves arrays()'s DEMs in place, and the share is written there)
    np.testing.assert_array_equal(data.trajectories[0].dem, original)
    changed = (np.isnan(mixed) | (mixed != exact)).any(axis=(1, 2))
    assert 0.3 < changed.mean() < 0.5  # about the share asked for is randomised ...
    np.testing.assert_array_equal(mixed[~changed], exact[~changed])  # ... the rest is G's output (here the identity)
    assert np.isnan(mixed[changed]).any(axis=(1, 2)).mean() > 0.9  # randomised DEMs miss cells
    both = transformed_training_data(data, first | {"exact_share": 0.3})["dem"]  # exact and randomised shares disjoint
    u = np.random.default_rng([5, 11]).random(300)
    np.testing.assert_array_equal(both[u < 0.3], exact[u < 0.3])
    rest = (np.isnan(both) | (both != exact)).any(axis=(1, 2))
    assert not rest[u < 0.3].any() and rest[(u >= 0.3) & (u < 0.7)].mean() > 0.9 and not rest[u >= 0.7].any()
    for bad, message in ((1.5, "randomize_share must be a fraction in"), (True, "randomize_share must be a fraction in")):
        with pytest.raises(ValueError, match=message):
            TransferConfig(randomize_share=bad)
    with pytest.raises(ValueError, match="randomize_share needs mode gan or identity"):
        TransferConfig(mode="randomize", randomize_share=0.5)
    held = TransferSteps(TransferConfig(mode="identity", randomize_share=0.4), 0, tmp_path, None, None, None)
    (tmp_path / "iter_1").mkdir()  # a generator on disk is not read in mode identity: the rest stays exact
    (tmp_path / "iter_1" / "gan_update.json").write_text(json.dumps({"path": "g1"}))
    assert held.dem_transform(2, seed=5) == first
    with pytest.raises(ValueError, match=r"exact_share \+ randomize_share must be at most 1, got 0.6 \+ 0.5"):
        TransferConfig(exact_share=0.6, randomize_share=0.5)
    assert TransferSteps(TransferConfig(), 0, tmp_path, None, None, None).dem_transform(1, 5) is None  # default: exact
    one = TrajectoryDataset([Trajectory(exact[:1], np.zeros((1, 6)), np.zeros((1, 4)), True)])
    assert np.random.default_rng([0, 11]).random(1)[0] >= 0.4  # seed 0 draws no DEM to randomise: nothing breaks
    np.testing.assert_array_equal(transformed_training_data(one, first | {"seed": 0})["dem"], exact[:1])


def test_gan_shadows_hide_the_terrains_shadow_on_gs_share_only(tmp_path):
    steps = TransferSteps(TransferConfig(gan_shadows=True, randomize_share=0.4), 0, tmp_path, None, None, None)
    first = steps.dem_transform(1, seed=5)  # G_0 (the identity): iteration 1's exact DEMs lose their shadows too
    assert first["path"] is None and first["shadows"] is True and first["randomize_share"] == 0.4
    # a 0.4 m drop 0.7 m ahead: the lower level just beyond the edge lies in the mast's shadow, level or pitched
    exact = np.full((300, 20, 5), -0.1, np.float32)
    exact[:, :6, :] = -0.5
    proprio = np.zeros((300, 6))
    proprio[::2, 0] = 0.3  # every other DEM pitched nose down: the mast leans over the edge
    data = TrajectoryDataset([Trajectory(exact, proprio, np.zeros((300, 4)), True)])
    original = exact.copy()
    hidden = geometric_occlusion(exact, proprio[:, 0])
    assert hidden[:, 5].all() and hidden[1::2].sum() > hidden[::2].sum()  # the edge's far side; more when level
    out = transformed_training_data(data, first)["dem"]
    np.testing.assert_array_equal(data.trajectories[0].dem, original)  # the dataset's DEMs are not written into
    u = np.random.default_rng([5, 11]).random(300)
    g_share = u >= 0.4
    np.testing.assert_array_equal(np.isnan(out[g_share]), hidden[g_share])  # G's share: exactly the shadow hidden ...
    np.testing.assert_array_equal(np.where(hidden, exact, out)[g_share], exact[g_share])  # ... the rest G's (identity)
    randomised = transformed_training_data(data, {k: v for k, v in first.items() if k != "shadows"})["dem"]
    np.testing.assert_array_equal(out[~g_share], randomised[~g_share])  # the randomised share is as without it
    # no randomization dict: its defaults
    assert np.isnan(transformed_training_data(data, {"kind": "gan", "path": None, "shadows": True})["dem"][:, 5]).all()
    with pytest.raises(ValueError, match="gan_shadows must be true or false"):
        TransferConfig(gan_shadows="yes")
    with pytest.raises(ValueError, match="gan_shadows needs mode gan or identity"):
        TransferConfig(mode="randomize", gan_shadows=True)
    assert "shadows" not in (TransferSteps(TransferConfig(randomize_share=0.4), 0, tmp_path, None, None, None)
                             .dem_transform(1, 5))
    held = TransferSteps(TransferConfig(mode="identity", gan_shadows=True), 0, tmp_path, None, None, None)
    assert held.dem_transform(2, seed=5) == {"kind": "gan", "path": None, "shadows": True,
                                             "randomization": DomainRandomization().to_dict()}  # exact DEMs, shadowed


def test_dem_views_train_on_copies_of_each_state_with_their_own_draws(tmp_path):
    """``transfer.dem_views``: every planned state V times, the first copy as V = 1 gives it, the others with their own
    draws of G's noise, the randomisation and the split into shares; the labels and trajectory ids go with them."""
    import torch

    from perception.cyclegan import CycleGan, GanConfig, save_gan
    from perception.sim_to_real import SimToReal

    (tmp_path / "iter_1").mkdir()  # G_1 exists: iteration 2 imitates through it
    (tmp_path / "iter_1" / "gan_update.json").write_text(json.dumps({"path": str(tmp_path / "g1")}))
    torch.manual_seed(0)
    gan = CycleGan(GanConfig(dem_shape=(20, 5)))
    with torch.no_grad():  # away from its identity start, the noise's weights included: copies of G differ
        for p in gan.g.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_gan(tmp_path / "g1", gan)
    steps = TransferSteps(TransferConfig(randomize_share=0.4, dem_views=3), 0, tmp_path, None, None, None)
    spec = steps.dem_transform(2, seed=5)
    assert spec["views"] == 3 and spec["path"] == str(tmp_path / "g1")
    one = {k: v for k, v in spec.items() if k != "views"}
    assert TransferSteps(TransferConfig(randomize_share=0.4), 0, tmp_path, None, None, None).dem_transform(2, 5) == one
    rng = np.random.default_rng(0)
    exact = np.zeros((200, 20, 5), np.float32)
    exact[:, :4, :] = 0.25  # a step ahead: randomisation hides cells behind it
    exact += rng.normal(0.0, 0.01, exact.shape).astype(np.float32)
    proprio, action = rng.normal(0.0, 0.1, (200, 6)), rng.normal(0.0, 0.1, (200, 4))
    data = TrajectoryDataset([Trajectory(exact[:120], proprio[:120], action[:120], True),
                              Trajectory(exact[120:], proprio[120:], action[120:], True)])
    out = transformed_training_data(data, spec)
    single = transformed_training_data(data, one)
    assert {k: len(v) for k, v in out.items()} == {"dem": 600, "proprio": 600, "action": 600, "traj_id": 600}
    np.testing.assert_array_equal(out["dem"][:200], single["dem"])  # the first copy is what one view gives
    for key in ("proprio", "action", "traj_id"):
        np.testing.assert_array_equal(out[key], np.concatenate([single[key]] * 3))
    copies = out["dem"].reshape(3, 200, 20, 5)
    g = SimToReal.from_checkpoint(tmp_path / "g1")
    by_g = [g.transform(exact, proprio, seed=v or None) for v in range(3)]  # copy v: G's noise seed v (0: G's own)
    from_g = [((c == gv) | (np.isnan(c) & np.isnan(gv))).all(axis=(1, 2)) for c, gv in zip(copies, by_g, strict=True)]
    assert all(0.45 < f.mean() < 0.75 for f in from_g)  # each copy leaves about 60 % to G ...
    assert (from_g[0] != from_g[1]).mean() > 0.2 and (from_g[1] != from_g[2]).mean() > 0.2  # ... its own 60 %
    assert not np.array_equal(np.isnan(by_g[0]), np.isnan(by_g[1]))  # G's draws differ between copies
    np.testing.assert_array_equal(transformed_training_data(data, spec)["dem"], out["dem"])  # the seed's, every time
    alone = transformed_training_data(data, {"kind": "randomize", "config": None, "seed": 3, "views": 2})["dem"]
    np.testing.assert_array_equal(alone[:200], transformed_training_data(data, {"kind": "randomize", "config": None,
                                                                                 "seed": 3})["dem"])
    assert not np.array_equal(np.isnan(alone[:200]), np.isnan(alone[200:]))
    for bad in (0, 9, True, 2.0):
        with pytest.raises(ValueError, match="dem_views must be an integer in"):
            TransferConfig(dem_views=bad)
    with pytest.raises(ValueError, match="dem_views 2 needs a transform that draws"):
        TransferConfig(mode="identity", dem_views=2)
    # exact DEMs (G_0, nothing randomised) and G_0 with shadows only draw nothing: one copy
    assert TransferSteps(TransferConfig(dem_views=2), 0, tmp_path, None, None, None).dem_transform(1, 5) is None
    shadows = TransferSteps(TransferConfig(dem_views=2, gan_shadows=True), 0, tmp_path, None, None, None)
    assert "views" not in shadows.dem_transform(1, 5) and shadows.dem_transform(2, 5)["views"] == 2
