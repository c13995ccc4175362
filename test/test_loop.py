"""The coarse-to-fine learning loop (flipper_control.learning.loop) at a tiny scale: its report, checkpoints and executors."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from loop_run import assert_same_trajectories, assert_same_weights, tiny_config
from tiny_loop import TINY

import flipper_control.learning.loop as loop_module
from flipper_control.checkpoint import load_policy
from flipper_control.controllers import HEURISTIC_VERSIONS
from flipper_control.learning.imitation_config import ImitationConfig
from flipper_control.learning.loop import run_loop
from flipper_control.learning.report import render_markdown
from planning.dataset import TrajectoryDataset
from sim.scoring import eval_losses, loss_summary

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVAL_WORLDS = ["flat", "step_up"]


# ------------------------------------------------------------------------------------------ the report
def test_report_json_matches_the_returned_report_and_the_callback(base_run):
    out, report, entries = base_run
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    assert entries == report["iterations"]
    assert [it["iteration"] for it in report["iterations"]] == [1, 2]
    assert report["final_policy"] == "iter_2/policy.safetensors"
    assert report["config"] == tiny_config().to_dict()
    assert json.loads((out / "config.json").read_text()) == json.loads(json.dumps(tiny_config().to_dict()))


def test_report_has_scores_per_eval_world_with_total_and_max(base_run):
    _, report, _ = base_run
    for it in report["iterations"]:
        assert list(it["scores"]) == EVAL_WORLDS
        assert all(0.0 <= s <= 1.0 for s in it["scores"].values())
        assert it["total"] == pytest.approx(sum(it["scores"].values()), abs=1e-3)
        assert it["max"] == len(EVAL_WORLDS)
    heuristic = report["baselines"]["heuristic"]
    assert list(heuristic["scores"]) == EVAL_WORLDS and heuristic["max"] == len(EVAL_WORLDS)
    assert heuristic["total"] == pytest.approx(sum(heuristic["scores"].values()), abs=1e-3)


def test_the_report_says_which_rule_its_reference_ran(base_run):
    """``heuristic`` names today's rule; the report records its version and parameters, so that it still says which
    rule it scored after the defaults change (the runs before the rule's v2 named v1 ``heuristic`` too)."""
    _, report, _ = base_run
    assert set(report["reference_rules"]) == {"heuristic"}
    rule = report["reference_rules"]["heuristic"]
    assert rule["version"] == "v2" and rule["front_descend"] == HEURISTIC_VERSIONS["v2"].front_descend
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in rule.items() if k != "version"} \
        == asdict(HEURISTIC_VERSIONS["v2"])


def test_iteration_1_plans_coarse_unguided_and_iteration_2_fine_guided(base_run):
    out, report, _ = base_run
    first, second = (it["planning"] for it in report["iterations"])
    assert (first["action_set"], first["guided"]) == ("coarse", False)
    assert (second["action_set"], second["guided"]) == ("fine", True)
    for p in (first, second):
        assert p["trajectories"] == TINY["training_worlds"]
        assert 0.0 <= p["success_rate"] <= 1.0
        assert p["success_rate"] == pytest.approx(p["successes"] / p["trajectories"], abs=1e-4)
        assert p["cpu_s_median"] > 0 and p["cpu_s_total"] > 0
    # the trajectories themselves say how they were planned: 1000 ms unguided, then 200 ms guided
    for k, dt, guided in ((1, 1.0, False), (2, 0.2, True)):
        plans = TrajectoryDataset.load(out / f"iter_{k}" / "plans.safetensors")
        assert len(plans) == TINY["training_worlds"]
        assert all(t.meta["dt"] == pytest.approx(dt) and t.meta["guided"] is guided for t in plans.trajectories)
        summary = json.loads((out / f"iter_{k}" / "plans.json").read_text())
        assert summary["guided"] is guided and summary["successes"] == sum(t.success for t in plans.trajectories)
        # new worlds every iteration, from the default generator (seed = loop seed * 1000 + iteration)
        assert [t.meta["world"] for t in plans.trajectories] == [f"training_{k}_{i}" for i in range(TINY["training_worlds"])]


