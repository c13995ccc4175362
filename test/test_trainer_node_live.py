"""trainer_node under real rclpy in a loopback-only network namespace (``test/ros_graph.py``): it starts with a tiny
loop config, reports on /diagnostics that it waits for recordings, and refuses an impossible parameter with its
range, at start (exit 2) and on ``set_parameters`` (the node goes on). No iteration runs here: the gan config needs
a real collection first and the bag folder is empty."""

from __future__ import annotations

import yaml
from ros_graph import ros_graph  # noqa: F401 - the fixture
from tiny_loop import tiny_loop

from perception.messages import deserialize_lenient

_SET_POLL = """
import json, rclpy
from rclpy.node import Node
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
rclpy.init()
node = Node("param_probe")
client = node.create_client(SetParameters, "/trainer_node/set_parameters")
assert client.wait_for_service(timeout_sec=15), "no set_parameters service"
value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.0)
for attempt in range(6):  # a request sent before discovery matched the reply's reader gets no reply: ask again
    future = client.call_async(SetParameters.Request(parameters=[Parameter(name="poll_s", value=value)]))
    rclpy.spin_until_future_complete(node, future, timeout_sec=3)
    if future.done():
        break
result = future.result().results[0]
print(json.dumps({"ok": result.successful, "reason": result.reason}))
"""


def test_trainer_node_reports_and_refuses_impossible_parameters(ros_graph, tmp_path):  # noqa: F811 - the fixture
    config = tmp_path / "loop.yaml"
    config.write_text(yaml.safe_dump(tiny_loop(transfer={"mode": "gan"})))
    params = {"bag_dir": str(tmp_path / "bags"), "loop_config": str(config), "out": str(tmp_path / "out"),
              "poll_s": 0.2, "settle_s": 1.0}
    bad = ros_graph.start_node("flipper_control.learning.trainer_node", "trainer_node_bad", params={**params, "poll_s": -1.0})
    # several: the first may still say "starting" on a loaded machine (the collector stops at the count or timeout)
    diagnostics = ros_graph.collect("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", count=8, timeout=30)
    node = ros_graph.start_node("flipper_control.learning.trainer_node", "trainer_node", params=params)
    assert bad.wait(30) == 2
    assert "'poll_s' = -1.0 is out of its range [0.05, 3600]" in bad.log()
    answer = ros_graph.run_probe(_SET_POLL, timeout=30)
    assert answer["ok"] is False and "[0.05, 3600]" in answer["reason"]
    statuses = [s for raw in diagnostics.result(30) for s in
                deserialize_lenient(raw, "diagnostic_msgs/msg/DiagnosticArray").status if s.name == "/trainer_node"]
    statuses = [s for s in statuses if {kv.key: kv.value for kv in s.values}.get("state") != "starting"]
    assert statuses, f"no /diagnostics from trainer_node after its start; log:\n{node.log()[-2000:]}"
    values = {kv.key: kv.value for kv in statuses[-1].values}
    assert values["state"].startswith("wait: iteration 1 needs 1 real collection"), values
    assert values["iterations done"] == "0" and values["iterations"] == "2"
    assert node.alive  # the refused change did not end it
