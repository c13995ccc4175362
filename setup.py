"""ament_python package of the flipper-learning stack; also installs with plain pip into a venv.

`ros2 run` looks for executables in <prefix>/lib/<package>; pip puts console scripts in <venv>/bin.
Instead of the usual setup.cfg script_dir override (which moves pip's console scripts out of the
venv's bin/), small launcher scripts from scripts/ are installed as data files into lib/<package>, so
both `ros2 run flipper_learning <exe>` (colcon) and `<exe>` on a venv's PATH (pip) work.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "flipper_learning"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["sim", "sim.*", "perception", "perception.*", "planning", "planning.*",
                                    "flipper_control", "flipper_control.*"]),
    package_data={"sim": ["worlds/*/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.*")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"lib/{PACKAGE}", glob("scripts/*")),
    ],
    install_requires=[],  # pinned in requirements.txt (torch must not be pulled by a loose requirement)
    zip_safe=False,
    maintainer="flipper_learning maintainers",
    maintainer_email="maintainers@example.org",
    description="Sim-to-real flipper control for tracked robots: DEMs, CycleGAN, NaN-aware policy, policy-guided RRT",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "flipper = flipper_control.cli:main",
            # ROS 2 nodes (`ros2 run flipper_learning <node>` finds the launchers in scripts/, see above)
            "dem_node = perception.dem_node:main",
            "bag_play_node = perception.bag_play_node:main",
            "sim2real_node = perception.sim2real_node:main",
            "policy_node = flipper_control.policy_node:main",
            "robot_sim_node = flipper_control.robot_sim.node:main",
            "planner_node = flipper_control.learning.planner_node:main",
            "trainer_node = flipper_control.learning.trainer_node:main",
        ],
    },
)
