"""The only way tests start ROS 2 processes: a loopback-only network namespace per test.

DDS discovery multicasts; no packet may leave the machine (issue 16's network rule). A ``RosGraph``
owns one network namespace that has only ``lo`` and a mount namespace with a private ``/dev/shm`` (a
holder process made with ``unshare -n -m`` as root, ``unshare -rnm`` otherwise, which mounts the tmpfs,
brings ``lo`` up and sleeps; the private /dev/shm matters: Fast DDS's shared-memory transport, discovery
included, crosses network namespaces and would join any graph of the machine with the same domain id).
Every process of the test is started inside both with ``nsenter --net=... --mount=...`` and an
environment with
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, a ``ROS_DOMAIN_ID`` unique to the test, ``ROS_LOG_DIR`` in
the test's tmp folder and a Fast DDS profile with short participant announcements (discovery in about
1 s instead of up to 4 s). ``close()`` kills every process group it started, then the holder.

API::

    from ros_graph import ros_graph, ros_available           # fixture + check (test/ is on sys.path)

    def test_x(ros_graph):                                    # a RosGraph, closed after the test
        node = ros_graph.start_node("perception.dem_node", "dem_node", params={"tf_wait": 0.5})
        sink = ros_graph.collect("/elevation_map", "grid_map_msgs/msg/GridMap", count=5, timeout=20)
        ros_graph.start_node("perception.bag_play_node", "bag_play_node", params={"bag": str(bag), "rate": 5.0})
        raw = sink.result()                                   # list of CDR bytes, in arrival order
        out = ros_graph.run_probe("import json; print(json.dumps(1))", timeout=10)   # parsed JSON of stdout's last line
        node.stop()                                           # SIGINT; node.returncode, node.log() (stdout+stderr)

``RosGraph(tmp_dir)``: ``start()`` (the fixture does it), ``env`` (the environment of its processes),
``command(argv)`` (argv run inside the namespace), ``start_node(module, name, params=None, args=())`` a
``python -m module --ros-args -r __node:=name --params-file FILE`` process (params written as YAML keyed
by the node name under ``ros__parameters``), ``start_process(argv, name)``, ``run_probe(code, timeout)``,
``collect(topic, type_name, count, timeout, qos="auto")`` (a background probe that subscribes raw and
returns the CDR bytes of the first ``count`` messages, or what came before ``timeout``), ``diagnostics(name,
messages=4)`` (the key-values of the newest /diagnostics status of node ``name`` among the next ``messages``),
``close()``.
``NodeProcess``: ``wait(timeout)``, ``stop(timeout)`` (SIGINT, then SIGKILL), ``alive``, ``returncode``,
``log()``, ``wait_for_log(text, timeout)``.

conftest.py needs nothing: tests import the fixture (``from ros_graph import ros_graph``) or add
``pytest_plugins = ["ros_graph"]`` to conftest.py.
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_counter = itertools.count()

FASTDDS_PROFILE = """\
<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <participant profile_name="flipper_tests" is_default_profile="true">
      <rtps>
        <builtin>
          <discovery_config>
            <leaseDuration><sec>3</sec></leaseDuration>
            <leaseAnnouncement><sec>0</sec><nanosec>300000000</nanosec></leaseAnnouncement>
            <initialAnnouncements><count>10</count><period><sec>0</sec><nanosec>100000000</nanosec></period>
            </initialAnnouncements>
          </discovery_config>
        </builtin>
      </rtps>
    </participant>
  </profiles>
