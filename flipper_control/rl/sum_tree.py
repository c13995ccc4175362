"""Proportional prioritized experience replay (Schaul et al. 2016; seed 004) over an array-based sum tree.

The sum tree is a complete binary tree in one flat array (the heap layout: the root at 1, the children of node
``i`` at ``2i`` and ``2i + 1``, the leaves at ``n_leaves + slot``); each inner node holds the sum of its two
children, so the root holds the total priority. Both operations walk one root-leaf path, O(log n):

- ``update``: set leaves, then recompute each ancestor from its two children (recomputing rather than adding a
  delta keeps float rounding from accumulating over millions of updates);
- ``find``: descend from the root, going left when the value is below the left child's sum, else subtracting it
  and going right; the leaf reached is the one whose cumulative-priority interval holds the value.

Both are vectorised over a batch: one numpy operation per tree level, not a Python loop per item.

``PrioritizedReplay`` stores transitions in a ``ReplayMemory`` and their priorities ``(|td| + eps) ** alpha`` in the
tree; a sample draws slot ``i`` with probability ``P(i) = p_i / sum p`` (stratified: one draw from each of
``batch`` equal segments of the total, which lowers the variance of a batch) and returns importance-sampling
weights ``w_i = (N P(i)) ** -beta`` divided by the batch's largest, so that they only ever scale updates down.
New transitions get the largest priority seen so far, so that each is replayed at least about once.
"""

from __future__ import annotations

import numpy as np

from flipper_control.rl.replay import Batch, ReplayMemory

__all__ = ["PrioritizedReplay", "SumTree", "annealed_beta"]


class SumTree:
    """Priorities of ``capacity`` slots (all 0 at first) with O(log n) update and prefix-sum search."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"sum tree capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        # leaves padded to a power of two: every leaf is then at the same depth, so a batch descends in lockstep
        self.n_leaves = 1 << max(0, (self.capacity - 1).bit_length())
        self.depth = self.n_leaves.bit_length() - 1
        self.tree = np.zeros(2 * self.n_leaves, dtype=np.float64)

    @property
    def total(self) -> float:
        """The sum of all priorities (the root)."""
        return float(self.tree[1])

    def priorities(self, slots) -> np.ndarray:
        """The priorities of ``slots``."""
        return self.tree[self.n_leaves + np.asarray(slots, dtype=np.int64)]

    def update(self, slots, priorities) -> None:
        """Set the priorities of ``slots`` (non-negative, finite) and every ancestor's sum."""
        slots = np.atleast_1d(np.asarray(slots, dtype=np.int64))
        priorities = np.broadcast_to(np.asarray(priorities, dtype=np.float64), slots.shape)
        if slots.size and (slots.min() < 0 or slots.max() >= self.capacity):
            raise IndexError(f"sum tree slot out of range 0..{self.capacity - 1}: {slots.min()}..{slots.max()}")
        if not np.all(np.isfinite(priorities)) or np.any(priorities < 0):
            raise ValueError("priorities must be finite and >= 0")
        # a slot given twice keeps its last priority, as a loop of single updates would
        self.tree[self.n_leaves + slots] = priorities
        nodes = self.n_leaves + slots
        tree = self.tree
        for _ in range(self.depth):  # one level at a time, leaves' parents first, the root last
            nodes = nodes >> 1
            left = nodes << 1
            # a node listed twice gets the same sum twice: no need to deduplicate (a sort per level)
            tree[nodes] = tree[left] + tree[left + 1]

    def find(self, values) -> np.ndarray:
        """The slot whose cumulative-priority interval ``[c_i, c_i + p_i)`` holds each value of ``values`` (in
        ``[0, total)``). A slot with priority 0 is never returned while the total is positive."""
        values = np.array(values, dtype=np.float64, copy=True).reshape(-1)
        nodes = np.ones(values.shape, dtype=np.int64)
        tree = self.tree
        for _ in range(self.depth):
            nodes <<= 1  # the left child
            left_sum = tree[nodes]
            go_right = values >= left_sum
            values -= left_sum * go_right
            nodes += go_right
        slots = nodes - self.n_leaves
        empty = tree[nodes] <= 0
        if empty.any():  # rounding put a value on the far edge of an empty subtree (rare): the nearest slot to its left
            slots[empty] = self._last_nonzero_at_or_before(slots[empty])
        return slots

    def _last_nonzero_at_or_before(self, slots: np.ndarray) -> np.ndarray:
        """For each slot, the last slot at or before it with a positive priority (else the first positive one)."""
        nonzero = np.flatnonzero(self.tree[self.n_leaves:self.n_leaves + self.capacity] > 0)
        at = np.searchsorted(nonzero, slots, side="right") - 1
        return nonzero[np.maximum(at, 0)]

    def sample(self, batch_size: int, rng: np.random.Generator, stratified: bool = True) -> np.ndarray:
        """``batch_size`` slots drawn with probability proportional to priority: one uniform value per equal segment
        of the total (``stratified``), or independent uniform values."""
        total = self.total
        if not total > 0:
            raise ValueError("cannot sample from a sum tree whose priorities are all 0")
        if stratified:
            values = (np.arange(batch_size) + rng.random(batch_size)) * (total / batch_size)
        else:
            values = rng.random(batch_size) * total
        return self.find(np.minimum(values, np.nextafter(total, 0.0)))


