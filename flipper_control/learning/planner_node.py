"""The policy-guided RRT as a ROS 2 node: a thin rclpy file over ``trainer_watch`` (planning in a child process).

Two ways to ask it for plans:

- ``loop_config`` + ``out``: the planning step of the learning loop run in ``out`` -- each iteration's training
  worlds planned as the loop would (``iter_K/plans.*``, guided by iteration K-1's policy, iteration 1 by the config's
  ``first_guide`` if set) as soon as that policy exists; a ``trainer_node`` with ``wait_for_planner: true`` on the
  same ``out`` trains on them. Planning, the costly part, can so run on another machine than training.
- ``worlds`` (names, sets or YAML files, comma separated) + ``dataset``: ``flipper plan``'s path -- the worlds
  planned (guided by ``checkpoint`` if set), the trajectories written to ``dataset`` (safetensors) and a summary
  beside it (``dataset``.json). Planned again whenever these parameters change or the checkpoint is rewritten.

/diagnostics reports the state, the running step's last output line and the last failure. rclpy is imported only
through ``perception.ros_adapter``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from flipper_control.learning.trainer_watch import NextStep, StepRunner, next_plan_step, node_param, step_command

NODE_NAME = "planner_node"


@dataclass(frozen=True)
class PlannerNodeConfig:
    """planner_node's parameters (each a ROS parameter with its description and range)."""

    loop_config: str = node_param("", "learning-loop YAML: plan its iterations in `out` (empty: plan `worlds` instead)")
    out: str = node_param("", "the loop's output folder (with loop_config)")
    worlds: str = node_param("", "worlds to plan, comma separated: names (stairs_up), sets (test, training) or YAML files")
    dataset: str = node_param("", "where the planned trajectories go (safetensors; a summary beside it as .json)")
    checkpoint: str = node_param("", "policy checkpoint guiding the expansion (empty: unguided); a rewrite plans again")
    action_set: str = node_param("coarse", "coarse (3 x 1000 ms), fine (7 x 200 ms), fine_rear or NAME@DT")
    seed: int = node_param(0, "planning seed of the first world (the next get seed+1, ...)", 0, 2**31 - 1)
    poll_s: float = node_param(5.0, "seconds between looks at the loop's state and the checkpoint", 0.05, 3600.0)


class PlannerNode:
    """Plan what is asked (see the module docstring), one planning step at a time."""

    def __init__(self, node_name: str = NODE_NAME):
        from perception.ros_adapter import ConfigError, DiagStatus, NodeAdapter

        self.adapter = a = NodeAdapter(node_name, PlannerNodeConfig)
        self._diag, self._config_error = DiagStatus, ConfigError
        self.loop_config = None
        self.state, self.failure, self.done_request = "starting", "", None
        self._retry_at = 0.0
        self._check(a.config)
        self.runner = StepRunner(Path(a.config.out or Path(a.config.dataset).parent or ".") / "planner_logs")
        a.on_config_change(self._check)
        a.diagnose(self.diagnose)
        self._timer = a.timer(a.config.poll_s, self.tick)

    def _check(self, config: PlannerNodeConfig) -> None:
        """Exactly one way of asking, with what it needs; the worlds must resolve (ConfigError naming the problem)."""
        name = self.adapter.name
        if config.loop_config:
            from flipper_control.learning.loop_config import load_loop_config

            if not config.out:
                raise self._config_error(f"{name}: loop_config needs `out` (the loop's folder)")
            try:
                self.loop_config = load_loop_config(config.loop_config)
            except ValueError as exc:
                raise self._config_error(f"{name}: loop_config: {exc}") from None
        elif config.worlds or config.dataset:
            if not (config.worlds and config.dataset):
                raise self._config_error(f"{name}: `worlds` and `dataset` go together (plan these worlds into that file)")
            from sim.world import WorldError
            from sim.world_sets import resolve_worlds

            try:
                resolve_worlds([w.strip() for w in config.worlds.split(",") if w.strip()])
            except WorldError as exc:
                raise self._config_error(f"{name}: worlds: {exc}") from None
            self.loop_config = None
        else:
            raise self._config_error(f"{name}: set loop_config + out (plan the loop's iterations) or worlds + dataset")

    def _request(self, c: PlannerNodeConfig) -> tuple:
        from sim.checkpoint_io import checkpoint_signature  # deferred: it imports torch

        signature = checkpoint_signature(c.checkpoint) if c.checkpoint else None
        return (c.worlds, c.dataset, c.checkpoint, c.action_set, c.seed, signature)

    def tick(self) -> None:
        """Collect a finished planning step, then start the next one."""
        c = self.adapter.config
        rc = self.runner.poll()
        if rc is not None:
            step = self.runner.step
            if rc == 0:
                self.failure = ""
                if step.kind == "plan_worlds":
                    self.done_request = step.bags  # the request it planned (kept in `bags`)
                self.adapter.logger.info(f"{step.kind} done: {step.why}")
            else:
                self.failure = f"{step.kind} (exit {rc}): {self.runner.tail()} (log {self.runner.log_path})"
                self._retry_at = time.monotonic() + min(600.0, 10 * c.poll_s)
                self.adapter.warn_throttled("step failed", f"planning failed: {self.failure}; retrying later", 60.0)
        if self.runner.running or time.monotonic() < self._retry_at:
            return
        if c.loop_config:
            step = next_plan_step(self.loop_config, c.out)
        else:
            request = tuple(str(v) for v in self._request(c))
            step = (NextStep("done", f"planned {c.worlds} into {c.dataset}") if request == self.done_request else
                    NextStep("plan_worlds", f"planning {c.worlds} into {c.dataset}", bags=request))
        self.state = f"{step.kind}: {step.why}"
        if step.kind in ("wait", "done"):
            return
        paths = {"out": c.out if c.loop_config else c.dataset, "loop_config": c.loop_config, "worlds": c.worlds,
                 "checkpoint": c.checkpoint, "action_set": c.action_set, "seed": str(c.seed)}
        self.runner.start(step, step_command(step, paths), env=dict(os.environ))
        self.adapter.logger.info(f"started {step.kind}: {step.why}")

    def diagnose(self):
        values = {"state": self.state}
        if self.runner.running:
            values["step running s"] = f"{time.monotonic() - self.runner.started:.0f}"
            values["step output"] = self.runner.tail()
        if self.failure:
            values["last failure"] = self.failure
            return self._diag(self._diag.WARN, f"last planning step failed: {self.failure[:120]}", values)
        return self._diag(self._diag.OK, self.state, values)

    def close(self) -> None:
        """Stop a running planning step (the loop's planning resumes from scratch for that iteration)."""
        self.runner.stop()


def main(args: list[str] | None = None) -> int:
    """``ros2 run flipper_learning planner_node --ros-args -p worlds:=test -p dataset:=plans.safetensors``."""
    from perception.ros_adapter import run_node

    return run_node(PlannerNode, args)  # closes the node (and so its running step) on the way out


if __name__ == "__main__":
    import sys

    sys.exit(main())
