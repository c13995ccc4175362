"""Tests of sim/urdf.py: a well-formed kinematic tree, the spec's limits and masses, flipper joints
whose positive angle raises the tip (the convention of sim.robot and sim/mjcf.py), and the turning lidar
platform whose ``laser_scanner`` frame casts the proxy lidar's rays (sim.lidar)."""

import dataclasses
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from sim.lidar import LidarConfig, RotatingLidar
from sim.robot import FLIPPER_NAMES, RobotSpec
from sim.urdf import PLATFORM_MASS, build_urdf, write_urdf

SPECS = [RobotSpec(), RobotSpec(wheel_base=0.6, flipper_length=0.4, body_mass=30.0, flipper_lower=-0.8, mast_x=-0.05)]


def _floats(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split()])


def _rot(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix about a unit axis (Rodrigues)."""
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _rpy(rpy: np.ndarray) -> np.ndarray:
    """URDF fixed-axis roll-pitch-yaw: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    ex, ey, ez = np.eye(3)
    return _rot(ez, rpy[2]) @ _rot(ey, rpy[1]) @ _rot(ex, rpy[0])


@pytest.fixture(params=range(len(SPECS)), ids=["default", "variant"])
def spec_and_robot(request):
    spec = SPECS[request.param]
    return spec, ET.fromstring(build_urdf(spec))


def test_tree_is_connected_and_rooted_at_base_link(spec_and_robot):
    _, robot = spec_and_robot
    links = [link.get("name") for link in robot.findall("link")]
    assert len(links) == len(set(links))
    children = []
    for joint in robot.findall("joint"):
        parent, child = joint.find("parent").get("link"), joint.find("child").get("link")
        assert parent in links and child in links, joint.get("name")
        children.append(child)
    assert len(children) == len(set(children)), "a link with two parents"
    roots = set(links) - set(children)
    assert roots == {"base_link"}
    expected = {"base_link", "left_track", "right_track", "mast", "laser", "imu_link", "laser_platform", "laser_scanner",
                *FLIPPER_NAMES}
    assert set(links) == expected


def test_materials_used_are_defined(spec_and_robot):
    _, robot = spec_and_robot
    defined = {m.get("name") for m in robot.findall("material")}
    used = {m.get("name") for m in robot.iter("material")} - defined
    assert not used
    assert all(m.find("color") is not None for m in robot.findall("material"))


def test_flipper_joints_have_spec_limits(spec_and_robot):
    spec, robot = spec_and_robot
    revolute = [j for j in robot.findall("joint") if j.get("type") == "revolute"]
    assert sorted(j.get("name") for j in revolute) == sorted(f"{n}_joint" for n in FLIPPER_NAMES)
    continuous = [j.get("name") for j in robot.findall("joint") if j.get("type") == "continuous"]
    assert continuous == ["laser_platform_joint"]
    assert all(j.get("type") in ("revolute", "continuous", "fixed") for j in robot.findall("joint"))
    pivots = spec.flipper_pivots()
    for joint in revolute:
        name = joint.find("child").get("link")
        assert joint.get("name") == f"{name}_joint"
        limit = joint.find("limit")
        assert float(limit.get("lower")) == pytest.approx(spec.flipper_lower)
        assert float(limit.get("upper")) == pytest.approx(spec.flipper_upper)
        assert float(limit.get("velocity")) == pytest.approx(spec.flipper_speed)
        assert float(limit.get("effort")) == pytest.approx(spec.flipper_torque)
        np.testing.assert_allclose(_floats(joint.find("origin").get("xyz")), pivots[name], atol=1e-9)


def test_total_mass_matches_spec(spec_and_robot):
    spec, robot = spec_and_robot
    masses = {link.get("name"): float(link.find("inertial/mass").get("value"))
              for link in robot.findall("link") if link.find("inertial") is not None}
    assert sum(masses.values()) == pytest.approx(spec.total_mass)
    assert masses["base_link"] == pytest.approx(spec.body_mass)
    assert masses["left_track"] == masses["right_track"] == pytest.approx(spec.track_mass)
    assert masses["mast"] == pytest.approx(spec.mast_mass - PLATFORM_MASS)  # the platform's mass is the mast's
    assert masses["laser_platform"] == PLATFORM_MASS
    assert all(masses[n] == pytest.approx(spec.flipper_mass) for n in FLIPPER_NAMES)


def test_inertias_are_physical(spec_and_robot):
    _, robot = spec_and_robot
    inertias = robot.findall("link/inertial/inertia")
    assert len(inertias) == 9
    for element in inertias:
        a = {k: float(v) for k, v in element.attrib.items()}
        tensor = np.array([[a["ixx"], a["ixy"], a["ixz"]], [a["ixy"], a["iyy"], a["iyz"]], [a["ixz"], a["iyz"], a["izz"]]])
        eig = np.linalg.eigvalsh(tensor)
        assert eig.min() > 0
        # Triangle inequality of principal moments: holds for every real mass distribution.
        assert 2 * eig.max() <= eig.sum() + 1e-12


def _tip_point(robot: ET.Element, name: str) -> np.ndarray:
    visual = robot.find(f"link[@name='{name}']/visual[@name='{name}_tip']")
    return _floats(visual.find("origin").get("xyz"))


@pytest.mark.parametrize("name", FLIPPER_NAMES)
@pytest.mark.parametrize("angle", [0.5, -0.4, 1.2])
def test_positive_flipper_angle_raises_tip(spec_and_robot, name, angle):
    spec, robot = spec_and_robot
    joint = robot.find(f"joint[@name='{name}_joint']")
    xyz, rpy = _floats(joint.find("origin").get("xyz")), _floats(joint.find("origin").get("rpy"))
    axis = _floats(joint.find("axis").get("xyz"))
    tip = _tip_point(robot, name)
    # The flipper extends away from the body: +x for front flippers, -x for rear ones.
    assert np.sign(tip[0]) == (1 if name.startswith("front") else -1)
    assert np.linalg.norm(tip) == pytest.approx(spec.flipper_length)

    def tip_in_base(q: float) -> np.ndarray:
        rot = _rpy(rpy)
        return xyz + rot @ _rot(axis, q) @ tip

    rest, moved = tip_in_base(0.0), tip_in_base(angle)
    assert np.sign(moved[2] - rest[2]) == np.sign(angle)
    # Same place as the spec's own forward kinematics (which the MJCF and the planner use).
    x, z = spec.flipper_tip(name, angle)
    np.testing.assert_allclose(moved[[0, 2]], [x, z], atol=1e-7)
    assert moved[1] == pytest.approx(spec.flipper_pivots()[name][1])


def test_laser_and_imu_frames(spec_and_robot):
    spec, robot = spec_and_robot
    joints = {j.find("child").get("link"): j for j in robot.findall("joint")}

    def position(link: str) -> np.ndarray:
        total = np.zeros(3)
        while link in joints:  # all fixed joints in this chain have zero rpy
            total += _floats(joints[link].find("origin").get("xyz"))
            link = joints[link].find("parent").get("link")
        return total

    np.testing.assert_allclose(position("laser"), [spec.mast_x, 0.0, spec.mast_top], atol=1e-9)
    np.testing.assert_allclose(position("imu_link"), [0.0, 0.0, 0.0], atol=1e-12)
    assert joints["laser"].get("type") == joints["imu_link"].get("type") == "fixed"


def _chain(robot: ET.Element, link: str, angles: dict[str, float]) -> np.ndarray:
    """The 4x4 pose of ``link`` in base_link, each movable joint at ``angles`` (default 0)."""
    joints = {j.find("child").get("link"): j for j in robot.findall("joint")}
    pose = np.eye(4)
    while link in joints:
        joint = joints[link]
        local = np.eye(4)
        local[:3, :3] = _rpy(_floats(joint.find("origin").get("rpy")))
        local[:3, 3] = _floats(joint.find("origin").get("xyz"))
        if joint.get("type") != "fixed":
            turn = np.eye(4)
            turn[:3, :3] = _rot(_floats(joint.find("axis").get("xyz")), angles.get(joint.get("name"), 0.0))
            local = local @ turn
        pose = local @ pose
        link = joint.find("parent").get("link")
    return pose


@pytest.mark.parametrize("lidar", [None, LidarConfig(phase=0.3), LidarConfig(phase=-1.0, mount=(0.02, -0.01, 0.45))],
                         ids=["default", "phase", "mount"])
def test_laser_scanner_frame_casts_the_proxys_rays(spec_and_robot, lidar):
    """``laser_platform_joint`` sits at the proxy lidar's optical centre and turns about x; ``laser_scanner`` is the
    platform yawed +90 degrees, so a 2D scanner's rays in it (its x-y plane, angle -theta) are the proxy's line at
    platform angle phase + joint angle: robot_state_publisher places Gazebo's clouds where the proxy casts."""
    spec, _ = spec_and_robot
    robot = ET.fromstring(build_urdf(spec, lidar=lidar))
    config = lidar or LidarConfig()
    joint = robot.find("joint[@name='laser_platform_joint']")
    assert joint.get("type") == "continuous" and joint.find("parent").get("link") == "mast"
    np.testing.assert_allclose(_floats(joint.find("axis").get("xyz")), [1.0, 0.0, 0.0])
    scanner = robot.find("joint[@name='laser_scanner_joint']")
    assert scanner.get("type") == "fixed" and scanner.find("parent").get("link") == "laser_platform"
    np.testing.assert_allclose(_floats(scanner.find("origin").get("rpy")), [0.0, 0.0, math.pi / 2])
    proxy = RotatingLidar([], config, rng=np.random.default_rng(0), robot=spec)
    if lidar is None:  # sim.lidar's default mount: 6 cm above the mast top, in the mast frame
        np.testing.assert_allclose(_floats(joint.find("origin").get("xyz")), [0.0, 0.0, spec.mast_size[2] + 0.06],
                                   atol=1e-9)
    theta = -config.fov / 2 + np.arange(config.beams) * config.angular_step
    local = np.stack([np.cos(-theta), np.sin(-theta), np.zeros_like(theta)], axis=1)
    for line in (0, 11, 75, 140):
        q = 2 * math.pi * line / config.lines_per_period
        pose = _chain(robot, "laser_scanner", {"laser_platform_joint": q})
        np.testing.assert_allclose(pose[:3, 3], proxy.mount, atol=1e-8)
        np.testing.assert_allclose(local @ pose[:3, :3].T, proxy.directions(line), atol=1e-7)


def test_a_mast_lighter_than_the_platform_is_refused():
    with pytest.raises(ValueError, match="mast_mass"):
        build_urdf(RobotSpec(mast_mass=PLATFORM_MASS))


def test_spec_changes_reach_the_urdf():
    default = build_urdf()
    assert default == build_urdf(RobotSpec())
    assert build_urdf(dataclasses.replace(RobotSpec(), flipper_upper=1.0)) != default


def test_write_urdf_is_atomic(tmp_path):
    spec = SPECS[1]
    target = tmp_path / "sub" / "robot.urdf"
    assert write_urdf(target, spec) == target
    assert target.read_text() == build_urdf(spec)
    write_urdf(target)  # overwrite in place
    assert ET.parse(target).getroot().tag == "robot"
    assert target.read_text() == build_urdf()
    assert [p.name for p in target.parent.iterdir()] == ["robot.urdf"], "temporary file left behind"
    assert target.stat().st_mode & 0o044 == 0o044


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "robot.urdf"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("sim.io_utils.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_urdf(target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["robot.urdf"]


def test_mujoco_urdf_parser_agrees(spec_and_robot):
    """An independent URDF parser (MuJoCo's) loads the document and gives the same flipper kinematics."""
    mujoco = pytest.importorskip("mujoco")
    spec, _ = spec_and_robot
    model = mujoco.MjModel.from_xml_string(build_urdf(spec))
    data = mujoco.MjData(model)
    angles = dict(zip(FLIPPER_NAMES, (0.5, -0.3, 1.1, -1.0), strict=True))
    for name, q in angles.items():
        joint = model.joint(f"{name}_joint")
        np.testing.assert_allclose(joint.range, [spec.flipper_lower, spec.flipper_upper])
        data.qpos[joint.qposadr[0]] = q
    mujoco.mj_kinematics(model, data)
    np.testing.assert_allclose(data.xpos[model.body("laser_platform").id],
                               [spec.mast_x, 0.0, spec.mast_top + 0.06], atol=1e-9)
    assert model.body("laser_platform").mass[0] == pytest.approx(PLATFORM_MASS)
    for name, q in angles.items():
        body = model.body(name).id
        sign = 1.0 if name.startswith("front") else -1.0
        tip = data.xpos[body] + data.xmat[body].reshape(3, 3) @ [sign * spec.flipper_length, 0.0, 0.0]
        np.testing.assert_allclose(tip[[0, 2]], spec.flipper_tip(name, q), atol=1e-6)
