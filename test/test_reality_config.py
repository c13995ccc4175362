"""``--reality-config``: the reality proxy's settings from YAML (RealityProxyConfig.from_dict), checked, and passed
to every command that runs the proxy and to the loop's transfer section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_loop import tiny_loop

from flipper_control.cli import main
from flipper_control.learning.loop import LoopConfig
from planning.dataset import TrajectoryDataset
from sim.reality_config import RealityProxyConfig, load_reality_config

QUIET = {"dynamics": {"enabled": False}, "odometry": {"enabled": False},
         "lidar": {"range_sigma": 0.0, "dropout": 0.0, "mount": [0.1, 0.0, 0.45]}, "substep": 0.04}


def test_a_yaml_config_round_trips_and_keeps_every_default_it_does_not_name(tmp_path):
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(QUIET))
    config = load_reality_config(path)
    assert config.lidar.mount == (0.1, 0.0, 0.45) and config.substep == 0.04 and not config.dynamics.enabled
    assert config.lidar.period == RealityProxyConfig().lidar.period and config.map_voxel == RealityProxyConfig().map_voxel
    assert RealityProxyConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert load_reality_config(_write(tmp_path / "empty.yaml", "")) == RealityProxyConfig()


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, needle", [
    ("lidar: {rangesigma: 0.1}", "lidar: unknown field(s) rangesigma; allowed:"),
    ("lidar: {dropout: 1.5}", "lidar: dropout must be a probability in [0, 1), got 1.5"),
    ("lidar: {period: -3, min_range: 30}", "period must be > 0 s, got -3; min_range must be >= 0 and below max_range"),
    ("dem_builder: {dem: {rows: 10}}", "dem_builder.dem: the proxy must build the DEM that the policies"),
    ("dem_builder: {dem: {front: 1.0}}", "may not change it, got 20 x 5 cells of 0.1 m, front 1.0 m"),
    ("odometry: {xy_sigma: fast}", "odometry: xy_sigma must be a number, got 'fast'"),
    ("dynamics: {delay: [0.3, 0.1]}", "dynamics: relative half-ranges must lie in [0, 1) ([]), delay/lag must be (low, high)"),
    ("dem_builder: {dem: {rows: 0}}", "dem_builder.dem: rows, cols must be >= 1"),
    ("warp: 9", "RealityProxyConfig: unknown field(s) warp"),
    ("- a list", "expected a mapping of RealityProxyConfig fields, got list"),
])
def test_a_bad_config_names_the_file_section_and_field(tmp_path, text, needle):
    path = _write(tmp_path / "proxy.yaml", text + "\n")
    with pytest.raises(ValueError) as info:
        load_reality_config(path)
    assert str(info.value).startswith(f"{path}: ") and needle in str(info.value)


def test_commands_that_run_the_proxy_use_it(tmp_path, capsys):
    path = _write(tmp_path / "proxy.yaml", yaml.safe_dump(QUIET))
    out = tmp_path / "sim.json"
    assert main(["sim", "--world", "F", "--reality", "proxy", "--runs", "1", "--reality-config", str(path),
                 "--json", str(out)]) == 0
    proxy = json.loads(out.read_text())["simulator"]["proxy"]
    assert proxy["lidar"]["mount"] == [0.1, 0.0, 0.45] and proxy["dynamics"]["enabled"] is False
    ev = tmp_path / "eval.json"
    assert main(["eval", "--controller", "heuristic", "--worlds", "F", "--runs", "1", "--executor", "serial",
                 "--reality", "proxy", "--reality-config", str(path), "--json", str(ev)]) == 0
    assert json.loads(ev.read_text())["reality_config"]["substep"] == 0.04
    assert main(["record", "--world", "F", "--out", str(tmp_path / "bag"), "--max-time", "0.5", "--no-noise",
                 "--reality-config", str(path)]) == 2
    assert "--reality-config and --no-noise" in capsys.readouterr().err
    assert main(["eval", "--controller", "heuristic", "--worlds", "F", "--reality-config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: no such reality config file" in capsys.readouterr().err
    # a config that nothing would use is refused rather than silently left out
    assert main(["sim", "--world", "F", "--runs", "1", "--reality-config", str(path)]) == 2
    assert "add --reality proxy" in capsys.readouterr().err
    assert main(["eval", "--controller", "heuristic", "--worlds", "flat", "--reality-config", str(path)]) == 2
    assert "no world runs on it (--reality auto)" in capsys.readouterr().err


def test_the_unchanged_dem_may_be_named_and_the_heuristic_refuses_another_grid():
    from flipper_control.controllers import HeuristicController
    from sim.dem import DemSpec
    from sim.simulator import Observation

    assert RealityProxyConfig.from_dict({"dem_builder": {"dem": {"rows": 20, "front": 1.3}}}) == RealityProxyConfig()
    heuristic = HeuristicController()
    obs = Observation(dem=np.zeros((10, 5)), pitch=0.0, roll=0.0, flipper_angles=np.zeros(4))
    with pytest.raises(ValueError, match=r"a DEM of 10 x 5 cells, but it was built for DemSpec\(rows=20"):
        heuristic.act(obs)
    assert np.isfinite(HeuristicController(dem=DemSpec(rows=10, resolution=0.2)).act(obs)).all()


def test_the_loops_transfer_section_takes_it():
    config = LoopConfig.from_dict(tiny_loop(transfer={"reality": QUIET}))
    assert config.transfer.reality.substep == 0.04
    assert LoopConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"transfer.reality: lidar: unknown field\(s\) nope"):
        LoopConfig.from_dict(tiny_loop(transfer={"reality": {"lidar": {"nope": 1}}}))


def test_loop_and_demo_take_reality_config_in_place_of_the_transfer_sections(tmp_path, capsys):
    import argparse

    from flipper_control.cli.learning import _with_overrides

    path = _write(tmp_path / "proxy.yaml", yaml.safe_dump(QUIET))
    args = argparse.Namespace(executor=None, workers=None, ray_address=None, reality_config=str(path))
    config = _with_overrides(LoopConfig.from_dict(tiny_loop(transfer={})), args)
    assert config.transfer.reality == load_reality_config(path) and config.transfer.mode == "gan"
    other = _with_overrides(LoopConfig.from_dict(tiny_loop(transfer={"reality": {"substep": 0.05}})), args)
    assert other.transfer.reality.substep == 0.04 and "replaces the config's transfer.reality" in capsys.readouterr().err
    # the simulation-only loop runs no proxy: the option is refused before any work
    loop_yaml = _write(tmp_path / "loop.yaml", yaml.safe_dump(tiny_loop()))
    assert main(["loop", "--config", str(loop_yaml), "--out", str(tmp_path / "run"), "--reality-config", str(path)]) == 2
    assert "has no transfer: section" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert main(["demo", "--help"]) == 0 and "--reality-config" in capsys.readouterr().out


def test_the_shipped_sparse_lidar_config_loads_and_its_dems_miss_far_more_cells(tmp_path):
    """configs/proxy_sparse_lidar.yaml, the other sensor of docs/sim2real_experiments.md ("Another sensor"): every field
    it names differs from today's proxy, and on the same heuristic run its DEMs miss at least twice the cells."""
    path = Path(__file__).resolve().parents[1] / "configs" / "proxy_sparse_lidar.yaml"
    sparse, today = load_reality_config(path), RealityProxyConfig()
    named = yaml.safe_load(path.read_text())
    assert sparse.warmup is False and today.warmup is True
    assert all(getattr(sparse.lidar, k) != getattr(today.lidar, k) for k in named["lidar"])
    assert sparse.dynamics == today.dynamics and sparse.odometry == today.odometry  # the sensing only
    shares = {}
    for name, extra in (("today", []), ("sparse", ["--reality-config", str(path)])):
        states = tmp_path / f"{name}.safetensors"
        assert main(["eval", "--controller", "heuristic", "--worlds", "F", "--runs", "1", "--executor", "serial",
                     "--reality", "proxy", "--states", str(states), *extra]) == 0
        dems = np.concatenate([t.dem for t in TrajectoryDataset.load(states).trajectories])
        shares[name] = float(np.isnan(dems).mean())
    assert shares["sparse"] > 2 * shares["today"] > 0, shares
