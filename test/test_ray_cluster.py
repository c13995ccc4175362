"""``flipper loop --executor ray --ray-address`` on a real two-node Ray cluster, with and without token authentication.

Each test starts its own cluster with ``ray start`` (a head and a second node, one CPU each) and stops it
afterwards. Everything stays on this machine: the nodes advertise the loopback addresses 127.0.0.2 and 127.0.0.3
(Ray 2.60 replaces 127.0.0.1 by the address of its route towards 8.8.8.8; Linux routes all of 127.0.0.0/8 to the
loopback device). Teardown kills only this cluster's processes (those naming its temp dir, and their children):
``ray stop --force`` would also kill any other Ray instance on the machine, such as another test session's.

Ray 2.60: ``ray start --head`` turns token authentication on when it finds a token (``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, which every local ``ray.init()`` writes) unless
``RAY_AUTH_MODE=disabled``; a driver joining with an explicit address sends a token only with ``RAY_AUTH_MODE=token``.
The tests set both variables explicitly for every process they start.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from tiny_loop import tiny_loop

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a multi-node Ray cluster on loopback (Linux)")

RAY = Path(sys.executable).with_name("ray")  # the CLI of the Ray installed beside this Python
HEAD_IP, NODE_IP = "127.0.0.2", "127.0.0.3"
NODE_ARGS = ["--num-cpus=1", "--object-store-memory=80000000", "--disable-usage-stats"]

# test/test_loop.py's TINY, one iteration on two training worlds: two planning tasks at once, one per node
LOOP_CONFIG = tiny_loop(executor="ray", workers=2, iterations=1, eval_worlds=["flat"])


def base_env() -> dict[str, str]:
    """This environment without any Ray address or authentication setting of the person running the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH_", "RAY_ADDRESS"))}
    return env | {"RAY_USAGE_STATS_ENABLED": "0", "FLIPPER_PROGRESS": "lines"}


def token_env(token: str) -> dict[str, str]:
    return base_env() | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HEAD_IP, 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ the cluster
@dataclass
class Cluster:
    address: str
    temp_dir: Path

    def raylet_log(self, node: int) -> str:
        """The raylet log of the head (0) or the second node (1)."""
        name = "raylet.out" if node == 0 else f"raylet.{node}.out"
        return (self.temp_dir / "session_latest" / "logs" / name).read_text(errors="replace")


def _processes_of(temp_dir: Path) -> set[int]:
    """This cluster's processes: those whose command line names its temp dir, and all their descendants."""
    parent_of, roots = {}, set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        pid = int(entry.name)
        parent_of[pid] = int(stat[stat.rindex(")") + 2:].split()[1])
        if str(temp_dir).encode() in cmdline and pid != os.getpid():
            roots.add(pid)
    found = set(roots)
    while True:
        more = {pid for pid, ppid in parent_of.items() if ppid in found} - found
        if not more:
            return found
        found |= more


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def stop_cluster(temp_dir: Path) -> None:
    """``ray stop --force`` for this cluster only: SIGKILL its processes, then check that none is left."""
    pids = _processes_of(temp_dir)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while (left := [p for p in pids | _processes_of(temp_dir) if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"Ray processes of {temp_dir} still running: {left}"


@contextmanager
def ray_cluster(env: dict[str, str]):
    """A head on HEAD_IP and a second node on NODE_IP, both started with ``env`` (which sets the auth mode)."""
    if not RAY.exists():
        pytest.skip(f"no Ray CLI at {RAY}")
    temp_dir = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    address = f"{HEAD_IP}:{free_port()}"
    head = [str(RAY), "start", "--head", f"--node-ip-address={HEAD_IP}", f"--port={address.rsplit(':', 1)[1]}",
            "--include-dashboard=false", f"--temp-dir={temp_dir}", *NODE_ARGS]
    node = [str(RAY), "start", f"--address={address}", f"--node-ip-address={NODE_IP}", *NODE_ARGS]
    try:
        for cmd in (head, node):
            started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
            assert started.returncode == 0, f"{' '.join(cmd)}:\n{started.stdout}\n{started.stderr}"
        yield Cluster(address, temp_dir)
    finally:
        try:
            stop_cluster(temp_dir)
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)


def flipper_loop(tmp_path: Path, address: str, env: dict[str, str], out: str = "run") -> subprocess.CompletedProcess:
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(LOOP_CONFIG))  # JSON is YAML
    cmd = [sys.executable, "-m", "flipper_control.cli", "loop", "--config", str(config), "--out", str(tmp_path / out),
           "--executor", "ray", "--ray-address", address]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def assert_loop_ran_on_both_nodes(tmp_path: Path, cluster: Cluster, run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [it["iteration"] for it in report["iterations"]] == [1]
    assert report["iterations"][0]["planning"]["trajectories"] == LOOP_CONFIG["training_worlds"]
    # the report lists the pid of every worker that ran a task; each raylet logs the workers it started
    pids = set(report["memory"]["worker_peak_rss_mib"])
    started = [set(re.findall(r"Started worker process with pid (\d+)", cluster.raylet_log(node))) for node in (0, 1)]
    assert pids & started[0] and pids & started[1], (pids, started)


def one_error_line(run: subprocess.CompletedProcess) -> str:
    """The run failed with status 2 and a single ``flipper: error:`` line (Ray's own log lines may precede it)."""
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("flipper:")]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    return lines[0]


