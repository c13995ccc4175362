"""Publish the robot's TF tree: robot_state_publisher with the URDF generated from sim.robot.RobotSpec.

Usage: ``ros2 launch flipper_learning description.launch.py [use_sim_time:=true]``. The flipper links
move with the flipper angles on /joint_states (published by the robot driver or the simulator bridge).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    # Imported here, not at the top, so that `ros2 launch` only needs the package installed when it
    # runs this function (and so the file stays compilable without the package on the path).
    from sim.urdf import build_urdf

    params = os.path.join(get_package_share_directory("flipper_learning"), "config", "robot.yaml")
    use_sim_time = LaunchConfiguration("use_sim_time")
    return LaunchDescription([
        DeclareLaunchArgument(
            "use_sim_time", default_value="false",
            description="Use the /clock topic of a simulator (Gazebo, rosbag play --clock) instead of wall time",
        ),
        Node(
            package="robot_state_publisher",
            executable="robot_state_publisher",
            name="robot_state_publisher",
            output="screen",
            # A plain Python string is passed through as a string parameter (no YAML re-parsing).
            parameters=[params, {"robot_description": build_urdf(), "use_sim_time": use_sim_time}],
        ),
    ])
