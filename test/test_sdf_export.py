"""The Gazebo export (sim/sdf.py): structure, kinematics and terrain checked here always; the real SDFormat parser
(``ign sdf -k`` from Debian's ignition-tools + libsdformat-dev) on top where it is installed."""

from __future__ import annotations

import math
import os
import shutil
import stat
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace

import numpy as np
import pytest

from flipper_control.learning.bags import JOINT_NAMES
from sim.io_utils import OutputError
from sim.lidar import LidarConfig, RotatingLidar, solid_rotation
from sim.robot import FLIPPER_NAMES, RobotSpec
from sim.sdf import SDF_VERSION, SYSTEMS, GazeboConfig, build_robot_sdf, build_world_sdf, gz_topics, write_world_sdf
from sim.terrain import world_solids
from sim.urdf import PLATFORM_MASS, build_urdf
from sim.world_sets import load_set, resolve_world

WORLDS = load_set("test") + load_set("proxy") + load_set("training", 2, 0) + load_set("steep", 1, 0)


def _model(root: ET.Element, name: str = "flipper_robot") -> ET.Element:
    return next(m for m in root.iter("model") if m.get("name") == name)


def _vec(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split()])


def _rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Fixed-axis roll-pitch-yaw (SDF and URDF): R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr, cp, sp, cy, sy = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def _transform(pose_text: str | None) -> np.ndarray:
    """The 4x4 transform of an SDF pose text ``x y z roll pitch yaw`` (empty: identity)."""
    out = np.eye(4)
    if pose_text and pose_text.strip():
        pose = _vec(pose_text)
        out[:3, :3], out[:3, 3] = _rpy_matrix(*pose[3:]), pose[:3]
    return out


def _pose_in_model(model: ET.Element, name: str) -> np.ndarray:
    """Where a link, joint or frame of ``model`` is in the model frame, all joints at 0, resolving ``relative_to`` the
    way SDFormat 1.9 does (a link: the model frame by default; a joint: its child link; a frame: its attached_to)."""
    if name == "__model__":
        return np.eye(4)
    element = next(e for e in model if e.get("name") == name and e.tag in ("link", "joint", "frame"))
    pose = element.find("pose")
    default = {"link": "__model__", "joint": element.findtext("child"), "frame": element.get("attached_to")}[element.tag]
    base = (pose.get("relative_to") if pose is not None else None) or default
    return _pose_in_model(model, base) @ _transform(pose.text if pose is not None else None)


def _check_frames(model: ET.Element) -> None:
    """Every joint's parent and child, every frame's attached_to and every pose's relative_to name something in the model."""
    links = {e.get("name") for e in model.findall("link")}
    joints = {e.get("name") for e in model.findall("joint")}
    frames = {e.get("name") for e in model.findall("frame")}
    names = links | joints | frames
    assert len(names) == len(links) + len(joints) + len(frames), "link, joint and frame names must be unique"
    for joint in model.findall("joint"):
        assert joint.findtext("parent") in links | {"world"}, joint.get("name")
        assert joint.findtext("child") in links, joint.get("name")
    for frame in model.findall("frame"):
        assert frame.get("attached_to") in names
    for pose in model.iter("pose"):
        if pose.get("relative_to"):
            assert pose.get("relative_to") in names, pose.get("relative_to")
    for link in model.findall("link"):
        for kind in ("collision", "visual", "sensor"):
            items = [e.get("name") for e in link.findall(kind)]
            assert len(items) == len(set(items)), f"{link.get('name')}: duplicate {kind} names"


@pytest.mark.parametrize("world", WORLDS, ids=[w.name for w in WORLDS])
def test_every_world_exports_a_consistent_document(world):
    root = ET.fromstring(build_world_sdf(world))
    assert root.tag == "sdf" and root.get("version") == SDF_VERSION
    w = root.find("world")
    known = set(SYSTEMS.values())
    plugins = [(p.get("name"), p.get("filename")) for p in root.iter("plugin")]
    assert plugins and all(p in known for p in plugins), set(plugins) - known
    world_plugins = {p.get("name") for p in w.findall("plugin")}
    for system in ("physics", "scene_broadcaster", "user_commands", "sensors", "imu"):
        assert SYSTEMS[system][0] in world_plugins
    assert w.find("plugin/engine/filename").text == "gz-physics-dartsim-plugin"  # TrackedVehicle works with DART only
    for model in w.findall("model"):
        _check_frames(model)
    # the terrain: exactly the boxes MuJoCo collides with, primitive by primitive
    terrain = [m for m in w.findall("model") if m.get("name").startswith("terrain_")]
    assert len(terrain) == len(world.terrain)
    assert all(m.findtext("static") == "true" for m in terrain)
    boxes = [c for m in terrain for c in m.iter("collision")]
    solids = world_solids(world)
    assert len(boxes) == len(solids)
    for box, solid in zip(boxes, solids, strict=True):
        pose = _vec(box.findtext("pose"))
        np.testing.assert_allclose(pose[:3], solid.center, atol=1e-8)
        np.testing.assert_allclose(_vec(box.findtext("geometry/box/size")), 2 * np.array(solid.half), atol=1e-8)
        np.testing.assert_allclose(_rpy_matrix(*pose[3:]), solid_rotation(solid), atol=1e-8)
    # the robot starts on the start line, its wheels just above the terrain under them
    start = _vec(_model(root).findtext("pose"))
    assert start[0] == world.start_x and start[1] == 0
    assert 0 < start[2] - RobotSpec().wheel_radius - max([s.center[2] + s.half[2] for s in solids if
                                                           abs(s.center[0] - world.start_x) < 0.2] + [0.0]) < 0.02


