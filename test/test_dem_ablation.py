"""The reality proxy with the controller's DEM taken apart (``sim.dem_ablation``, ``flipper eval --proxy-dem``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flipper_control.cli import main
from flipper_control.controllers import HeuristicController
from planning.dataset import TrajectoryDataset
from sim.dem_ablation import PROXY_DEMS, DemAblation, ablated_dem
from sim.reality_proxy import RealityProxy
from sim.rollout import run_episode
from sim.world_sets import resolve_world

NAN = np.nan


def test_each_mode_takes_the_part_it_names():
    lidar = np.array([[0.12, NAN], [NAN, 0.31]], dtype=np.float32)
    exact = np.array([[0.10, 0.20], [0.25, 0.30]], dtype=np.float32)
    assert ablated_dem(lidar, exact, "lidar") is lidar
    np.testing.assert_array_equal(ablated_dem(lidar, exact, "exact"), exact)
    np.testing.assert_array_equal(ablated_dem(lidar, exact, "mask"), np.array([[0.10, NAN], [NAN, 0.30]], np.float32))
    np.testing.assert_array_equal(ablated_dem(lidar, exact, "heights"), np.array([[0.12, 0.20], [0.25, 0.31]], np.float32))
    for mode in PROXY_DEMS:
        assert ablated_dem(lidar, exact, mode).dtype == np.float32


def test_an_unknown_mode_is_refused_naming_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown proxy DEM 'oracle'; allowed: lidar, exact, mask, heights"):
        DemAblation(RealityProxy(), "oracle")
    with pytest.raises(ValueError, match="allowed: lidar"):
        ablated_dem(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32), "oracle")


@pytest.fixture(scope="module")
def pallet():
    return resolve_world("pallet")


@pytest.mark.parametrize("mode", ["exact", "mask", "heights"])
def test_the_proxy_runs_unchanged_and_only_the_dem_is_swapped(pallet, mode):
    """Step for step, the wrapped proxy's own DEM and the simulator's exact DEM give what the controller sees; the
    fresh map at the start leaves cells unseen, so the masks are not trivially all measured."""
    wrapped = DemAblation(RealityProxy(), mode)
    obs = wrapped.reset(pallet, seed=3)
    unseen = 0
    for _ in range(8):
        lidar, exact = wrapped.proxy.dem(), wrapped.proxy.sim.observation().dem
        missing = np.isnan(lidar)
        unseen += int(missing.sum())
        assert missing.any() and not missing.all()
        assert not np.isnan(exact).any()
        if mode == "exact":
            np.testing.assert_array_equal(obs.dem, exact)
        elif mode == "mask":
            np.testing.assert_array_equal(np.isnan(obs.dem), missing)
            np.testing.assert_array_equal(obs.dem[~missing], exact[~missing])
        else:
            assert not np.isnan(obs.dem).any()
            np.testing.assert_array_equal(obs.dem[~missing], lidar[~missing])
            np.testing.assert_array_equal(obs.dem[missing], exact[missing])
        assert (wrapped.time, wrapped.status) == (wrapped.proxy.time, wrapped.proxy.status)  # the rest is the proxy's
        obs = wrapped.step(np.full(4, 0.3), 0.1)
    assert unseen > 0
    assert wrapped.config_dict()["proxy_dem"] == mode


def test_lidar_mode_repeats_the_plain_proxy_run(pallet):
    expected = run_episode(RealityProxy(), pallet, HeuristicController(), seed=2).to_dict()
    assert run_episode(DemAblation(RealityProxy(), "lidar"), pallet, HeuristicController(), seed=2).to_dict() == expected


def test_eval_proxy_dem_labels_the_run_and_records_the_mode(tmp_path, capsys):
    path, states = tmp_path / "eval.json", tmp_path / "states.safetensors"
    assert main(["eval", "--controller", "heuristic", "--worlds", "proxy/F", "--runs", "1", "--executor", "serial",
                 "--proxy-dem", "exact", "--json", str(path), "--states", str(states)]) == 0
    assert "| heuristic [proxy DEM: exact] |" in capsys.readouterr().out
    data = json.loads(path.read_text())
    assert data["proxy_dem"] == "exact" and data["reality"] == {"F": "proxy"}
    assert data["total"] == pytest.approx(1.0)  # flat ground with exact DEMs: the heuristic gets across
    (traj,) = TrajectoryDataset.load(states).trajectories
    assert traj.meta["proxy_dem"] == "exact" and traj.meta["reality"] == "proxy"
    assert not np.isnan(traj.dem).any()  # the states hold what the controller saw: exact DEMs


def test_eval_proxy_dem_without_a_proxy_world_exits_2_saying_why(capsys):
    assert main(["eval", "--controller", "heuristic", "--worlds", "flat", "--runs", "1", "--executor", "serial",
                 "--proxy-dem", "mask"]) == 2
    msg = capsys.readouterr().err
    assert "--proxy-dem mask" in msg and "no world runs on it" in msg and "--reality proxy" in msg
