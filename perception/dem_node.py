"""The live DEM node: a thin rclpy adapter around ``perception.dem_handler.DemHandler``.

Subscribes to the cloud, /tf, /tf_static and /joint_states as raw CDR bytes and publishes the handler's
GridMap as CDR bytes, so the code that runs here is exactly what ``flipper replay`` runs over a bag.
rclpy and the ROS message packages are imported only when the node is created, so this module imports
(and its parameters can be checked) on a machine without ROS.
"""

from __future__ import annotations

import logging
from dataclasses import fields

from perception.dem_handler import DemHandler, DemHandlerConfig
from perception.messages import ELEVATION_MAP, JOINT_STATES, POINTS, TF, TF_STATIC

_DEFAULTS = DemHandlerConfig()
# ROS parameter -> default; the handler's scalar settings keep their DemHandlerConfig names
PARAMETERS: dict[str, object] = {
    "points_topic": POINTS,
    "joint_states_topic": JOINT_STATES,
    "elevation_map_topic": ELEVATION_MAP,
    **{f.name: getattr(_DEFAULTS, f.name) for f in fields(DemHandlerConfig) if f.name not in ("builder", "flipper_joints")},
}


def handler_config(values: dict[str, object]) -> DemHandlerConfig:
    """The handler's config from parameter values (unknown names ignored; DemHandlerConfig validates)."""
    names = {f.name for f in fields(DemHandlerConfig)}
    return DemHandlerConfig(**{k: v for k, v in values.items() if k in names})


class _RosLogHandler(logging.Handler):
    """Forwards the handler's Python warnings (skipped clouds) to the node's ROS logger."""

    def __init__(self, ros_logger):
        super().__init__(logging.WARNING)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        self.ros_logger.warning(self.format(record))


def make_node(node_name: str = "dem_node"):
    """Create the rclpy node (rclpy must be initialised)."""
    from grid_map_msgs.msg import GridMap
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import JointState, PointCloud2
    from tf2_msgs.msg import TFMessage

    class DemNode(Node):
        """Clouds + tf in, /elevation_map out; all the work is in DemHandler."""

        def __init__(self):
            super().__init__(node_name)
            logging.getLogger("perception.dem_handler").addHandler(_RosLogHandler(self.get_logger()))
            values = {name: self.declare_parameter(name, default).value for name, default in PARAMETERS.items()}
            self.handler = DemHandler(handler_config(values))
            self.pub = self.create_publisher(GridMap, values["elevation_map_topic"], 1)
            latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)  # tf2's /tf_static profile
            self.create_subscription(TFMessage, TF, self.handler.on_tf_cdr, 100, raw=True)
            self.create_subscription(TFMessage, TF_STATIC, lambda data: self.handler.on_tf_cdr(data, static=True),
                                     latched, raw=True)
            self.create_subscription(JointState, values["joint_states_topic"], self.handler.on_joint_states_cdr, 10,
                                     raw=True)
            # a lidar driver publishes best effort: a reliable subscription would receive nothing
            self.create_subscription(PointCloud2, values["points_topic"], self.on_cloud, qos_profile_sensor_data,
                                     raw=True)

        def on_cloud(self, data: bytes) -> None:
            out = self.handler.on_cloud_cdr(bytes(data))
            if out is not None:
                self.pub.publish(out)

    return DemNode()


def main(args=None) -> None:
    """``ros2 run flipper_learning dem_node``: spin until Ctrl-C or shutdown."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=args)  # not `with rclpy.init()`: Humble's init returns None, the context manager is newer
    try:
        rclpy.spin(make_node())
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
