"""The sum tree and proportional prioritized replay (seed 004): sums, updates, sampling frequencies (chi-square),
importance-sampling weights, beta annealing and bad input."""

import numpy as np
import pytest
from scipy.stats import chisquare

from flipper_control.rl.replay import ReplayMemory
from flipper_control.rl.sum_tree import PrioritizedReplay, SumTree, annealed_beta


def _check_sums(tree: SumTree) -> None:
    """Every inner node equals the sum of its children."""
    inner = np.arange(1, tree.n_leaves)
    np.testing.assert_allclose(tree.tree[inner], tree.tree[2 * inner] + tree.tree[2 * inner + 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("capacity", [1, 2, 5, 8, 13, 1000])
def test_sums_hold_after_updates(capacity):
    rng = np.random.default_rng(1)
    tree = SumTree(capacity)
    assert tree.n_leaves >= capacity and tree.n_leaves & (tree.n_leaves - 1) == 0
    p = np.zeros(capacity)
    for _ in range(20):  # batches with repeated slots: the last priority given wins, as with single updates
        slots = rng.integers(0, capacity, size=7)
        values = rng.random(7) * 10
        tree.update(slots, values)
        for s, v in zip(slots, values, strict=True):
            p[s] = v
        _check_sums(tree)
        assert tree.total == pytest.approx(p.sum(), rel=1e-12)
        np.testing.assert_allclose(tree.priorities(np.arange(capacity)), p)


def test_find_follows_cumulative_intervals():
    tree = SumTree(5)
    tree.update(np.arange(5), [1.0, 0.0, 2.0, 3.0, 4.0])  # intervals [0,1) [1,1) [1,3) [3,6) [6,10)
    values = [0.0, 0.999, 1.0, 2.999, 3.0, 5.999, 6.0, 9.999]
    np.testing.assert_array_equal(tree.find(values), [0, 0, 2, 2, 3, 3, 4, 4])
    # past the total (rounding): never an empty or padding slot
    assert tree.find([10.0, 11.0]).tolist() == [4, 4]


def test_sampling_frequencies_match_priorities_chi_square():
    rng = np.random.default_rng(1234)
    capacity = 37  # not a power of two: padding leaves must never be drawn
    priorities = rng.random(capacity) * 5 + 0.1
    priorities[[3, 17]] = 0.0  # zero priority: never drawn
    tree = SumTree(capacity)
    tree.update(np.arange(capacity), priorities)
    n = 200_000
    for stratified in (False, True):
        counts = np.bincount(tree.sample(n, rng, stratified=stratified), minlength=tree.n_leaves)
        assert counts[capacity:].sum() == 0 and counts[[3, 17]].sum() == 0
        keep = priorities > 0
        expected = n * priorities[keep] / priorities.sum()
        _, p_value = chisquare(counts[:capacity][keep], expected)
        assert p_value > 0.001, f"stratified={stratified}: frequencies differ from priorities (p={p_value:.2g})"
    # the test can fail: uniform sampling of the same slots is rejected outright
    uniform = np.bincount(rng.integers(0, capacity, n), minlength=capacity)
    assert chisquare(uniform[keep], n * uniform[keep].sum() / n * priorities[keep] / priorities.sum())[1] < 1e-6


def test_bad_input_is_refused():
    tree = SumTree(4)
    with pytest.raises(IndexError, match="out of range"):
        tree.update([4], [1.0])
    with pytest.raises(ValueError, match="finite and >= 0"):
        tree.update([0], [float("nan")])
    with pytest.raises(ValueError, match="finite and >= 0"):
        tree.update([0], [-1.0])
    with pytest.raises(ValueError, match="all 0"):
        tree.sample(4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="capacity"):
        SumTree(0)


def test_annealed_beta():
    assert annealed_beta(0.4, 0, 100) == pytest.approx(0.4)
    assert annealed_beta(0.4, 50, 100) == pytest.approx(0.7)
    assert annealed_beta(0.4, 100, 100) == 1.0 and annealed_beta(0.4, 500, 100) == 1.0


def _filled(alpha: float, n: int = 6) -> PrioritizedReplay:
    mem = PrioritizedReplay(8, (2,), alpha=alpha, eps=1e-6)
    for i in range(n):
        mem.add(np.full(2, i, np.float32), i % 3, float(i), np.full(2, i + 1, np.float32), i == n - 1)
    return mem


def test_new_transitions_get_max_priority_and_updates_set_td_priorities():
    mem = _filled(alpha=0.5)
    np.testing.assert_allclose(mem.tree.priorities(np.arange(6)), 1.0)  # max priority so far: 1
    mem.update_priorities(np.array([0, 1, 2]), np.array([3.0, -8.0, 0.0]))
    np.testing.assert_allclose(mem.tree.priorities([0, 1, 2]), np.array([3.0, 8.0, 0.0]) ** 0.5 + [0, 0, 0], rtol=1e-5,
                               atol=1.1e-3)
    assert mem.tree.priorities([2])[0] > 0  # eps keeps a transition of zero error replayable
    assert mem.max_priority == pytest.approx(8.0 + 1e-6)
    slot = mem.add(np.zeros(2, np.float32), 0, 0.0, np.zeros(2, np.float32), False)
    assert mem.tree.priorities([slot])[0] == pytest.approx((8.0 + 1e-6) ** 0.5)
    with pytest.raises(ValueError, match="finite"):
        mem.update_priorities([0], [float("nan")])


def test_importance_sampling_weights():
    mem = _filled(alpha=1.0)
    td = np.array([1.0, 2.0, 4.0, 1.0, 1.0, 8.0])
    mem.update_priorities(np.arange(6), td - 1e-6)  # priorities exactly td
    batch, w = mem.sample(64, np.random.default_rng(0), beta=0.5)
    probs = td[batch.indices] / td.sum()
    expected = (6 * probs) ** -0.5
    np.testing.assert_allclose(w, expected / expected.max(), rtol=1e-5)
    assert w.max() == pytest.approx(1.0) and w.dtype == np.float32
    # the most likely transition has the smallest weight; beta = 0 gives no correction
    assert w[batch.indices == 5].max() == pytest.approx(w.min())
    _, w0 = mem.sample(16, np.random.default_rng(0), beta=0.0)
    np.testing.assert_allclose(w0, 1.0)
    # the batch carries the stored transitions of the sampled slots
    np.testing.assert_array_equal(batch.obs[:, 0], batch.indices)
    np.testing.assert_array_equal(batch.rewards, batch.indices.astype(np.float32))


def test_alpha_zero_is_uniform():
    mem = _filled(alpha=0.0)
    mem.update_priorities(np.arange(6), [100.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(mem.tree.priorities(np.arange(6)), 1.0)


def test_replay_memory_ring_buffer():
    mem = ReplayMemory(3, (1,))
    for i in range(5):
        mem.add([i], i, i, [i + 1], False)
    assert len(mem) == 3 and sorted(mem.obs[:, 0].tolist()) == [2.0, 3.0, 4.0]  # the two oldest overwritten
    batch = mem.sample(100, np.random.default_rng(0))
    assert set(batch.actions.tolist()) == {2, 3, 4}
    np.testing.assert_array_equal(batch.next_obs[:, 0], batch.obs[:, 0] + 1)
    with pytest.raises(ValueError, match="empty"):
        ReplayMemory(3, (1,)).sample(1, np.random.default_rng(0))
