"""Resuming the learning loop (flipper_control.learning.loop): lost steps redone, changed configs refused, crashes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from loop_run import assert_same_trajectories, assert_same_weights, tiny_config
from tiny_loop import TINY

import flipper_control.learning.loop as loop_module
from flipper_control.learning.loop import run_loop
from planning.dataset import TrajectoryDataset
from planning.planner_config import PlannerConfig


def mtimes(root: Path) -> dict[str, int]:
    """mtime (ns) of every file under ``root``, keyed by its path relative to ``root``."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)  # copy2: mtimes kept, so "not rewritten" can be checked on the copy
    return dst


def test_resume_reruns_a_deleted_evaluation_and_nothing_else(base_run, tmp_path):
    base, report, _ = base_run
    out = copy_run(base, tmp_path / "run")
    (out / "iter_2" / "eval.json").unlink()
    before = mtimes(out)
    again = run_loop(tiny_config(), out)
    assert [it["scores"] for it in again["iterations"]] == [it["scores"] for it in report["iterations"]]
    assert again["cpu_s"]["planning"] == report["cpu_s"]["planning"]  # read back from plans.json, not re-measured
    after = mtimes(out)
    assert "iter_2/eval.json" in after
    rewritten = {p for p in before if after[p] != before[p]}
    assert rewritten <= {"config.json", "report.json", "report.md", "learning_curve.png"}
    assert after["iter_1/plans.safetensors"] == before["iter_1/plans.safetensors"]
    assert after["iter_2/policy.safetensors"] == before["iter_2/policy.safetensors"]


def test_a_resumed_run_keeps_the_memory_peaks_of_earlier_sessions(base_run, tmp_path):
    base, _, _ = base_run
    out = copy_run(base, tmp_path / "run")
    recorded = json.loads((out / "report.json").read_text())
    recorded["memory"]["max_worker_peak_rss_mib"] = 99999.0  # a session whose worker peaked far above this one
    recorded["memory"]["worker_peak_rss_mib"] = {"1": 99999.0}
    (out / "report.json").write_text(json.dumps(recorded))
    again = run_loop(tiny_config(), out)  # every step done: this session runs no task at all
    assert again["memory"]["max_worker_peak_rss_mib"] == 99999.0 and again["memory"]["worker_peak_rss_mib"]["1"] == 99999.0
    assert "largest worker 99999 MiB" in (out / "report.md").read_text()
    (out / "report.json").write_text("[1, 2]")  # not a report: ignored, the peaks are this session's
    assert run_loop(tiny_config(), out)["memory"]["worker_peak_rss_mib"] == {}


def test_resume_retrains_a_deleted_selection_to_the_same_policy_and_scores(base_run, tmp_path):
    base, report, _ = base_run
    out = copy_run(base, tmp_path / "run")
    d = out / "iter_2"
    shutil.rmtree(d / "candidates")
    for name in ("selection.json", "policy.safetensors", "policy.json", "eval.json"):
        (d / name).unlink()
    before = mtimes(out)
    again = run_loop(tiny_config(), out)
    assert [it["scores"] for it in again["iterations"]] == [it["scores"] for it in report["iterations"]]
    assert again["iterations"][1]["training"]["kept_seed"] == report["iterations"][1]["training"]["kept_seed"]
    assert_same_weights(d / "policy", base / "iter_2" / "policy")  # deterministic training
    after = mtimes(out)
    for name in ("iter_1/plans.safetensors", "iter_1/policy.safetensors", "iter_2/plans.safetensors",
                 "iter_2/dataset.safetensors", "baselines.json"):
        assert after[name] == before[name], name


def test_resume_with_a_changed_config_is_refused_and_names_config_json(base_run, tmp_path):
    base, _, _ = base_run
    out = copy_run(base, tmp_path / "run")
    recorded = (out / "config.json").read_text()
    before = mtimes(out)
    with pytest.raises(ValueError, match="config.json"):
        run_loop(tiny_config(eval_runs=2), out)
    assert (out / "config.json").read_text() == recorded
    assert mtimes(out) == before  # refused before anything was written


def test_a_run_recorded_before_a_config_field_existed_resumes(base_run, tmp_path):
    base, report, _ = base_run
    out = copy_run(base, tmp_path / "run")
    recorded = json.loads((out / "config.json").read_text())
    del recorded["training_set"], recorded["imitation"]["samples_per_epoch"]  # as an older version wrote it
    (out / "config.json").write_text(json.dumps(recorded))
    before = {p: t for p, t in mtimes(out).items() if p.startswith("iter_")}
    again = run_loop(tiny_config(), out)
    assert [it["total"] for it in again["iterations"]] == [it["total"] for it in report["iterations"]]
    assert {p: t for p, t in mtimes(out).items() if p.startswith("iter_")} == before, "nothing was redone"
    with pytest.raises(ValueError, match="config.json"):  # the defaults filled in still have to match
        run_loop(tiny_config(training_set="steep"), out)