def test_flipper_joints_are_the_urdfs_and_the_controllers():
    spec = RobotSpec()
    model = _model(ET.fromstring(build_robot_sdf(spec)))
    urdf = ET.fromstring(build_urdf(spec))
    urdf_revolute = {j.get("name"): j for j in urdf.findall("joint") if j.get("type") == "revolute"}
    sdf_revolute = {j.get("name"): j for j in model.findall("joint") if j.get("type") == "revolute"}
    assert set(urdf_revolute) == set(JOINT_NAMES) == {f"{n}_joint" for n in FLIPPER_NAMES}
    assert set(sdf_revolute) == set(JOINT_NAMES) | {"laser_platform_joint"}
    for name in JOINT_NAMES:
        u, s = urdf_revolute[name], sdf_revolute[name]
        assert s.findtext("parent") == u.find("parent").get("link") and s.findtext("child") == u.find("child").get("link")
        np.testing.assert_allclose(_vec(s.findtext("axis/xyz")), _vec(u.find("axis").get("xyz")))
        for key in ("lower", "upper", "effort", "velocity"):
            assert float(s.findtext(f"axis/limit/{key}")) == pytest.approx(float(u.find("limit").get(key)))
    controllers = [p for p in model.findall("plugin") if p.get("name") == SYSTEMS["joint_position_controller"][0]]
    assert [c.findtext("joint_name") for c in controllers] == list(JOINT_NAMES)
    topics = gz_topics()
    assert [c.findtext("topic") for c in controllers] == [topics[f"{n}_cmd_pos"] for n in FLIPPER_NAMES]
    assert all(float(c.findtext("p_gain")) == spec.flipper_kp and float(c.findtext("cmd_max")) == spec.flipper_torque
               for c in controllers)


@pytest.mark.parametrize("angle", [-1.0, 0.0, 0.7, 1.5])
def test_a_positive_flipper_angle_raises_the_tip_as_in_the_spec(angle):
    """Pivot from the joint pose, rotation about the SDF axis: the tip lands where RobotSpec.flipper_tip says."""
    spec = RobotSpec(track_separation=0.45, flipper_length=0.3)  # not the defaults: the spec really flows through
    model = _model(ET.fromstring(build_robot_sdf(spec)))
    joints = {j.get("name"): j for j in model.findall("joint")}
    for name in FLIPPER_NAMES:
        joint = joints[f"{name}_joint"]
        assert joint.find("pose").get("relative_to") == "base_link"
        pivot = _vec(joint.findtext("pose"))[:3]
        sign = 1.0 if name.startswith("front") else -1.0
        tip = pivot + _axis_rotation(_vec(joint.findtext("axis/xyz")), angle) @ np.array([sign * spec.flipper_length, 0, 0])
        np.testing.assert_allclose(tip[[0, 2]], spec.flipper_tip(name, angle), atol=1e-9)
        assert tip[1] == pytest.approx(spec.flipper_pivots()[name][1])


def test_tracks_mass_and_sensors_follow_the_spec():
    spec = RobotSpec(track_separation=0.45)
    model = _model(ET.fromstring(build_robot_sdf(spec)))
    links = {link.get("name"): link for link in model.findall("link")}
    assert sum(float(link.findtext("inertial/mass")) for link in links.values()) == pytest.approx(spec.total_mass)
    tv = next(p for p in model.findall("plugin") if p.get("name") == SYSTEMS["tracked_vehicle"][0])
    assert float(tv.findtext("tracks_separation")) == spec.track_separation
    belts = [e.findtext("link") for e in tv.findall("left_track")] + [e.findtext("link") for e in tv.findall("right_track")]
    assert sorted(belts) == sorted(["left_track", "right_track", *FLIPPER_NAMES]) and set(belts) <= set(links)
    controlled = [p.findtext("link") for p in model.findall("plugin") if p.get("name") == SYSTEMS["track_controller"][0]]
    assert sorted(controlled) == sorted(belts)  # one TrackController per belt, none twice
    imu = links["base_link"].find("sensor[@type='imu']")
    assert imu is not None and imu.findtext("topic") == gz_topics()["imu"]


