"""The pure core of ``policy_node`` (no ROS import): GridMap + Imu + JointState in, flipper commands out.

``PolicyRuntime`` is fed rosbags typestore messages (``perception.messages``) in arrival order, each with the
monotonic time it arrived, and answers with ``Command`` objects to publish on the ros2_control forward position
controller (``std_msgs/Float64MultiArray`` in the order of its ``joints`` parameter):

- **Decisions on GridMap arrival.** Every valid GridMap is decided at once (its latency is the node's figure of
  merit). The policy sees exactly what ``flipper replay --policy`` feeds it (``flipper_control.learning.bags``):
  the DEM as built (float32, NaN where unseen), pitch and roll of the /imu/data orientation and the four flipper
  angles of /joint_states, both the latest *stamped at or before the DEM's stamp* (the DEM's cloud stamp), so
  that a message that overtook a slow DEM does not change the decision. Optionally the DEM goes through the
  sim -> real transform G first (``perception.sim_to_real.SimToReal``), as in the loop's ``ThroughTransform``.
- **Limits.** Targets are clamped to the joint range and, with ``max_rate`` > 0, moved at most
  ``max_rate * dt`` per command (``dt``: time since the last command, at most one timer period); a target cut
  short is approached further on every timer tick.
- **Watchdog.** On every tick, an input not received for longer than its timeout (counted from the start while
  none has arrived yet) sends the flippers to ``safe_posture`` (rate limited) with a warning, until it is back.
  An all-NaN DEM and an exception in the policy (or G) give the safe posture too; neither ever propagates.
- **Checkpoint hot swap.** ``swap_checkpoint(path)`` loads and validates the candidate outside the lock
  (``flipper_control.checkpoint_swap``) and only then replaces the running policy (one reference assignment under
  the lock); on any failure the old policy stays and the reason is kept. ``checkpoint_changed()`` tells when the
  watched files changed (mtime or size of the weights or the sidecar): the trainer rewrote them.

Malformed input (a GridMap whose data does not match its info, a JointState without the flipper joints, a NaN
orientation, a DEM of another shape) is dropped with a throttled warning naming the problem, counted in
``dropped``. The configuration (``PolicyNodeConfig``) and the Imu / JointState readers are in
``flipper_control.policy_node_config``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from flipper_control.checkpoint_swap import SwapResult, load_candidate, load_transform, validate_policy
from flipper_control.policy_node_config import PolicyNodeConfig, flipper_angles, pitch_roll
from perception.gridmap import GridMapError, gridmap_to_dem
from perception.map_clock import MapClock
from perception.messages import ELEVATION_MAP, IMU, JOINT_STATES, to_nanoseconds

__all__ = ["Command", "PolicyRuntime", "SwapResult"]

log = logging.getLogger(__name__)

_NS = 1_000_000_000
OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


@dataclass(frozen=True)
class Command:
    """One command to publish: ``positions`` in the controller's joint order; ``source`` 'policy' or 'safe'."""

    positions: np.ndarray
    source: str
    reason: str = ""
    arrived: float | None = None  # arrival time of the GridMap it decides (None: a timer command)


class _History:
    """Stamped values of one input for at-or-before lookups, ``keep_ns`` behind the newest (and at most 4096)."""

    def __init__(self, keep_s: float):
        self.keep_ns = int(keep_s * _NS)
        self.items: deque[tuple[int, Any]] = deque(maxlen=4096)
        self.newest = -(2**63)

    def add(self, t_ns: int, value: Any) -> None:
        self.items.append((t_ns, value))
        self.newest = max(self.newest, t_ns)
        while self.items[0][0] < self.newest - self.keep_ns:  # never empties: the newest stays
            self.items.popleft()

    def latest(self) -> Any | None:
        """The value that arrived last, or None."""
        return self.items[-1][1] if self.items else None

    def at_or_before(self, t_ns: int) -> Any | None:
        """The latest value (in arrival order) stamped at or before ``t_ns``; else the latest one; None if empty."""
        for t, v in reversed(self.items):
            if t <= t_ns:
                return v
        return self.items[-1][1] if self.items else None


