"""Generate the MuJoCo model (MJCF) of a robot on a world's terrain.

Tracks are approximated by rows of driven pseudo-wheels (spheres), the usual approach for MuJoCo,
which has no conveyor contacts (REFERENCE.md section 3). Spheres collide analytically with the
terrain boxes, which keeps a step cheap. Collision filtering: terrain geoms have contype 1 /
conaffinity 0 and robot geoms contype 0 / conaffinity 1, so only robot-terrain pairs are tested.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import quoteattr

from sim.robot import FLIPPER_NAMES, RobotSpec, SimPhysics
from sim.terrain import Solid

FORBIDDEN_GEOMS = ("mast", "body_top")  # robot parts that must never touch the terrain


def _f(*values: float) -> str:
    return " ".join(f"{v:.6g}" for v in values)


def wheel_names(spec: RobotSpec) -> list[str]:
    """Names of all driven pseudo-wheel joints, main tracks first, then flippers."""
    names = [f"track_{side}_wheel_{i}" for side in ("left", "right") for i in range(spec.wheels_per_track)]
    names += [f"{flipper}_wheel_{i}" for flipper in FLIPPER_NAMES for i in range(spec.wheels_per_flipper)]
    return names


def wheel_radii(spec: RobotSpec) -> list[float]:
    """Radius of each driven wheel, in the order of ``wheel_names``."""
    radii = [spec.wheel_radius] * (2 * spec.wheels_per_track)
    radii += [r for _ in FLIPPER_NAMES for _, r in spec.flipper_wheels()]
    return radii


def robot_body_xml(spec: RobotSpec, pos: tuple[float, float, float], yaw: float = 0.0) -> str:
    """The robot's <body> tree (free-floating base_link with tracks, flippers and mast)."""
    quat = _f(math.cos(yaw / 2), 0, 0, math.sin(yaw / 2))
    lines = [f'<body name="base_link" pos="{_f(*pos)}" quat="{quat}">', '  <freejoint name="root"/>']
    bx, by, bz = spec.body_length / 2, spec.body_width / 2, spec.body_height / 2
    top_h = 0.01
    lines += [
        f'  <geom name="chassis" class="robot" type="box" size="{_f(bx, by, bz - top_h)}" pos="{_f(0, 0, spec.body_z - top_h)}" mass="{spec.body_mass:.6g}" rgba=".25 .28 .3 1"/>',
        f'  <geom name="body_top" class="robot" type="box" size="{_f(bx, by, top_h)}" pos="{_f(0, 0, spec.body_z + bz - top_h)}" mass="0.01" rgba=".8 .5 .1 1"/>',
    ]
    mx, my, mz = (s / 2 for s in spec.mast_size)
    mast_z = spec.body_z + bz + mz
    lines += [
        f'  <geom name="mast" class="robot" type="box" size="{_f(mx, my, mz)}" pos="{_f(spec.mast_x, 0, mast_z)}" mass="{spec.mast_mass:.6g}" rgba=".9 .2 .2 1"/>',
        f'  <site name="lidar" pos="{_f(spec.mast_x, 0, spec.mast_top)}" size="0.03"/>',
        '  <site name="imu" pos="0 0 0" size="0.02"/>',
    ]
    wheel_mass = spec.track_mass / spec.wheels_per_track
    for side, y in (("left", spec.track_separation / 2), ("right", -spec.track_separation / 2)):
        for i, x in enumerate(spec.track_wheel_x()):
            lines += [
                f'  <body name="track_{side}_wheel_{i}" pos="{_f(x, y, 0)}">',
                f'    <joint name="track_{side}_wheel_{i}" type="hinge" axis="0 1 0" armature="0.01" damping="0.01"/>',
                f'    <geom class="wheel" type="sphere" size="{spec.wheel_radius:.6g}" mass="{wheel_mass:.6g}"/>',
                "  </body>",
            ]
    n_fw = spec.wheels_per_flipper
    fw_mass = 0.3 * spec.flipper_mass / n_fw
    for name, (px, py, pz) in spec.flipper_pivots().items():
        front = name.startswith("front")
        sign = 1.0 if front else -1.0
        axis = "0 -1 0" if front else "0 1 0"  # +angle raises the tip for every flipper
        half = spec.flipper_length / 2
        lines += [
            f'  <body name="{name}" pos="{_f(px, py, pz)}">',
            f'    <joint name="{name}_joint" type="hinge" axis="{axis}" range="{_f(spec.flipper_lower, spec.flipper_upper)}" armature="0.05" damping="2"/>',
            f'    <geom name="{name}_plate" class="visual" type="box" size="{_f(half, spec.flipper_width / 2, 0.02)}" pos="{_f(sign * half, 0, 0)}" mass="{0.7 * spec.flipper_mass:.6g}"/>',
        ]
        for i, (dist, radius) in enumerate(spec.flipper_wheels()):
            lines += [
                f'    <body name="{name}_wheel_{i}" pos="{_f(sign * dist, 0, 0)}">',
                f'      <joint name="{name}_wheel_{i}" type="hinge" axis="0 1 0" armature="0.005" damping="0.01"/>',
                f'      <geom class="wheel" type="sphere" size="{radius:.6g}" mass="{fw_mass:.6g}"/>',
                "    </body>",
            ]
        lines.append("  </body>")
    lines.append("</body>")
    return "\n".join(lines)


