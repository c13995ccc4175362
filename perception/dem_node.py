"""The live DEM node: /points + /tf + /tf_static + /joint_states in, /elevation_map (GridMap) out.

A thin file over pure cores: ``DemHandler`` builds the DEMs (the code ``flipper replay`` runs over a
bag), ``DemSync`` holds each cloud until the transform at its stamp has arrived (tf2's message filter),
and ``perception.ros_adapter.NodeAdapter`` does rclpy (raw CDR subscriptions decoded with the typestore,
QoS, parameters, /diagnostics). This module imports without ROS; rclpy is imported when the node starts.

Parameters: the fields of ``DemNodeConfig`` (those of ``DemHandlerConfig``, nested ones dotted such as
``builder.dem.resolution``, plus ``tf_wait`` and ``cloud_queue``), checked against ``PARAM_INFO``'s
ranges at start and on ``set_parameters``; read-only topic names ``points_topic``, ``joint_states_topic``
and ``elevation_map_topic``. ``ros2 run flipper_learning dem_node --ros-args -p tf_wait:=0.3``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields

from perception.dem_handler import SKIP_REASONS, DemHandler, DemHandlerConfig
from perception.dem_sync import DemSync
from perception.messages import ELEVATION_MAP, GRIDMAP, JOINT_STATES, POINTS, TF, TF_STATIC, TOPIC_TYPES
from perception.ros_adapter import DiagStatus, ParamInfo

__all__ = ["DemNode", "DemNodeConfig", "PARAM_INFO", "STATIC_PARAMS", "handler_config", "main"]


@dataclass(frozen=True)
class DemNodeConfig(DemHandlerConfig):
    """``DemHandlerConfig`` plus the message filter's bounds: how long (wall seconds) and how many clouds
    wait for the transform at their stamp before they are built with what has arrived."""

    tf_wait: float = 0.5
    cloud_queue: int = 10
    points_reliable: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.tf_wait >= 0 and self.cloud_queue >= 1):
            raise ValueError(f"DemNodeConfig: tf_wait must be >= 0 s and cloud_queue >= 1, got {self.tf_wait}, "
                             f"{self.cloud_queue}")


def handler_config(config: DemHandlerConfig) -> DemHandlerConfig:
    """The handler's part of a node config."""
    return DemHandlerConfig(**{f.name: getattr(config, f.name) for f in fields(DemHandlerConfig)})


PARAM_INFO: dict[str, ParamInfo] = {
    "fixed_frame": ParamInfo("z-up frame of the point map and the GridMap (map, or odom)"),
    "base_frame": ParamInfo("the robot's base frame; the DEM is built around it"),
    "builder.dem.rows": ParamInfo("DEM rows (along x)", 1, 1000),
    "builder.dem.cols": ParamInfo("DEM columns (along y)", 1, 1000),
    "builder.dem.resolution": ParamInfo("DEM cell size [m]", 0.005, 5.0),
    "builder.dem.front": ParamInfo("DEM extent ahead of base_link [m]", -100.0, 100.0),
    "builder.body_min": ParamInfo("robot body box, lower corner in base_link [m]"),
    "builder.body_max": ParamInfo("robot body box, upper corner in base_link [m]"),
    "builder.min_z": ParamInfo("lowest height kept, relative to base_link [m]", -100.0, 100.0),
    "builder.max_z": ParamInfo("highest height kept, relative to base_link [m]", -100.0, 100.0),
    "accumulate": ParamInfo("fuse clouds into a point map (a rotating lidar sees the ground ahead rarely)"),
    "map_voxel": ParamInfo("point map voxel size [m]", 0.001, 10.0),
    "map_max_bytes": ParamInfo("point map memory bound [bytes]", 1 << 20, 1 << 40),
    "tf_max_age": ParamInfo("a transform older than this before a cloud's stamp counts as missing [s]", 0.001, 60.0),
    "tf_cache": ParamInfo("tf history kept [s] (>= tf_max_age)", 0.001, 3600.0),
    "self_filter": ParamInfo("drop returns from the robot's own body and flippers"),
    "self_filter_margin": ParamInfo("margin around the robot's boxes [m]", 0.0, 1.0),
    "flipper_joints": ParamInfo("the four flipper joints in /joint_states (front left, front right, rear left, rear right)"),
    "tf_wait": ParamInfo("longest wait of a cloud for the transform at its stamp [s]", 0.0, 10.0),
    "cloud_queue": ParamInfo("most clouds waiting for their transform (also the /points queue depth)", 1, 1000),
    "points_reliable": ParamInfo("subscribe to the clouds reliably (a bag player that publishes reliably: no cloud "
                                 "lost); a lidar driver publishes best effort, which a reliable subscription never "
                                 "receives. Read at start", read_only=True),
}

STATIC_PARAMS: dict[str, tuple[str, str]] = {
    "points_topic": (POINTS, "the lidar's sensor_msgs/PointCloud2 topic"),
    "joint_states_topic": (JOINT_STATES, "sensor_msgs/JointState with the flipper joints"),
    "elevation_map_topic": (ELEVATION_MAP, "where the grid_map_msgs/GridMap goes"),
}