def test_training_set_chooses_the_generator_of_the_planned_worlds(tmp_path):
    config = tiny_config(training_set="half_steep", training_worlds=2, coarse={"action_set": "coarse", "max_expansions": 30})
    loop = loop_module._Loop(config, tmp_path)
    try:
        loop.plan(1, None)
    finally:
        loop.ex.close()
    plans = TrajectoryDataset.load(tmp_path / "iter_1" / "plans.safetensors")
    assert [t.meta["world"] for t in plans.trajectories] == ["training_1_0", "steep_1_0"]


def test_guided_policy_start_roots_the_plans_where_the_last_policy_drove(base_run, tmp_path):
    """guided.policy_start 1: every guided plan of the iteration starts at a state iteration 1's policy reached, and
    plans.json counts them."""
    out, _, _ = base_run
    config = tiny_config(guided={**TINY["guided"], "policy_start": 1.0})
    loop = loop_module._Loop(config, tmp_path)
    try:
        summary = loop.plan(2, str(out / "iter_1" / "policy.safetensors"))
    finally:
        loop.ex.close()
    plans = TrajectoryDataset.load(tmp_path / "iter_2" / "plans.safetensors").trajectories
    assert summary["policy_starts"] == len(plans) == TINY["training_worlds"]
    assert all(t.meta["policy_start_s"] >= 0.0 and t.meta["guided"] for t in plans)
    assert "policy_starts" not in json.loads((out / "iter_2" / "plans.json").read_text())


def test_first_guide_heuristic_plans_iteration_1_guided_by_the_rule(tmp_path):
    """first_guide: heuristic: iteration 1 plans with the guided planner (its fine set, 200 ms), guided by the rule; with
    guide_prob 1 the first dive is the rule's own run, so on flat ground every label is the rule's action on the state
    its action began from, and later iterations are guided by the policy as before."""
    from flipper_control.controllers import HeuristicController

    config = tiny_config(first_guide="heuristic", iterations=1, eval_worlds=["flat"], selection_worlds=["flat"],
                         training_worlds=1, guided={**TINY["guided"], "guide_prob": 1.0})
    report = run_loop(config, tmp_path)
    planning = report["iterations"][0]["planning"]
    assert (planning["action_set"], planning["guided"]) == ("fine", True)
    assert planning["guide"] == "heuristic"
    assert json.loads((tmp_path / "iter_1" / "plans.json").read_text())["guided"] is True
    assert "| 1 | heuristic-guided fine |" in render_markdown(report)
    plans = TrajectoryDataset.load(tmp_path / "iter_1" / "plans.safetensors").trajectories
    assert all(t.meta["guided"] and t.meta["dt"] == pytest.approx(0.2) for t in plans)
    # the rule's own run on a flat world, planned the same way as iteration 1 plans its training worlds
    from flipper_control.learning.tasks import plan_task
    from sim.world_sets import resolve_worlds

    flat = plan_task({"world": resolve_worlds(["flat"])[0], "seed": 3, "planner": config.guided.to_dict(),
                      "guide": {"kind": "heuristic"}})["trajectory"]
    assert flat.success and flat.meta["guided"] and len(flat) > 20
    rule = HeuristicController()
    starts = range(0, len(flat), 2)  # two 100 ms samples per 200 ms action: the label is the rule's at the first
    expected = np.array([rule.act_on(flat.dem[i], float(flat.proprio[i, 0])) for i in starts])
    np.testing.assert_allclose(flat.action[list(starts)], expected, atol=1e-5)


def test_datasets_aggregate_the_trajectories_of_all_iterations(base_run):
    out, report, _ = base_run
    first, second = (it["dataset"] for it in report["iterations"])
    assert first["trajectories"] >= 1 and first["samples"] > 0
    assert second["trajectories"] >= first["trajectories"] and second["samples"] >= first["samples"]
    plans_1 = TrajectoryDataset.load(out / "iter_1" / "plans.safetensors")
    plans_2 = TrajectoryDataset.load(out / "iter_2" / "plans.safetensors")
    data_2 = TrajectoryDataset.load(out / "iter_2" / "dataset.safetensors")
    assert_same_trajectories(data_2, TrajectoryDataset(plans_1.trajectories + plans_2.trajectories))
    for k, entry in ((1, first), (2, second)):
        data = TrajectoryDataset.load(out / f"iter_{k}" / "dataset.safetensors")
        assert entry["sha256"] == data.sha256()
        assert (entry["trajectories"], entry["samples"]) == (len(data.successful), data.n_samples)


