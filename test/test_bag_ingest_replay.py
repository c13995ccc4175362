"""Proxy runs recorded to bags, ingested into datasets and replayed (flipper_control.learning.bags), and their commands."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from bag_storages import STORAGES

from flipper_control.cli import main
from flipper_control.controllers import make_controller
from flipper_control.learning.bags import DATASET_NAME, REPORT_NAME, OutputExistsError, ingest, record_proxy_run, replay
from perception.bag_io import BagError, MissingTopicError, Transform
from perception.bag_reader import BagReader
from perception.bag_writer import BagRecorder
from perception.dem_handler import DemHandler
from perception.gridmap import gridmap_to_dem
from perception.messages import stamp, to_nanoseconds
from planning.dataset import TrajectoryDataset
from sim.reality_proxy import RealityProxy
from sim.safety import euler_from_quat
from sim.world import world_from_dict

# a 0.8 m course with a 0.1 m step: about 30 control steps, half a second of proxy time per recording
SHORT = world_from_dict({"name": "short_step", "length": 0.8, "time_limit": 3.0,
                         "terrain": [{"type": "step", "position": [0.5, 0.0], "height": 0.1, "width": 2.0}]})


# ------------------------------------------------------------------------------------------ proxy recording
@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One short proxy run recorded in each storage, with the proxy (for its final state)."""
    root = tmp_path_factory.mktemp("bags")
    out = {}
    for storage in STORAGES:
        proxy = RealityProxy()
        summary = record_proxy_run(SHORT, make_controller("heuristic"), root / storage, storage, seed=1, proxy=proxy)
        out[storage] = (root / storage, summary, proxy)
    return out


@pytest.mark.parametrize("storage", STORAGES)
def test_proxy_recording_has_every_topic_at_its_rate(recorded, storage):
    bag, summary, proxy = recorded[storage]
    n = summary["messages"]["/flipper_controller/commands"]  # one per control step
    assert n >= 20 and summary["run"]["level"] in ("good", "slow", "bad")
    m = summary["messages"]
    assert m["/points"] == m["/elevation_map"] == m["/joint_states"] == n + 1  # plus the start's full scan
    assert m["/cmd_vel"] == n and m["/tf_static"] == 1
    assert m["/tf"] == m["/imu/data"] > 4 * n  # per 20 ms substep (the last step may end early)
    with BagReader(bag) as reader:
        msgs = list(reader.messages())
    assert [x.log_ns for x in msgs] == sorted(x.log_ns for x in msgs)
    tf = [x for x in msgs if x.topic == "/tf"]
    assert {(t.header.frame_id, t.child_frame_id) for x in tf for t in x.msg.transforms} == {("map", "odom"),
                                                                                             ("odom", "base_link")}
    last_tf = tf[-1].msg.transforms[1].transform.translation
    np.testing.assert_allclose([last_tf.x, last_tf.y, last_tf.z], proxy.pose()[0])  # odom -> base_link = truth
    last_map = [x for x in msgs if x.topic == "/elevation_map"][-1]
    np.testing.assert_array_equal(gridmap_to_dem(last_map.msg)[0], proxy.observation().dem)
    assert last_map.log_ns == _ns_at(summary["epoch"], proxy.time)
    points = [x for x in msgs if x.topic == "/points"]
    assert all(p.msg.header.frame_id == "lidar" for p in points) and points[0].msg.width > 10 * points[1].msg.width


def _ns_at(epoch: float, t: float) -> int:
    return to_nanoseconds(stamp(epoch + t))