@pytest.mark.parametrize("lidar", [LidarConfig(phase=0.4), LidarConfig(phase=-2.0, mount=(0.05, 0.01, 0.5))],
                         ids=["phase", "mount"])
def test_gpu_lidar_casts_the_proxys_rays(lidar):
    """The gpu_lidar on the turning platform sweeps the same rays as sim.lidar's rotating scanner, line by line, from
    the proxy's mount; its frame is the URDF's ``laser_scanner``, which robot_state_publisher serves."""
    model = _model(ET.fromstring(build_robot_sdf(RobotSpec(), GazeboConfig(lidar=lidar))))
    platform = next(link for link in model.findall("link") if link.get("name") == "laser_platform")
    sensor = platform.find("sensor[@type='gpu_lidar']")
    horizontal = sensor.find("lidar/scan/horizontal")
    samples = int(horizontal.findtext("samples"))
    lo, hi = float(horizontal.findtext("min_angle")), float(horizontal.findtext("max_angle"))
    assert samples == lidar.beams and float(sensor.findtext("update_rate")) == lidar.line_rate
    assert sensor.findtext("gz_frame_id") == "laser_scanner" and sensor.findtext("topic") == gz_topics()["lidar"]
    assert int(sensor.findtext("lidar/scan/vertical/samples")) == 1
    assert float(sensor.findtext("lidar/range/min")) == lidar.min_range
    assert float(sensor.findtext("lidar/range/max")) == lidar.max_range
    assert float(sensor.findtext("lidar/noise/stddev")) == lidar.range_sigma
    joint = next(j for j in model.findall("joint") if j.get("name") == "laser_platform_joint")
    assert joint.findtext("parent") == "mast" and joint.findtext("child") == "laser_platform"
    speed = next(float(p.findtext("initial_velocity")) for p in model.findall("plugin")
                 if p.get("name") == SYSTEMS["joint_controller"][0] and p.findtext("joint_name") == "laser_platform_joint")
    axis = _vec(joint.findtext("axis/xyz"))
    # the sensor, all joints at 0, in the frame of the model (= base_link): exactly the scanner frame
    relative_to = sensor.find("pose").get("relative_to") or "laser_platform"  # a sensor's default: its link
    sensor_pose = _pose_in_model(model, relative_to) @ _transform(sensor.find("pose").text)
    np.testing.assert_allclose(sensor_pose, _pose_in_model(model, "laser_scanner"), atol=1e-12)
    joint_pose = _pose_in_model(model, "laser_platform_joint")
    angles = lo + (hi - lo) * np.arange(samples) / (samples - 1)
    local = np.stack([np.cos(angles), np.sin(angles), np.zeros(samples)], axis=1)  # a gpu_lidar's rays in its frame
    proxy = RotatingLidar([], lidar, rng=np.random.default_rng(0))
    np.testing.assert_allclose(sensor_pose[:3, 3], proxy.mount, atol=1e-8)  # the proxy's optical centre
    np.testing.assert_allclose(joint_pose[:3, 3], proxy.mount, atol=1e-8)
    for line in (0, 7, 40, 149):
        t = line / lidar.line_rate
        # the joint turns the platform about its axis (expressed in the joint frame), starting at 0
        turn = joint_pose[:3, :3] @ _axis_rotation(axis, speed * t) @ joint_pose[:3, :3].T
        rays = local @ (turn @ sensor_pose[:3, :3]).T
        expected = proxy.directions(line)
        # same set of rays (the gpu_lidar sweeps them in the opposite order)
        np.testing.assert_allclose(rays[::-1], expected, atol=1e-7)  # 9 printed digits