def test_cpu_totals_and_memory_peaks_are_positive(base_run):
    out, report, _ = base_run
    cpu = report["cpu_s"]
    assert cpu["planning"] > 0 and cpu["training"] > 0 and cpu["evaluation"] > 0
    assert cpu["total"] == pytest.approx(cpu["planning"] + cpu["training"] + cpu["evaluation"], abs=0.01)
    assert cpu["cpu_hours"] == pytest.approx(cpu["total"] / 3600, abs=1e-3)
    planned = sum(json.loads((out / f"iter_{k}" / "plans.json").read_text())["cpu_s_total"] for k in (1, 2))
    assert cpu["planning"] == pytest.approx(planned, abs=0.01)
    mem = report["memory"]
    assert mem["parent_peak_rss_mib"] > 0 and mem["max_worker_peak_rss_mib"] > 0
    assert report["wall_s"] > 0
    for it in report["iterations"]:
        assert it["training"]["cpu_s"] >= 0 and it["wall_s"] > 0


def test_report_md_has_both_tables_with_a_row_per_iteration(base_run):
    out, _, _ = base_run
    md = (out / "report.md").read_text()
    assert "Table I analogue" in md and "Table III analogue" in md
    assert "2 of 2 iterations finished" in md
    assert "| heuristic (reference) |" in md
    assert "| policy | flat | step_up | sum |" in md
    for k in (1, 2):
        assert f"| iteration {k} |" in md  # Table I
    assert "| 1 | unguided coarse |" in md and "| 2 | guided fine |" in md  # Table III
    assert "learning_curve.png" in md


def test_report_records_where_each_evaluation_lost_points(base_run):
    """Each iteration's and baseline's ``losses`` are its eval file's runs summed up (worlds below 1 only), and
    report.md lists the reference rows' and the last iteration's under Table I."""
    out, report, _ = base_run
    for it in report["iterations"]:
        ev = json.loads((out / f"iter_{it['iteration']}" / "eval.json").read_text())
        assert it["losses"] == json.loads(json.dumps(eval_losses(ev)))
        assert set(it["losses"]) == {w for w, score in it["scores"].items() if score < 1.0}
    baselines = json.loads((out / "baselines.json").read_text())
    assert report["baselines"]["heuristic"]["losses"] == json.loads(json.dumps(eval_losses(baselines["heuristic"])))
    # the markdown, on this report with the last iteration made to lose step_up (slow, then stuck)
    # (and the first iteration made to lose it too, which the paragraph must not list: the last iteration's only)
    runs = [{"value": 0.5, "level": "unclear", "time": 16.5, "distance": 1.2, "reasons": ["slow: 16.5 s for 1.2 m"]},
            {"value": 0.0, "level": "fail", "time": 9.0, "distance": 0.71, "reasons": ["stuck: no progress"]}]
    first, last = (dict(it) | {"scores": {**it["scores"], "step_up": 0.25}, "losses": {"step_up": loss_summary(runs)}}
                   for it in (report["iterations"][0], report["iterations"][-1]))
    assert first["iteration"] != last["iteration"]
    md = render_markdown({**report, "iterations": [first, *report["iterations"][1:-1], last]})
    assert f"- iteration {last['iteration']}: step_up 0.25: slow 1 (16.50 s), stuck 1 (at 0.71 m)" in md.splitlines()
    assert f"- iteration {first['iteration']}:" not in md


def test_an_action_set_spelled_out_in_the_config_runs_and_is_named_by_its_name(tmp_path):
    """A planner section may give its action set as a mapping (LoopConfig accepts it); the loop's log line and
    Table III name it (the loop once joined the mapping to a string and stopped with a TypeError after the
    baselines)."""
    spelled = {"name": "my_coarse", "dt": 1.0, "actions": {"neutral": [0.2, 0.2, 0.0, 0.0], "climb": [0.8, 0.8, -0.2, -0.2],
                                                          "descend": [-0.4, -0.4, 0.0, 0.0]}}
    config = tiny_config(iterations=1, coarse={"action_set": spelled, "max_expansions": 200, "max_cpu_s": 10})
    report = run_loop(config, tmp_path / "run")
    assert report["iterations"][0]["planning"]["action_set"] == spelled
    assert "| 1 | unguided my_coarse |" in (tmp_path / "run" / "report.md").read_text()