def test_a_run_planned_before_the_delay_bound_resumes_only_without_it(base_run, tmp_path):
    """Runs recorded before ``max_delay_s`` existed planned without the bound: resuming them with the new default
    would change the planner mid-run, so it is refused; with ``max_delay_s: null`` they resume."""
    base, report, _ = base_run
    out = copy_run(base, tmp_path / "run")
    recorded = json.loads((out / "config.json").read_text())
    del recorded["coarse"]["max_delay_s"], recorded["guided"]["max_delay_s"]  # as an older version wrote it
    (out / "config.json").write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match=r"different configuration.*coarse\.max_delay_s: recorded null, asked 3\.5; "
                       r"guided\.max_delay_s: recorded null, asked 3\.5\)"):
        run_loop(tiny_config(), out)
    unbounded = {key: {**TINY[key], "max_delay_s": None} for key in ("coarse", "guided")}
    before = {p: t for p, t in mtimes(out).items() if p.startswith("iter_")}
    again = run_loop(tiny_config(**unbounded), out)
    assert len(again["iterations"]) == len(report["iterations"])
    assert {p: t for p, t in mtimes(out).items() if p.startswith("iter_")} == before, "nothing was redone"


def test_an_interrupted_loop_continues_and_reuses_the_finished_iteration(base_run, tmp_path, monkeypatch):
    base, report, _ = base_run
    out = tmp_path / "run"
    original_plan = loop_module._Loop.plan

    def plan_then_crash(self, k, guide):
        if k == 2:
            raise RuntimeError("simulated crash while planning iteration 2")
        return original_plan(self, k, guide)

    monkeypatch.setattr(loop_module._Loop, "plan", plan_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_loop(tiny_config(), out)
    partial = json.loads((out / "report.json").read_text())
    assert [it["iteration"] for it in partial["iterations"]] == [1]  # the report is written after every iteration
    assert "1 of 2 iterations finished" in (out / "report.md").read_text()
    assert not (out / "iter_2" / "plans.safetensors").exists()
    first_session = {p: t for p, t in mtimes(out).items() if p.startswith("iter_1/") or p == "baselines.json"}

    monkeypatch.undo()
    finished = run_loop(tiny_config(), out)
    assert [it["iteration"] for it in finished["iterations"]] == [1, 2]
    after = mtimes(out)
    assert {p: after[p] for p in first_session} == first_session  # iteration 1 reused, not redone
    # the same results as the run that was never interrupted
    assert [it["scores"] for it in finished["iterations"]] == [it["scores"] for it in report["iterations"]]
    for name in ("iter_1/plans.safetensors", "iter_2/dataset.safetensors"):  # (hashes differ: they cover measured CPU s)
        assert_same_trajectories(TrajectoryDataset.load(out / name), TrajectoryDataset.load(base / name))
    assert finished["iterations"][0]["planning"] == partial["iterations"][0]["planning"]


def test_a_run_killed_while_planning_keeps_the_finished_trajectories(base_run, tmp_path, monkeypatch):
    base, report, _ = base_run
    out = tmp_path / "run"
    original_task = loop_module.plan_task
    calls: list[bool] = []  # per plan task of iteration 2: was it read back (True) or planned (False)?

    def plan_one_then_crash(task):
        if "_2" in Path(task["out"]).parent.parent.name:  # iter_2/plans/seed_N.safetensors
            if len(calls) == 1:
                raise RuntimeError("simulated kill while planning iteration 2")
            calls.append(False)
        return original_task(task)

    monkeypatch.setattr(loop_module, "plan_task", plan_one_then_crash)
    with pytest.raises(Exception, match="simulated kill"):
        run_loop(tiny_config(), out)
    kept = sorted((out / "iter_2" / "plans").glob("seed_*.safetensors"))
    assert len(kept) == 1 and not (out / "iter_2" / "plans.json").exists()

    def count(task):
        result = original_task(task)
        if "_2" in Path(task["out"]).parent.parent.name:
            calls.append(result["resumed"])
        return result

    calls.clear()
    monkeypatch.setattr(loop_module, "plan_task", count)
    finished = run_loop(tiny_config(), out)
    assert calls.count(True) == 1 and calls.count(False) == len(calls) - 1 >= 1  # only the missing ones planned
    summary = json.loads((out / "iter_2" / "plans.json").read_text())
    assert summary["planned_earlier"] == 1
    assert not (out / "iter_2" / "plans").exists()  # merged into plans.safetensors, then removed
    assert_same_trajectories(TrajectoryDataset.load(out / "iter_2" / "plans.safetensors"),
                             TrajectoryDataset.load(base / "iter_2" / "plans.safetensors"))
    assert [it["scores"] for it in finished["iterations"]] == [it["scores"] for it in report["iterations"]]


def test_a_kept_trajectory_of_another_task_is_planned_again(tmp_path):
    from flipper_control.learning.tasks import plan_task
    from sim.world_sets import resolve_worlds

    world = resolve_worlds(["flat"])[0]
    out = tmp_path / "seed_3.safetensors"
    task = {"world": world, "seed": 3, "planner": PlannerConfig(action_set="coarse", max_expansions=50).to_dict(),
            "guide": None, "out": str(out)}
    first = plan_task(task)
    assert not first["resumed"] and out.is_file()
    again = plan_task(task)
    assert again["resumed"] and again["cpu_s"] == 0.0
    assert_same_trajectories(TrajectoryDataset([again["trajectory"]]), TrajectoryDataset([first["trajectory"]]))
    assert again["trajectory"].meta["cpu_s"] == first["trajectory"].meta["cpu_s"]  # the original run's CPU seconds
    other_seed = plan_task({**task, "seed": 4})  # the same file answers another seed's task: not reused
    assert not other_seed["resumed"] and other_seed["trajectory"].meta["seed"] == 4
    out.write_bytes(b"not a dataset")  # a damaged file is planned again and overwritten
    damaged = plan_task({**task, "seed": 4})
    assert not damaged["resumed"] and TrajectoryDataset.load(out).trajectories[0].meta["seed"] == 4