class PolicyRuntime:
    """The stateful core of ``policy_node``; see the module docstring. ``now`` arguments: monotonic seconds."""

    WARN_FIRST, WARN_EVERY = 5, 100  # per problem kind: the first few, then every 100th (a stream of bad input)

    def __init__(self, config: PolicyNodeConfig | None = None, now: float = 0.0, policy=None, transform=None,
                 topics: dict[str, str] | None = None):
        """Loads ``config.checkpoint`` (and ``gan_checkpoint``) unless ``policy`` (a ``NanAwarePolicy``-like object with
        ``act_numpy`` and ``config``) or ``transform`` (a ``SimToReal``-like callable) are given; a checkpoint that
        fails validation raises ValueError naming it (refused at start). ``topics`` (keys gridmap, imu,
        joint_states) only name the inputs in warnings."""
        self.config = c = config or PolicyNodeConfig()
        self.topics = {"gridmap": ELEVATION_MAP, "imu": IMU, "joint_states": JOINT_STATES, **(topics or {})}
        self._lock = threading.Lock()
        self._derive(c)
        self.started = now
        self._imu, self._joints = _History(c.state_history), _History(c.state_history)
        self._arrived: dict[str, float] = {}
        self._last: np.ndarray | None = None  # the last command, policy order
        self._last_time: float | None = None
        self._target: np.ndarray | None = None  # what the last command heads for
        self._target_reason = ("safe", "")
        self._pending: tuple | None = None  # (stamp ns, DEM, arrival) of a map waiting for its Imu / JointState
        self.stale: tuple[str, ...] = ()
        self.dropped: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()  # decisions, safe commands, policy errors, ...
        self.last_error = ""
        self.swaps: list[SwapResult] = []
        self.transform = transform
        self._map_clock = MapClock()  # the map's age for a G that takes it: seconds since the first GridMap stamp
        if transform is None and c.gan_checkpoint:
            self.transform = load_transform(c.gan_checkpoint, c.gan_seed)
        self.policy, self.checkpoint, self._signature = None, "", None
        if policy is not None:
            reason = self._validate(policy, self.transform)
            if reason:
                raise ValueError(f"policy: {reason}")
            self.policy = policy
        elif c.checkpoint:
            result = self.swap_checkpoint(c.checkpoint)
            if not result.accepted:
                raise ValueError(f"PolicyNodeConfig.checkpoint: {result.reason}")

    # ------------------------------------------------------------------ problems
    def drop(self, kind: str, problem: str) -> None:
        """Count a dropped input of ``kind`` and warn (the first few, then every 100th) with ``problem``."""
        self.dropped[kind] += 1
        n = self.dropped[kind]
        if n <= self.WARN_FIRST or n % self.WARN_EVERY == 0:
            log.warning("policy node: dropped %s (%d so far): %s", kind, n, problem)

    # ------------------------------------------------------------------ inputs
    def on_imu(self, imu: Any, now: float) -> Command | None:
        """A sensor_msgs/Imu (dropped, warned, when its orientation is NaN or zero); returns the decision of a
        waiting map that it completes or that waited past ``state_wait``, else None."""
        pr = pitch_roll(imu)
        if pr is None:
            o = imu.orientation
            self.drop("imu", f"{self.topics['imu']}: orientation ({o.w}, {o.x}, {o.y}, {o.z}) is not a rotation")
            return None
        return self._take_state(self._imu, "imu", to_nanoseconds(imu.header.stamp), pr, now)

    def on_joint_states(self, joint_states: Any, now: float) -> Command | None:
        """A sensor_msgs/JointState (dropped, warned, without four finite flipper angles); returns the decision of
        a waiting map that it completes or that waited past ``state_wait``, else None."""
        angles = flipper_angles(joint_states, self.config.flipper_joints)
        if isinstance(angles, str):
            self.drop("joint_states", f"{self.topics['joint_states']}: {angles}")
            return None
        return self._take_state(self._joints, "joint_states", to_nanoseconds(joint_states.header.stamp), angles, now)

    def on_gridmap(self, gridmap: Any, now: float) -> Command | None:
        """A grid_map_msgs/GridMap: the decision for it (a Command to publish at once), or None when it is dropped,
        no Imu / JointState has arrived yet, or it waits (at most ``state_wait``) for the Imu and JointState
        stamped at or after it, which ``on_imu`` / ``on_joint_states`` / ``tick`` then decide."""
        try:
            dem, _ = gridmap_to_dem(gridmap, self.config.layer)
        except GridMapError as exc:
            self.drop("gridmap", f"{self.topics['gridmap']}: {exc}")
            return None
        policy = self.policy
        if policy is not None and dem.shape != tuple(policy.config.dem_shape):
            self.drop("gridmap", f"{self.topics['gridmap']}: DEM of {dem.shape[0]} x {dem.shape[1]} cells, the "
                                  f"policy takes {policy.config.dem_shape[0]} x {policy.config.dem_shape[1]}")
            return None
        self._arrived["gridmap"] = now
        earlier = None
        if self._pending is not None:  # a newer map overtakes: the older one is decided with what is there
            self.counts["decided before the state at its stamp"] += 1
            earlier = self._decide(self._pending, now)
        self._pending = (to_nanoseconds(gridmap.header.stamp), dem, now)
        if self.config.state_wait <= 0 or self._stale_now(now) or self._state_complete():
            decided = self._decide(self._pending, now)
            return decided if decided is not None else earlier
        return earlier

    def _state_complete(self) -> bool:
        """Whether the Imu and the JointState stamped at or after the pending map's stamp have been taken: the
        executor hands over one message per subscription per cycle, so a map can overtake queued state."""
        return self._imu.newest >= self._pending[0] and self._joints.newest >= self._pending[0]

    def _take_state(self, history: _History, kind: str, t_ns: int, value: Any, now: float) -> Command | None:
        """Store a valid Imu / JointState reading, then decide the pending map once its state is complete, or
        once it has waited ``state_wait`` in vain. A message that has just brought its own kind up to the map's
        stamp does not decide an expired map alone: the other kind's message may be queued behind it in the same
        executor cycle (rclpy hands over one message per subscription per cycle), and deciding now would take
        the older state, which ``flipper replay`` would not."""
        completes = self._pending is not None and history.newest < self._pending[0] <= t_ns
        history.add(t_ns, value)
        self.counts[f"{kind} readings"] += 1  # beside the bag's count, a reading lost on the way shows
        self._arrived[kind] = now
        if self._pending is None:
            return None
        if self._state_complete():
            return self._decide(self._pending, now)
        if now - self._pending[2] >= self.config.state_wait and not completes:
            self.counts["decided before the state at its stamp"] += 1
            return self._decide(self._pending, now)
        return None

    def _decide(self, pending: tuple, now: float) -> Command | None:
        """The command for a map (stamp, DEM, arrival time): the policy's, or the safe posture."""
        self._pending = None
        t_ns, dem, arrived = pending
        policy, transform = self.policy, self.transform  # one consistent pair, even if a swap lands meanwhile
        pr, angles = self._imu.at_or_before(t_ns), self._joints.at_or_before(t_ns)
        if pr is None or angles is None:
            self.counts["gridmap without state"] += 1  # as replay: no decision before pitch, roll and angles are known
            return None
        if self._stale_now(now):
            return self._command(self._safe, now, "safe", "stale input: " + ", ".join(self.stale), arrived)
        if policy is None:
            return self._command(self._safe, now, "safe", "no policy loaded", arrived)
        if not np.isfinite(dem).any():
            self.counts["all-NaN DEM"] += 1
            return self._command(self._safe, now, "safe", "all-NaN DEM", arrived)
        proprio = np.concatenate((pr, angles)).astype(np.float32)  # exactly replay's policy input
        try:
            if transform is not None:
                dem = self._map_clock.apply(transform, dem, proprio, t_ns)
            target = np.asarray(policy.act_numpy(dem, proprio), dtype=float)
            if target.shape != (4,) or not np.all(np.isfinite(target)):
                raise ValueError(f"the policy returned {target.tolist()}, not 4 finite angles")
        except Exception as exc:  # noqa: BLE001 - nothing the policy raises may stop the node
            self.counts["policy errors"] += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            n = self.counts["policy errors"]
            if n <= self.WARN_FIRST or n % self.WARN_EVERY == 0:
                log.warning("policy node: policy failed (%d so far), safe posture: %s", n, self.last_error)
            return self._command(self._safe, now, "safe", "policy error: " + self.last_error, arrived)
        self.counts["decisions"] += 1
        return self._command(target, now, "policy", "", arrived)

    # ------------------------------------------------------------------ timer
    def _stale_now(self, now: float) -> bool:
        c = self.config
        timeouts = {"gridmap": c.gridmap_timeout, "imu": c.imu_timeout, "joint_states": c.joint_states_timeout}
        stale = tuple(name for name, limit in timeouts.items() if now - self._arrived.get(name, self.started) > limit)
        if stale != self.stale:
            if stale:
                ages = ", ".join(f"{n} {'never received' if n not in self._arrived else f'{now - self._arrived[n]:.2f} s old'}"
                                 for n in stale)
                log.warning("policy node: stale input (%s): moving to the safe posture %s", ages, list(c.safe_posture))
            else:
                log.info("policy node: all inputs fresh again, the policy is back in control")
            self.stale = stale
        return bool(stale)

    def tick(self, now: float) -> Command | None:
        """The timer: the safe posture while an input is stale (deciding a waiting map with it), the decision of
        a map that waited ``state_wait`` before any Imu or JointState came, the next rate-limited step towards a
        target that the last command fell short of, else None (a forward controller holds its last command)."""
        # A map that waited state_wait in vain is decided here only while an input is stale or no state has
        # arrived at all; otherwise the next Imu / JointState decides it (``_take_state``). rclpy runs a due timer
        # before queued messages, so on a starved machine the timer would otherwise decide the map with older
        # state while its own waits in the queue.
        expired = self._pending is not None and now - self._pending[2] >= self.config.state_wait
        no_state = self._imu.latest() is None or self._joints.latest() is None
        if self._pending is not None and (self._stale_now(now) or (expired and no_state)):
            self.counts["decided before the state at its stamp"] += 1
            decided = self._decide(self._pending, now)
            if decided is not None:
                return decided
        if self._stale_now(now):
            if self._last is None and self._joints.latest() is None:
                return None  # neither a command nor the flipper angles known: nothing to move from
            return self._command(self._safe, now, "safe", "stale input: " + ", ".join(self.stale))
        if self._target is not None and self._last is not None and not np.array_equal(self._last, self._target):
            return self._command(self._target, now, *self._target_reason)
        return None

    def _command(self, target: np.ndarray, now: float, source: str, reason: str = "",
                 arrived: float | None = None) -> Command:
        """Clamp to the joint range, rate-limit from the last command (or the measured angles), remember it."""
        target = np.clip(np.asarray(target, dtype=float), self._lower, self._upper)
        out = target
        rate = self.config.max_rate
        if rate > 0:
            prev = self._last if self._last is not None else self._joints.latest()
            if prev is not None:
                period = 1.0 / self.config.rate_hz
                dt = period if self._last_time is None else min(max(now - self._last_time, 0.0), period)
                out = prev + np.clip(target - prev, -rate * dt, rate * dt)
        self._last, self._last_time, self._target = out, now, target
        self._target_reason = (source, reason)
        if source == "safe":
            self.counts["safe commands"] += 1
        return Command(out[self._order].copy(), source, reason, arrived)

    # ------------------------------------------------------------------ checkpoints
    def _validate(self, policy, transform) -> str:
        """Why ``policy`` (behind ``transform``, if any) cannot replace the running policy here ('' when it can)."""
        return validate_policy(policy, transform, self.config.safe_posture, running=self.policy)

    def checkpoint_changed(self) -> bool:
        """Whether the watched checkpoint's files differ from those last loaded or last refused."""
        path = self.checkpoint or self.config.checkpoint
        if not path:
            return False
        from sim.checkpoint_io import checkpoint_signature  # deferred: it imports torch

        sig = checkpoint_signature(path)
        return sig is not None and sig != self._signature

    def swap_checkpoint(self, path: str) -> SwapResult:
        """Load and validate checkpoint ``path``; swap it in atomically if it passes, else keep the running policy.
        Thread-safe (the node may run it beside the executor); the slow part runs outside the lock."""
        # validated against the policy and G current once the load is done, not those at the call: nothing is locked
        candidate, sig, reason = load_candidate(path, lambda policy: self._validate(policy, self.transform))
        with self._lock:
            if path == (self.checkpoint or self.config.checkpoint):
                self._signature = sig  # refused or not, these files are not tried again until they change
            if reason:
                result = SwapResult(False, str(path), f"{path}: {reason}")
                log.warning("policy node: checkpoint refused, %s policy kept: %s",
                            "the running" if self.policy is not None else "no", result.reason)
            else:
                self.policy, self.checkpoint, self._signature = candidate, str(path), sig
                result = SwapResult(True, str(path))
                log.info("policy node: checkpoint %s swapped in", path)
            self.swaps.append(result)
            del self.swaps[:-20]
        return result

    # ------------------------------------------------------------------ parameters
    def _derive(self, c: PolicyNodeConfig) -> None:
        self._order = [c.flipper_joints.index(j) for j in c.controller_joints]
        self._lower, self._upper = c.joint_lower, c.joint_upper
        self._safe = np.asarray(c.safe_posture, dtype=float)

    def reconfigure(self, new: PolicyNodeConfig) -> None:
        """Apply a changed config (a ROS parameter change); raises ValueError, changing nothing, when it is refused:
        a checkpoint or G that fails validation, or an empty checkpoint while a policy runs. A new ``checkpoint``
        is swapped in and watched from then on; ``flipper_joints`` changes forget the angles received so far."""
        old = self.config
        transform = self.transform
        if (new.gan_checkpoint, new.gan_seed) != (old.gan_checkpoint, old.gan_seed):
            transform = load_transform(new.gan_checkpoint, new.gan_seed) if new.gan_checkpoint else None
            if self.policy is not None and (reason := self._validate(self.policy, transform)):
                raise ValueError(f"gan_checkpoint {new.gan_checkpoint!r} does not fit the running policy: {reason}")
        if new.checkpoint != old.checkpoint:
            if not new.checkpoint:
                raise ValueError("checkpoint: an empty path would leave the node without a policy; give a checkpoint")
            saved = self.transform
            self.transform = transform  # validate the new policy behind the new G
            result = self.swap_checkpoint(new.checkpoint)
            if not result.accepted:
                self.transform = saved
                raise ValueError(f"checkpoint refused, the running one kept: {result.reason}")
        with self._lock:
            self.transform = transform
            if new.flipper_joints != old.flipper_joints:
                self._joints = _History(new.state_history)
            self._derive(new)
            self.config = new

    # ------------------------------------------------------------------ diagnostics
    def status(self, now: float) -> tuple[int, str, dict[str, str]]:
        """(level OK/WARN/ERROR, message, key-values) for /diagnostics."""
        self._stale_now(now)
        refused = [s for s in self.swaps if not s.accepted]
        if self.policy is None:
            level, message = ERROR, "no policy loaded: holding the safe posture"
        elif self.stale:
            level, message = WARN, "stale input (" + ", ".join(self.stale) + "): safe posture"
        elif self.swaps and not self.swaps[-1].accepted:
            level, message = WARN, "the last checkpoint was refused: " + self.swaps[-1].reason
        else:
            level, message = OK, "running"
        values = {"checkpoint": self.checkpoint, "gan_checkpoint": self.config.gan_checkpoint,
                  **{k: str(v) for k, v in self.counts.items()},
                  **{f"dropped {k}": str(v) for k, v in self.dropped.items()},
                  "last policy error": self.last_error,
                  "swaps accepted": str(sum(s.accepted for s in self.swaps)), "swaps refused": str(len(refused)),
                  "last refusal": refused[-1].reason if refused else ""}
        return level, message, values