def test_learning_curve_is_a_png(base_run):
    out, _, _ = base_run
    data = (out / "learning_curve.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_each_iteration_policy_loads_and_records_its_training_data(base_run):
    out, report, _ = base_run
    imitation = ImitationConfig.from_dict(TINY["imitation"])
    seeds = []
    for it in report["iterations"]:
        k = it["iteration"]
        d = out / f"iter_{k}"
        selection = json.loads((d / "selection.json").read_text())
        assert selection["data_sha256"] == it["dataset"]["sha256"]
        assert len(selection["candidates"]) == it["training"]["candidates"] == (1 if k == 1 else 2)  # + the carried one
        best = selection["candidates"][0]
        assert selection["kept"] == best["seed"] == it["training"]["kept_seed"]
        policy, meta = load_policy(out / it["policy"])
        assert policy.config == imitation.policy
        # a carried policy keeps the metadata of the iteration that trained it
        trained_in = best.get("carried_from", k)
        data = TrajectoryDataset.load(out / f"iter_{trained_in}" / "dataset.safetensors")
        assert meta["data_sha256"] == data.sha256()
        assert meta["iteration"] == trained_in and meta["seed"] == best["seed"]
        for c in selection["candidates"]:
            if "carried_from" not in c:
                assert Path(c["path"] + ".safetensors").is_file() and Path(c["path"] + ".json").is_file()
        assert (d / "candidates").is_dir()
        seeds.append(selection["selection_seed"])
        ev = json.loads((d / "eval.json").read_text())
        assert ev["scores"] == it["scores"] and ev["total"] == it["total"]
    # every iteration selects on fresh noise seeds (the carried policy is re-scored on them, not on its old ones)
    assert len(set(seeds)) == len(seeds) == len(report["iterations"])
    assert seeds[0] == TINY.get("selection_seed", 1000)


def test_ensemble_keeps_the_mean_of_the_iterations_candidates(tmp_path):
    """``ensemble: true``: the iteration's policy is one checkpoint averaging its two candidates, scored in the
    selection as one candidate that records its members."""
    out = tmp_path / "ensemble"
    report = run_loop(tiny_config(iterations=1, candidates=2, ensemble=True), out)
    selection = json.loads((out / "iter_1" / "selection.json").read_text())
    seeds = [100, 101]  # loop seed * 1000 + iteration * 100 + candidate
    assert [c["members"] for c in selection["candidates"]] == [seeds] and selection["kept"] == seeds[0]
    assert report["iterations"][0]["training"]["candidates"] == 1
    kept, _ = load_policy(out / "iter_1" / "policy")
    members = [load_policy(out / "iter_1" / "candidates" / f"seed_{s}")[0] for s in seeds]
    assert kept.config.members == 2 and all(m.config.members == 1 for m in members)
    rng = np.random.default_rng(0)
    dem = torch.from_numpy(rng.normal(0, 0.2, (8, 20, 5)).astype(np.float32))
    proprio = torch.from_numpy(rng.normal(0, 0.3, (8, 6)).astype(np.float32))
    with torch.no_grad():
        mean = torch.stack([m(dem, proprio) for m in members]).mean(0)
        assert torch.allclose(kept(dem, proprio), mean, atol=1e-6)
        assert not torch.allclose(members[0](dem, proprio), members[1](dem, proprio), atol=1e-4)


# ------------------------------------------------------------------------------------------ executors
def test_process_executor_plans_and_trains_like_serial(base_run, tmp_path):
    base, report, _ = base_run
    out = tmp_path / "process"
    result = run_loop(tiny_config(executor="process", workers=2, iterations=1), out)
    assert_same_trajectories(TrajectoryDataset.load(out / "iter_1" / "plans.safetensors"),
                             TrajectoryDataset.load(base / "iter_1" / "plans.safetensors"))
    assert_same_weights(out / "iter_1" / "policy", base / "iter_1" / "policy")
    assert result["iterations"][0]["scores"] == report["iterations"][0]["scores"]
    assert result["baselines"] == report["baselines"]
    mem = result["memory"]
    assert mem["max_worker_peak_rss_mib"] > 0
    assert mem["worker_peak_rss_mib"] and str(os.getpid()) not in mem["worker_peak_rss_mib"]  # workers are other processes