# ------------------------------------------------------------------------------------------ tests
def test_loop_on_a_token_cluster(tmp_path):
    """Token authentication on: the loop runs on both nodes with RAY_AUTH_MODE=token and the token; without a token,
    or with a wrong one, `flipper` says what is wrong in one line and exits 2."""
    token = secrets.token_hex(16)
    with ray_cluster(token_env(token)) as cluster:
        # Ray's driver retries a refused connection once a second for 20 s; two tries are enough to see the refusal
        quick = {"RAY_gcs_server_port_wait_time_s": "2"}
        missing = one_error_line(flipper_loop(tmp_path, cluster.address, base_env() | quick, out="no_token"))
        assert missing == (f"flipper: error: could not connect to the Ray cluster at {cluster.address}: the cluster uses token "
                           "authentication and this process sent no token (RAY_AUTH_MODE is not 'token'); set "
                           "RAY_AUTH_MODE=token and give the cluster's token in RAY_AUTH_TOKEN (or in a file named by "
                           "RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token); `ray get-auth-token` on the head node prints it")
        wrong = one_error_line(flipper_loop(tmp_path, cluster.address, token_env("not" + token) | quick, out="bad_token"))
        assert wrong == (f"flipper: error: could not connect to the Ray cluster at {cluster.address}: the cluster refused this "
                         "process's authentication token; give the cluster's token in RAY_AUTH_TOKEN (or in a file named by "
                         "RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token); `ray get-auth-token` on the head node prints it")

        assert_loop_ran_on_both_nodes(tmp_path, cluster, flipper_loop(tmp_path, cluster.address, token_env(token)))


@pytest.mark.slow
def test_loop_on_a_cluster_without_authentication(tmp_path):
    """RAY_AUTH_MODE=disabled on the nodes: the loop runs on both nodes with no token at all."""
    no_auth = base_env() | {"RAY_AUTH_MODE": "disabled"}
    with ray_cluster(no_auth) as cluster:
        assert_loop_ran_on_both_nodes(tmp_path, cluster, flipper_loop(tmp_path, cluster.address, base_env()))


def test_no_cluster_at_the_address(tmp_path):
    """Nothing listens at the address: one line saying so, exit 2, at once (ray.init alone retries for minutes)."""
    address = f"{HEAD_IP}:{free_port()}"  # free a moment ago: nothing listens there
    t0 = time.monotonic()
    line = one_error_line(flipper_loop(tmp_path, address, base_env()))
    assert time.monotonic() - t0 < 60
    port = address.rsplit(":", 1)[1]
    assert line == (f"flipper: error: could not connect to the Ray cluster at {address}: nothing listens on port {port} of "
                    f"{HEAD_IP}; check that the address is the head node's HOST:PORT (`ray start --head` prints it; the "
                    f"default port is 6379) and that the cluster is running (`ray status --address {address}`)")
