"""perception.ros_adapter: pure parts (lenient CDR, QoS rule, dataclass parameters) and, under real rclpy in a
loopback-only namespace (test/ros_graph.py), parameter refusal at start and on set_parameters, rclpy's
JointState with effort=[] decoded, QoS of the endpoints and /diagnostics."""

from __future__ import annotations

import numpy as np
import pytest
from ros_graph import ros_graph  # noqa: F401 - the fixture

from perception.dem_node import PARAM_INFO, DemNodeConfig
from perception.messages import deserialize_lenient, msg, typestore
from perception.ros_adapter import ConfigError, config_from_values, param_specs, qos_kind


def _joint_state_cdr() -> bytes:
    js = msg("sensor_msgs/msg/JointState")(
        header=msg("std_msgs/msg/Header")(stamp=msg("builtin_interfaces/msg/Time")(sec=3, nanosec=4), frame_id=""),
        name=["a"], position=np.array([1.5]), velocity=np.array([2.0]), effort=np.array([], dtype=np.float64))
    return bytes(typestore().serialize_cdr(js, "sensor_msgs/msg/JointState"))


def test_lenient_decode_takes_rclpy_padding_and_refuses_garbage():
    data = _joint_state_cdr() + bytes(4)  # what rclpy sends after the empty effort sequence
    with pytest.raises(Exception, match="size mismatch"):
        typestore().deserialize_cdr(data, "sensor_msgs/msg/JointState")
    assert deserialize_lenient(data, "sensor_msgs/msg/JointState").position.tolist() == [1.5]
    with pytest.raises(ValueError, match="sensor_msgs/msg/PointCloud2"):
        deserialize_lenient(bytes(range(41)), "sensor_msgs/msg/PointCloud2")
    with pytest.raises(ValueError, match="padding"):
        deserialize_lenient(_joint_state_cdr() + bytes(16), "sensor_msgs/msg/JointState")


def test_qos_rule():
    assert qos_kind("/points", "sensor_msgs/msg/PointCloud2") == "sensor"
    assert qos_kind("/front/cloud", "sensor_msgs/msg/PointCloud2") == "sensor"
    assert qos_kind("/tf_static", "tf2_msgs/msg/TFMessage") == "latched"
    assert qos_kind("/tf", "tf2_msgs/msg/TFMessage") == "tf"
    assert qos_kind("/elevation_map", "grid_map_msgs/msg/GridMap") == "reliable"


def test_parameters_from_a_dataclass_with_ranges():
    specs = {s.name: s for s in param_specs(DemNodeConfig, PARAM_INFO)}
    assert specs["builder.dem.resolution"].kind is float and specs["cloud_queue"].kind is int
    assert specs["flipper_joints"].sequence and specs["builder.body_min"].length == 3
    with pytest.raises(ConfigError, match=r"'tf_max_age' = -1.0 is out of its range \[0.001, 60\]"):
        specs["tf_max_age"].check(-1.0)
    with pytest.raises(ConfigError, match="must be of type int"):
        specs["cloud_queue"].check(2.5)
    assert specs["tf_wait"].check(1) == 1.0  # an int for a float is fine
    config = config_from_values(DemNodeConfig, {"builder.dem.resolution": 0.05, "tf_wait": 0.2})
    assert config.builder.dem.resolution == 0.05 and config.tf_wait == 0.2
    with pytest.raises(ConfigError, match="tf_cache >= tf_max_age"):  # the dataclass's own check
        config_from_values(DemNodeConfig, {"tf_max_age": 5.0, "tf_cache": 1.0})
    # a config field's metadata carries its description, range and read-only flag (policy_node's fields)
    from flipper_control.policy_node_config import PolicyNodeConfig

    policy_specs = {s.name: s for s in param_specs(PolicyNodeConfig)}
    assert policy_specs["imu_reliable"].info.read_only and not policy_specs["state_wait"].info.read_only
    assert policy_specs["state_wait"].info.range_text() == "[0, 1]"


def test_a_parameter_out_of_range_is_refused_at_start(ros_graph):  # noqa: F811
    node = ros_graph.start_node("perception.dem_node", "dem_node", params={"tf_max_age": -1.0})
    assert node.wait(30) == 2, node.log()
    assert "'tf_max_age' = -1.0 is out of its range [0.001, 60]" in node.log()