def actuators_xml(spec: RobotSpec) -> str:
    """Velocity servos on every pseudo-wheel and position servos on the four flippers."""
    lines = ["<actuator>"]
    for name in wheel_names(spec):
        lines.append(
            f'  <velocity name="{name}" joint="{name}" kv="{spec.track_kv:.6g}" forcerange="{_f(-spec.track_torque, spec.track_torque)}"/>'
        )
    for name in FLIPPER_NAMES:
        lines.append(
            f'  <position name="{name}" joint="{name}_joint" kp="{spec.flipper_kp:.6g}" kv="{0.08 * spec.flipper_kp:.6g}" '
            f'ctrlrange="{_f(spec.flipper_lower, spec.flipper_upper)}" forcerange="{_f(-spec.flipper_torque, spec.flipper_torque)}"/>'
        )
    lines.append("</actuator>")
    return "\n".join(lines)


def terrain_xml(solids: list[Solid]) -> str:
    lines = ['<geom name="ground" class="terrain" type="plane" size="0 0 1" rgba=".45 .5 .45 1"/>']
    for k, s in enumerate(solids):
        q = s.quat()
        lines.append(f'<geom name="terrain_{k}" class="terrain" type="box" pos="{_f(*s.center)}" size="{_f(*s.half)}" quat="{_f(*q)}"/>')
    return "\n".join(lines)


def build_mjcf(
    spec: RobotSpec,
    solids: list[Solid],
    start: tuple[float, float, float],
    yaw: float = 0.0,
    physics: SimPhysics | None = None,
    model_name: str = "flipper_robot",
) -> str:
    """The full MJCF document: options, collision classes, terrain, robot and actuators."""
    physics = physics or SimPhysics()
    return f"""<mujoco model={quoteattr(model_name)}>
<compiler angle="radian" autolimits="true"/>
<option timestep="{physics.timestep:.6g}" iterations="{physics.solver_iterations}" ls_iterations="{physics.ls_iterations}" integrator="implicitfast" cone="pyramidal">
  <flag autoreset="disable"/>
</option>
<size memory="8M"/>
<default>
  <default class="terrain"><geom contype="1" conaffinity="0" condim="3" friction="{physics.terrain_friction:.6g} 0.005 0.0001" rgba=".6 .55 .5 1"/></default>
  <default class="robot"><geom contype="0" conaffinity="1" condim="3" friction="{spec.track_friction:.6g} 0.005 0.0001"/></default>
  <default class="wheel"><geom contype="0" conaffinity="1" condim="3" friction="{spec.track_friction:.6g} 0.005 0.0001" rgba=".1 .1 .1 1"/></default>
  <default class="visual"><geom contype="0" conaffinity="0" rgba=".2 .2 .2 1"/></default>
</default>
<worldbody>
<light pos="0 0 5" dir="0 0 -1" directional="true"/>
{terrain_xml(solids)}
{robot_body_xml(spec, start, yaw)}
</worldbody>
{actuators_xml(spec)}
</mujoco>
"""