class _RosLogHandler(logging.Handler):
    """Forwards the handler's Python warnings (skipped clouds, already throttled) to the node's ROS logger."""

    def __init__(self, ros_logger):
        super().__init__(logging.WARNING)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        self.ros_logger.warning(self.format(record))


class DemNode:
    """The node object: ``adapter`` (rclpy), ``sync`` (the message filter over the DEM handler)."""

    def __init__(self, name: str = "dem_node"):
        from perception.ros_adapter import NodeAdapter

        self.adapter = a = NodeAdapter(name, DemNodeConfig, param_info=PARAM_INFO, static_params=STATIC_PARAMS)
        self._log_handler = _RosLogHandler(a.logger)
        logging.getLogger("perception.dem_handler").addHandler(self._log_handler)
        self.sync = self._make_sync(a.config)
        self.clouds = self.published = 0
        self._last_cloud = time.monotonic()
        # a slow cloud releases the queued ones in a burst: the history must hold them until they are acknowledged
        self.pub = a.publisher(a.param("elevation_map_topic"), GRIDMAP, depth=max(10, a.config.cloud_queue))
        # deep reader queues: a reliable KEEP_LAST reader drops the oldest unread messages when it is full, and
        # while a slow cloud is built (the first takes ~0.2 s) /tf at 250 Hz (a bag played 5x) would overflow
        # 100; a lost /tf at a cloud's stamp would let the cloud be built with an older transform
        a.subscribe(TF, TOPIC_TYPES[TF], lambda m: self._publish(self.sync.on_tf(m)), depth=2000)
        a.subscribe(TF_STATIC, TOPIC_TYPES[TF_STATIC], lambda m: self._publish(self.sync.on_tf(m, static=True)))
        a.subscribe(a.param("joint_states_topic"), TOPIC_TYPES[JOINT_STATES], self.sync_joint_states, depth=500)
        # a lidar driver publishes best effort ("auto" QoS for a cloud); a reliable subscription would get nothing
        a.subscribe(a.param("points_topic"), TOPIC_TYPES[POINTS], self.on_cloud, depth=a.config.cloud_queue,
                    qos="reliable" if a.config.points_reliable else "sensor")
        a.timer(0.02, lambda: self._publish(self.sync.poll()))  # clouds whose wait ran out
        a.on_config_change(self._reconfigure)
        a.diagnose(self.status)

    def _make_sync(self, config: DemNodeConfig, old: DemSync | None = None) -> DemSync:
        handler = DemHandler(handler_config(config))
        if old is not None:  # keep what /tf and /tf_static said (a static transform is never sent again)
            old.handler.tf.cache_ns = handler.tf.cache_ns
            handler.tf = old.handler.tf
        return DemSync(handler, config.tf_wait, config.cloud_queue)

    def _reconfigure(self, config: DemNodeConfig) -> None:
        old = self.sync
        self.sync = self._make_sync(config, old)
        self._publish(old.poll())
        self.adapter.logger.info("parameters changed: DEM handler rebuilt (its point map starts empty)")

    def sync_joint_states(self, m) -> None:
        """/joint_states into the self filter's history (it may complete a waiting cloud)."""
        self.sync.on_joint_states(m)
        self._publish(self.sync.poll())

    def on_cloud(self, cloud) -> None:
        """A decoded PointCloud2: queued until its transform is there."""
        self.clouds += 1
        self._last_cloud = time.monotonic()
        self._publish(self.sync.on_cloud(cloud))

    def _publish(self, results) -> None:
        for r in results:
            self.pub.publish(r.gridmap)
            self.published += 1

    def status(self) -> DiagStatus:
        """/diagnostics: counts of clouds, maps, skips per reason, clouds built before their transform."""
        h = self.sync.handler
        values = {"clouds": str(self.clouds), "maps published": str(self.published), "waiting clouds": str(self.sync.pending),
                  "built before their transform (tf_wait/cloud_queue)": str(self.sync.forced),
                  "built from the point map only (empty cloud)": str(h.from_map_only),
                  **{f"skipped: {r}": str(h.skips[r]) for r in SKIP_REASONS}}
        idle = time.monotonic() - self._last_cloud
        if self.clouds and idle > 5.0:
            return DiagStatus(DiagStatus.WARN, f"no cloud for {idle:.0f} s", values)
        if sum(h.skips.values()):
            return DiagStatus(DiagStatus.WARN if not self.published else DiagStatus.OK,
                              f"{self.published} maps, {sum(h.skips.values())} inputs skipped", values)
        return DiagStatus(DiagStatus.OK, f"{self.published} maps", values)


def main(args=None) -> int:
    """``ros2 run flipper_learning dem_node``: spin until Ctrl-C or shutdown; 2 on a refused parameter."""
    from perception.ros_adapter import run_node

    return run_node(DemNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
