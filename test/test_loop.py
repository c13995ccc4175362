"""The coarse-to-fine learning loop (flipper_control.learning.loop) at a tiny scale: report, checkpoints, resume,
executors, config.

One 2-iteration loop runs once per module (``base_run``) and most tests only read it. Tests that resume, interrupt or
re-run work on copies of it (``copytree`` keeps mtimes) or in their own folders, so the order of the tests does not
matter. The whole module takes some tens of seconds on two cores.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_loop import TINY, tiny_loop

import flipper_control.learning.loop as loop_module
from flipper_control.checkpoint import load_policy
from flipper_control.learning.imitation_config import ImitationConfig
from flipper_control.learning.loop import LoopConfig, run_loop
from planning.dataset import TrajectoryDataset
from planning.planner_config import PlannerConfig

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVAL_WORLDS = ["flat", "step_up"]

def tiny_config(**changes) -> LoopConfig:
    return LoopConfig.from_dict(tiny_loop(**changes))


def mtimes(root: Path) -> dict[str, int]:
    """mtime (ns) of every file under ``root``, keyed by its path relative to ``root``."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)  # copy2: mtimes kept, so "not rewritten" can be checked on the copy
    return dst


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


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """(out folder, returned report, entries passed to on_iteration) of one tiny 2-iteration serial loop."""
    out = tmp_path_factory.mktemp("loop") / "base"
    entries: list[dict] = []
    report = run_loop(tiny_config(), out, on_iteration=entries.append)
    return out, report, entries


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


# ------------------------------------------------------------------------------------------ resume
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
