"""planner_node under real rclpy in a loopback-only network namespace (``test/ros_graph.py``): asked for the flat test
world (about 2 s of planning), it writes the dataset and its JSON summary, reports the finished request on
/diagnostics, and refuses an impossible parameter with its range, at start (exit 2) and on ``set_parameters`` (the
node goes on)."""

from __future__ import annotations

import json
import time

from ros_graph import ros_graph  # noqa: F401 - the fixture

from perception.messages import deserialize_lenient
from planning.dataset import TrajectoryDataset

NODE = "flipper_control.learning.planner_node"

_SET_POLL = """
import json, rclpy
from rclpy.node import Node
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
rclpy.init()
node = Node("param_probe")
client = node.create_client(SetParameters, "/planner_node/set_parameters")
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


def _wait_for(paths, node, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert node.alive, f"planner_node ended (exit {node.returncode}):\n{node.log()[-2000:]}"
        assert time.monotonic() < end, f"no {[str(p) for p in paths if not p.exists()]} after {timeout} s:\n" \
                                       f"{node.log()[-2000:]}"
        time.sleep(0.2)


def test_planner_node_plans_reports_and_refuses_impossible_parameters(ros_graph, tmp_path):  # noqa: F811 - the fixture
    dataset = tmp_path / "plans" / "flat.safetensors"
    params = {"worlds": "flat", "dataset": str(dataset), "poll_s": 0.2, "seed": 4}
    bad = ros_graph.start_node(NODE, "planner_node_bad", params={**params, "poll_s": -1.0})
    node = ros_graph.start_node(NODE, "planner_node", params=params)
    assert bad.wait(30) == 2
    assert "'poll_s' = -1.0 is out of its range [0.05, 3600]" in bad.log()

    # the dataset and its summary, written by the planning step the node ran in a child process
    summary_path = dataset.with_name(dataset.name + ".json")
    _wait_for([dataset, summary_path], node, timeout=20)
    summary = json.loads(summary_path.read_text())
    assert summary["worlds"] == ["flat"] and summary["seed"] == 4 and summary["guide"] is None
    assert summary["planner"]["action_set"] == "coarse"
    [planned] = summary["trajectories"]
    assert planned["world"] == "flat" and planned["success"] is True and planned["seed"] == 4
    trajectories = TrajectoryDataset.load(dataset)
    assert len(trajectories) == 1 and len(trajectories.trajectories[0]) == planned["samples"] > 0
    [log] = list((dataset.parent / "planner_logs").glob("*-plan_worlds.log"))
    assert "planned 1/1: flat found" in log.read_text()

    # /diagnostics: the request is done (the node plans again only when its parameters or the checkpoint change)
    diagnostics = ros_graph.collect("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", count=3, timeout=15)
    statuses = [s for raw in diagnostics.result(20) for s in
                deserialize_lenient(raw, "diagnostic_msgs/msg/DiagnosticArray").status if s.name == "/planner_node"]
    assert statuses, f"no /diagnostics from planner_node; log:\n{node.log()[-2000:]}"
    values = {kv.key: kv.value for kv in statuses[-1].values}
    assert values["state"] == f"done: planned flat into {dataset}", values
    assert statuses[-1].level in (0, b"\x00") and "last failure" not in values, values  # OK: no step failed

    # an impossible value on the running node: refused with its range, and the node goes on
    answer = ros_graph.run_probe(_SET_POLL, timeout=30)
    assert answer["ok"] is False and "'poll_s' = 0.0 is out of its range [0.05, 3600]" in answer["reason"], answer
    assert node.alive
    # seconds of 0.2 s ticks since the plan was written: the finished request was not planned again
    assert len(list((dataset.parent / "planner_logs").glob("*.log"))) == 1
