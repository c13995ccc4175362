"""tf2-message-filter behaviour for the live DEM node (no ROS import): clouds wait for their transform.

rclpy's executor hands a node one message per subscription per cycle, so a cloud can be taken while
/tf messages that were sent before it still wait in the middleware. Built at once, such a cloud would
use an older transform than ``flipper replay`` uses over the same bag. ``DemSync`` keeps arriving clouds
in a FIFO and builds the oldest one only when, for every moving edge between the fixed frame, base_link
and the cloud's frame, a transform at or after the cloud's stamp has arrived (``TfBuffer.covers``):
then every /tf up to its stamp has been taken (one publisher's /tf arrives in order), and the lookup is
the one offline replay makes. A cloud waits at most ``tf_wait`` seconds (wall clock) and at most
``queue`` clouds wait; past either bound the oldest is built with what has arrived (the handler's
``tf_max_age`` rule then applies) and counted in ``forced``. With the self filter on, a cloud also waits
for /joint_states at or after its stamp and is filtered with the flipper angles of the latest one at or
before it (as ``flipper ingest`` does); where no
/joint_states has ever arrived, clouds stop waiting for them after the first times out.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from perception.dem_handler import DemHandler, DemResult
from perception.messages import to_nanoseconds

__all__ = ["DemSync"]


class DemSync:
    """Feeds a ``DemHandler`` in tf2 message-filter order (see the module docstring)."""

    def __init__(self, handler: DemHandler, tf_wait: float = 0.5, queue: int = 10,
                 clock: Callable[[], float] = time.monotonic, joint_history: int = 256):
        if not (tf_wait >= 0 and queue >= 1):
            raise ValueError(f"DemSync: tf_wait must be >= 0 s and queue >= 1, got {tf_wait}, {queue}")
        self.handler, self.tf_wait, self.queue, self.clock = handler, tf_wait, queue, clock
        self._pending: deque[tuple[float, Any]] = deque()  # (arrival, cloud)
        self._joint_times: list[int] = []
        self._joint_angles: list[np.ndarray] = []
        self._joint_history = joint_history
        # with the self filter on, a cloud also waits for /joint_states at or after its stamp (offline replay
        # filters with the flipper angles logged before the cloud); given up while none has ever arrived
        self._expect_joints = handler.config.self_filter
        self.forced = 0      # clouds built before a transform at their stamp arrived
        self.waited_s = 0.0  # longest wait of a cloud so far

    @property
    def pending(self) -> int:
        """Clouds waiting for their transform."""
        return len(self._pending)

    def on_tf(self, tf_message: Any, static: bool = False) -> list[DemResult]:
        """A /tf (or /tf_static) message; returns the DEMs of the clouds it completes."""
        self.handler.on_tf(tf_message, static)
        return self.poll()

    def on_joint_states(self, joint_states: Any) -> None:
        """A /joint_states message: its flipper angles join the history the self filter picks from."""
        before = self.handler.flipper_angles
        self.handler.on_joint_states(joint_states)
        angles = self.handler.flipper_angles
        if angles is None or angles is before:
            return
        self._expect_joints = self.handler.config.self_filter
        t = to_nanoseconds(joint_states.header.stamp)
        i = bisect.bisect_right(self._joint_times, t)
        self._joint_times.insert(i, t)
        self._joint_angles.insert(i, angles)
        if len(self._joint_times) > self._joint_history:
            del self._joint_times[0], self._joint_angles[0]

    def on_cloud(self, cloud: Any) -> list[DemResult]:
        """A PointCloud2: queued; returns the DEMs of the clouds that are ready now (maybe this one)."""
        self._pending.append((self.clock(), cloud))
        return self.poll()

    def poll(self) -> list[DemResult]:
        """Build the clouds that are ready or waited too long, oldest first (call it from a timer too)."""
        out = []
        now = self.clock()
        while self._pending:
            arrival, cloud = self._pending[0]
            ready = self._ready(cloud)
            if not ready and now - arrival < self.tf_wait and len(self._pending) <= self.queue:
                break
            self._pending.popleft()
            self.forced += not ready
            if not ready and not self._joint_times:
                self._expect_joints = False  # no /joint_states at all (yet): do not hold every cloud for them
            self.waited_s = max(self.waited_s, now - arrival)
            result = self._build(cloud)
            if result is not None:
                out.append(result)
        return out

    def _ready(self, cloud: Any) -> bool:
        c = self.handler.config
        try:
            t = to_nanoseconds(cloud.header.stamp)
            frame = cloud.header.frame_id
        except AttributeError:
            return True  # not a cloud: the handler says what is wrong with it
        if t < 0 or not frame:
            return True  # an invalid stamp or frame never becomes ready: the handler skips it with the reason
        joints = not self._expect_joints or (self._joint_times and self._joint_times[-1] >= t)
        return bool(joints) and self.handler.tf.covers(c.fixed_frame, c.base_frame, t) \
            and self.handler.tf.covers(c.fixed_frame, frame, t)

    def _build(self, cloud: Any) -> DemResult | None:
        latest = self.handler.flipper_angles
        try:
            i = bisect.bisect_right(self._joint_times, to_nanoseconds(cloud.header.stamp)) - 1
        except AttributeError:
            i = -1
        if i >= 0:
            self.handler.flipper_angles = self._joint_angles[i]
        try:
            return self.handler.on_cloud(cloud)
        finally:
            self.handler.flipper_angles = latest
