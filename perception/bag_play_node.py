"""A small rosbag player as a ROS 2 node, for tests and for users without ``ros2 bag``.

Publishes the messages of a rosbag2 folder (MCAP or SQLite, read with ``perception.bag_reader``, damaged
bags read as far as they go) at their recorded pace times ``rate``, each topic with the QoS the live
graph uses (``ros_adapter.qos_kind``: clouds and IMU best effort, /tf_static transient local), and
optionally /clock (rosgraph_msgs/Clock with the log times) for nodes with ``use_sim_time``. It can wait
until chosen topics have a subscriber before it starts, and exits when the bag is played (status 0;
1 when the bag could not be read; 2 on a bad parameter).

    ros2 run flipper_learning bag_play_node --ros-args -p bag:=runs/run_01 -p rate:=5.0 \\
        -p wait_for:="['/points', '/tf']"
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from perception.ros_adapter import ConfigError, DiagStatus, ParamInfo

__all__ = ["BagPlayConfig", "BagPlayNode", "main"]


@dataclass(frozen=True)
class BagPlayConfig:
    """How to play: speed factor, /clock, what to wait for first, how long to stay after the last message."""

    rate: float = 1.0
    clock: bool = False
    start_delay: float = 0.0
    wait_for: tuple[str, ...] = field(default_factory=tuple)
    wait_timeout: float = 30.0
    linger: float = 1.0
    reliable: bool = False


PARAM_INFO = {
    "rate": ParamInfo("playback speed factor (2.0: twice as fast as recorded)", 0.01, 1000.0),
    "clock": ParamInfo("publish /clock (rosgraph_msgs/Clock) with the bag's log times"),
    "start_delay": ParamInfo("seconds to wait before the first message", 0.0, 3600.0),
    "wait_for": ParamInfo("topics that must have a subscriber before playing starts"),
    "wait_timeout": ParamInfo("longest wait for those subscribers [s] (then it plays anyway, with a warning)", 0.0, 3600.0),
    "reliable": ParamInfo("publish every topic reliably (sensor topics are best effort otherwise; a best-effort "
                          "subscriber still matches). Read at start", read_only=True),
    "linger": ParamInfo("seconds to stay up after the last message (reliable messages still being delivered)", 0.0, 60.0),
}
STATIC_PARAMS = {
    "bag": ("", "the rosbag2 folder (or .mcap / .db3 file) to play"),
    "topics": ("", "comma-separated topics to play (empty: all)"),
}


class BagPlayNode:
    """Plays one bag in a background thread while the node spins (discovery, parameters, /diagnostics)."""

    def __init__(self, name: str = "bag_play_node"):
        from perception.bag_reader import BagReader
        from perception.ros_adapter import NodeAdapter

        self.adapter = a = NodeAdapter(name, BagPlayConfig, param_info=PARAM_INFO, static_params=STATIC_PARAMS)
        bag = str(a.param("bag"))
        if not bag or not Path(bag).exists():
            raise ConfigError(f"{name}: parameter 'bag' must name an existing rosbag2 folder or file, got {bag!r}")
        try:
            self.reader = BagReader(bag)
        except Exception as exc:  # noqa: BLE001 - BagError and rosbags' own errors
            raise ConfigError(f"{name}: cannot read bag {bag}: {exc}") from None
        wanted = [t.strip() for t in str(a.param("topics")).split(",") if t.strip()]
        available = self.reader.topics
        unknown = [t for t in wanted if t not in available]
        if unknown:
            raise ConfigError(f"{name}: parameter 'topics' names {unknown}, not in bag {bag} (it has {sorted(available)})")
        self.topics = wanted or sorted(available)
        reliable = a.config.reliable
        self.pubs = {t: a.publisher(t, available[t], qos="reliable" if reliable and t != "/tf_static" else "auto",
                                    depth=100 if reliable else None) for t in self.topics}
        self.clock_pub = a.publisher("/clock", "rosgraph_msgs/msg/Clock", qos="reliable") if a.config.clock else None
        self.played = 0
        self.error: str | None = None
        self.done = False
        a.diagnose(lambda: DiagStatus(DiagStatus.ERROR if self.error else DiagStatus.OK,
                                      self.error or ("done" if self.done else "playing"), {"played": str(self.played)}))
        self.thread = threading.Thread(target=self._play, name="bag_play", daemon=True)
        self.thread.start()

    def _wait_for_subscribers(self) -> None:
        c, a = self.adapter.config, self.adapter
        watch = {t: self.pubs.get(t) or a.publisher(t, self.reader.topics.get(t, "std_msgs/msg/String")) for t in c.wait_for}
        end = time.monotonic() + c.wait_timeout
        while time.monotonic() < end:
            missing = [t for t, p in watch.items() if p.subscription_count == 0]
            if not missing:
                return
            time.sleep(0.02)
        a.logger.warning(f"no subscriber on {missing} after {c.wait_timeout:g} s; playing anyway")

    def _play(self) -> None:
        from perception.messages import msg

        c, log = self.adapter.config, self.adapter.logger
        try:
            self._wait_for_subscribers()
            time.sleep(c.start_delay)
            start = first = None
            for m in self.reader.messages(self.topics):
                if first is None:
                    first, start = m.log_ns, time.monotonic()
                due = start + (m.log_ns - first) / 1e9 / c.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if self.clock_pub is not None:
                    t = msg("builtin_interfaces/msg/Time")(sec=m.log_ns // 1_000_000_000, nanosec=m.log_ns % 1_000_000_000)
                    self.clock_pub.publish(msg("rosgraph_msgs/msg/Clock")(clock=t))
                self.pubs[m.topic].publish(m.msg)
                self.played += 1
            skipped = self.reader.report.n_skipped
            log.info(f"played {self.played} messages of {len(self.topics)} topics at rate {c.rate:g}"
                     + (f" ({skipped} unreadable skipped: {self.reader.report.errors})" if skipped else ""))
        except Exception as exc:  # noqa: BLE001 - report any failure and end the node
            self.error = f"playing failed after {self.played} messages: {type(exc).__name__}: {exc}"
            log.error(self.error)
        self.done = True
        time.sleep(c.linger)
        self.adapter.node.context.try_shutdown()


def main(args=None) -> int:
    """``ros2 run flipper_learning bag_play_node``: play the bag and exit."""
    from perception.ros_adapter import run_node

    nodes: list[BagPlayNode] = []

    def factory() -> BagPlayNode:
        nodes.append(BagPlayNode())
        return nodes[-1]

    rc = run_node(factory, args)
    return 1 if rc == 0 and nodes and nodes[0].error else rc


if __name__ == "__main__":
    raise SystemExit(main())