def annealed_beta(beta0: float, done: int, total: int) -> float:
    """The importance-sampling exponent annealed linearly from ``beta0`` to 1 over ``total`` steps (Schaul et al.:
    the correction matters most at the end of training, when the estimates should be unbiased)."""
    if total <= 0:
        return 1.0
    return float(min(1.0, beta0 + (1.0 - beta0) * done / total))


class PrioritizedReplay:
    """A replay memory sampled in proportion to ``(|td error| + eps) ** alpha`` with importance-sampling weights.

    ``alpha = 0`` is uniform replay; ``beta = 1`` corrects the sampling bias fully.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype=np.float32, alpha: float = 0.6,
                 eps: float = 1e-6):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"PER alpha must be in [0, 1], got {alpha}")
        if not eps > 0:
            raise ValueError(f"PER eps must be > 0 (a transition of priority 0 would never be replayed), got {eps}")
        self.memory = ReplayMemory(capacity, obs_shape, obs_dtype)
        self.tree = SumTree(capacity)
        self.alpha, self.eps = float(alpha), float(eps)
        self.max_priority = 1.0  # of |td| + eps, before the exponent

    def __len__(self) -> int:
        return len(self.memory)

    def add(self, obs, action: int, reward: float, next_obs, done: bool) -> int:
        """Store one transition at the largest priority so far; returns its slot."""
        slot = self.memory.add(obs, action, reward, next_obs, done)
        self.tree.update(slot, self.max_priority ** self.alpha)
        return slot

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float) -> tuple[Batch, np.ndarray]:
        """(batch, importance-sampling weights as float32, max 1)."""
        if len(self.memory) == 0:
            raise ValueError("cannot sample from an empty replay memory")
        slots = self.tree.sample(batch_size, rng)
        probs = self.tree.priorities(slots) / self.tree.total
        weights = (len(self.memory) * probs) ** (-beta)
        return self.memory.gather(slots), (weights / weights.max()).astype(np.float32)

    def update_priorities(self, slots, td_errors) -> None:
        """Set the priorities of replayed ``slots`` from their new TD errors."""
        td = np.abs(np.asarray(td_errors, dtype=np.float64))
        if not np.all(np.isfinite(td)):
            raise ValueError("TD errors must be finite to serve as priorities (did the loss diverge?)")
        raw = td + self.eps
        self.max_priority = max(self.max_priority, float(raw.max(initial=0.0)))
        self.tree.update(slots, raw ** self.alpha)