# ------------------------------------------------------------------------------------------ ingest
@pytest.mark.parametrize("storage", STORAGES)
def test_ingest_builds_one_trajectory_with_nan_dems_and_paired_states(recorded, storage, tmp_path):
    bag, summary, _ = recorded[storage]
    out = ingest([bag], tmp_path / "data")
    data = TrajectoryDataset.load(tmp_path / "data" / DATASET_NAME)
    report = json.loads((tmp_path / "data" / REPORT_NAME).read_text())
    n = summary["messages"]["/flipper_controller/commands"]
    assert len(data) == 1 and data.n_samples == n == out["samples"]  # the last DEM has no command after it
    assert report["bags"][0]["pairing_skips"] == {"DEM without command within 0.1 s": 1}
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted([DATASET_NAME, REPORT_NAME])
    traj = data.trajectories[0]
    assert traj.meta["world"] == "short_step" and traj.meta["seed"] == 1
    assert np.isnan(traj.dem).any() and np.isfinite(traj.dem).mean() > 0.5  # real DEMs: holes, mostly seen
    with BagReader(bag) as reader:
        msgs = list(reader.messages(["/flipper_controller/commands", "/imu/data", "/joint_states"]))
    cmds = np.array([list(x.msg.data) for x in msgs if x.topic == "/flipper_controller/commands"])
    np.testing.assert_allclose(traj.action, cmds, atol=1e-6)
    imu = {x.log_ns: x.msg.orientation for x in msgs if x.topic == "/imu/data"}
    joints = [x for x in msgs if x.topic == "/joint_states"]
    for k in (1, n // 2, n - 1):  # sample k: the DEM at the end of step k, pitch/roll and flippers at that stamp
        q = imu[joints[k].log_ns]
        roll, pitch, _ = euler_from_quat([q.w, q.x, q.y, q.z])
        np.testing.assert_allclose(traj.proprio[k], [pitch, roll, *joints[k].msg.position], atol=1e-6)


def test_ingest_of_a_truncated_bag_gives_part_of_the_run_and_says_so(recorded, tmp_path):
    bag, summary, _ = recorded["mcap"]
    cut = tmp_path / "cut"
    shutil.copytree(bag, cut)
    (f,) = cut.glob("*.mcap")
    f.write_bytes(f.read_bytes()[: int(f.stat().st_size * 0.7)])
    out = ingest([cut], tmp_path / "data")
    rep = out["bags"][0]
    assert 0 < out["samples"] < summary["messages"]["/flipper_controller/commands"]
    assert rep["salvaged"] and any("truncated" in e for e in rep["errors"])
    assert rep["skipped"]["lost to storage damage"]["/points"] > 0


def test_ingest_refuses_to_replace_an_existing_dataset_unless_asked(recorded, tmp_path, capsys):
    bag, data = recorded["sqlite3"][0], tmp_path / "data"
    ingest([bag], data)
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    sha = TrajectoryDataset.load(data / DATASET_NAME).sha256()
    with pytest.raises(OutputExistsError, match=rf"{DATASET_NAME} and .*{REPORT_NAME} exist already.*--overwrite"):
        ingest([bag], data)
    (data / DATASET_NAME).unlink()  # a report alone is not replaced either
    with pytest.raises(OutputExistsError, match=rf"{REPORT_NAME} exists already"):
        ingest([bag], data)
    assert (data / REPORT_NAME).read_bytes() == before[REPORT_NAME] and not (data / DATASET_NAME).exists()
    assert main(["ingest", str(bag), "--out", str(data)]) == 2  # the command: one line, exit status 2
    assert "exists already" in capsys.readouterr().err
    out = ingest([bag], data, overwrite=True)
    assert out["trajectories"] == 1 and TrajectoryDataset.load(data / DATASET_NAME).sha256() == sha


def test_ingest_stops_on_a_bag_without_points_before_writing(recorded, tmp_path):
    bag = tmp_path / "no_points"
    with BagRecorder(bag, "mcap") as rec:
        rec.cmd_vel(0.0, 0.3)
    with pytest.raises(MissingTopicError, match=r"no /points.*its topics: /cmd_vel"):
        ingest([recorded["mcap"][0], bag], tmp_path / "data")
    assert not (tmp_path / "data").exists()


# ------------------------------------------------------------------------------------------ replay
def test_replay_writes_the_handlers_elevation_maps_to_a_new_bag(recorded, tmp_path):
    bag, _, _ = recorded["sqlite3"]
    out = replay(bag, tmp_path / "replayed")
    handler, expected = DemHandler(), []  # the handler over the same messages, in the same order
    with BagReader(bag) as reader:
        for m in reader.messages(["/tf", "/tf_static", "/imu/data", "/joint_states", "/points"]):
            if m.topic in ("/tf", "/tf_static"):
                handler.on_tf(m.msg, static=m.topic == "/tf_static")
            elif m.topic == "/joint_states":
                handler.on_joint_states(m.msg)
            elif m.topic == "/points":
                expected.append((m.log_ns, handler.on_cloud(m.msg).dem))
    assert out["storage"] == "sqlite3" and not list((tmp_path / "replayed").glob("*.mcap"))
    with BagReader(tmp_path / "replayed") as reader:
        assert set(reader.topics) == {"/elevation_map"}
        got = [(m.log_ns, gridmap_to_dem(m.msg)[0]) for m in reader.messages()]
    assert [t for t, _ in got] == [t for t, _ in expected]
    for (_, a), (_, b) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_lead_in_is_recorded_so_that_replay_rebuilds_the_same_maps(tmp_path):
    from sim.reality_config import RealityProxyConfig

    proxy = RealityProxy(config=RealityProxyConfig(lead_in=1.5))
    record_proxy_run(SHORT, make_controller("heuristic"), tmp_path / "bag", "mcap", seed=1, proxy=proxy)
    replay(tmp_path / "bag", tmp_path / "replayed")
    maps = {}
    for name in ("bag", "replayed"):
        with BagReader(tmp_path / name) as reader:
            maps[name] = [gridmap_to_dem(m.msg)[0] for m in reader.messages(["/elevation_map"])]
    recorded, rebuilt = maps["bag"], maps["replayed"]
    assert len(recorded) == len(rebuilt) > 5
    assert np.isnan(recorded[0][14:]).mean() < 0.5  # the lead-in's ground behind the start is in the first map
    for a, b in zip(recorded[:5], rebuilt[:5], strict=True):  # the start cloud holds the lead-in, at the right place
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], atol=0.01)


