"""The launch files hold together without launch_ros (which cannot be installed here): every argument is described,
every executable exists, every parameter file exists and names only parameters its nodes declare; and the processes
and parameter files that ``sim.launch.xml`` names run together over DDS and close the loop to a judged run."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "flipper_learning"
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.xml"))
_SUBST = re.compile(r"\$\((var|find-pkg-share) ([^)]+)\)")

# Where each node's module lives, so that a node whose file is not written yet is skipped by name (not failed).
NODE_FILES = {
    "dem_node": "perception/dem_node.py",
    "policy_node": "flipper_control/policy_node.py",
    "sim2real_node": "perception/sim2real_node.py",
    "robot_sim_node": "flipper_control/robot_sim/node.py",
    "trainer_node": "flipper_control/learning/trainer_node.py",
    "planner_node": "flipper_control/learning/planner_node.py",
}
RCLPY_PARAMS = {"use_sim_time"}  # every rclpy node declares it


# ------------------------------------------------------------------------------------------ parsing
def substitute(text: str, args: dict[str, str], where: str) -> str | None:
    """Resolve $(var NAME) and $(find-pkg-share flipper_learning); None for another package's share folder."""
    other = []

    def one(m: re.Match) -> str:
        kind, name = m.group(1), m.group(2).strip()
        if kind == "var":
            if name not in args:
                raise AssertionError(f"{where}: $(var {name}) names no <arg> of the launch file")
            return args[name]
        if name != PACKAGE:
            other.append(name)
            return ""
        return str(ROOT)  # the installed share folder holds launch/ and config/ as the repository does

    out = _SUBST.sub(one, text)
    return None if other else out


def parse_launch(path: Path, overrides: dict[str, str] | None = None) -> dict:
    """Arguments (name -> (default, description)) and nodes (pkg, exec, name, param files, inline params, remaps)."""
    root = ET.parse(path).getroot()
    assert root.tag == "launch", f"{path.name}: the root element must be <launch>"
    # the declared arguments: an <arg> under <include> passes a value on and declares nothing
    args = {a.get("name"): (a.get("default"), a.get("description") or "") for a in root.findall("arg")}
    values = {k: v for k, (v, _) in args.items() if v is not None} | (overrides or {})
    for name, value in list(values.items()):  # defaults may refer to other arguments
        values[name] = substitute(value, values, f"{path.name} <arg {name}>") or value
    nodes = []
    for n in root.iter("node"):
        where = f"{path.name} <node {n.get('name')}>"
        files, inline = [], {}
        for p in n.findall("param"):
            if p.get("from") is not None:
                files.append(substitute(p.get("from"), values, where))
            else:
                inline[p.get("name")] = substitute(p.get("value", ""), values, where)
        remaps = [(r.get("from"), substitute(r.get("to"), values, where)) for r in n.findall("remap")]
        nodes.append({"pkg": n.get("pkg"), "exec": n.get("exec"), "name": n.get("name"), "files": files,
                      "params": inline, "remaps": remaps})
    return {"args": args, "values": values, "nodes": nodes}


