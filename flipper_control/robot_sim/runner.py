"""Pacing of ``RobotSim``: real time (or a real-time factor) or lockstep, on a thread of its own; no ROS.

The node hands ``Runner`` a ``publish(topic, message)`` callable and feeds it the decoded inputs
(``on_command``, ``on_cmd_vel``) from its executor thread; ``run()`` (the runner's thread) does the rest:

1. publish the start state, then hold at t = 0, republishing it every ``hold_period``, until the first flipper
   command arrives (at most ``start_timeout``): discovery takes seconds, and a robot waits for its controller;
2. per control step: wait for the controller's answer to the last published step (lockstep: up to
   ``command_timeout``; real time: up to ``command_wait``), simulate the step with the latest command, wait until
   the wall time at which the step's last sample is due (real time only) and publish the step's messages;
3. publish the result (latched) and, if configured, write it to ``result_file``.

Waiting for the answer before simulating the next step is what makes a command answer the step it was computed
from, as in ``sim.rollout.run_episode`` (the proxy adds the robot's own dead time); a step that runs late in real
time is counted (``late_steps``) and not made up by skipping simulation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flipper_control.robot_sim.core import RESULT_TOPIC, RobotSim

__all__ = ["Runner"]

log = logging.getLogger(__name__)


class Runner:
    """Drives one ``RobotSim`` run and publishes through ``publish`` (see the module docstring)."""

    def __init__(self, sim: RobotSim, publish: Callable[[str, Any], None], clock: Callable[[], float] = time.monotonic):
        self.sim = sim
        self.publish = publish
        self.clock = clock
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self._cond = threading.Condition()
        self._fresh = 0  # commands received since the last step was published
        self.late_steps = 0
        self.command_timeouts = 0
        self.wall_s = 0.0
        self.run_wall_s = self.run_sim_s = 0.0  # after the hold: what the real-time factor is measured over
        self.started_without_command = False

    # ------------------------------------------------------------------ inputs (executor thread)
    def on_command(self, message: Any) -> None:
        """A decoded /flipper_controller/commands message; raises ``CommandError`` (the node logs it) when bad."""
        with self._cond:
            self.sim.on_command(message)
            self._fresh += 1
            self._cond.notify_all()

    def on_cmd_vel(self, message: Any) -> None:
        """A decoded /cmd_vel message; raises ``CommandError`` when bad."""
        with self._cond:
            self.sim.on_cmd_vel(message)

    def stop(self) -> None:
        """Ask ``run`` to end after the current step (the result says the run was stopped)."""
        self.stop_event.set()
        with self._cond:
            self._cond.notify_all()

    # ------------------------------------------------------------------ the run (runner thread)
    def _publish_all(self, messages: list[tuple[str, Any]]) -> None:
        for topic, message in messages:
            self.publish(topic, message)

    def _wait_for_command(self, timeout: float) -> bool:
        """Wait up to ``timeout`` wall seconds for a command newer than the last published step."""
        deadline = self.clock() + timeout
        with self._cond:
            while self._fresh == 0 and not self.stop_event.is_set():
                left = deadline - self.clock()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return self._fresh > 0

    def _hold(self) -> None:
        c = self.sim.config
        deadline = self.clock() + c.start_timeout
        while self.sim.commands == 0 and not self.stop_event.is_set():
            left = deadline - self.clock()
            if left <= 0:
                self.started_without_command = True
                log.warning("robot_sim: no flipper command within start_timeout %.1f s; starting with the start "
                            "posture (is a policy_node publishing /flipper_controller/commands?)", c.start_timeout)
                return
            if not self._wait_for_command(min(c.hold_period, left)):
                self._publish_all(self.sim.start_messages())  # a subscriber that matched late gets the start too

    def run(self) -> dict[str, Any]:
        """One whole run; returns the result dict (also published on ``RESULT_TOPIC``)."""
        sim, c = self.sim, self.sim.config
        t0 = self.clock()
        with self._cond:
            start = sim.start()
            self._fresh = 0
        self._publish_all(start)
        if c.start_timeout > 0:
            self._hold()
        wall0, sim0 = self.clock(), sim.time
        period = c.control_dt / c.real_time_factor
        compute = 0.0  # wall seconds the last step took to simulate
        while sim.running and not self.stop_event.is_set():
            if c.lockstep:
                if not self._wait_for_command(c.command_timeout):
                    self.command_timeouts += 1
            else:  # the answer may take command_wait, but the step must still be out on time
                next_due = wall0 + (sim.time + c.control_dt - sim0) / c.real_time_factor
                self._wait_for_command(min(c.command_wait, next_due - 1.2 * compute - self.clock()))
            tick = self.clock()
            with self._cond:
                messages = sim.step()
                self._fresh = 0  # an answer to this step comes after its messages
            compute = self.clock() - tick
            if not c.lockstep:
                due = wall0 + (sim.time - sim0) / c.real_time_factor
                late = self.clock() - due
                if late > period:
                    self.late_steps += 1
                elif late < 0:
                    self.stop_event.wait(-late)
            self._publish_all([(t, m) for t, m in messages if t != RESULT_TOPIC])
        self.run_wall_s, self.run_sim_s = self.clock() - wall0, sim.time - sim0
        with self._cond:
            if sim.result is None:  # stopped from outside before the run ended
                sim.finish(stopped=True)
        self.wall_s = self.clock() - t0
        sim.result.update(self.stats())
        self.publish(RESULT_TOPIC, sim.result_message())
        if c.result_file:
            sim.write_result(c.result_file)
        self.done.set()
        return dict(sim.result)

    def stats(self) -> dict[str, Any]:
        """Pacing figures: wall seconds (all), the real-time factor achieved after the hold, late steps, lockstep timeouts."""
        rtf = self.run_sim_s / self.run_wall_s if self.run_wall_s > 0 else None
        return {"wall_s": round(self.wall_s, 3), "real_time_factor": round(rtf, 3) if rtf is not None else None,
                "late_steps": self.late_steps, "command_timeouts": self.command_timeouts,
                "started_without_command": self.started_without_command, "lockstep": self.sim.config.lockstep}
