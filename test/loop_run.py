"""The one tiny 2-iteration loop run that the loop tests share, and the checks they compare runs with; not a test
module (test/ is on sys.path). The run itself is the ``base_run`` fixture of conftest.py.

``base_run`` runs once per test session and most tests only read it. Tests that resume, interrupt or re-run work on
copies of it (``copytree`` keeps mtimes) or in their own folders, so the order of the tests does not matter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tiny_loop import tiny_loop

from flipper_control.checkpoint import load_policy
from flipper_control.learning.loop import LoopConfig
from planning.dataset import TrajectoryDataset


def tiny_config(**changes) -> LoopConfig:
    return LoopConfig.from_dict(tiny_loop(**changes))


def assert_same_trajectories(a: TrajectoryDataset, b: TrajectoryDataset) -> None:
    """Same plans: success, reason, arrays and metadata (except the CPU seconds, which are measured)."""
    assert len(a) == len(b)
    for ta, tb in zip(a.trajectories, b.trajectories, strict=True):
        assert (ta.success, ta.reason) == (tb.success, tb.reason)
        np.testing.assert_array_equal(ta.dem, tb.dem)  # equal NaN positions count as equal
        np.testing.assert_array_equal(ta.proprio, tb.proprio)
        np.testing.assert_array_equal(ta.action, tb.action)
        drop = {"cpu_s"}
        assert {k: v for k, v in ta.meta.items() if k not in drop} == {k: v for k, v in tb.meta.items() if k not in drop}


def assert_same_weights(path_a: Path, path_b: Path) -> None:
    a, b = load_policy(path_a)[0].state_dict(), load_policy(path_b)[0].state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