def console_scripts() -> dict[str, str]:
    """setup.py's console scripts: name -> 'module:function'."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.match(r"^\w+ *= *[\w.]+:\w+$", node.value):
            name, target = (s.strip() for s in node.value.split("="))
            out[name] = target
    return out


def node_module(executable: str) -> str | None:
    """The module of a package executable: from setup.py's console script, else from scripts/<exe>'s import."""
    target = console_scripts().get(executable)
    if target:
        return target.split(":")[0]
    script = ROOT / "scripts" / executable
    if script.exists():
        m = re.search(r"^from ([\w.]+) import main", script.read_text(), re.M)
        return m.group(1) if m else None
    return None


def declared_parameters(module_name: str) -> set[str]:
    """The parameters a node module declares, plus rclpy's own: its ``declared_parameters()`` if it has one, else
    read from its source: the config dataclass and ``static_params`` it hands ``NodeAdapter`` (every node is built on
    ``perception.ros_adapter``, which declares exactly those)."""
    module = importlib.import_module(module_name)
    if hasattr(module, "declared_parameters"):
        return set(module.declared_parameters()) | RCLPY_PARAMS
    from perception.ros_adapter import param_specs

    source = Path(module.__file__).read_text()
    config = re.search(r"NodeAdapter\(\s*[\w.\"']+\s*,\s*(\w+)", source)
    assert config, f"{module_name}: no NodeAdapter(name, ConfigClass, ...) found and no declared_parameters()"
    names = {s.name for s in param_specs(getattr(module, config.group(1)))}
    static = re.search(r"static_params\s*=\s*(\w+)", source)
    return names | (set(getattr(module, static.group(1))) if static else set()) | RCLPY_PARAMS


def _nodes() -> list[tuple[str, dict]]:
    return [(path.name, node) for path in LAUNCH_FILES for node in parse_launch(path)["nodes"]]


def _skip_unwritten(node: dict) -> None:
    rel = NODE_FILES.get(node["exec"])
    if node["pkg"] == PACKAGE and rel and not (ROOT / rel).exists():
        pytest.skip(f"{node['exec']}: its node file {rel} does not exist yet")


# ------------------------------------------------------------------------------------------ static checks
def test_every_launch_file_parses_and_describes_every_argument():
    names = {p.name for p in LAUNCH_FILES}
    assert {"robot.launch.xml", "sim.launch.xml", "gazebo.launch.xml", "train.launch.xml", "record.launch.xml"} <= names
    for path in LAUNCH_FILES:
        parsed = parse_launch(path)
        undescribed = [name for name, (_, desc) in parsed["args"].items() if len(desc.strip()) < 10]
        assert not undescribed, f"{path.name}: arguments without a description: {undescribed}"
        for node in parsed["nodes"]:
            assert node["pkg"] and node["exec"] and node["name"], f"{path.name}: a node needs pkg, exec and name"


@pytest.mark.parametrize("launch,node", _nodes(), ids=lambda v: v if isinstance(v, str) else v["name"])
def test_node_executable_and_parameters_exist(launch, node):
    if node["pkg"] != PACKAGE:
        assert node["pkg"] == "ros_gz_bridge" and node["exec"] == "parameter_bridge", f"{launch}: unexpected {node}"
        bridge = Path(node["params"]["config_file"])
        entries = yaml.safe_load(bridge.read_text())
        keys = {"ros_topic_name", "gz_topic_name", "ros_type_name", "gz_type_name", "direction"}
        assert entries and all(set(e) == keys and e["direction"] in ("GZ_TO_ROS", "ROS_TO_GZ") for e in entries)
        assert {e["ros_topic_name"] for e in entries} >= {"/points", "/imu/data", "/joint_states", "/tf", "/clock"}
        return
    _skip_unwritten(node)
    module = node_module(node["exec"])
    assert module, f"{launch}: {node['exec']} is neither a console script in setup.py nor a launcher in scripts/"
    assert (ROOT / "scripts" / node["exec"]).exists(), f"{launch}: scripts/{node['exec']} (what ros2 run finds) is missing"
    assert importlib.util.find_spec(module) is not None, f"{launch}: {node['exec']} -> module {module} not found"
    declared = declared_parameters(module)
    unknown = {k for k in node["params"] if k not in declared}
    assert not unknown, f"{launch}: <param> of {node['name']} that it does not declare: {sorted(unknown)}"
    for file in node["files"]:
        path = Path(file)
        assert path.exists(), f"{launch}: parameter file {file} of {node['name']} does not exist"
        data = yaml.safe_load(path.read_text())
        assert isinstance(data, dict), f"{file}: a mapping of node names"
        section = data.get(node["name"], {})
        assert set(section) <= {"ros__parameters"}, f"{file}: {node['name']}: only ros__parameters belongs there"
        unknown = set(section.get("ros__parameters") or {}) - declared
        assert not unknown, f"{file}: {node['name']} does not declare {sorted(unknown)} (it declares {sorted(declared)})"


def test_parameter_files_name_only_nodes_of_their_launch_file():
    for path in LAUNCH_FILES:
        parsed = parse_launch(path)
        names = {n["name"] for n in parsed["nodes"]}
        for file in {f for n in parsed["nodes"] for f in n["files"]}:
            data = yaml.safe_load(Path(file).read_text())
            stray = set(data) - names
            assert not stray, f"{file} (used by {path.name}) names nodes the launch file does not start: {sorted(stray)}"


def test_declared_parameters_are_what_the_nodes_read():
    from flipper_control.robot_sim.core import RobotSimConfig
    from flipper_control.robot_sim.node import PARAM_DESCRIPTIONS, declared_parameters

    assert set(declared_parameters()) == set(RobotSimConfig.__dataclass_fields__) == set(PARAM_DESCRIPTIONS)
    assert "world" in declared_parameters() and "not_a_parameter" not in declared_parameters()


# ------------------------------------------------------------------------------------------ the live graph
SHORT_WORLD = {"name": "launch_test", "length": 1.0, "speed": 0.3,
               "terrain": [{"type": "step", "position": [0.6, 0.0], "height": 0.08, "width": 1.5, "length": 1.0}]}


def test_sim_launch_closes_the_loop_over_dds(tmp_path):
    """Exactly the processes and parameter files of sim.launch.xml, on one short world, in the test namespace."""
    from ros_graph import RosGraph, ros_available

    reason = ros_available()
    if reason:
        pytest.skip(reason)
    import torch

    from flipper_control.checkpoint import save_policy
    from flipper_control.policy import NanAwarePolicy

    torch.manual_seed(0)
    save_policy(tmp_path / "policy", NanAwarePolicy())
    world = tmp_path / "world.yaml"
    world.write_text(yaml.safe_dump(SHORT_WORLD))
    launch = parse_launch(ROOT / "launch" / "sim.launch.xml",
                          {"world": str(world), "checkpoint": str(tmp_path / "policy")})
    assert [n["exec"] for n in launch["nodes"]] == ["robot_sim_node", "dem_node", "policy_node"]
    with RosGraph(tmp_path / "graph") as graph:
        result = graph.collect("/robot_sim/result", "std_msgs/msg/String", count=1, timeout=60, qos="latched")
        procs = []
        for node in launch["nodes"]:
            argv: list[str] = []
            for file in node["files"]:
                argv += ["--params-file", file]
            for key, value in node["params"].items():
                argv += ["-p", f"{key}:={value}" if value != "" else f"{key}:=''"]
            for src, dst in node["remaps"]:
                argv += ["-r", f"{src}:={dst}"]
            procs.append(graph.start_node(node_module(node["exec"]), node["name"], args=tuple(argv)))
        received = result.result(timeout=90)
        alive = {p.name: p.alive for p in procs}
        logs = "\n".join(f"--- {p.name}\n{p.log()[-2000:]}" for p in procs)
    assert received, f"no result on /robot_sim/result; logs:\n{logs}"
    from perception.messages import deserialize_lenient

    run = json.loads(deserialize_lenient(received[0], "std_msgs/msg/String").data)
    assert all(alive.values()), f"a node died: {alive}\n{logs}"
    assert run["world"] == "launch_test" and run["level"] in ("good", "unclear", "fail")
    assert run["status"] in ("success", "failed") and run["steps"] >= 30  # the whole metre, or a judged failure
    assert run["commands"] >= run["steps"] // 2, f"the policy did not drive the robot: {run}\n{logs}"
    assert run["bad_inputs"] == 0 and not run["started_without_command"]
