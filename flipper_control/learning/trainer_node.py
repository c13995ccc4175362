"""The learning loop as a ROS 2 node (Algorithm 1 line 9 on the robot): a thin rclpy file over ``trainer_watch``.

Every ``poll_s`` seconds it asks ``trainer_watch.next_step`` what to do and runs that step in a child process:
ingest the finished recordings of ``bag_dir`` as the next real collection, run the next loop iteration in ``out``,
or publish the newest iteration's policy to ``checkpoint`` (the file ``policy_node`` watches and swaps in). One
step runs at a time; a parameter change applies from the next step; on shutdown the running step is stopped and
the loop resumes it next time. /diagnostics reports the state (waiting, which step runs and its last output line,
iterations done, collections, bags ingested and rejected, the last failure). rclpy is imported only through
``perception.ros_adapter``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from flipper_control.learning.trainer_watch import (
    StepRunner,
    TrainerConfig,
    finished_bags,
    iterations_done,
    load_ledger,
    next_step,
    real_collections,
    step_command,
)

NODE_NAME = "trainer_node"


class TrainerNode:
    """Watch bags, ingest, iterate, publish: one step at a time (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME):
        from perception.ros_adapter import ConfigError, DiagStatus, NodeAdapter

        self.adapter = a = NodeAdapter(node_name, TrainerConfig)
        self._diag, self._config_error = DiagStatus, ConfigError
        self.loop_config = None
        self.state, self.failure, self.failures = "starting", "", 0
        self._retry_at = 0.0
        self._check(a.config)  # a bad loop config stops the node at start (exit 2) with the file's message
        self.runner = StepRunner(Path(a.config.out) / "trainer_logs")
        a.on_config_change(self._check)
        a.diagnose(self.diagnose)
        self._timer = a.timer(a.config.poll_s, self.tick)

    def _check(self, config: TrainerConfig) -> None:
        """Refuse a config the loop cannot run (ConfigError at start, a refused change later)."""
        from flipper_control.learning.loop_config import load_loop_config

        missing = [name for name in ("bag_dir", "loop_config", "out") if not getattr(config, name)]
        if missing:
            raise self._config_error(f"{self.adapter.name}: set the parameter(s) {', '.join(missing)}")
        try:
            self.loop_config = load_loop_config(config.loop_config)
        except ValueError as exc:
            raise self._config_error(f"{self.adapter.name}: loop_config: {exc}") from None
        if hasattr(self, "runner"):  # a change while running: logs follow `out`, the timer follows `poll_s`
            self.runner.log_dir = Path(config.out) / "trainer_logs"
            if config.poll_s != self.adapter.config.poll_s:
                self._timer.cancel()
                self._timer = self.adapter.timer(config.poll_s, self.tick)

    def tick(self) -> None:
        """Collect a finished step, then start the next one (unless one runs or a failure is being backed off)."""
        c = self.adapter.config
        rc = self.runner.poll()
        if rc is not None:
            step = self.runner.step
            if rc == 0:
                self.failure, self.failures = "", 0
                self.adapter.logger.info(f"{step.kind} done: {step.why}")
            else:
                self.failures += 1
                self.failure = f"{step.kind} (exit {rc}): {self.runner.tail()} (log {self.runner.log_path})"
                self._retry_at = time.monotonic() + min(600.0, c.poll_s * 2 ** min(self.failures, 10))
                self.adapter.warn_throttled("step failed", f"step failed: {self.failure}; retrying later", 60.0)
        if self.runner.running or time.monotonic() < self._retry_at:
            return
        step = next_step(self.loop_config, c, c.out, finished_bags(c.bag_dir, c.settle_s))
        self.state = f"{step.kind}: {step.why}"
        if step.kind in ("wait", "done"):
            return
        paths = {"out": c.out, "checkpoint": c.checkpoint, "loop_config": c.loop_config}
        self.runner.start(step, step_command(step, paths), env=dict(os.environ))
        self.adapter.logger.info(f"started {step.kind}: {step.why}")

    def diagnose(self):
        c = self.adapter.config
        ledger = load_ledger(c.out)
        values = {"state": self.state, "iterations done": str(iterations_done(c.out)),
                  "iterations": str(self.loop_config.iterations), "real collections": str(real_collections(c.out)),
                  "bags ingested": str(len(ledger["ingested"])), "bags rejected": str(len(ledger["rejected"])),
                  "published iteration": str(ledger["published"]), "checkpoint": c.checkpoint}
        if self.runner.running:
            values["step running s"] = f"{time.monotonic() - self.runner.started:.0f}"
            values["step output"] = self.runner.tail()
        if self.failure:
            values["last failure"] = self.failure
            return self._diag(self._diag.WARN, f"last step failed: {self.failure[:120]}", values)
        return self._diag(self._diag.OK, self.state, values)

    def close(self) -> None:
        """Stop a running step (the loop resumes it next time)."""
        self.runner.stop()


def main(args: list[str] | None = None) -> int:
    """``ros2 run flipper_learning trainer_node --ros-args -p bag_dir:=... -p loop_config:=... -p out:=...``."""
    from perception.ros_adapter import run_node

    return run_node(TrainerNode, args)  # closes the node (and so its running step) on the way out


if __name__ == "__main__":
    import sys

    sys.exit(main())
