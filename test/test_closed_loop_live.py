"""One world of the closed-loop figure (``flipper bench ros``): robot_sim_node + dem_node + policy_node as processes
over DDS, in a loopback-only namespace of their own, beside in-process ``flipper eval --reality proxy``."""

from __future__ import annotations

import pytest
import yaml
from ros_graph import ros_available

# a course any posture passes: the comparison is about the loop (every step answered), not about the policy
SHORT_FLAT = {"name": "closed_loop_test", "length": 1.2, "speed": 0.3, "terrain": []}


@pytest.mark.slow
def test_one_world_over_dds_matches_in_process_evaluation(tmp_path):
    reason = ros_available()
    if reason:
        pytest.skip(reason)
    import torch

    from flipper_control.bench.ros_closed_loop import closed_loop_figure
    from flipper_control.checkpoint import save_policy
    from flipper_control.policy import NanAwarePolicy

    torch.manual_seed(0)
    save_policy(tmp_path / "policy", NanAwarePolicy())
    world = tmp_path / "world.yaml"
    world.write_text(yaml.safe_dump(SHORT_FLAT))
    out = closed_loop_figure(str(tmp_path / "policy"), [str(world)], seed=0, workdir=tmp_path / "graph")
    row = out["worlds"][0]
    assert row["dds"]["command_timeouts"] == 0 and row["dds"]["commands"] >= row["dds"]["steps"] >= 30, row
    assert row["dds"]["level"] == row["in_process"]["level"] == "good", row
    assert out["within_target"] and out["gap"] == 0.0