def test_replay_with_a_policy_adds_its_commands(recorded, tmp_path):
    import torch

    from flipper_control.checkpoint import save_policy
    from flipper_control.policy import NanAwarePolicy, PolicyConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    save_policy(tmp_path / "p", NanAwarePolicy(PolicyConfig(hidden=(16,), conv_channels=4)))
    out = replay(recorded["mcap"][0], tmp_path / "replayed", policy=tmp_path / "p")
    assert out["messages"]["/flipper_controller/commands"] == out["messages"]["/elevation_map"]
    with BagReader(tmp_path / "replayed") as reader:
        cmds = [np.asarray(m.msg.data) for m in reader.messages(["/flipper_controller/commands"])]
    assert all(c.shape == (4,) and np.all(np.abs(c) <= math.pi) for c in cmds)
    assert np.ptp(np.stack(cmds), axis=0).max() > 0  # decisions follow the changing DEM and state


# ------------------------------------------------------------------------------------------ CLI
def test_cli_record_ingest_replay_and_errors(tmp_path, capsys, write_world):
    world = write_world({"name": "cli_flat", "length": 0.6, "time_limit": 2.5, "terrain": []})
    bag = tmp_path / "run"
    assert main(["record", "--world", str(world), "--controller", "heuristic", "--out", str(bag), "--storage",
                 "sqlite3", "--seed", "2", "--max-time", "1.0"]) == 0
    assert list(bag.glob("*.db3"))
    assert main(["record", "--world", str(world), "--out", str(bag)]) == 2  # never overwrite
    assert "exists already" in capsys.readouterr().err
    assert main(["ingest", str(bag), "--out", str(tmp_path / "data")]) == 0
    assert "10 samples" in capsys.readouterr().out  # 1 s at 10 Hz
    assert main(["replay", str(bag), "--out", str(tmp_path / "replayed")]) == 0
    assert "/elevation_map 11" in capsys.readouterr().out
    empty = tmp_path / "empty"
    with BagRecorder(empty, "mcap") as rec:
        rec.cmd_vel(0.0, 0.3)
    assert main(["ingest", str(empty), "--out", str(tmp_path / "d2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flipper: error:") and "/cmd_vel" in err and len(err.splitlines()) == 1


def test_cli_proxy_figure_writes_a_png_and_its_numbers(tmp_path, write_world):
    world = write_world({"name": "few_stairs", "length": 1.6, "time_limit": 8.0,
                         "terrain": [{"type": "stairs", "position": [0.7, 0.0], "steps": 2, "rise": 0.12, "run": 0.3,
                                      "width": 2.0}]})
    png, js = tmp_path / "fig.png", tmp_path / "fig.json"
    assert main(["proxy-figure", "--world", str(world), "--out", str(png), "--json", str(js)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = json.loads(js.read_text())
    freq = np.array(out["nan_frequency"])
    assert freq.shape == (20, 5) and 0 <= freq.min() and freq.max() <= 1 and out["steps"] > 10
    assert out["mean_abs_error_step"] < 0.1  # the proxy's DEM is close to the exact one where it has values


def test_a_required_topic_of_another_type_is_refused_by_ingest_and_replay(tmp_path, capsys):
    """/points recorded as sensor_msgs/Imu: the message names topic, found and expected type (no AttributeError)."""
    joints = ["front_left_flipper_joint", "front_right_flipper_joint", "rear_left_flipper_joint", "rear_right_flipper_joint"]
    bag = tmp_path / "wrong_type"
    with BagRecorder(bag, "mcap", 0.0) as rec:
        for i in range(3):
            t = 0.1 * i
            rec.joint_states(t, joints, [0.0] * 4, [0.0] * 4)
            rec.flipper_commands(t, [0.0] * 4)
            rec.tf(t, [Transform("map", "odom", (0, 0, 0), (1, 0, 0, 0)),
                       Transform("odom", "base_link", (t, 0, 0), (1, 0, 0, 0))])
            imu = rec.imu(t, (1, 0, 0, 0), (0, 0, 0), (0, 0, 9.8))
            rec.write("/points", t, imu, msgtype="sensor_msgs/msg/Imu")
    with pytest.raises(BagError, match="/points is sensor_msgs/msg/Imu, expected sensor_msgs/msg/PointCloud2"):
        ingest([bag], tmp_path / "out")
    assert main(["replay", str(bag), "--out", str(tmp_path / "replayed")]) == 2
    assert "/points is sensor_msgs/msg/Imu, expected sensor_msgs/msg/PointCloud2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "replayed").exists()
