"""Rosbags (perception.bag_*): the recorder, its partial recordings, and the tolerant reader, in both storages."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bag_storages import STORAGE_FILE, STORAGES
from rosbags.rosbag2 import StoragePlugin, Writer

from perception.bag_io import BagError, MissingTopicError, Transform
from perception.bag_partials import WRITER_MARKER, partial_bags, remove_stale_partials, stale_partials
from perception.bag_reader import BagReader
from perception.bag_writer import BagRecorder
from perception.gridmap import dem_center, gridmap_to_dem
from perception.messages import stamp, to_nanoseconds, typestore
from perception.pointcloud import cloud_to_xyz
from sim.rotations import yaw_quat
from sim.safety import euler_from_quat

EPOCH = 1_600_000_000.0


def _ns(t: float) -> int:
    return to_nanoseconds(stamp(EPOCH + t))


# ------------------------------------------------------------------------------------------ recorder + reader
def _write_every_topic(path: Path, storage: str, dem: np.ndarray) -> None:
    with BagRecorder(path, storage, epoch=EPOCH, custom_data={"world": "unit"}) as rec:
        rec.tf(0.0, [Transform("base_link", "lidar", (0.1, 0.0, 0.4), (1.0, 0.0, 0.0, 0.0))], static=True)
        for k in range(3):
            t = 0.25 * k
            rec.tf(t, [Transform("map", "odom", (0.1, 0.0, 0.0), yaw_quat(0.05)),
                       Transform("odom", "base_link", (t, 0.0, 0.1), yaw_quat(0.1 * k))])
            rec.imu(t, yaw_quat(0.1 * k), (0.0, 0.01, 0.0), (0.0, 0.0, 9.81))
            rec.joint_states(t, ["front_left_joint", "front_right_joint"], [0.1 * k, -0.1 * k], [0.0, 0.0])
            rec.points(t, np.array([[1.0, 0.0, -0.3], [1.5, 0.2, -0.3 + k]]))
            rec.cmd_vel(t, 0.3, 0.0)
            rec.flipper_commands(t, [0.1, 0.2, 0.3, 0.4 + k])
            rec.elevation_map(t, dem, (t, 0.0, 0.1), 0.1 * k)


@pytest.mark.parametrize("storage", STORAGES)
def test_every_topic_round_trips_with_stamps_and_frames(tmp_path, storage):
    dem = np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32)
    dem[3, 2] = np.nan
    bag = tmp_path / "bag"
    _write_every_topic(bag, storage, dem)
    assert len(list(bag.glob(STORAGE_FILE[storage]))) == 1 and (bag / "metadata.yaml").is_file()
    with BagReader(bag) as reader:
        msgs = list(reader.messages())
        assert reader.custom_data["world"] == "unit"
        assert reader.topics["/elevation_map"] == "grid_map_msgs/msg/GridMap"
    assert not reader.report.salvaged and reader.report.n_skipped == 0
    by_topic: dict[str, list] = {}
    for m in msgs:
        by_topic.setdefault(m.topic, []).append(m)
        if hasattr(m.msg, "header"):  # header stamp == log time == epoch + t
            assert to_nanoseconds(m.msg.header.stamp) == m.log_ns
    assert {t: len(v) for t, v in by_topic.items()} == {"/tf_static": 1, "/tf": 3, "/imu/data": 3, "/joint_states": 3,
                                                         "/points": 3, "/cmd_vel": 3, "/flipper_controller/commands": 3,
                                                         "/elevation_map": 3}
    assert [m.log_ns for m in by_topic["/points"]] == [_ns(0.0), _ns(0.25), _ns(0.5)]
    tf = by_topic["/tf"][2].msg.transforms
    assert [(x.header.frame_id, x.child_frame_id) for x in tf] == [("map", "odom"), ("odom", "base_link")]
    assert to_nanoseconds(tf[1].header.stamp) == _ns(0.5) and tf[1].transform.translation.x == 0.5
    assert by_topic["/tf_static"][0].msg.transforms[0].child_frame_id == "lidar"
    imu = by_topic["/imu/data"][1].msg
    assert imu.header.frame_id == "imu_link" and euler_from_quat([imu.orientation.w, imu.orientation.x,
                                                                   imu.orientation.y, imu.orientation.z])[2] == pytest.approx(0.1)
    js = by_topic["/joint_states"][2].msg
    assert list(js.name) == ["front_left_joint", "front_right_joint"] and list(js.position) == pytest.approx([0.2, -0.2])
    cloud = by_topic["/points"][2].msg
    assert cloud.header.frame_id == "lidar"
    np.testing.assert_allclose(cloud_to_xyz(cloud), [[1.0, 0.0, -0.3], [1.5, 0.2, 1.7]], atol=1e-6)
    assert list(by_topic["/flipper_controller/commands"][2].msg.data) == [0.1, 0.2, 0.3, 2.4]
    assert by_topic["/cmd_vel"][0].msg.linear.x == 0.3
    got, info = gridmap_to_dem(by_topic["/elevation_map"][2].msg)  # the GridMap round trip through the bag
    np.testing.assert_array_equal(got, dem)
    assert info["frame"] == "map" and info["yaw"] == pytest.approx(0.2) and info["z"] == pytest.approx(0.1)
    np.testing.assert_allclose(info["center"], dem_center((0.5, 0.0), 0.2), atol=1e-12)


def test_recorder_is_atomic_and_never_overwrites(tmp_path):
    bag = tmp_path / "bag"
    with pytest.raises(RuntimeError, match="killed"):
        with BagRecorder(bag, "mcap") as rec:
            rec.cmd_vel(0.0, 0.3)
            assert not bag.exists()  # while recording, only a hidden temporary folder exists
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []  # nothing at the target, no temporary left
    bag.mkdir()
    with pytest.raises(BagError, match="exists already"):
        BagRecorder(bag, "mcap").open()
    with pytest.raises(BagError, match="unknown bag storage"):
        BagRecorder(tmp_path / "x", "rosbag1")


def _recording_in_another_process(bag: Path, killed: bool = True) -> subprocess.Popen:
    """A recorder into ``bag`` in a child process: SIGKILLed mid-recording (``killed``), or left recording (it
    waits for its stdin) once it has said 'recording'."""
    script = (f"import os, signal, sys\nfrom perception.bag_writer import BagRecorder\n"
              f"rec = BagRecorder({str(bag)!r}, 'mcap').open()\n"
              "for k in range(50):\n    rec.cmd_vel(0.1 * k, 0.3)\n"
              + ("os.kill(os.getpid(), signal.SIGKILL)\n" if killed else "print('recording', flush=True)\nsys.stdin.read()\n"))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[1], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if killed:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err
    else:
        assert proc.stdout.readline().strip() == "recording", proc.stderr.read()
    return proc


def test_a_killed_recording_leaves_no_bag_at_the_target(tmp_path):
    _recording_in_another_process(tmp_path / "bag")
    assert not (tmp_path / "bag").exists()
    (partial,) = tmp_path.iterdir()  # the hidden temporary folder is all that is left
    assert partial.name.startswith(".bag.") and partial.name.endswith(".partial")


def test_leftovers_of_killed_recordings_are_named_by_the_next_one_and_only_they_are_removed(tmp_path, caplog):
    _recording_in_another_process(tmp_path / "bag")
    (left,) = tmp_path.iterdir()
    (info,) = partial_bags(tmp_path)
    assert info.state == "stale" and info.target == tmp_path / "bag" and info.writer["pid"] > 0
    assert stale_partials(tmp_path) == [left]
    live = _recording_in_another_process(tmp_path / "other", killed=False)
    try:
        with caplog.at_level(logging.INFO, logger="perception.bag_writer"):
            with BagRecorder(tmp_path / "bag", "mcap") as rec:  # the same target, the same folder
                rec.cmd_vel(0.0, 0.3)
                states = {pb.target.name: pb.state for pb in partial_bags(tmp_path) if pb.path != left}
                assert states == {"bag": "live", "other": "live"}  # this recording, and the other process's
                assert remove_stale_partials(tmp_path) == [left]  # while both record: only the leftover goes
                assert len(partial_bags(tmp_path)) == 2
        warning = caplog.text
        assert str(left) in warning and "killed recordings" in warning and "1 of them for bag" in warning
        assert "--clean-partials" in warning and "rm -r" in warning
        assert "still running" in warning and ".other." in warning  # the live one is mentioned (INFO), left alone
        assert all(r.levelno == logging.INFO for r in caplog.records if "still running" in r.getMessage())
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".other.")) == ["bag"]
        assert remove_stale_partials(tmp_path) == []  # the other recording still runs
    finally:
        live.kill()
        live.communicate(timeout=60)
    (other,) = stale_partials(tmp_path)  # killed now: a leftover
    assert remove_stale_partials(tmp_path) == [other] and sorted(p.name for p in tmp_path.iterdir()) == ["bag"]


def test_partials_of_a_reused_pid_or_of_unknown_writers(tmp_path):
    def partial(name: str, marker: dict | None) -> Path:
        p = tmp_path / f".{name}.abc123.partial"
        (p / name).mkdir(parents=True)
        if marker is not None:
            (p / WRITER_MARKER).write_text(json.dumps(marker))
        return p

    host = socket.gethostname()
    reused = partial("a", {"pid": os.getpid(), "host": host, "process_start": "0"})  # our pid, not our process
    foreign = partial("b", {"pid": os.getpid(), "host": host + "-elsewhere"})
    unmarked = partial("c", None)
    assert {pb.path.name: pb.state for pb in partial_bags(tmp_path)}[unmarked.name] == "live"  # its marker may follow
    (tmp_path / ".d.abc123.partial").mkdir()
    (tmp_path / ".d.abc123.partial" / "notes.txt").write_text("not a recording")  # not ours: never removed
    old = time.time() - 120  # past the grace a recorder has to write its marker
    for p in (unmarked, tmp_path / ".d.abc123.partial"):
        os.utime(p, (old, old))
    assert {pb.path.name: pb.state for pb in partial_bags(tmp_path)} == {
        reused.name: "stale" if Path("/proc/self/stat").exists() else "live", foreign.name: "unknown",
        unmarked.name: "unknown", ".d.abc123.partial": "unknown"}
    assert set(remove_stale_partials(tmp_path)) <= {reused} and foreign.exists() and unmarked.exists()
    assert remove_stale_partials(tmp_path, unknown_older_than=3600) == []  # written just now
    assert set(remove_stale_partials(tmp_path, unknown_older_than=0)) == {foreign, unmarked}
    assert [p.name for p in tmp_path.iterdir()] == [".d.abc123.partial"]


@pytest.mark.parametrize("storage", STORAGES)
def test_messages_that_do_not_deserialise_are_skipped_and_counted(tmp_path, storage):
    bag = tmp_path / "bag"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3) as w:
        c = w.add_connection("/flipper_controller/commands", "std_msgs/msg/Float64MultiArray", typestore=typestore())
        good = typestore().serialize_cdr(typestore().types["std_msgs/msg/Float64MultiArray"](
            layout=typestore().types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=np.ones(4)),
            "std_msgs/msg/Float64MultiArray")
        w.write(c, 1, good)
        w.write(c, 2, b"\x00\x01\x00\x00\xff\xff\xff\x7f")  # an array length far beyond the data
        w.write(c, 3, good)
    with BagReader(bag) as reader:
        assert len(list(reader.messages())) == 2
    assert reader.report.skipped["does not deserialise"]["/flipper_controller/commands"] == 1


@pytest.mark.parametrize("storage", STORAGES)
def test_truncated_bag_gives_what_precedes_the_damage_and_a_report(tmp_path, storage):
    bag = tmp_path / "bag"
    with BagRecorder(bag, storage) as rec:
        for k in range(150):
            rec.points(0.1 * k, np.random.default_rng(k).normal(size=(400, 3)))
            rec.flipper_commands(0.1 * k, [0.0, 0.0, 0.0, float(k)])
    (f,) = bag.glob(STORAGE_FILE[storage])
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with BagReader(bag) as reader:
        cmds = [int(m.msg.data[3]) for m in reader.messages(["/flipper_controller/commands"])]
    rep = reader.report
    assert rep.salvaged and rep.errors
    # what precedes the damage, in order (SQLite may also keep rows on intact pages after a damaged one)
    assert 40 <= len(cmds) < 150 and cmds[:40] == list(range(40)) and cmds == sorted(set(cmds))
    assert rep.skipped["lost to storage damage"]["/flipper_controller/commands"] == 150 - len(cmds)
    json.dumps(rep.to_dict())  # the report is JSON-ready


def test_missing_topic_error_lists_the_topics_the_bag_has(tmp_path):
    bag = tmp_path / "bag"
    with BagRecorder(bag, "sqlite3") as rec:
        rec.cmd_vel(0.0, 0.3)
        rec.imu(0.0, (1.0, 0.0, 0.0, 0.0), (0, 0, 0), (0, 0, 9.8))
    with BagReader(bag) as reader, pytest.raises(MissingTopicError) as err:
        reader.require(["/points", "/imu/data"])
    text = str(err.value)
    assert "no /points" in text and "/cmd_vel (geometry_msgs/msg/Twist, 1 messages)" in text and "/imu/data" in text
