"""The one generic rclpy adapter: every node of the package is a thin file over a pure core and this module.

rclpy and the ROS message packages are imported lazily (inside ``NodeAdapter`` and ``run_node``), so this
module imports, and its pure helpers run, on a machine without ROS. Messages stay rosbags dataclasses of
``perception.messages.typestore()`` end to end: subscriptions are raw (CDR bytes) and decoded with the
typestore (leniently: rclpy's padding, see ``messages.deserialize_lenient``), publishers serialise
dataclasses to CDR bytes. So the code a node runs live is the code ``flipper replay`` runs over a bag. How a
dataclass config becomes parameters (``ParamInfo``, ``param_specs``, ``config_from_values``, ``ConfigError``) is in
``perception.ros_params``, which needs no rclpy; the names are exported here too.

API (stable; others code against it)::

    from perception.ros_adapter import NodeAdapter, ParamInfo, DiagStatus, ConfigError, run_node

    class MyNode:
        def __init__(self):
            self.adapter = a = NodeAdapter(
                "my_node", MyConfig,                                   # a (frozen) dataclass config
                param_info={"rate": ParamInfo("publish rate [Hz]", 0.1, 100.0)},   # or field metadata
                static_params={"points_topic": ("/points", "the cloud topic")})     # read-only, not in config
            a.subscribe(a.param("points_topic"), "sensor_msgs/msg/PointCloud2", self.on_cloud)   # qos "auto"
            self.pub = a.publisher("/elevation_map", "grid_map_msgs/msg/GridMap")
            a.timer(0.1, self.tick)
            a.on_config_change(self.apply)          # apply(new_config); raise ValueError to refuse the change
            a.diagnose(lambda: DiagStatus(DiagStatus.OK, "running", {"maps": str(self.n)}))

        def on_cloud(self, cloud):                  # a typestore dataclass (raw=True gives the CDR bytes)
            self.pub.publish(gridmap)               # a typestore dataclass or CDR bytes

    def main(args=None):
        return run_node(MyNode, args)               # spin; Ctrl-C / SIGTERM / shutdown exit 0; bad parameter exit 2

``NodeAdapter(name, config_cls=None, *, param_info=None, static_params=None, diagnostics_period=1.0)``
  Creates the rclpy node (rclpy must be initialised; ``run_node`` does it). Every field of ``config_cls``
  is a ROS parameter; nested dataclass fields become dotted names (``builder.dem.resolution``). Supported
  field types: bool, int, float, str and tuples/lists of them (fixed-length tuples keep their length);
  fields of other types are not parameters and keep their defaults. A field's description and range come
  from ``param_info[name]`` (a ``ParamInfo``) or the field's metadata
  (``field(default=..., metadata={"description": "...", "range": (lo, hi)})``). Values are checked (type,
  range, then the dataclass's own ``__post_init__``): at start a bad value raises ``ConfigError`` naming
  the parameter, its value and the allowed range (``run_node`` prints it and exits with status 2); on
  ``set_parameters`` the change is refused with that reason and the old config is kept.
``adapter.node`` the rclpy Node; ``adapter.logger``; ``adapter.name``.
``adapter.config`` the current config dataclass (replaced atomically on an accepted parameter change).
``adapter.param(name)`` the value of a static parameter (or a config parameter by dotted name).
``adapter.on_config_change(callback)`` ``callback(new_config)`` runs before a change is accepted; a
  ``ValueError`` it raises refuses the change (its text is the reason).
``adapter.subscribe(topic, type_name, callback, qos="auto", raw=False, depth=None)`` raw subscription; the callback
  gets the decoded dataclass (or the bytes with ``raw=True``). Undecodable messages are dropped with a
  throttled warning naming the topic and the problem; an exception in the callback is caught, logged
  (throttled, with its type and text) and counted, and the node goes on.
``adapter.publisher(topic, type_name, qos="auto", depth=None) -> Publisher`` with ``publish(msg_or_bytes)``,
  ``topic``, ``subscription_count``.
``adapter.timer(period_s, callback)`` a guarded timer on the node's clock.
``adapter.now_ns()`` the node clock (sim time with ``use_sim_time``); ``adapter.stamp()`` as a Time message.
``adapter.diagnose(callback)`` ``callback() -> DiagStatus``; published every ``diagnostics_period`` s on
  /diagnostics (diagnostic_msgs/DiagnosticArray) with the adapter's counters (dropped messages, callback
  errors) added as values. Without a callback the node still reports ``OK`` plus the counters.
``adapter.warn_throttled(key, text, period_s=5.0)`` logs ``text`` at most once per ``period_s`` per key,
  saying how many were suppressed; every call is counted in ``adapter.counts[key]``.
``qos_kind(topic, type_name)`` the rule behind ``qos="auto"``: ``"sensor"`` (PointCloud2, Imu, LaserScan,
  Image, or /points, /imu/data: best effort, volatile, depth 5), ``"latched"`` (/tf_static: reliable,
  transient local, depth 100), ``"tf"`` (/tf: reliable, depth 100), else ``"reliable"`` (depth 10).
  ``qos`` may also be one of those names, an int (reliable with that depth) or an rclpy QoSProfile;
  ``depth`` overrides the history depth of a named QoS.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from perception.messages import IMU, POINTS, TF, TF_STATIC, deserialize_lenient, msg, typestore
from perception.ros_params import ConfigError, ParamInfo, ParamSpec, config_from_values, param_specs

__all__ = ["ConfigError", "DiagStatus", "NodeAdapter", "ParamInfo", "ParamSpec", "Publisher", "config_from_values",
           "param_specs", "qos_kind", "run_node"]

SENSOR_TYPES = frozenset({"sensor_msgs/msg/PointCloud2", "sensor_msgs/msg/Imu", "sensor_msgs/msg/LaserScan",
                          "sensor_msgs/msg/Image"})
QOS_DEPTHS = {"sensor": 5, "latched": 100, "tf": 100, "reliable": 10}


@dataclass(frozen=True)
class DiagStatus:
    """What a node reports on /diagnostics: a level (OK/WARN/ERROR/STALE), a message and string values."""

    OK, WARN, ERROR, STALE = 0, 1, 2, 3
    level: int = 0
    message: str = "running"
    values: dict[str, str] = dataclasses.field(default_factory=dict)


def qos_kind(topic: str, type_name: str) -> str:
    """The QoS rule of ``qos="auto"`` (see the module docstring)."""
    if topic == TF_STATIC:
        return "latched"
    if topic == TF:
        return "tf"
    if type_name in SENSOR_TYPES or topic in (POINTS, IMU):
        return "sensor"
    return "reliable"


def _qos_profile(kind: str, depth: int | None = None):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    if kind not in QOS_DEPTHS:
        raise ValueError(f"unknown QoS {kind!r}: use one of {sorted(QOS_DEPTHS)}, an int depth or a QoSProfile")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth or QOS_DEPTHS[kind],
                      reliability=ReliabilityPolicy.BEST_EFFORT if kind == "sensor" else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if kind == "latched" else DurabilityPolicy.VOLATILE)


def _message_class(type_name: str):
    """The rclpy message class of 'pkg/msg/Name' (type support for raw subscriptions and publishers)."""
    pkg, _, name = type_name.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"message type {type_name!r} is not available to rclpy ({exc}); for tf2_msgs and "
                          f"grid_map_msgs run `bash ros2_ws/build_interfaces.sh`") from None


class Publisher:
    """A raw publisher: ``publish`` takes a typestore dataclass (serialised to CDR) or CDR bytes."""

    def __init__(self, rcl_publisher, topic: str, type_name: str):
        self._pub, self.topic, self.type_name = rcl_publisher, topic, type_name

    def publish(self, message: Any) -> None:
        """Publish a message dataclass of ``type_name`` or its CDR bytes."""
        if not isinstance(message, (bytes, bytearray, memoryview)):
            message = typestore().serialize_cdr(message, self.type_name)
        self._pub.publish(bytes(message))

    @property
    def subscription_count(self) -> int:
        """Matched subscriptions (discovery has found them)."""
        return self._pub.get_subscription_count()


class NodeAdapter:
    """An rclpy node with typestore messages, dataclass parameters, diagnostics and guarded callbacks."""

    def __init__(self, name: str, config_cls: type | None = None, *, param_info: dict[str, ParamInfo] | None = None,
                 static_params: dict[str, tuple[Any, str]] | None = None, diagnostics_period: float = 1.0):
        from rcl_interfaces.msg import ParameterDescriptor
        from rclpy.node import Node

        self.node = Node(name)
        self.name = name
        self.logger = self.node.get_logger()
        self.counts: Counter[str] = Counter()
        self._last_warn: dict[str, tuple[float, int]] = {}
        self._config_cls = config_cls
        self._specs = {s.name: s for s in param_specs(config_cls, param_info)} if config_cls else {}
        self._change_callbacks: list[Callable[[Any], None]] = []
        self._diag_callback: Callable[[], DiagStatus] | None = None
        self._static: dict[str, Any] = {}
        for pname, (default, description) in (static_params or {}).items():
            desc = ParameterDescriptor(description=description, read_only=True)
            self._static[pname] = self.node.declare_parameter(pname, default, desc).value
        values = {}
        for spec in self._specs.values():
            desc = ParameterDescriptor(description=spec.info.description, read_only=spec.info.read_only,
                                       additional_constraints=f"range {spec.info.range_text()}" if spec.info.range_text() else "",
                                       dynamic_typing=True)  # our check gives the clear message (an int for a float is fine)
            value = self.node.declare_parameter(spec.name, list(spec.default) if spec.sequence else spec.default,
                                                desc).value
            values[spec.name] = self._check(spec, value)
        self._values = values
        self._config = self._build(values) if config_cls else None
        self.node.add_on_set_parameters_callback(self._on_set_parameters)
        self._diag_pub = self.publisher("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray")
        self.timer(diagnostics_period, self._publish_diagnostics)

    # ------------------------------------------------------------------ parameters
    def _check(self, spec: ParamSpec, value: Any) -> Any:
        try:
            return spec.check(spec.default if value is None else value)
        except ConfigError as exc:
            raise ConfigError(f"{self.name}: {exc}") from None

    def _build(self, values: dict[str, Any]) -> Any:
        try:
            return config_from_values(self._config_cls, values)
        except ConfigError as exc:
            raise ConfigError(f"{self.name}: invalid parameters: {exc}") from None

    @property
    def config(self) -> Any:
        """The current config dataclass."""
        return self._config

    def param(self, name: str) -> Any:
        """A static parameter's value, or a config parameter's by dotted name."""
        if name in self._static:
            return self._static[name]
        if name in self._values:
            return self._values[name]
        raise KeyError(f"{self.name}: no parameter {name!r} (static: {sorted(self._static)}; config: {sorted(self._values)})")

    def on_config_change(self, callback: Callable[[Any], None]) -> None:
        """``callback(new_config)`` before a change is accepted; a ValueError it raises refuses the change."""
        self._change_callbacks.append(callback)

    def _on_set_parameters(self, params):
        from rcl_interfaces.msg import SetParametersResult

        values = dict(self._values)
        try:
            for p in params:
                if p.name in self._specs:
                    values[p.name] = self._check(self._specs[p.name], p.value)
                elif p.name in self._static:
                    raise ConfigError(f"{self.name}: parameter {p.name!r} is read-only (set it at start)")
            new = self._build(values) if self._config_cls else None
            for callback in self._change_callbacks:
                callback(new)
        except ValueError as exc:
            self.logger.warning(f"parameter change refused: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        self._values, self._config = values, new
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ topics and timers
    def _qos(self, topic: str, type_name: str, qos: Any, depth: int | None = None):
        if isinstance(qos, int) and not isinstance(qos, bool):
            return _qos_profile("reliable", qos)
        if isinstance(qos, str):
            return _qos_profile(qos_kind(topic, type_name) if qos == "auto" else qos, depth)
        return qos

    def _guard(self, what: str, callback: Callable[..., None]) -> Callable[..., None]:
        def guarded(*args):
            try:
                callback(*args)
            except Exception as exc:  # noqa: BLE001 - a bug or bad input in one callback must not end the node
                self.warn_throttled(f"{what}: callback error", f"{what}: {type(exc).__name__}: {exc}")
        return guarded

    def subscribe(self, topic: str, type_name: str, callback: Callable[[Any], None], qos: Any = "auto",
                  raw: bool = False, depth: int | None = None):
        """A raw subscription decoded with the typestore (see the module docstring)."""
        guarded = self._guard(topic, callback)

        def on_data(data) -> None:
            if raw:
                guarded(bytes(data))
                return
            try:
                message = deserialize_lenient(data, type_name)
            except ValueError as exc:
                self.warn_throttled(f"{topic}: undecodable", f"dropped a message on {topic}: {exc}")
                return
            guarded(message)

        return self.node.create_subscription(_message_class(type_name), topic, on_data,
                                             self._qos(topic, type_name, qos, depth), raw=True)

    def publisher(self, topic: str, type_name: str, qos: Any = "auto", depth: int | None = None) -> Publisher:
        """A publisher of typestore dataclasses (or CDR bytes) on ``topic``."""
        pub = self.node.create_publisher(_message_class(type_name), topic, self._qos(topic, type_name, qos, depth))
        return Publisher(pub, topic, type_name)

    def timer(self, period_s: float, callback: Callable[[], None]):
        """A guarded timer every ``period_s`` seconds of the node's clock."""
        return self.node.create_timer(period_s, self._guard(f"timer {period_s:g} s", callback))

    def now_ns(self) -> int:
        """The node clock in nanoseconds (sim time when ``use_sim_time`` is set)."""
        return self.node.get_clock().now().nanoseconds

    def stamp(self) -> Any:
        """The node clock as a builtin_interfaces/msg/Time dataclass."""
        t = self.now_ns()
        return msg("builtin_interfaces/msg/Time")(sec=t // 1_000_000_000, nanosec=t % 1_000_000_000)

    # ------------------------------------------------------------------ warnings and diagnostics
    def warn_throttled(self, key: str, text: str, period_s: float = 5.0) -> None:
        """Log ``text`` at most once per ``period_s`` for ``key``; count every call in ``counts[key]``."""
        self.counts[key] += 1
        now = time.monotonic()
        last, suppressed = self._last_warn.get(key, (-float("inf"), 0))
        if now - last < period_s:
            self._last_warn[key] = (last, suppressed + 1)
            return
        self._last_warn[key] = (now, 0)
        more = f" ({suppressed} similar suppressed in the last {period_s:g} s)" if suppressed else ""
        self.logger.warning(text + more)

    def diagnose(self, callback: Callable[[], DiagStatus]) -> None:
        """Report ``callback()`` on /diagnostics (with the adapter's counters)."""
        self._diag_callback = callback

    def _publish_diagnostics(self) -> None:
        status = self._diag_callback() if self._diag_callback else DiagStatus()
        values = {**status.values, **{f"count: {k}": str(v) for k, v in sorted(self.counts.items())}}
        kv = msg("diagnostic_msgs/msg/KeyValue")
        st = msg("diagnostic_msgs/msg/DiagnosticStatus")(
            level=int(status.level), name=self.node.get_fully_qualified_name(), message=status.message,
            hardware_id="", values=[kv(key=k, value=str(v)) for k, v in values.items()])
        header = msg("std_msgs/msg/Header")(stamp=self.stamp(), frame_id="")
        self._diag_pub.publish(msg("diagnostic_msgs/msg/DiagnosticArray")(header=header, status=[st]))

    def close(self) -> None:
        """Destroy the node."""
        self.node.destroy_node()


def run_node(factory: Callable[[], Any], args: list[str] | None = None) -> int:
    """Initialise rclpy, build the node (``factory()`` returns a NodeAdapter or an object with ``.adapter``)
    and spin until Ctrl-C, SIGTERM or shutdown (exit status 0). A refused parameter prints the reason and
    returns 2. An object with a ``close()`` of its own (a node that runs child processes) is closed first."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=args)  # not `with rclpy.init()`: Humble's init returns None
    obj = adapter = None
    try:
        try:
            obj = factory()
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        adapter = obj if isinstance(obj, NodeAdapter) else obj.adapter
        rclpy.spin(adapter.node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # a signal's shutdown can invalidate the context while spin builds its next wait set; rclpy then raises
        # RCLError ("the given context is not valid") instead of ExternalShutdownException: a stop, not a crash
        if rclpy.ok():
            raise
    finally:
        if obj is not adapter and callable(getattr(obj, "close", None)):
            obj.close()
        if adapter is not None:
            adapter.close()
        rclpy.try_shutdown()
    return 0

