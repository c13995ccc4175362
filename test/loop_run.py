"""The one tiny 2-iteration loop run that the loop tests share, and the checks they compare runs with; not a test
module. The fixture is registered as ``base_run``; a test module imports it by the function's name
(``from loop_run import base_run_fixture  # noqa: F401``, test/ is on sys.path), so that a test's parameter
``base_run`` does not shadow an import (F811).

``base_run`` runs once per test module and most tests only read it. Tests that resume, interrupt or re-run work on
copies of it (``copytree`` keeps mtimes) or in their own folders, so the order of the tests does not matter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_loop import tiny_loop

from flipper_control.checkpoint import load_policy
from flipper_control.learning.loop import LoopConfig, run_loop
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


@pytest.fixture(scope="module", name="base_run")
def base_run_fixture(tmp_path_factory):
    """(out folder, returned report, entries passed to on_iteration) of one tiny 2-iteration serial loop."""
    out = tmp_path_factory.mktemp("loop") / "base"
    entries: list[dict] = []
    report = run_loop(tiny_config(), out, on_iteration=entries.append)
    return out, report, entries