LIVE_PROBE = r"""
import json, time
import rclpy, rclpy.executors
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from perception.dem_node import PARAM_INFO, DemNodeConfig
from perception.ros_adapter import NodeAdapter, DiagStatus
from perception.messages import deserialize_lenient
rclpy.init()
a = NodeAdapter("probe", DemNodeConfig, param_info=PARAM_INFO, diagnostics_period=0.2)
a.diagnose(lambda: DiagStatus(DiagStatus.WARN, "testing", {"answer": "42"}))
out = {}
refused = a.node.set_parameters([Parameter("tf_wait", value=-3.0)])[0]
out["refused"] = [refused.successful, refused.reason, a.config.tf_wait]
ok = a.node.set_parameters([Parameter("tf_wait", value=0.25)])[0]
out["accepted"] = [ok.successful, a.config.tf_wait]
def veto(cfg):
    raise ValueError("not now")
a.on_config_change(veto)
vetoed = a.node.set_parameters([Parameter("tf_wait", value=0.3)])[0]
out["vetoed"] = [vetoed.successful, vetoed.reason, a.config.tf_wait]
got, diags = [], []
a.subscribe("/joint_states", "sensor_msgs/msg/JointState", got.append)
a.subscribe("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", diags.append)
a.publisher("/points", "sensor_msgs/msg/PointCloud2"); a.publisher("/tf_static", "tf2_msgs/msg/TFMessage")
other = rclpy.create_node("rclpy_publisher")  # a plain rclpy publisher with its own CDR
pub = other.create_publisher(JointState, "/joint_states", 10)
ex = rclpy.executors.SingleThreadedExecutor()
ex.add_node(a.node); ex.add_node(other)
end = time.monotonic() + 15
while (not got or not diags) and time.monotonic() < end:
    pub.publish(JointState(name=["a"], position=[1.5], velocity=[2.0], effort=[]))
    ex.spin_once(timeout_sec=0.05)
out["joint"] = [list(got[0].name), got[0].position.tolist(), len(got[0].effort)] if got else None
st = diags[0].status[0] if diags else None
out["diag"] = [st.name, int(st.level), st.message, {kv.key: kv.value for kv in st.values}] if st else None
qos = lambda t: [(i.qos_profile.reliability.name, i.qos_profile.durability.name) for i in a.node.get_publishers_info_by_topic(t)]
out["qos"] = {"/points": qos("/points"), "/tf_static": qos("/tf_static")}
print(json.dumps(out))
"""


def test_live_parameters_decode_qos_and_diagnostics(ros_graph):  # noqa: F811
    out = ros_graph.run_probe(LIVE_PROBE, timeout=60)
    ok, reason, kept = out["refused"]
    assert not ok and "'tf_wait' = -3.0 is out of its range [0, 10]" in reason and kept == 0.5
    assert out["accepted"] == [True, 0.25]
    assert out["vetoed"] == [False, "not now", 0.25]
    assert out["joint"] == [["a"], [1.5], 0]  # rclpy's CDR with the trailing empty effort, decoded
    name, level, message, values = out["diag"]
    assert name == "/probe" and level == 1 and message == "testing" and values["answer"] == "42"
    assert out["qos"]["/points"] == [["BEST_EFFORT", "VOLATILE"]]
    assert out["qos"]["/tf_static"] == [["RELIABLE", "TRANSIENT_LOCAL"]]


SHUTDOWN_RACE_PROBE = r"""
import json, sys
import rclpy
from rclpy._rclpy_pybind11 import RCLError
from perception.dem_node import PARAM_INFO, DemNodeConfig
from perception.ros_adapter import NodeAdapter, run_node

def spin_after_shutdown(node):  # what rclpy.spin raises when a signal shuts the context down mid-spin
    rclpy.shutdown()
    raise RCLError("failed to initialize wait set: the given context is not valid")

def spin_failing(node):  # a real error while the context is fine must still surface
    raise RCLError("something else broke")

out = {}
rclpy.spin = spin_after_shutdown
out["race"] = run_node(lambda: NodeAdapter("probe_a", DemNodeConfig, param_info=PARAM_INFO))
rclpy.spin = spin_failing
try:
    out["failure"] = run_node(lambda: NodeAdapter("probe_b", DemNodeConfig, param_info=PARAM_INFO))
except RCLError as exc:
    out["failure"] = str(exc)
print(json.dumps(out))
"""


def test_run_node_treats_a_shutdown_mid_spin_as_a_clean_stop(ros_graph):  # noqa: F811
    out = ros_graph.run_probe(SHUTDOWN_RACE_PROBE)
    assert out == {"race": 0, "failure": "something else broke"}
