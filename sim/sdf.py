"""Generate SDFormat 1.9 for Gazebo (gz-sim): a world's terrain and the robot, from the same spec as the MJCF and URDF.

One spec, three descriptions. The robot's links, joints, shapes and inertias are converted from the URDF that
``sim.urdf.build_urdf`` makes of the same ``RobotSpec`` (and the same ``LidarConfig``), so joint names
(``front_left_joint`` ...), axes and limits, the lidar platform and the scanner frame ``laser_scanner`` are the URDF's,
robot_state_publisher's and the flipper controller's by construction. What only Gazebo needs is added here:

- tracks: the gz-sim ``TrackedVehicle`` system (contact surface motion, Pecka et al. IROS 2017; DART only) with one
  ``TrackController`` per belt: the two main tracks and the four flippers, which carry belts on Absolem;
- flippers: one ``JointPositionController`` per flipper joint, with the MJCF position servo's gains;
- an IMU at base_link (``imu_link``) and the rotating 2D lidar of ``sim.lidar``: a ``gpu_lidar`` of the same field
  of view, angular step, line rate, range and noise, in the URDF's ``laser_scanner`` frame on the URDF's
  ``laser_platform``, which a ``JointController`` turns about the robot's x axis once per ``LidarConfig.period``
  (one line per ``1/line_rate`` s, as the reality proxy sweeps);
- the world's systems: Physics (DART), SceneBroadcaster, UserCommands, Sensors and Imu.

Terrain: each world primitive becomes one static model whose collisions are exactly the boxes ``sim.terrain``
makes of it for MuJoCo -- rough patches too (as boxes, not a heightmap), so the exported world and its MuJoCo twin
collide with the same solids. SDFormat 1.9 is what Debian 12's libsdformat12 checks (``ign sdf -k``); newer gz-sim
releases read it unchanged. Plugin file names follow gz-sim 7+ (Garden, Harmonic: ``gz-sim-*-system``).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

from sim.io_utils import write_text_atomic
from sim.lidar import LidarConfig
from sim.robot import FLIPPER_NAMES, RobotSpec, SimPhysics
from sim.terrain import HeightGrid, Solid, world_solids
from sim.urdf import PLATFORM_MASS, build_urdf
from sim.world import PRIMITIVE_TYPES, World

__all__ = ["LIDAR_FRAME", "PLATFORM_MASS", "SDF_VERSION", "SYSTEMS", "GazeboConfig", "build_robot_sdf", "build_world_sdf",
           "gz_topics", "sdf_file_name", "write_world_sdf"]

SDF_VERSION = "1.9"
# Short name -> (plugin name, plugin file name) as gz-sim 7+ registers them.
SYSTEMS = {
    "physics": ("gz::sim::systems::Physics", "gz-sim-physics-system"),
    "scene_broadcaster": ("gz::sim::systems::SceneBroadcaster", "gz-sim-scene-broadcaster-system"),
    "user_commands": ("gz::sim::systems::UserCommands", "gz-sim-user-commands-system"),
    "sensors": ("gz::sim::systems::Sensors", "gz-sim-sensors-system"),
    "imu": ("gz::sim::systems::Imu", "gz-sim-imu-system"),
    "tracked_vehicle": ("gz::sim::systems::TrackedVehicle", "gz-sim-tracked-vehicle-system"),
    "track_controller": ("gz::sim::systems::TrackController", "gz-sim-track-controller-system"),
    "joint_position_controller": ("gz::sim::systems::JointPositionController", "gz-sim-joint-position-controller-system"),
    "joint_controller": ("gz::sim::systems::JointController", "gz-sim-joint-controller-system"),
    "joint_state_publisher": ("gz::sim::systems::JointStatePublisher", "gz-sim-joint-state-publisher-system"),
    "pose_publisher": ("gz::sim::systems::PosePublisher", "gz-sim-pose-publisher-system"),
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LIDAR_FRAME = "laser_scanner"  # frame of the gpu_lidar's clouds: the URDF's turning platform, yawed +90 degrees
PLATFORM_JOINT = "laser_platform_joint"  # the URDF's continuous joint that turns the lidar platform
CONTINUOUS_LIMIT = 1e16  # rad: a revolute joint with these limits is SDF's (and DART's) continuous joint


@dataclass(frozen=True)
class GazeboConfig:
    """What the SDF export adds to the robot spec: Gazebo's step, drive limits, sensor rates and names."""

    model_name: str = "flipper_robot"
    step_size: float = 0.004  # s; the gz-sim tracked-vehicle example runs DART at 4 ms
    track_max_speed: float = 1.0  # m/s per belt (TrackController); raised to a world's commanded speed when lower
    steering_efficiency: float = 0.5  # TrackedVehicle's default
    imu_rate: float = 100.0  # Hz
    render_engine: str = "ogre2"  # the Sensors system renders the gpu_lidar
    lidar: LidarConfig = field(default_factory=LidarConfig)
    physics: SimPhysics = field(default_factory=SimPhysics)  # terrain friction, shared with the MJCF

    def __post_init__(self) -> None:
        checks = {
            "model_name": bool(_NAME.match(self.model_name)),
            "step_size": 0 < self.step_size <= 0.05,
            "track_max_speed": 0 < self.track_max_speed <= 10,
            "steering_efficiency": 0 < self.steering_efficiency <= 1,
            "imu_rate": 0 < self.imu_rate <= 1000,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"GazeboConfig: invalid {', '.join(bad)} in {self}")


