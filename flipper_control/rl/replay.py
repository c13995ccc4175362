"""Uniform replay memory (seed 003): a fixed-size ring buffer of transitions, the oldest overwritten first.

Transitions live in preallocated numpy arrays (one per field), not in a list of tuples: a batch is one fancy
index per field, and a buffer of Atari RAM frame stacks stays compact (``obs_dtype=np.uint8``). ``done`` is the
*terminal* flag only: a time-limit truncation is not terminal, so its next state is still bootstrapped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Batch", "ReplayMemory"]


@dataclass
class Batch:
    """A sampled batch; ``indices`` are the slots it came from (prioritized replay updates their priorities)."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    dones: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


class ReplayMemory:
    """``capacity`` transitions of observations shaped ``obs_shape``; ``add`` overwrites the oldest when full."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype=np.float32):
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.dones = np.zeros(capacity, dtype=np.float32)
        self.position = 0  # the slot the next transition goes to
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action: int, reward: float, next_obs, done: bool) -> int:
        """Store one transition; returns its slot."""
        i = self.position
        self.obs[i] = obs
        self.actions[i] = action
        self.rewards[i] = reward
        self.next_obs[i] = next_obs
        self.dones[i] = float(done)
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return i

    def gather(self, indices: np.ndarray) -> Batch:
        """The transitions in slots ``indices``."""
        return Batch(self.obs[indices], self.actions[indices], self.rewards[indices], self.next_obs[indices],
                     self.dones[indices], indices)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """``batch_size`` transitions drawn uniformly (with replacement: for a large memory the same as without,
        and much cheaper than a permutation)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay memory")
        return self.gather(rng.integers(0, self.size, size=batch_size))
