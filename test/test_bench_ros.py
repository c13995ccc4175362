"""`flipper bench ros` (flipper_control.bench.ros): figures, the namespace plumbing and the closed-loop hook; the full
run of both nodes is slow (about a minute) and marked so."""

from __future__ import annotations

import pytest
from ros_graph import ros_available

from flipper_control.bench.ros import bench_ros, percentiles


def test_percentiles():
    f = percentiles([float(x) for x in range(1, 101)])
    assert f["n"] == 100 and f["p50_ms"] == pytest.approx(50.5) and f["p99_ms"] == pytest.approx(99.01)
    assert f["max_ms"] == 100.0
    assert percentiles([]) == {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="samples must be >= 1"):
        bench_ros(samples=0)


@pytest.mark.ros
@pytest.mark.skipif(ros_available() is not None, reason=str(ros_available()))
def test_a_hook_part_runs_inside_the_namespace_and_lands_in_the_json(tmp_path):
    out = bench_ros(samples=3, seconds=0.5, parts=("flipper_control.bench.ros:closed_loop_part",), work=tmp_path)
    assert out["closed_loop_part"]["status"].startswith("not measured")
    assert "policy_node" not in out and out["node_cpu"] in range(1024)
    assert (tmp_path / "result.json").exists()


@pytest.mark.slow
@pytest.mark.ros
@pytest.mark.skipif(ros_available() is not None, reason=str(ros_available()))
def test_both_nodes_give_latencies_beside_their_baselines(tmp_path):
    out = bench_ros(samples=15, seconds=2.0, work=tmp_path)
    pn, dn = out["policy_node"], out["dem_node"]
    assert pn["lost"] == 0 and pn["round_trip"]["n"] == 15 and pn["in_node"]["n"] >= 15
    assert 0 < pn["in_node"]["p50_ms"] <= pn["round_trip"]["p99_ms"] + 50
    assert dn["lost"] == 0 and dn["round_trip"]["n"] == 15 and dn["clouds"] == 16
    assert out["policy_baseline_in_process"]["n"] == 15 and out["dem_baseline_in_process"]["n"] == 15
    assert out["dem_baseline_in_process"]["p50_ms"] > 0
