"""The smallest loop configuration that still plans, trains, selects and evaluates (seconds per iteration on 2 cores),
shared by the tests that run a loop; not a test module. Iteration 1 plans coarse and unguided, iteration 2 fine and
guided."""

from __future__ import annotations

import copy

TINY: dict = {
    "executor": "serial",
    "iterations": 2,
    "training_worlds": 2,
    "candidates": 1,
    "selection_worlds": ["flat"],
    "selection_runs": 1,
    "eval_worlds": ["flat", "step_up"],
    "eval_runs": 1,
    "baselines": ["heuristic"],
    "coarse": {"action_set": "coarse", "max_expansions": 200, "max_cpu_s": 10},
    "guided": {"action_set": "fine", "max_expansions": 400, "max_cpu_s": 10},
    "imitation": {"epochs": 2, "policy": {"hidden": [16], "conv_channels": 4}},
}


def tiny_loop(**changes) -> dict:
    """A fresh copy of ``TINY`` with ``changes`` applied (top-level keys). A ``transfer`` section drives no same-pose
    pairs unless it asks for them (``paired_worlds``): their heuristic runs cost seconds, and one test is enough."""
    data = copy.deepcopy(TINY)
    data.update(changes)
    if isinstance(data.get("transfer"), dict):
        data["transfer"] = {"paired_worlds": 0} | data["transfer"]
    return data
