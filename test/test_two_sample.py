"""The two-sample classifier's content floor: trajectory halves, and what content alone tells apart."""

import numpy as np
import pytest

from perception.transfer_metrics import transfer_report
from perception.two_sample import ClassifierConfig, content_floor, trajectory_halves


def _trajectories(n_traj: int, per: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_traj`` trajectories of ``per`` noisy flat DEMs each; trajectory i sits ``spread`` x i higher."""
    rng = np.random.default_rng(seed)
    traj = np.repeat(np.arange(n_traj), per)
    dems = (-0.09 + spread * traj[:, None, None] + 0.03 * rng.standard_normal((len(traj), 20, 5))).astype(np.float32)
    return dems, traj


def test_trajectory_halves_keep_trajectories_whole_and_balance_samples():
    traj = np.repeat(np.arange(10), np.arange(1, 11) * 10)  # trajectories of 10 ... 100 samples
    for seed in range(5):
        first = trajectory_halves(traj, np.random.default_rng(seed))
        for t in np.unique(traj):
            assert len(set(first[traj == t].tolist())) == 1  # never split inside a trajectory
        share = first.mean()
        assert 0.3 < share < 0.7 and 0 < len(np.unique(traj[first])) < 10
    again = trajectory_halves(traj, np.random.default_rng(3))
    assert np.array_equal(again, trajectory_halves(traj, np.random.default_rng(3)))
    assert trajectory_halves(np.zeros(50, int), np.random.default_rng(0)) is None


def test_two_trajectories_still_split_one_on_each_side():
    traj = np.array([0] * 5 + [1] * 500)  # the first shuffled trajectory may hold most samples: never all of them
    for seed in range(6):
        first = trajectory_halves(traj, np.random.default_rng(seed))
        assert set(traj[first].tolist()) in ({0}, {1})


def test_content_floor_is_chance_for_alike_trajectories_and_high_for_distinct_ones():
    alike, traj = _trajectories(8, 150, 0.0, seed=0)
    floor = content_floor(alike, traj, seed=0)
    assert floor["trajectories"] == 8 and floor["n"] == 1200 and len(floor["accuracies"]) == 3
    assert floor["accuracy"] < 0.62
    distinct, traj = _trajectories(8, 150, 0.05, seed=1)  # each trajectory on its own terrain height
    assert content_floor(distinct, traj, seed=0)["accuracy"] > 0.9


def test_content_floor_needs_two_trajectories_with_enough_dems():
    dems, traj = _trajectories(1, 100, 0.0, seed=2)
    assert content_floor(dems, traj) is None
    dems, traj = _trajectories(2, 6, 0.0, seed=2)
    assert content_floor(dems, traj, config=ClassifierConfig(min_per_class=10)) is None
    with pytest.raises(ValueError, match="one trajectory per DEM"):
        content_floor(dems, traj[:-1])
    with pytest.raises(ValueError, match="splits"):
        content_floor(dems, traj, splits=0)


def test_transfer_report_gives_the_real_sets_content_floor():
    real, traj = _trajectories(6, 100, 0.05, seed=3)
    sim, _ = _trajectories(6, 100, 0.0, seed=4)
    with_floor = transfer_report((real, None), {"identity": (sim, None)}, seed=0, real_traj=traj)
    assert with_floor["content_floor"] == content_floor(real, traj, seed=0)
    assert with_floor["content_floor"]["accuracy"] > 0.75  # alike trajectories: about 0.5 (test above)
    assert transfer_report((real, None), {"identity": (sim, None)}, seed=0)["content_floor"] is None
    with pytest.raises(ValueError, match="real_traj"):
        transfer_report((real, None), {"identity": (sim, None)}, seed=0, real_traj=traj[:10])


def test_the_loops_generator_table_shows_the_content_floor_beside_the_accuracies():
    from flipper_control.learning.report import table_transfer

    def gan(floor):
        return {"diverged": False, "error": None, "content_floor": floor, "metrics": {
            name: {"accuracy": acc, "closed_share": {"nan_map": 0.6, "height": 0.3}}
            for name, acc in (("identity", 0.97), ("G", 0.95), ("randomized", 0.79))}}

    report = {"transfer": {"mode": "gan"}, "iterations": [
        {"iteration": 1, "transfer": {"gan": gan({"accuracy": 0.846, "trajectories": 13})}},
        {"iteration": 2, "transfer": {"through_gan": "run/iter_1/gan", "gan": gan(None)}},  # one real trajectory
        {"iteration": 3, "transfer": {"gan": {"diverged": True, "error": "collapsed", "metrics": None}}}]}  # older run
    rows = table_transfer(report).splitlines()
    assert rows[0].count("|") == 7 and "real halves (floor)" in rows[0]
    assert rows[2] == "| 1 | exact DEMs | trained | 0.97 / 0.95 / 0.79 | 0.85 | 0.30 |"
    assert rows[3] == "| 2 | G of iteration 1 | trained | 0.97 / 0.95 / 0.79 | - | 0.30 |"
    assert rows[4] == "| 3 | exact DEMs | diverged, not used (collapsed) | - | - | - |"