</dds>
"""


def ros_available() -> str | None:
    """None when ROS graph tests can run here, else the reason they cannot."""
    for module in ("rclpy", "tf2_msgs", "grid_map_msgs"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not importable (make setup installs ROS 2; bash ros2_ws/build_interfaces.sh)"
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not found (util-linux / iproute2 are needed for the test network namespace)"
    return None


class NodeProcess:
    """A process started in the graph's namespace, in its own process group; output goes to a log file."""

    def __init__(self, popen: subprocess.Popen, name: str, log_path: Path):
        self.popen, self.name, self.log_path = popen, name, log_path

    @property
    def alive(self) -> bool:
        """Still running."""
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status once it ended."""
        return self.popen.poll()

    def log(self) -> str:
        """Everything it wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait(self, timeout: float) -> int:
        """Wait for the exit; raises ``AssertionError`` with the log when it does not end in time."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout} s; log:\n{self.log()[-3000:]}") from None

    def wait_for_log(self, text: str, timeout: float) -> None:
        """Wait until ``text`` is in the log; ``AssertionError`` (with the log) when not in time or it exits."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.log():
                return
            if not self.alive:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: {text!r} not logged within {timeout} s (alive: {self.alive}); "
                             f"log:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 5.0) -> int:
        """SIGINT (a clean rclpy shutdown), then SIGKILL of the group after ``timeout``; returns the status."""
        if self.alive:
            _signal_group(self.popen.pid, signal.SIGINT)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.returncode


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Collector:
    """A background probe collecting raw messages of one topic (see ``RosGraph.collect``)."""

    def __init__(self, process: NodeProcess, out: Path):
        self.process, self.out = process, out

    def result(self, timeout: float = 120.0) -> list[bytes]:
        """Wait for the probe's result file and return the CDR bytes it received, in arrival order. The file is
        written (atomically) before rclpy shuts down, so a probe that then hangs in its shutdown is stopped instead
        of failing the test."""
        end = time.monotonic() + timeout
        while not self.out.exists() and self.process.alive and time.monotonic() < end:
            time.sleep(0.05)
        if not self.out.exists():
            state = "still running" if self.process.alive else f"exited with {self.process.returncode}"
            raise AssertionError(f"collector wrote no result within {timeout} s ({state}); log:\n"
                                 f"{self.process.log()[-3000:]}")
        self.process.stop(timeout=3.0)
        return [base64.b64decode(line) for line in json.loads(self.out.read_text())]


_COLLECT = """
import base64, json, sys, time
import rclpy
from perception.ros_adapter import NodeAdapter
topic, type_name, count, timeout, qos, out = sys.argv[1:7]
count, timeout = int(count), float(timeout)
rclpy.init()
a = NodeAdapter("collector_%d" % __import__("os").getpid(), diagnostics_period=60.0)
got = []
a.subscribe(topic, type_name, got.append, qos=int(qos) if qos.isdigit() else qos, raw=True)
print("collector ready", flush=True)
end = time.monotonic() + timeout
while len(got) < count and time.monotonic() < end:
    rclpy.spin_once(a.node, timeout_sec=0.05)
with open(out + ".tmp", "w") as f:
    json.dump([base64.b64encode(g).decode() for g in got], f)
__import__("os").replace(out + ".tmp", out)
print("collector got %d of %d" % (len(got), count), flush=True)
a.close(); rclpy.try_shutdown()
"""


