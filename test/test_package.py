"""Checks of the ROS 2 packaging that run without ROS: package.xml, launch files, parameter YAML, the
setup.py install layout and the colcon workspace scaffold in ros2_ws/."""

import ast
import glob
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "flipper_learning"
EXEC_DEPENDS = {
    "rclpy", "launch", "launch_ros", "std_msgs", "sensor_msgs", "geometry_msgs", "tf2_msgs", "tf2_ros",
    "grid_map_msgs", "ros_gz_interfaces", "robot_state_publisher", "python3-numpy", "python3-yaml",
}
RECORDED_TOPICS = [
    "/points", "/imu/data", "/joint_states", "/tf", "/tf_static", "/cmd_vel", "/elevation_map",
    "/flipper_controller/commands",
]
PY_LAUNCH = sorted(ROOT.glob("launch/*.launch.py"))
XML_LAUNCH = sorted(ROOT.glob("launch/*.launch.xml"))


def _setup_call() -> dict[str, ast.expr]:
    """Keyword arguments of the setup() call in setup.py, as AST nodes (setup.py is not executed)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "setup"]
    assert len(calls) == 1
    return {kw.arg: kw.value for kw in calls[0].keywords}


def _data_files() -> dict[str, object]:
    """Install folder -> sources of the setup.py data_files: a list of paths, or ("glob", pattern)."""
    out = {}
    for entry in _setup_call()["data_files"].elts:
        dest_node, src = entry.elts
        dest = ast.unparse(dest_node).replace("{PACKAGE}", PACKAGE).strip("f'\"")
        if isinstance(src, ast.Call) and getattr(src.func, "id", None) == "glob":
            out[dest] = ("glob", ast.literal_eval(src.args[0]))  # safe: literal_eval parses literals only
        else:
            out[dest] = ast.unparse(src)
    return out


# package.xml


@pytest.fixture(scope="module")
def manifest() -> ET.Element:
    return ET.parse(ROOT / "package.xml").getroot()


def test_package_xml_identity(manifest):
    assert manifest.tag == "package" and manifest.get("format") == "3"
    assert manifest.findtext("name") == PACKAGE
    assert manifest.findtext("version") == "0.1.0"
    assert manifest.findtext("license") == "Apache-2.0"
    assert manifest.find("maintainer").get("email")
    assert manifest.findtext("export/build_type") == "ament_python"
    assert [e.text for e in manifest.findall("buildtool_depend")] == ["ament_python"]


def test_package_xml_matches_setup_py(manifest):
    setup = _setup_call()
    assert ast.literal_eval(setup["version"]) == manifest.findtext("version")  # safe: literals only
    assert ast.literal_eval(setup["license"]) == manifest.findtext("license")  # safe: literals only
    assert re.search(rf'^PACKAGE = "{manifest.findtext("name")}"$', (ROOT / "setup.py").read_text(), re.M)
    assert (ROOT / "resource" / PACKAGE).is_file(), "ament index marker missing"


def test_package_xml_dependencies(manifest):
    exec_depends = [e.text for e in manifest.findall("exec_depend")]
    assert len(exec_depends) == len(set(exec_depends)), "duplicate exec_depend"
    assert EXEC_DEPENDS <= set(exec_depends), EXEC_DEPENDS - set(exec_depends)
    assert "python3-pytest" in [e.text for e in manifest.findall("test_depend")]
    # Format 3 element order: depends after license/url/author, before export.
    tags = [child.tag for child in manifest]
    assert tags.index("license") < tags.index("buildtool_depend") < tags.index("exec_depend") < tags.index("export")


# launch files


def test_launch_folder_is_installed():
    data_files = _data_files()
    assert data_files[f"share/{PACKAGE}/launch"] == ("glob", "launch/*.launch.*")
    assert data_files[f"share/{PACKAGE}/config"] == ("glob", "config/*.yaml")
    assert "package.xml" in data_files[f"share/{PACKAGE}"]
    installed = set(glob.glob("launch/*.launch.*", root_dir=ROOT))
    assert installed == {str(p.relative_to(ROOT)) for p in ROOT.glob("launch/*") if p.is_file()}
    assert {"launch/description.launch.py", "launch/record.launch.xml"} <= installed
    assert (ROOT / "config" / "robot.yaml").is_file()


@pytest.mark.parametrize("path", PY_LAUNCH, ids=lambda p: p.name)
def test_python_launch_file(path):
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))
    compile(tree, str(path), "exec")
    assert ast.get_docstring(tree), "launch files start with a docstring saying what they launch"
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    assert not functions["generate_launch_description"].args.args
    # Project modules are imported inside the function, so the file loads before the package is on the path.
    top_imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    modules = {a.name for n in top_imports if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in top_imports if isinstance(n, ast.ImportFrom)}
    assert not {m for m in modules if m.split(".")[0] in {"sim", "perception", "planning", "flipper_control"}}
    # Every launch argument has a description (nav2_bringup style).
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "DeclareLaunchArgument":
            assert "description" in {kw.arg for kw in call.keywords}, ast.unparse(call)


def test_description_launch_uses_generated_urdf():
    source = (ROOT / "launch" / "description.launch.py").read_text()
    assert "from sim.urdf import build_urdf" in source
    assert re.search(r'"robot_description":\s*build_urdf\(\)', source)
    assert '"use_sim_time"' in source and 'executable="robot_state_publisher"' in source
    assert 'name="robot_state_publisher"' in source, "node name must match the key in config/robot.yaml"


@pytest.mark.parametrize("path", XML_LAUNCH, ids=lambda p: p.name)
def test_xml_launch_file(path):
    root = ET.parse(path).getroot()
    assert root.tag == "launch"
    args = {arg.get("name"): arg for arg in root.findall("arg")}  # declared (not an <include>'s)
    assert all(arg.get("description") for arg in args.values())
    # Every $(var X) substitution refers to a declared argument.
    used = set(re.findall(r"\$\(var ([\w-]+)\)", path.read_text()))
    assert used <= set(args), used - set(args)


def test_record_launch_records_all_topics():
    root = ET.parse(ROOT / "launch" / "record.launch.xml").getroot()
    assert root.find("arg[@name='bag']") is not None
    (executable,) = root.findall("executable")
    text = executable.get("cmd")
    assert re.search(r"(^|\s)-o \$\(var bag\)(\s|$)", text)
    cmd = text.split()
    assert cmd[:3] == ["ros2", "bag", "record"]
    assert cmd[cmd.index("-s") + 1] == "mcap"
    topics = [token for token in cmd if token.startswith("/")]
    assert topics == RECORDED_TOPICS


# parameter YAML


# ros_gz_bridge reads its topic mappings from a list (its own config_file format, checked in test_launch_files.py)
NOT_NODE_PARAMETERS = {"gazebo_bridge.yaml"}


@pytest.mark.parametrize("path", sorted(p for p in ROOT.glob("config/*.yaml") if p.name not in NOT_NODE_PARAMETERS),
                         ids=lambda p: p.name)
def test_params_yaml_keyed_by_node(path):
    params = yaml.safe_load(path.read_text())
    assert isinstance(params, dict) and params
    for node, body in params.items():
        assert set(body) == {"ros__parameters"}, f"{path.name}: {node} must hold only ros__parameters"
        assert isinstance(body["ros__parameters"], dict)


def test_robot_params():
    params = yaml.safe_load((ROOT / "config" / "robot.yaml").read_text())
    frequency = params["robot_state_publisher"]["ros__parameters"]["publish_frequency"]
    assert isinstance(frequency, float) and frequency > 0  # a double parameter: an int would be rejected


# colcon workspace scaffold


def test_repos_file():
    repos = yaml.safe_load((ROOT / "ros2_ws" / "flipper_learning.repos").read_text())
    grid_map = repos["repositories"]["grid_map"]
    assert grid_map == {"type": "git", "url": "https://github.com/ANYbotics/grid_map.git", "version": "humble"}


def test_workspace_is_not_ignored_by_colcon():
    # A COLCON_IGNORE at the root or in ros2_ws would hide the package or the whole workspace.
    assert not (ROOT / "COLCON_IGNORE").exists()
    assert not (ROOT / "ros2_ws" / "COLCON_IGNORE").exists()
    ignored = (ROOT / "ros2_ws" / ".gitignore").read_text().split()
    assert {"src/", "build/", "install/", "log/"} <= set(ignored)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_ws_script_is_idempotent(tmp_path):
    ws = tmp_path / "repo" / "ros2_ws"
    ws.mkdir(parents=True)
    shutil.copy(ROOT / "ros2_ws" / "setup_ws.sh", ws)
    env = {**os.environ, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for _ in range(2):
        result = subprocess.run(["bash", str(ws / "setup_ws.sh"), "--no-import"], capture_output=True, text=True,
                                env=env, check=False, timeout=30)
        assert result.returncode == 0, result.stderr
        link = ws / "src" / PACKAGE
        assert link.is_symlink() and os.readlink(link) == "../.."
        assert link.resolve() == (tmp_path / "repo").resolve()
    # A real directory in the way is reported, not replaced.
    link.unlink()
    link.mkdir()
    result = subprocess.run(["bash", str(ws / "setup_ws.sh"), "--no-import"], capture_output=True, text=True,
                            env=env, check=False, timeout=30)
    assert result.returncode != 0 and "not a symlink" in result.stderr
