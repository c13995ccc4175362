"""dem_node as a process under real rclpy, in a loopback-only network namespace (test/ros_graph.py).

A recorded reality-proxy bag played 5x faster than recorded must give exactly the GridMaps of offline
``flipper replay`` (the message filter: clouds wait for the transform at their stamp); bad clouds are
logged and survived.
"""

from __future__ import annotations

import numpy as np
import pytest
from ros_graph import ros_graph  # noqa: F401 - the fixture

from flipper_control.controllers import FixedController
from flipper_control.learning.bags import record_proxy_run, replay
from perception.bag_reader import BagReader
from perception.messages import GRIDMAP, deserialize_lenient, typestore
from sim.world_sets import load_set

INPUTS = "/points,/tf,/tf_static,/joint_states"  # not the bag's own /elevation_map


@pytest.fixture(scope="module")
def proxy_bag(tmp_path_factory):
    """A 2.5 s reality-proxy run on the staircase (26 clouds) and the GridMaps offline replay makes of it."""
    root = tmp_path_factory.mktemp("dem_live")
    world = {w.name: w for w in load_set("proxy")}["staircase"]
    bag = record_proxy_run(world, FixedController(), root / "run", max_time=2.5)["bag"]
    replay(bag, root / "replay")
    with BagReader(root / "replay") as reader:
        offline = [m.msg for m in reader.messages(["/elevation_map"])]
    assert len(offline) == 26
    return bag, offline


def test_bag_played_5x_faster_gives_the_gridmaps_of_offline_replay(ros_graph, proxy_bag):  # noqa: F811
    bag, offline = proxy_bag
    dem = ros_graph.start_node("perception.dem_node", "dem_node", params={"cloud_queue": 40, "points_reliable": True})
    sink = ros_graph.collect("/elevation_map", GRIDMAP, len(offline), 40, qos=100)
    player = ros_graph.start_node("perception.bag_play_node", "bag_play_node", params={
        "bag": str(bag), "rate": 5.0, "topics": INPUTS, "reliable": True,
        "wait_for": ["/points", "/tf", "/tf_static", "/joint_states"]})
    raw = sink.result(60)
    assert player.wait(30) == 0, player.log()
    assert "played" in player.log()
    values = ros_graph.diagnostics("/dem_node", messages=1)
    assert values["clouds"] == values["maps published"] == str(len(offline)), \
        f"lost on the way: {values}\n{dem.log()}"
    assert len(raw) == len(offline), f"{len(raw)} of {len(offline)} GridMaps; dem_node log:\n{dem.log()}"
    assert values["built before their transform (tf_wait/cloud_queue)"] == "0"
    for i, (data, want) in enumerate(zip(raw, offline, strict=True)):
        got = deserialize_lenient(data, GRIDMAP)
        assert (got.header.stamp.sec, got.header.stamp.nanosec) == (want.header.stamp.sec, want.header.stamp.nanosec), i
        assert got.info == want.info, f"map {i}: pose {got.info.pose} != offline {want.info.pose}"
        assert np.array_equal(np.asarray(got.data[0].data), np.asarray(want.data[0].data), equal_nan=True), i
        assert data == bytes(typestore().serialize_cdr(want, GRIDMAP)), f"map {i} differs from offline replay"
    assert dem.alive
    assert dem.stop() == 0, dem.log()


BAD_INPUT_PROBE = r"""
import json, time
import numpy as np
import rclpy
from perception.messages import header, msg
from perception.ros_adapter import NodeAdapter
rclpy.init()
a = NodeAdapter("bad_input")
pub = a.publisher("/points", "sensor_msgs/msg/PointCloud2")
t = time.monotonic()
while pub.subscription_count == 0 and time.monotonic() - t < 10:
    rclpy.spin_once(a.node, timeout_sec=0.05)
field = msg("sensor_msgs/msg/PointField")
no_z = msg("sensor_msgs/msg/PointCloud2")(
    header=header("lidar", 1.0), height=1, width=2,
    fields=[field(name="x", offset=0, datatype=7, count=1), field(name="y", offset=4, datatype=7, count=1)],
    is_bigendian=False, point_step=8, row_step=16, data=np.zeros(16, np.uint8), is_dense=True)
for _ in range(10):  # best effort: the first few after matching may be lost
    pub.publish(no_z)
    pub.publish(bytes(range(41)))
    rclpy.spin_once(a.node, timeout_sec=0.05)
print(json.dumps({"matched": pub.subscription_count}))
"""


def test_bad_clouds_are_logged_and_survived(ros_graph):  # noqa: F811
    dem = ros_graph.start_node("perception.dem_node", "dem_node")
    assert ros_graph.run_probe(BAD_INPUT_PROBE, timeout=30)["matched"] == 1
    dem.wait_for_log("/points", 10)  # the adapter's throttled warning for the undecodable message
    log = dem.log()
    assert "dropped a message on /points" in log, log
    values = ros_graph.diagnostics("/dem_node", messages=1)
    assert int(values["count: /points: undecodable"]) >= 1, values
    assert int(values["skipped: malformed cloud"]) >= 1, values  # the cloud without z
    assert "malformed cloud" in dem.log() and "'z'" in dem.log(), dem.log()
    assert dem.alive
    assert dem.stop() == 0, dem.log()