class RosGraph:
    """One loopback-only network namespace and the ROS processes of one test (see the module docstring)."""

    def __init__(self, tmp_dir: str | Path, domain_id: int | None = None):
        self.dir = Path(tmp_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.domain_id = domain_id if domain_id is not None else (os.getpid() * 7 + next(_counter)) % 100 + 1
        self.holder: subprocess.Popen | None = None
        self.processes: list[NodeProcess] = []
        profile = self.dir / "fastdds_profile.xml"
        profile.write_text(FASTDDS_PROFILE)
        (self.dir / "ros_log").mkdir(exist_ok=True)
        self.env = {**os.environ, "ROS_DOMAIN_ID": str(self.domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                    "ROS_LOCALHOST_ONLY": "0", "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
                    "FASTDDS_DEFAULT_PROFILES_FILE": str(profile), "ROS_LOG_DIR": str(self.dir / "ros_log"),
                    "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self._root = os.geteuid() == 0

    def start(self) -> RosGraph:
        """Create the namespace (lo up) and wait until it is ready."""
        unshare = ["unshare", "-n", "-m", "--propagation", "private"] if self._root else \
            ["unshare", "-rnm", "--propagation", "private"]
        # a private /dev/shm: Fast DDS's shared-memory transport (discovery included) would otherwise reach
        # every graph on the machine with the same domain id, whatever the network namespace
        setup = "mount -t tmpfs -o size=512m tmpfs /dev/shm && ip link set lo up && echo ready && exec sleep 100000"
        self.holder = subprocess.Popen([*unshare, "sh", "-c", setup],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        line = self.holder.stdout.readline().strip()
        if line != "ready":
            err = self.holder.stderr.read() if self.holder.poll() is not None else ""
            self.close()
            raise RuntimeError(f"could not create the test network namespace ({' '.join(unshare)}): {line} {err}")
        return self

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` wrapped to run inside the namespace."""
        assert self.holder is not None, "RosGraph.start() first"
        ns = f"/proc/{self.holder.pid}"
        enter = ["nsenter", f"--net={ns}/ns/net", f"--mount={ns}/ns/mnt", f"--wd={ROOT}"]
        if not self._root:
            enter[1:1] = [f"--user={ns}/ns/user", "--preserve-credentials"]
        return [*enter, "--", *argv]

    def start_process(self, argv: list[str], name: str) -> NodeProcess:
        """Start ``argv`` inside the namespace, in its own process group, output to ``<dir>/<name>.log``."""
        log_path = self.dir / f"{name}.{next(_counter)}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - the child owns it; closed when we are done with the process
        popen = subprocess.Popen(self.command(argv), env=self.env, cwd=ROOT, stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        proc = NodeProcess(popen, name, log_path)
        self.processes.append(proc)
        return proc

    def write_params(self, name: str, params: dict) -> Path:
        """A ROS 2 parameter file for node ``name``."""
        path = self.dir / f"{name}.params.{next(_counter)}.yaml"
        path.write_text(yaml.safe_dump({name: {"ros__parameters": params}}))
        return path

    def start_node(self, module: str, name: str, params: dict | None = None, args: tuple[str, ...] = ()) -> NodeProcess:
        """``python -m module`` as node ``name`` with ``params`` (a parameter file) and extra ROS ``args``."""
        argv = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}"]
        if params:
            argv += ["--params-file", str(self.write_params(name, params))]
        return self.start_process(argv + list(args), name)

    def run_probe(self, code: str, timeout: float = 30.0, args: tuple[str, ...] = ()):
        """Run Python ``code`` inside the namespace; returns the JSON of the last line it prints."""
        proc = self.start_process([sys.executable, "-c", code, *args], "probe")
        rc = proc.wait(timeout)
        lines = [line for line in proc.log().splitlines() if line.strip()]
        if rc != 0 or not lines:
            raise AssertionError(f"probe failed (exit {rc}); log:\n{proc.log()[-3000:]}")
        return json.loads(lines[-1])

    def collect(self, topic: str, type_name: str, count: int, timeout: float, qos: str | int = "auto") -> Collector:
        """Start a background probe that keeps the CDR bytes of the first ``count`` messages on ``topic``;
        returns once it has subscribed."""
        out = self.dir / f"collect.{next(_counter)}.json"
        proc = self.start_process([sys.executable, "-c", _COLLECT, topic, type_name, str(count), str(timeout), str(qos),
                                   str(out)], "collector")
        proc.wait_for_log("collector ready", 30.0)
        return Collector(proc, out)

    def diagnostics(self, name: str, messages: int = 4) -> dict[str, str]:
        """The key-values of the newest /diagnostics status named ``name`` (e.g. "/dem_node") among the next
        ``messages`` DiagnosticArrays (every node of the graph publishes there); ``AssertionError`` when none is."""
        from perception.messages import deserialize_lenient

        raw = self.collect("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", messages, 10).result(20)
        assert raw, "no /diagnostics from the nodes"
        for data in reversed(raw):
            status = [s for s in deserialize_lenient(data, "diagnostic_msgs/msg/DiagnosticArray").status if s.name == name]
            if status:
                return {kv.key: kv.value for kv in status[0].values}
        raise AssertionError(f"no /diagnostics status named {name} in {len(raw)} message(s)")

    def close(self) -> None:
        """Stop every process (SIGINT, then SIGKILL of its group) and the namespace holder."""
        for proc in reversed(self.processes):
            proc.stop(timeout=3.0)
        if self.holder is not None and self.holder.poll() is None:
            _signal_group(self.holder.pid, signal.SIGKILL)
            self.holder.wait(5)

    def __enter__(self) -> RosGraph:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def ros_graph(tmp_path):
    """A started ``RosGraph`` for one test (skipped where ROS 2 or the namespace tools are missing)."""
    reason = ros_available()
    if reason:
        pytest.skip(reason)
    with RosGraph(tmp_path / "ros_graph") as graph:
        yield graph
