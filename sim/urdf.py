"""Generate the robot's URDF from the same ``RobotSpec`` as the MuJoCo model (sim/mjcf.py).

One spec, several descriptions: the MJCF drives the embedded simulator, this URDF feeds
robot_state_publisher (``launch/description.launch.py``) and RViz, so the TF tree of the live robot and
the simulated geometry cannot drift apart. The URDF describes kinematics, shapes and inertias only:
each main track is one rigid link (the rows of pseudo-wheels of the MJCF are a simulation device, not
part of the robot). Flipper joints follow the angle convention of ``sim.robot``: a positive angle
raises the flipper tip, for all four flippers.

Frames: ``base_link`` on the main-track wheel axis (REP 103), ``imu_link`` at base_link, ``laser`` at
the top of the sensor mast, one link per track and per flipper (flipper links named as FLIPPER_NAMES,
joints ``<name>_joint``, the names ``/joint_states`` and the flipper controller use). The rotating 2D lidar
(``sim.lidar``) sits on ``laser_platform``, turned about the robot's x axis by the continuous joint
``laser_platform_joint`` at the scanner's mount, and scans in ``laser_scanner``: the platform yawed +90
degrees, so the scanner's x-y plane is the line's plane (the frame of the Gazebo export's gpu_lidar clouds,
sim/sdf.py). The reality proxy publishes its own fixed ``base_link -> lidar`` mount instead.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from sim.io_utils import write_text_atomic
from sim.robot import FLIPPER_NAMES, RobotSpec

if TYPE_CHECKING:  # sim.lidar pulls in open3d; the URDF only reads two fields of its config
    from sim.lidar import LidarConfig

__all__ = ["LIDAR_MOUNT_HEIGHT", "PLATFORM_MASS", "PLATFORM_SIZE", "box_inertia", "build_urdf", "lidar_mount", "write_urdf"]

PLATFORM_MASS = 0.2  # kg of the turning lidar platform, taken from the mast so that the robot weighs what the spec says
PLATFORM_SIZE = (0.06, 0.06, 0.04)  # m, the platform's box (inertia and visual)
LIDAR_MOUNT_HEIGHT = 0.06  # m above the mast top: sim.lidar's default optical centre

_MATERIALS = {
    "chassis": (0.25, 0.28, 0.30, 1.0),
    "body_top": (0.80, 0.50, 0.10, 1.0),
    "track": (0.10, 0.10, 0.10, 1.0),
    "flipper": (0.20, 0.20, 0.20, 1.0),
    "mast": (0.90, 0.20, 0.20, 1.0),
    "laser_platform": (0.10, 0.10, 0.10, 1.0),
}


def _f(*values: float) -> str:
    return " ".join(f"{v:.9g}" for v in values)


def box_inertia(mass: float, size: tuple[float, float, float]) -> tuple[float, float, float]:
    """(ixx, iyy, izz) of a solid box of ``mass`` and full edge lengths ``size`` about its centre."""
    x, y, z = size
    return (mass * (y * y + z * z) / 12, mass * (x * x + z * z) / 12, mass * (x * x + y * y) / 12)


def _origin(parent: ET.Element, xyz=(0.0, 0.0, 0.0), rpy=(0.0, 0.0, 0.0)) -> None:
    ET.SubElement(parent, "origin", xyz=_f(*xyz), rpy=_f(*rpy))


def _shape(parent: ET.Element, kind: str, name: str, geometry: tuple[str, dict[str, str]],
           xyz=(0.0, 0.0, 0.0), rpy=(0.0, 0.0, 0.0), material: str | None = None) -> None:
    """A <visual> or <collision> element with one geometry."""
    element = ET.SubElement(parent, kind, name=name)
    _origin(element, xyz, rpy)
    ET.SubElement(ET.SubElement(element, "geometry"), geometry[0], geometry[1])
    if material is not None:
        ET.SubElement(element, "material", name=material)


def _box(size: tuple[float, float, float]) -> tuple[str, dict[str, str]]:
    return "box", {"size": _f(*size)}


def _cylinder(radius: float, length: float) -> tuple[str, dict[str, str]]:
    return "cylinder", {"radius": _f(radius), "length": _f(length)}


def _solid(link: ET.Element, name: str, size: tuple[float, float, float], xyz, material: str) -> None:
    """Box visual and collision of the same shape."""
    _shape(link, "visual", name, _box(size), xyz, material=material)
    _shape(link, "collision", name, _box(size), xyz)


def _inertial(link: ET.Element, mass: float, size: tuple[float, float, float], xyz) -> None:
    """Inertial of a solid box centred at ``xyz`` (link frame)."""
    inertial = ET.SubElement(link, "inertial")
    _origin(inertial, xyz)
    ET.SubElement(inertial, "mass", value=_f(mass))
    ixx, iyy, izz = box_inertia(mass, size)
    ET.SubElement(inertial, "inertia", ixx=_f(ixx), ixy="0", ixz="0", iyy=_f(iyy), iyz="0", izz=_f(izz))


def _fixed(robot: ET.Element, name: str, parent: str, child: str, xyz) -> None:
    joint = ET.SubElement(robot, "joint", name=name, type="fixed")
    _origin(joint, xyz)
    ET.SubElement(joint, "parent", link=parent)
    ET.SubElement(joint, "child", link=child)


def lidar_mount(spec: RobotSpec, lidar: LidarConfig | None = None) -> tuple[float, float, float]:
    """The scanner's optical centre in base_link: ``lidar.mount``, or sim.lidar's default above the mast top."""
    if lidar is not None and lidar.mount is not None:
        return tuple(float(v) for v in lidar.mount)
    return (spec.mast_x, 0.0, spec.mast_top + LIDAR_MOUNT_HEIGHT)


def build_urdf(spec: RobotSpec | None = None, name: str = "flipper_robot", lidar: LidarConfig | None = None) -> str:
    """The URDF document of the robot described by ``spec`` (defaults: the Absolem-like RobotSpec()).

    ``lidar`` (a ``sim.lidar.LidarConfig``; default: its defaults) places the turning platform: its ``mount`` is
    the platform joint's origin and its ``phase`` (platform angle at t = 0) the joint origin's roll, so that a
    joint angle of 0 at t = 0, as Gazebo reports it for the export of sim/sdf.py, puts the scanner where the
    proxy's is.
    """
    spec = spec or RobotSpec()
    if spec.mast_mass <= PLATFORM_MASS:
        raise ValueError(f"RobotSpec.mast_mass: {spec.mast_mass} kg must exceed the lidar platform's {PLATFORM_MASS} kg "
                         "(sim/urdf.py takes the platform's mass from the mast)")
    robot = ET.Element("robot", name=name)
    for material, rgba in _MATERIALS.items():
        ET.SubElement(ET.SubElement(robot, "material", name=material), "color", rgba=_f(*rgba))

    # Chassis on base_link; the thin top plate is drawn separately because it marks the part of the
    # body that must never touch the terrain (FORBIDDEN_GEOMS in sim/mjcf.py).
    base = ET.SubElement(robot, "link", name="base_link")
    chassis = (spec.body_length, spec.body_width, spec.body_height)
    top_h = min(0.02, spec.body_height / 4)
    lower = (spec.body_length, spec.body_width, spec.body_height - top_h)
    _shape(base, "visual", "chassis", _box(lower), (0.0, 0.0, spec.body_z - top_h / 2), material="chassis")
    _shape(base, "visual", "body_top", _box((spec.body_length, spec.body_width, top_h)),
           (0.0, 0.0, spec.body_z + spec.body_height / 2 - top_h / 2), material="body_top")
    _shape(base, "collision", "chassis", _box(chassis), (0.0, 0.0, spec.body_z))
    _inertial(base, spec.body_mass, chassis, (0.0, 0.0, spec.body_z))

    # Main tracks: a belt around the front and rear wheels, rigid to the body.
    wheel_y = (-math.pi / 2, 0.0, 0.0)  # turns a cylinder's z axis onto the y axis
    belt = (spec.wheel_base, spec.track_width, 2 * spec.wheel_radius)
    envelope = (spec.wheel_base + 2 * spec.wheel_radius, spec.track_width, 2 * spec.wheel_radius)
    for side, y in (("left", spec.track_separation / 2), ("right", -spec.track_separation / 2)):
        link = ET.SubElement(robot, "link", name=f"{side}_track")
        _solid(link, f"{side}_track_belt", belt, (0.0, 0.0, 0.0), "track")
        for end, x in (("front", spec.wheel_base / 2), ("rear", -spec.wheel_base / 2)):
            wheel = _cylinder(spec.wheel_radius, spec.track_width)
            _shape(link, "visual", f"{side}_track_{end}_wheel", wheel, (x, 0.0, 0.0), wheel_y, material="track")
            _shape(link, "collision", f"{side}_track_{end}_wheel", wheel, (x, 0.0, 0.0), wheel_y)
        _inertial(link, spec.track_mass, envelope, (0.0, 0.0, 0.0))
        _fixed(robot, f"{side}_track_joint", "base_link", f"{side}_track", (0.0, y, 0.0))

    # Flippers: the plate is as tall as the mean wheel diameter, so it spans the tapering wheel row.
    plate_h = spec.wheel_radius + spec.flipper_tip_radius
    pivots = spec.flipper_pivots()
    for flipper in FLIPPER_NAMES:
        pivot = pivots[flipper]
        front = flipper.startswith("front")
        sign = 1.0 if front else -1.0
        # Front flippers point along +x, rear ones along -x: rotating about -y (front) or +y (rear)
        # by a positive angle lifts the tip, exactly as the hinge axes of sim/mjcf.py.
        axis = (0.0, -1.0, 0.0) if front else (0.0, 1.0, 0.0)
        link = ET.SubElement(robot, "link", name=flipper)
        plate = (spec.flipper_length, spec.flipper_width, plate_h)
        centre = (sign * spec.flipper_length / 2, 0.0, 0.0)
        _solid(link, f"{flipper}_plate", plate, centre, "flipper")
        tip = _cylinder(spec.flipper_tip_radius, spec.flipper_width)
        tip_xyz = (sign * spec.flipper_length, 0.0, 0.0)
        _shape(link, "visual", f"{flipper}_tip", tip, tip_xyz, wheel_y, material="flipper")
        _shape(link, "collision", f"{flipper}_tip", tip, tip_xyz, wheel_y)
        _inertial(link, spec.flipper_mass, plate, centre)

        joint = ET.SubElement(robot, "joint", name=f"{flipper}_joint", type="revolute")
        _origin(joint, pivot)
        ET.SubElement(joint, "parent", link="base_link")
        ET.SubElement(joint, "child", link=flipper)
        ET.SubElement(joint, "axis", xyz=_f(*axis))
        ET.SubElement(joint, "limit", lower=_f(spec.flipper_lower), upper=_f(spec.flipper_upper),
                      effort=_f(spec.flipper_torque), velocity=_f(spec.flipper_speed))

    # Sensor mast on top of the body, the lidar frame at its top, the IMU at base_link.
    mast = ET.SubElement(robot, "link", name="mast")
    mast_centre = (0.0, 0.0, spec.mast_size[2] / 2)
    mast_base = (spec.mast_x, 0.0, spec.body_z + spec.body_height / 2)
    _solid(mast, "mast", spec.mast_size, mast_centre, "mast")
    _inertial(mast, spec.mast_mass - PLATFORM_MASS, spec.mast_size, mast_centre)
    _fixed(robot, "mast_joint", "base_link", "mast", mast_base)
    ET.SubElement(robot, "link", name="laser")
    _fixed(robot, "laser_joint", "mast", "laser", (0.0, 0.0, spec.mast_size[2]))

    # The turning lidar platform: a continuous joint about x at the optical centre. It has mass (a non-fixed
    # child link needs an inertia; MuJoCo's URDF parser refuses one without) and a visual, no collision: the
    # MJCF the simulator collides with has no platform either.
    mount = lidar_mount(spec, lidar)
    platform = ET.SubElement(robot, "link", name="laser_platform")
    _shape(platform, "visual", "laser_platform", _box(PLATFORM_SIZE), material="laser_platform")
    _inertial(platform, PLATFORM_MASS, PLATFORM_SIZE, (0.0, 0.0, 0.0))
    joint = ET.SubElement(robot, "joint", name="laser_platform_joint", type="continuous")
    _origin(joint, tuple(m - b for m, b in zip(mount, mast_base, strict=True)),
            (lidar.phase if lidar is not None else 0.0, 0.0, 0.0))
    ET.SubElement(joint, "parent", link="mast")
    ET.SubElement(joint, "child", link="laser_platform")
    ET.SubElement(joint, "axis", xyz=_f(1.0, 0.0, 0.0))
    # The scanner's frame: a 2D scanner scans its own x-y plane, centred on x; yawed +90 degrees on a platform that
    # turns about the robot's x axis, its x axis is the platform's y and its scan plane holds the robot's x axis.
    ET.SubElement(robot, "link", name="laser_scanner")
    scanner = ET.SubElement(robot, "joint", name="laser_scanner_joint", type="fixed")
    _origin(scanner, rpy=(0.0, 0.0, math.pi / 2))
    ET.SubElement(scanner, "parent", link="laser_platform")
    ET.SubElement(scanner, "child", link="laser_scanner")
    ET.SubElement(robot, "link", name="imu_link")
    _fixed(robot, "imu_joint", "base_link", "imu_link", (0.0, 0.0, 0.0))

    ET.indent(robot, space="  ")
    return '<?xml version="1.0"?>\n' + ET.tostring(robot, encoding="unicode") + "\n"


def write_urdf(path: str | os.PathLike, spec: RobotSpec | None = None, lidar: LidarConfig | None = None) -> Path:
    """Write ``build_urdf(spec, lidar=lidar)`` to ``path`` atomically (a reader never sees a half-written file)."""
    return write_text_atomic(path, build_urdf(spec, lidar=lidar))
