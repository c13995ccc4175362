"""``flipper worlds export`` for Gazebo: one world, a whole set into a folder, the robot alone, and the bad-input messages."""

from __future__ import annotations

import stat
import xml.etree.ElementTree as ET

import pytest

from flipper_control.cli import main
from sim.world_sets import load_set


def test_export_sdf_writes_the_world_and_the_robot(tmp_path, capsys):
    out = tmp_path / "stairs_up.sdf"
    assert main(["worlds", "export", "stairs_up", "--format", "sdf", "--out", str(out)]) == 0
    root = ET.parse(out).getroot()
    assert root.find("world").get("name") == "stairs_up"
    models = [m.get("name") for m in root.iter("model")]
    assert "flipper_robot" in models and "terrain_0_stairs" in models
    assert main(["worlds", "export", "pallet", "--format", "sdf"]) == 0  # to stdout
    assert ET.fromstring(capsys.readouterr().out).find("world").get("name") == "pallet"


def test_export_a_set_writes_one_file_per_world(tmp_path):
    out = tmp_path / "gz"
    assert main(["worlds", "export", "test", "--format", "sdf", "--out-dir", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{w.name}.sdf" for w in load_set("test"))
    assert main(["worlds", "export", "--set", "training", "--count", "2", "--format", "sdf", "--out-dir", str(out)]) == 0
    assert {"training_0_0.sdf", "training_0_1.sdf"} <= {p.name for p in out.iterdir()}
    assert all(ET.parse(p).getroot().tag == "sdf" for p in out.iterdir())


def test_export_the_robot_alone(tmp_path):
    out = tmp_path / "robot.sdf"
    assert main(["worlds", "export", "--format", "sdf-model", "--out", str(out)]) == 0
    root = ET.parse(out).getroot()
    assert root.find("world") is None and root.find("model").get("name") == "flipper_robot"


def test_a_read_only_file_in_the_folder_stops_the_set_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "gz"
    out.mkdir()
    locked = out / "pallet.sdf"
    locked.write_text("mine")
    locked.chmod(stat.S_IRUSR)
    assert main(["worlds", "export", "test", "--format", "sdf", "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pallet.sdf" in err and "read-only" in err
    assert [p.name for p in out.iterdir()] == ["pallet.sdf"] and locked.read_text() == "mine"


@pytest.mark.parametrize("argv, needle", [
    (["worlds", "export", "test", "--format", "sdf"], "give --out-dir"),
    (["worlds", "export", "--format", "sdf"], "needs a world name or file, or a set"),
    (["worlds", "export", "test", "--format", "mjcf"], "exporting a whole set is for --format sdf"),
    (["worlds", "export", "flat", "--set", "test", "--format", "sdf", "--out-dir", "x"], "not both"),
    (["worlds", "export", "flat", "--format", "sdf", "--out", "a.sdf", "--out-dir", "x"], "not both"),
    (["worlds", "export", "--format", "urdf", "--out-dir", "x"], "writes one file: use --out"),
    (["worlds", "export", "no_such_world", "--format", "sdf"], "no such world"),
    (["worlds", "export", "flat", "--format", "gazebo"], "invalid choice: 'gazebo'"),
])
def test_bad_export_requests_exit_2_with_a_message(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written