def gz_topics(config: GazeboConfig | None = None) -> dict[str, str]:
    """The Gazebo transport topics the exported robot uses (what a ros_gz_bridge maps), keyed by role."""
    m = (config or GazeboConfig()).model_name
    topics = {"cmd_vel": f"/model/{m}/cmd_vel", "odometry": f"/model/{m}/odometry", "tf": f"/model/{m}/tf",
              "pose": f"/model/{m}/pose", "joint_states": f"/model/{m}/joint_states", "imu": f"/model/{m}/imu",
              "lidar": f"/model/{m}/lidar", "lidar_points": f"/model/{m}/lidar/points", "clock": "/clock"}
    for name in FLIPPER_NAMES:
        topics[f"{name}_cmd_pos"] = f"/model/{m}/joint/{name}_joint/cmd_pos"
    return topics


def _f(*values: float) -> str:
    return " ".join(f"{v:.9g}" for v in values)


def _sub(parent: ET.Element, tag: str, text: object | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = text if isinstance(text, str) else _f(text) if isinstance(text, (int, float)) else str(text)
    return element


def _plugin(parent: ET.Element, system: str, **params: object) -> ET.Element:
    name, filename = SYSTEMS[system]
    element = _sub(parent, "plugin", filename=filename, name=name)
    for key, value in params.items():
        _sub(element, key, value)
    return element


def _friction(shape: ET.Element, mu: float) -> None:
    ode = _sub(_sub(_sub(shape, "surface"), "friction"), "ode")
    _sub(ode, "mu", mu)
    _sub(ode, "mu2", mu)


def _material(shape: ET.Element, rgba: tuple[float, ...]) -> None:
    material = _sub(shape, "material")
    _sub(material, "ambient", _f(*rgba))
    _sub(material, "diffuse", _f(*rgba))


def _urdf_pose(element: ET.Element | None) -> str:
    """An URDF <origin> as an SDF pose (both use x y z and fixed-axis roll pitch yaw)."""
    if element is None:
        return _f(0, 0, 0, 0, 0, 0)
    return f"{element.get('xyz', '0 0 0')} {element.get('rpy', '0 0 0')}"


def _urdf_geometry(target: ET.Element, geometry: ET.Element) -> None:
    shape = geometry[0]
    out = _sub(_sub(target, "geometry"), shape.tag)
    if shape.tag == "box":
        _sub(out, "size", shape.get("size"))
    elif shape.tag == "cylinder":
        _sub(out, "radius", shape.get("radius"))
        _sub(out, "length", shape.get("length"))
    else:  # build_urdf makes boxes and cylinders only; a new shape must be converted here first
        raise ValueError(f"sim/sdf.py: URDF geometry <{shape.tag}> has no SDF conversion")


def _robot_links(model: ET.Element, spec: RobotSpec, lidar: LidarConfig, track_mu: float) -> None:
    """Links, joints and frames of the robot, converted from ``build_urdf(spec, lidar=lidar)``."""
    urdf = ET.fromstring(build_urdf(spec, lidar=lidar))
    colours = {m.get("name"): tuple(float(v) for v in m.find("color").get("rgba").split()) for m in urdf.findall("material")}
    frame_links = {link.get("name") for link in urdf.findall("link") if link.find("inertial") is None}
    for link in urdf.findall("link"):
        name = link.get("name")
        if name in frame_links:
            continue  # a frame without mass (imu_link, laser): an SDF <frame>, below
        out = _sub(model, "link", name=name)
        joint = next((j for j in urdf.findall("joint") if j.find("child").get("link") == name), None)
        if joint is not None:
            _sub(out, "pose", relative_to=joint.get("name"))  # the child link sits on its joint's frame, as in URDF
        inertial = link.find("inertial")
        inertia = inertial.find("inertia")
        el = _sub(out, "inertial")
        _sub(el, "pose", _urdf_pose(inertial.find("origin")))
        _sub(el, "mass", float(inertial.find("mass").get("value")))
        ie = _sub(el, "inertia")
        for key in ("ixx", "ixy", "ixz", "iyy", "iyz", "izz"):
            _sub(ie, key, float(inertia.get(key)))
        for kind in ("collision", "visual"):
            for shape in link.findall(kind):
                item = _sub(out, kind, name=f"{shape.get('name')}_{kind}")
                _sub(item, "pose", _urdf_pose(shape.find("origin")))
                _urdf_geometry(item, shape.find("geometry"))
                if kind == "collision":
                    _friction(item, track_mu)
                elif shape.find("material") is not None:
                    _material(item, colours[shape.find("material").get("name")])
    for joint in urdf.findall("joint"):
        parent, child = joint.find("parent").get("link"), joint.find("child").get("link")
        if child in frame_links:
            frame = _sub(model, "frame", name=child, attached_to=parent)
            _sub(frame, "pose", _urdf_pose(joint.find("origin")), relative_to=parent)
            continue
        kind = joint.get("type")
        # A continuous joint as a revolute one without effective limits: what this export always gave gz-sim's
        # JointController for the lidar platform.
        out = _sub(model, "joint", name=joint.get("name"), type="revolute" if kind == "continuous" else kind)
        _sub(out, "pose", _urdf_pose(joint.find("origin")), relative_to=parent)
        _sub(out, "parent", parent)
        _sub(out, "child", child)
        if kind == "continuous":
            axis = _sub(out, "axis")
            _sub(axis, "xyz", joint.find("axis").get("xyz"))
            limit = _sub(axis, "limit")
            _sub(limit, "lower", -CONTINUOUS_LIMIT)
            _sub(limit, "upper", CONTINUOUS_LIMIT)
        elif kind == "revolute":
            axis = _sub(out, "axis")
            _sub(axis, "xyz", joint.find("axis").get("xyz"))
            limit, lim = _sub(axis, "limit"), joint.find("limit")
            for key in ("lower", "upper", "effort", "velocity"):
                _sub(limit, key, lim.get(key))
            dynamics = _sub(axis, "dynamics")
            _sub(dynamics, "damping", 2.0)  # the MJCF flipper hinge's damping
            _sub(dynamics, "friction", 0.0)


def _lidar_sensor(model: ET.Element, lidar: LidarConfig, topics: dict[str, str]) -> None:
    """The gpu_lidar on the URDF's turning platform, in its ``laser_scanner`` frame (see sim.lidar for the geometry).

    sim.lidar casts beam theta of a line at platform angle phi along sin(theta) x + cos(theta) n, with
    n = (0, cos phi, sin phi): the line's plane holds the robot's x axis and turns about it. A gpu_lidar scans its
    own x-y plane centred on its x axis; in ``laser_scanner`` (the platform yawed by +90 degrees, sim/urdf.py) its x
    axis is n and its y axis is -x, so it casts the same set of rays (theta -> -theta) at the same platform angle.
    The platform's mount and its angle at t = 0 (``phase``) are in the URDF joint's origin, so the joint angle gz-sim
    reports starts at 0 and robot_state_publisher places ``laser_scanner`` where the sensor is.
    """
    link = next((e for e in model.findall("link") if e.get("name") == "laser_platform"), None)
    frame = next((e for e in model.findall("frame") if e.get("name") == LIDAR_FRAME), None)
    if link is None or frame is None:  # build_urdf lost them: fail here, not silently in Gazebo
        raise ValueError(f"sim/sdf.py: the URDF of sim/urdf.py has no laser_platform link or {LIDAR_FRAME} frame")
    sensor = _sub(link, "sensor", name="lidar", type="gpu_lidar")
    _sub(sensor, "pose", _f(0, 0, 0, 0, 0, 0), relative_to=LIDAR_FRAME)
    _sub(sensor, "always_on", "true")
    _sub(sensor, "update_rate", lidar.line_rate)
    _sub(sensor, "visualize", "false")
    _sub(sensor, "topic", topics["lidar"])
    _sub(sensor, "gz_frame_id", LIDAR_FRAME)  # the clouds' frame_id (gz-sensors 7+; default: the scoped sensor name)
    ray = _sub(sensor, "lidar")
    scan = _sub(ray, "scan")
    horizontal = _sub(scan, "horizontal")
    _sub(horizontal, "samples", str(lidar.beams))
    _sub(horizontal, "resolution", 1.0)
    _sub(horizontal, "min_angle", -lidar.fov / 2)
    _sub(horizontal, "max_angle", -lidar.fov / 2 + (lidar.beams - 1) * lidar.angular_step)
    vertical = _sub(scan, "vertical")
    _sub(vertical, "samples", "1")
    _sub(vertical, "resolution", 1.0)
    _sub(vertical, "min_angle", 0.0)
    _sub(vertical, "max_angle", 0.0)
    rng = _sub(ray, "range")
    _sub(rng, "min", lidar.min_range)
    _sub(rng, "max", lidar.max_range)
    _sub(rng, "resolution", 0.001)
    noise = _sub(ray, "noise")
    _sub(noise, "type", "gaussian")
    _sub(noise, "mean", 0.0)
    _sub(noise, "stddev", lidar.range_sigma)


def _robot_model(parent: ET.Element, spec: RobotSpec, config: GazeboConfig, pose: tuple[float, ...],
                 max_speed: float) -> ET.Element:
    model = _sub(parent, "model", name=config.model_name)
    _sub(model, "pose", _f(*pose))
    topics = gz_topics(config)
    _robot_links(model, spec, config.lidar, spec.track_friction)
    _lidar_sensor(model, config.lidar, topics)
    imu = _sub(next(link for link in model.findall("link") if link.get("name") == "base_link"), "sensor", name="imu",
               type="imu")
    _sub(imu, "pose", _f(0, 0, 0, 0, 0, 0), relative_to="imu_link")
    _sub(imu, "always_on", "true")
    _sub(imu, "update_rate", config.imu_rate)
    _sub(imu, "topic", topics["imu"])
    _sub(imu, "gz_frame_id", "imu_link")

    # Drive: every belt (the two main tracks and the four flippers) has a TrackController; TrackedVehicle turns
    # /cmd_vel into belt speeds, left belts on the left, right belts on the right.
    tv = _plugin(model, "tracked_vehicle", body_link="base_link")
    sides = {"left": ["left_track", "front_left", "rear_left"], "right": ["right_track", "front_right", "rear_right"]}
    for side, links in sides.items():
        for link in links:
            _sub(_sub(tv, f"{side}_track"), "link", link)
    for key, value in (("tracks_separation", spec.track_separation), ("track_height", 2 * spec.wheel_radius),
                       ("steering_efficiency", config.steering_efficiency), ("topic", topics["cmd_vel"]),
                       ("odom_topic", topics["odometry"]), ("tf_topic", topics["tf"]), ("frame_id", "odom"),
                       ("child_frame_id", "base_link")):
        _sub(tv, key, value)
    linear = _sub(tv, "linear_velocity")
    _sub(linear, "min_velocity", -max_speed)
    _sub(linear, "max_velocity", max_speed)
    for link in sides["left"] + sides["right"]:
        _plugin(model, "track_controller", link=link, min_velocity=-max_speed, max_velocity=max_speed)
    # Flippers: position servos with the MJCF's gains (kp, kv = 0.08 kp) and torque limit.
    for name in FLIPPER_NAMES:
        _plugin(model, "joint_position_controller", joint_name=f"{name}_joint", topic=topics[f"{name}_cmd_pos"],
                p_gain=spec.flipper_kp, i_gain=0.0, d_gain=0.08 * spec.flipper_kp, cmd_max=spec.flipper_torque,
                cmd_min=-spec.flipper_torque)
    _plugin(model, "joint_controller", joint_name=PLATFORM_JOINT, initial_velocity=2 * math.pi / config.lidar.period)
    jsp = _plugin(model, "joint_state_publisher", topic=topics["joint_states"])
    for name in [f"{n}_joint" for n in FLIPPER_NAMES] + [PLATFORM_JOINT]:
        _sub(jsp, "joint_name", name)
    _plugin(model, "pose_publisher", publish_link_pose="true", publish_sensor_pose="true", publish_collision_pose="false",
            publish_visual_pose="false", publish_nested_model_pose="false", use_pose_vector_msg="true",
            update_frequency=50.0)
    return model


def _solid_rpy(solid: Solid) -> tuple[float, float, float]:
    """Roll, pitch, yaw of a terrain solid, the same orientation as ``Solid.quat`` (pitch raises the x axis)."""
    return (0.0, -solid.pitch, 0.0) if solid.pitch else (0.0, 0.0, solid.yaw)


def _terrain_models(world_el: ET.Element, world: World, mu: float) -> None:
    """One static model per primitive, with exactly the boxes sim.terrain makes of it for MuJoCo."""
    for k, prim in enumerate(world.terrain):
        kind = next(name for name, cls in PRIMITIVE_TYPES.items() if isinstance(prim, cls))
        model = _sub(world_el, "model", name=f"terrain_{k}_{kind}")
        _sub(model, "static", "true")
        link = _sub(model, "link", name="link")
        for j, solid in enumerate(world_solids(replace(world, terrain=(prim,)))):
            pose = _f(*solid.center, *_solid_rpy(solid))
            size = _f(*(2 * h for h in solid.half))
            for kind_el in ("collision", "visual"):
                item = _sub(link, kind_el, name=f"box_{j}_{kind_el}")
                _sub(item, "pose", pose)
                _sub(_sub(_sub(item, "geometry"), "box"), "size", size)
                if kind_el == "collision":
                    _friction(item, mu)
                else:
                    _material(item, (0.6, 0.55, 0.5, 1.0))


def spawn_pose(world: World, spec: RobotSpec) -> tuple[float, float, float, float, float, float]:
    """Where the robot starts: the world's start line, base_link just above the terrain under it (as MuJoCo's reset)."""
    x = world.start_x
    reach_x, reach_y = spec.wheel_base / 2 + spec.wheel_radius, spec.track_separation / 2 + 0.05
    grid = HeightGrid(world_solids(world), (x - reach_x, x + reach_x), (-reach_y, reach_y), 0.01)
    return (x, 0.0, float(grid.heights.max(initial=0.0)) + spec.wheel_radius + 0.005, 0.0, 0.0, 0.0)


def _document(root: ET.Element) -> str:
    ET.indent(root, space="  ")
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def build_world_sdf(world: World, spec: RobotSpec | None = None, config: GazeboConfig | None = None) -> str:
    """The SDF world: systems, light, ground plane, one static model per terrain primitive and the robot at the start."""
    spec, config = spec or RobotSpec(), config or GazeboConfig()
    root = ET.Element("sdf", version=SDF_VERSION)
    w = _sub(root, "world", name=sdf_file_name(world)[:-4])  # gz topics carry the world name: keep it plain
    physics = _sub(w, "physics", name=f"dart_{config.step_size * 1000:g}ms", type="dart")
    _sub(physics, "max_step_size", config.step_size)
    _sub(physics, "real_time_factor", 1.0)
    _sub(_sub(_plugin(w, "physics"), "engine"), "filename", "gz-physics-dartsim-plugin")  # TrackedVehicle needs DART
    _plugin(w, "scene_broadcaster")
    _plugin(w, "user_commands")
    _plugin(w, "sensors", render_engine=config.render_engine)
    _plugin(w, "imu")
    _sub(w, "gravity", "0 0 -9.81")
    light = _sub(w, "light", name="sun", type="directional")
    _sub(light, "cast_shadows", "true")
    _sub(light, "pose", "0 0 10 0 0 0")
    _sub(light, "diffuse", "0.8 0.8 0.8 1")
    _sub(light, "specular", "0.2 0.2 0.2 1")
    _sub(light, "direction", "-0.5 0.1 -0.9")
    ground = _sub(w, "model", name="ground_plane")
    _sub(ground, "static", "true")
    link = _sub(ground, "link", name="link")
    extent = 2 * (abs(world.start_x) + world.length) + 100.0
    for kind in ("collision", "visual"):
        item = _sub(link, kind, name=f"ground_{kind}")
        plane = _sub(_sub(item, "geometry"), "plane")
        _sub(plane, "normal", "0 0 1")
        _sub(plane, "size", _f(extent, extent))
        if kind == "collision":
            _friction(item, config.physics.terrain_friction)
        else:
            _material(item, (0.45, 0.5, 0.45, 1.0))
    _terrain_models(w, world, config.physics.terrain_friction)
    _robot_model(w, spec, config, spawn_pose(world, spec), max(config.track_max_speed, world.speed))
    return _document(root)


def build_robot_sdf(spec: RobotSpec | None = None, config: GazeboConfig | None = None) -> str:
    """The robot alone as an SDF model (to spawn into another world with ``ros_gz_sim create``), at the origin."""
    spec, config = spec or RobotSpec(), config or GazeboConfig()
    root = ET.Element("sdf", version=SDF_VERSION)
    _robot_model(root, spec, config, (0.0, 0.0, spec.wheel_radius + 0.005, 0.0, 0.0, 0.0), config.track_max_speed)
    return _document(root)


def sdf_file_name(world: World) -> str:
    """A file name for a world's SDF: its name with anything but letters, digits, '-' and '_' as '_'."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", world.name) + ".sdf"


def write_world_sdf(path: str | Path, world: World, spec: RobotSpec | None = None,
                    config: GazeboConfig | None = None) -> Path:
    """Write ``build_world_sdf`` to ``path`` atomically (a reader, e.g. gz sim, never sees half a file)."""
    return write_text_atomic(path, build_world_sdf(world, spec, config))