def test_lidar_platform_is_the_urdfs_once():
    """The platform, its joint and the scanner frame come from the URDF, once, with the URDF's pose and mass; the mast
    gave the platform its mass."""
    spec, lidar = RobotSpec(mast_x=-0.05), LidarConfig(phase=0.7)
    model = _model(ET.fromstring(build_robot_sdf(spec, GazeboConfig(lidar=lidar))))
    urdf = ET.fromstring(build_urdf(spec, lidar=lidar))
    assert [e.get("name") for e in model if e.get("name", "").startswith("laser")] == \
        ["laser_platform", "laser", "laser_platform_joint", "laser_scanner"]
    u_joint = urdf.find("joint[@name='laser_platform_joint']")
    s_joint = model.find("joint[@name='laser_platform_joint']")
    assert s_joint.find("pose").get("relative_to") == u_joint.find("parent").get("link") == "mast"
    origin = u_joint.find("origin")
    np.testing.assert_allclose(_vec(s_joint.findtext("pose")), _vec(f"{origin.get('xyz')} {origin.get('rpy')}"))
    assert float(s_joint.findtext("axis/limit/upper")) >= 1e15  # continuous in URDF: unlimited here
    assert model.find("frame[@name='laser_scanner']").get("attached_to") == "laser_platform"
    links = {link.get("name"): link for link in model.findall("link")}
    assert float(links["laser_platform"].findtext("inertial/mass")) == PLATFORM_MASS
    assert float(links["mast"].findtext("inertial/mass")) == pytest.approx(spec.mast_mass - PLATFORM_MASS)
    assert [v.get("name") for v in links["laser_platform"].findall("visual")] == ["laser_platform_visual"]
    assert links["laser_platform"].find("collision") is None


def test_topics_and_names_follow_the_config():
    config = GazeboConfig(model_name="absolem")
    root = ET.fromstring(build_robot_sdf(RobotSpec(), config))
    model = _model(root, "absolem")
    tv = next(p for p in model.findall("plugin") if p.get("name") == SYSTEMS["tracked_vehicle"][0])
    assert tv.findtext("topic") == "/model/absolem/cmd_vel" == gz_topics(config)["cmd_vel"]
    with pytest.raises(ValueError, match="model_name"):
        GazeboConfig(model_name="has space")
    with pytest.raises(ValueError, match="step_size"):
        GazeboConfig(step_size=0.0)


def test_a_faster_world_raises_the_belt_limit():
    world = resolve_world("flat")
    fast = replace(world, speed=1.8)
    model = _model(ET.fromstring(build_world_sdf(fast)))
    track_controller = SYSTEMS["track_controller"][0]
    limits = [float(p.findtext("max_velocity")) for p in model.findall("plugin") if p.get("name") == track_controller]
    assert limits == [1.8] * 6


def test_write_is_atomic_and_refuses_a_read_only_file(tmp_path):
    world = resolve_world("pallet")
    path = write_world_sdf(tmp_path / "sub" / "pallet.sdf", world)
    assert ET.parse(path).getroot().tag == "sdf"
    assert [p.name for p in path.parent.iterdir()] == ["pallet.sdf"]  # no temporary file left behind
    path.write_text("keep me")
    path.chmod(stat.S_IRUSR)
    with pytest.raises(OutputError, match="read-only"):
        write_world_sdf(path, world)
    assert path.read_text() == "keep me"


# ------------------------------------------------------------------ the real SDFormat parser, where installed
def _ign_sdf() -> str | None:
    ign = shutil.which("ign")
    if ign is None:
        return None
    probe = subprocess.run([ign, "sdf", "--versions"], capture_output=True, text=True, timeout=60)
    return ign if probe.returncode == 0 else None


IGN = _ign_sdf()
needs_ign = pytest.mark.skipif(IGN is None, reason="`ign sdf` not installed (Debian: apt-get install ignition-tools "
                                                   "libsdformat-dev); the structural checks above still ran")


def _check(path) -> subprocess.CompletedProcess:
    env = dict(os.environ, IGN_HOME=str(path.parent))  # ign writes nothing outside the test's folder
    return subprocess.run([IGN, "sdf", "-k", str(path)], capture_output=True, text=True, timeout=120, env=env)


@needs_ign
@pytest.mark.parametrize("name", ["mixed", "staircase", "rubble"])
def test_sdformat_parser_accepts_the_export(name, tmp_path):
    path = write_world_sdf(tmp_path / f"{name}.sdf", resolve_world(name))
    result = _check(path)
    assert result.returncode == 0 and "Valid." in result.stdout, result.stdout + result.stderr


@needs_ign
def test_sdformat_parser_rejects_a_broken_joint(tmp_path):
    """The check is real: the same document with a flipper joint's child renamed fails, naming the joint."""
    path = tmp_path / "robot.sdf"
    path.write_text(build_robot_sdf().replace("<child>front_left</child>", "<child>front_lefty</child>"))
    result = _check(path)
    assert result.returncode != 0 and "front_left_joint" in result.stdout + result.stderr
