"""The `flipper` CLI end to end (in-process): worlds, sim --json, bench, errors."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import mujoco
import pytest

from flipper_control.cli import main


def test_worlds_list_shows_all_sets(capsys):
    assert main(["worlds", "list", "--count", "2"]) == 0
    out = capsys.readouterr().out
    for name in ("stairs_up", "stairs_down", "staircase", "training_0_1"):
        assert name in out


def test_worlds_show_prints_loadable_yaml(capsys, tmp_path):
    assert main(["worlds", "show", "stairs_down"]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "w.yaml"
    path.write_text(text)
    assert main(["sim", "--world", str(path), "--runs", "1", "--controller", "fixed", "--no-noise"]) == 0


def test_worlds_export_mjcf_compiles_and_urdf_parses(tmp_path):
    mjcf = tmp_path / "m.xml"
    assert main(["worlds", "export", "pallet", "--format", "mjcf", "--out", str(mjcf)]) == 0
    model = mujoco.MjModel.from_xml_path(str(mjcf))
    assert model.nu == 2 * 9 + 4 * 6 + 4  # driven wheels + flipper servos
    urdf = tmp_path / "r.urdf"
    assert main(["worlds", "export", "pallet", "--format", "urdf", "--out", str(urdf)]) == 0
    assert ET.parse(urdf).getroot().tag == "robot"


def test_sim_json_has_the_documented_fields(tmp_path, capsys):
    out = tmp_path / "res.json"
    assert main(["sim", "--world", "step_up", "--controller", "fixed", "--posture", "flat", "--runs", "2",
                 "--seed", "5", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["world"] == "step_up" and data["controller"] == "fixed:flat" and data["seed"] == 5
    assert [r["seed"] for r in data["runs"]] == [5, 6]
    for run in data["runs"]:
        assert set(run) >= {"level", "distance", "time", "reasons"}
        assert run["level"] == "fail" and run["reasons"]
    assert data["score"] == 0.0
    assert data["simulator"]["noise"]["enabled"] is True


def test_eval_names_the_rules_version(tmp_path, capsys):
    """``heuristic:v1`` is the first rule, the one the record's older figures name: on the staircase descent it warns
    where today's rule does not, and the JSON says which rule ran. An unknown version stops before any run."""
    scores = {}
    for name in ("heuristic", "heuristic:v1"):
        out = tmp_path / f"{name}.json"
        assert main(["eval", "--controller", name, "--worlds", "stairs_down", "--runs", "1", "--workers", "1",
                     "--json", str(out)]) == 0
        data = json.loads(out.read_text())
        assert data["controller"] == name
        assert data["rule"]["version"] == ("v1" if name.endswith("v1") else "v2")
        assert data["rule"]["front_descend"] == (-0.15 if name.endswith("v1") else -0.5)
        scores[name] = data["total"]
    assert scores == {"heuristic": 1.0, "heuristic:v1": 0.5}
    assert main(["eval", "--controller", "heuristic:v9", "--worlds", "stairs_down"]) != 0
    assert "unknown heuristic version 'v9'" in capsys.readouterr().err


def test_bench_sim_reports_rates(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "sim", "--world", "flat", "--repeats", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    base, loop = data["physics_baseline"], data["closed_loop_heuristic"]
    assert base["steps_per_s"] > 0 and loop["real_time_factor"] > 0
    # the baseline retraces the closed loop's two runs on the bare engine: as many physics steps, the same end states
    assert base["same_trajectory"] is True and base["runs"] == loop["runs"] == 2
    assert base["steps"] == round(loop["sim_s"] / data["timestep"]) and loop["levels"] == ["good", "good"]
    assert data["dem"]["equal_to_baseline"] is True


@pytest.mark.parametrize("argv, needle", [
    (["sim", "--world", "no_such_world"], "no such world"),
    (["worlds", "show"], "needs a world"),
    (["sim", "--world", "flat", "--controller", "magic"], "unknown controller"),
    (["sim", "--world", "flat", "--runs", "0"], "argument --runs: must be an integer >= 1, got 0"),
    (["sim", "--world", "flat", "--seed", "-5"], "argument --seed: must be an integer >= 0, got -5"),
    (["eval", "--controller", "heuristic", "--workers", "0"], "argument --workers: must be an integer >= 1"),
    (["record", "--world", "F", "--out", "x", "--control-dt", "nan"], "argument --control-dt: must be a finite number"),
    (["bench", "plan", "--noise-seeds", "0"], "argument --noise-seeds: must be an integer >= 1"),
])
def test_bad_input_exits_2_with_a_message(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_bad_world_file_names_file_and_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlength: 3\nterrain:\n  - {type: volcano, position: [1, 0]}\n")
    assert main(["sim", "--world", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "terrain[0].type" in err and "stairs" in err


def test_bench_proxy_reports_both_real_time_factors(tmp_path, capsys):
    out = tmp_path / "bench_proxy.json"
    assert main(["bench", "proxy", "--world", "proxy/F", "--seconds", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    for label in ("mujoco", "proxy"):
        run = data[label]
        assert run["sim_s"] >= 1.0 and run["real_time_factor"] == pytest.approx(run["sim_s"] / run["wall_s"])
        assert run["levels"] == ["good"] * run["episodes"]
    assert data["proxy"]["map_points"] > 0 and set(data["proxy"]["wall_share"]) >= {"physics", "lidar", "dem"}
    assert "reality proxy:" in capsys.readouterr().out


def test_sim_records_a_proxy_run_as_a_rosbag(tmp_path, capsys):
    from perception.bag_reader import BagReader

    bag = tmp_path / "run"
    assert main(["sim", "--world", "proxy/F", "--reality", "proxy", "--record", str(bag), "--storage", "sqlite3"]) == 0
    reader = BagReader(bag)
    assert {"/points", "/imu/data", "/joint_states", "/tf", "/tf_static", "/cmd_vel", "/elevation_map",
            "/flipper_controller/commands"} <= set(reader.topics)
    assert "F (seed 0): good" in capsys.readouterr().out
    assert main(["sim", "--world", "F", "--record", str(tmp_path / "exact")]) == 2  # only the proxy has clouds
    assert "--record needs --reality proxy" in capsys.readouterr().err
    assert not (tmp_path / "exact").exists()
