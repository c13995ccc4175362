"""The learning commands of `flipper` end to end, in-process: plan, train-policy, eval, loop and bench policy.

Each command is called through ``flipper_control.cli.main`` as a user would type it; bad input must end with
``flipper: error: ...`` naming the culprit and exit status 2. Networks, budgets and worlds are tiny so that the
module runs in seconds on two cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from flipper_control.checkpoint import checkpoint_paths, load_policy
from flipper_control.cli import main
from flipper_control.learning.loop import LoopConfig
from planning.dataset import Trajectory, TrajectoryDataset

SMALL_POLICY = {"epochs": 2, "policy": {"hidden": [16], "conv_channels": 4}}


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    assert "flipper: error: " in err, err
    return err


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> Path:
    """A dataset with one planned trajectory on the flat world (coarse action set)."""
    path = tmp_path_factory.mktemp("plan") / "flat.safetensors"
    assert main(["plan", "--world", "flat", "--action-set", "coarse", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def imitation_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "imitation.yaml"
    path.write_text(yaml.safe_dump(SMALL_POLICY))
    return path


@pytest.fixture(scope="module")
def checkpoint(planned, imitation_yaml, tmp_path_factory) -> Path:
    """A small policy trained on ``planned``."""
    out = tmp_path_factory.mktemp("ckpt") / "policy"
    assert main(["train-policy", "--data", str(planned), "--out", str(out), "--config", str(imitation_yaml),
                 "--seeds", "1", "--epochs", "2"]) == 0
    return out


# ------------------------------------------------------------------------------------------ eval
def test_eval_controller_prints_a_table_with_a_sum_and_writes_json(tmp_path, capsys):
    path = tmp_path / "eval.json"
    assert main(["eval", "--controller", "heuristic", "--worlds", "flat", "--runs", "1", "--executor", "serial",
                 "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| controller | flat | sum |" in out
    assert "| heuristic |" in out
    data = json.loads(path.read_text())
    assert data["controller"] == "heuristic" and data["seed"] == 0 and data["runs"] == 1
    assert data["max"] == 1 and 0.0 <= data["total"] <= 1.0
    assert [w["world"] for w in data["worlds"]] == ["flat"]
    assert data["total"] == pytest.approx(sum(w["score"] for w in data["worlds"]))
    assert f"{data['total']:.2f}/1" in out


def test_eval_says_where_the_points_went(tmp_path, capsys):
    """A posture that cannot climb a step gets stuck in front of it: the output and the JSON say so, and where."""
    path = tmp_path / "eval.json"
    assert main(["eval", "--controller", "fixed:flat", "--worlds", "flat", "step_up", "--runs", "1", "--executor",
                 "serial", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    flat, step_up = json.loads(path.read_text())["worlds"]
    assert flat["score"] == 1.0 and "losses" not in flat
    assert step_up["score"] == 0.0 and list(step_up["losses"]) == ["stuck"]
    ended = step_up["runs"][0]["distance"]
    assert step_up["losses"]["stuck"] == {"runs": 1, "failed": 1, "time": [step_up["runs"][0]["time"]] * 2,
                                          "distance": [ended, ended]}
    assert "Where the points went" in out
    assert f"- fixed:flat: step_up 0.00: stuck 1 (at {ended:.2f} m)" in out.splitlines()
    assert "flat 1.00" not in out


@pytest.mark.parametrize("ref, reality, expected", [
    ("proxy", "auto", "proxy"), ("proxy/F", "auto", "proxy"), ("F", "auto", "proxy"), ("staircase", "auto", "proxy"),
    ("test", "auto", "sim"), ("flat", "auto", "sim"), ("test/stairs_up", "auto", "sim"),
    ("test", "proxy", "proxy"), ("proxy", "sim", "sim"),
])
def test_auto_reality_runs_the_proxy_course_on_the_reality_proxy(ref, reality, expected):
    from flipper_control.cli.evaluate import reality_of

    assert reality_of(ref, reality) == expected


def test_eval_on_the_reality_proxy_records_which_worlds_ran_there(tmp_path, capsys):
    path = tmp_path / "eval.json"
    assert main(["eval", "--controller", "heuristic", "--worlds", "proxy/F", "flat", "--runs", "1", "--executor",
                 "serial", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["reality"] == {"F": "proxy", "flat": "sim"}
    assert "reality proxy (perturbed robot, lidar-built DEMs) for: F" in capsys.readouterr().err
    assert data["total"] == pytest.approx(2.0)  # flat ground: the heuristic traverses both


def test_eval_both_realities_side_by_side_gives_the_gap(tmp_path, capsys):
    path = tmp_path / "eval.json"
    assert main(["eval", "--controller", "heuristic", "--worlds", "flat", "--runs", "1", "--executor", "serial",
                 "--reality", "both", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| heuristic (sim) |" in out and "| heuristic (proxy) |" in out and "sim-to-real gap" in out
    data = json.loads(path.read_text())
    by = data["by_reality"]
    assert set(by) == {"sim", "proxy"} and [w["world"] for w in by["proxy"]["worlds"]] == ["flat"]
    assert data["gap"] == pytest.approx(by["sim"]["total"] - by["proxy"]["total"])


def test_eval_without_executor_uses_the_default(tmp_path, capsys):
    path = tmp_path / "eval.json"
    assert main(["eval", "--controller", "heuristic", "--worlds", "flat", "--runs", "1", "--workers", "1",
                 "--json", str(path)]) == 0
    assert json.loads(path.read_text())["max"] == 1


def test_eval_policy_scores_a_trained_checkpoint(checkpoint, tmp_path, capsys):
    path = tmp_path / "eval.json"
    assert main(["eval", "--policy", str(checkpoint), "--worlds", "flat", "--runs", "1", "--executor", "serial",
                 "--json", str(path)]) == 0
    assert f"| policy {checkpoint} |" in capsys.readouterr().out
    data = json.loads(path.read_text())
    assert data["controller"] == f"policy {checkpoint}" and data["max"] == 1


def test_eval_missing_policy_exits_2_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "no_such_policy"
    assert main(["eval", "--policy", str(missing), "--worlds", "flat", "--runs", "1", "--executor", "serial"]) == 2
    assert str(missing) in error_of(capsys)


def test_eval_unknown_world_exits_2_naming_it(capsys):
    assert main(["eval", "--controller", "heuristic", "--worlds", "nosuchworld", "--executor", "serial"]) == 2
    assert "nosuchworld" in error_of(capsys)


def test_eval_unknown_controller_and_zero_runs_exit_2(capsys):
    assert main(["eval", "--controller", "telepathy", "--worlds", "flat", "--executor", "serial"]) == 2
    assert "telepathy" in error_of(capsys)
    assert main(["eval", "--controller", "heuristic", "--worlds", "flat", "--runs", "0", "--executor", "serial"]) == 2
    assert "--runs" in error_of(capsys)


def test_eval_policy_whose_weights_do_not_fit_its_sidecar_exits_2(checkpoint, tmp_path, capsys):
    weights, sidecar = checkpoint_paths(checkpoint)
    bad = tmp_path / "edited"
    bad_weights, bad_sidecar = checkpoint_paths(bad)
    bad_weights.write_bytes(weights.read_bytes())
    meta = json.loads(sidecar.read_text())
    meta["config"]["hidden"] = [32]  # the weights were trained with 16
    bad_sidecar.write_text(json.dumps(meta))
    assert main(["eval", "--policy", str(bad), "--worlds", "flat", "--runs", "1", "--executor", "serial"]) == 2
    err = error_of(capsys)
    assert str(bad_weights) in err and "do not match the sidecar's config" in err


# ------------------------------------------------------------------------------------------ plan
def test_plan_writes_a_dataset_and_a_summary(tmp_path, capsys):
    data_path, json_path = tmp_path / "d.safetensors", tmp_path / "plan.json"
    assert main(["plan", "--world", "flat", "--action-set", "coarse", "--seed", "3", "--out", str(data_path),
                 "--json", str(json_path)]) == 0
    captured = capsys.readouterr()
    assert "flat" in captured.out and "found" in captured.out
    assert str(data_path) in captured.err
    data = TrajectoryDataset.load(data_path)
    assert len(data) == 1 and len(data.successful) == 1 and data.n_samples > 0
    traj = data.trajectories[0]
    assert traj.meta["world"] == "flat" and traj.meta["seed"] == 3 and traj.meta["dt"] == pytest.approx(1.0)
    summary = json.loads(json_path.read_text())
    assert summary["seed"] == 3 and summary["guide"] is None and summary["planner"]["action_set"] == "coarse"
    assert [t["success"] for t in summary["trajectories"]] == [True]
    assert summary["trajectories"][0]["samples"] == data.n_samples


@pytest.mark.parametrize("arg, expected", [(None, "default"), ("2.5", 2.5), ("none", None)])
def test_plan_max_delay_reaches_the_planner(tmp_path, arg, expected):
    from planning.planner_config import PlannerConfig

    expected = PlannerConfig().max_delay_s if expected == "default" else expected
    json_path = tmp_path / "plan.json"
    extra = [] if arg is None else ["--max-delay", arg]
    assert main(["plan", "--world", "flat", "--json", str(json_path), *extra]) == 0
    assert json.loads(json_path.read_text())["planner"]["max_delay_s"] == expected


@pytest.mark.parametrize("arg", ["0", "-1", "soon"])
def test_plan_bad_max_delay_exits_2(capsys, arg):
    assert main(["plan", "--world", "flat", "--max-delay", arg]) == 2
    assert "flipper: error: argument --max-delay" in capsys.readouterr().err


def test_plan_unknown_action_set_exits_2(tmp_path, capsys):
    out = tmp_path / "d.safetensors"
    assert main(["plan", "--world", "flat", "--action-set", "bogus", "--out", str(out)]) == 2
    assert "bogus" in error_of(capsys)
    assert not out.exists()


def test_plan_heuristic_guide_plans_guided_by_the_rule(tmp_path, capsys):
    data_path, json_path = tmp_path / "d.safetensors", tmp_path / "plan.json"
    assert main(["plan", "--world", "flat", "--action-set", "fine", "--heuristic-guide", "--out", str(data_path),
                 "--json", str(json_path)]) == 0
    traj = TrajectoryDataset.load(data_path).trajectories[0]
    assert traj.success and traj.meta["guided"] is True
    assert json.loads(json_path.read_text())["guide"] == "heuristic"
    # one guide at a time
    assert main(["plan", "--world", "flat", "--heuristic-guide", "--policy", str(data_path)]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_plan_guided_by_a_bad_checkpoint_exits_2_before_planning(tmp_path, capsys):
    missing = tmp_path / "nothing"
    assert main(["plan", "--world", "flat", "--policy", str(missing)]) == 2
    assert str(missing) in error_of(capsys)


# ------------------------------------------------------------------------------------------ train-policy
def test_train_policy_writes_a_loadable_checkpoint_and_json(planned, imitation_yaml, tmp_path, capsys):
    out, report = tmp_path / "best", tmp_path / "train.json"
    assert main(["train-policy", "--data", str(planned), "--out", str(out), "--config", str(imitation_yaml),
                 "--seeds", "2", "--keep", "1", "--epochs", "2", "--json", str(report)]) == 0
    table = capsys.readouterr().out
    assert "| seed | test MSE |" in table and table.count("| yes |") == 1
    policy, meta = load_policy(out)
    assert list(policy.config.hidden) == [16] and policy.config.conv_channels == 4
    data_hash = TrajectoryDataset.load(planned).sha256()
    assert meta["data_sha256"] == data_hash and meta["seed"] in (0, 1)
    assert meta["train_report"]["epochs"] == 2 and meta["datasets"] == [str(planned)]
    assert not checkpoint_paths(tmp_path / "best_2")[0].exists()  # --keep 1
    rep = json.loads(report.read_text())
    assert rep["data_sha256"] == data_hash and rep["kept"] == [str(out)]
    assert sorted(c["seed"] for c in rep["candidates"]) == [0, 1]
    assert [c["kept"] for c in rep["candidates"]] == [True, False]


def test_train_policy_ensemble_writes_the_kept_policies_as_one_checkpoint(planned, imitation_yaml, tmp_path, capsys):
    out = tmp_path / "ens"
    assert main(["train-policy", "--data", str(planned), "--out", str(out), "--config", str(imitation_yaml),
                 "--seeds", "3", "--keep", "2", "--epochs", "1", "--ensemble"]) == 0
    assert capsys.readouterr().out.count("| yes |") == 2
    policy, meta = load_policy(out)
    assert policy.config.members == 2 and len(meta["seeds"]) == 2 and set(meta["seeds"]) <= {0, 1, 2}
    assert not checkpoint_paths(tmp_path / "ens_2")[0].exists()


def test_train_policy_without_samples_exits_2(tmp_path, capsys):
    failed = tmp_path / "failed.safetensors"
    TrajectoryDataset([Trajectory.failed("budget", (20, 5), {"world": "flat"})]).save(failed)
    out = tmp_path / "policy"
    assert main(["train-policy", "--data", str(failed), "--out", str(out), "--seeds", "1", "--epochs", "1"]) == 2
    assert "no training samples" in error_of(capsys)
    assert not checkpoint_paths(out)[0].exists()
    empty = tmp_path / "empty.safetensors"
    TrajectoryDataset().save(empty)
    assert main(["train-policy", "--data", str(empty), "--out", str(out), "--seeds", "1", "--epochs", "1"]) == 2
    assert "no training samples" in error_of(capsys)


@pytest.mark.parametrize("content", [b"not a safetensors file at all", None])
def test_train_policy_unreadable_or_missing_data_exits_2_naming_the_file(tmp_path, capsys, content):
    path = tmp_path / "garbage.bin"
    if content is not None:
        path.write_bytes(content)
    assert main(["train-policy", "--data", str(path), "--out", str(tmp_path / "p"), "--epochs", "1"]) == 2
    assert str(path) in error_of(capsys)


def test_train_policy_bad_imitation_config_exits_2_naming_the_field(planned, tmp_path, capsys):
    cfg = tmp_path / "imitation.yaml"
    cfg.write_text("epochz: 3\n")
    assert main(["train-policy", "--data", str(planned), "--out", str(tmp_path / "p"), "--config", str(cfg)]) == 2
    assert "epochz" in error_of(capsys)


# ------------------------------------------------------------------------------------------ loop
def test_loop_missing_config_exits_2(tmp_path, capsys):
    missing, out = tmp_path / "missing.yaml", tmp_path / "run"
    assert main(["loop", "--config", str(missing), "--out", str(out)]) == 2
    assert str(missing) in error_of(capsys)
    assert not out.exists()


def test_loop_unknown_key_exits_2_naming_it(tmp_path, capsys):
    bad, out = tmp_path / "bad.yaml", tmp_path / "run"
    bad.write_text("iterations: 1\ntraining_wrlds: 3\n")
    assert main(["loop", "--config", str(bad), "--out", str(out)]) == 2
    err = error_of(capsys)
    assert "training_wrlds" in err and str(bad) in err
    assert not out.exists()


def test_loop_unknown_world_exits_2_before_any_work(tmp_path, capsys):
    bad, out = tmp_path / "bad.yaml", tmp_path / "run"
    bad.write_text("eval_worlds: [flat, nosuchworld]\n")
    assert main(["loop", "--config", str(bad), "--out", str(out)]) == 2
    assert "nosuchworld" in error_of(capsys)
    assert not out.exists()


def test_loop_runs_one_tiny_iteration_with_an_executor_override(tmp_path, capsys):
    cfg, out = tmp_path / "tiny.yaml", tmp_path / "run"
    cfg.write_text(yaml.safe_dump({
        "executor": "process", "iterations": 1, "training_worlds": 1, "candidates": 1, "selection_worlds": ["flat"],
        "eval_worlds": ["flat"], "eval_runs": 1, "baselines": ["fixed:flat"],
        "coarse": {"action_set": "coarse", "max_expansions": 200, "max_cpu_s": 10}, "imitation": SMALL_POLICY,
    }))
    assert main(["loop", "--config", str(cfg), "--out", str(out), "--executor", "serial"]) == 0
    printed = capsys.readouterr().out
    assert "Table I analogue" in printed and "Table III analogue" in printed
    assert "| iteration 1 |" in printed and "| fixed:flat (reference) |" in printed
    recorded = LoopConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert recorded.executor == "serial"  # the command line overrides the file
    report = json.loads((out / "report.json").read_text())
    assert [it["iteration"] for it in report["iterations"]] == [1]
    load_policy(out / report["final_policy"])
    # the same command again resumes: nothing left to do, the same report
    assert main(["loop", "--config", str(cfg), "--out", str(out), "--executor", "serial"]) == 0
    assert json.loads((out / "report.json").read_text())["iterations"] == report["iterations"]
    # a changed configuration on the same folder is refused
    cfg.write_text(cfg.read_text().replace("eval_runs: 1", "eval_runs: 2"))
    assert main(["loop", "--config", str(cfg), "--out", str(out), "--executor", "serial"]) == 2
    assert "config.json" in error_of(capsys)


# ------------------------------------------------------------------------------------------ bench
def test_bench_policy_prints_ms_per_decision_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["bench", "policy", "--calls", "50", "--repeats", "1", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ms/decision" in out and "act_numpy" in out
    data = json.loads(path.read_text())
    assert data["calls"] == 50 and data["repeats"] == 1
    assert data["act_numpy"]["ms_per_decision"] > 0 and data["baseline_forward"]["ms_per_decision"] > 0
    assert data["batched"]["decisions_per_s"] > 0
    assert data["nan_outputs_finite"] is True


def test_bench_plan_compares_guided_and_unguided_on_both_world_sets(checkpoint, tmp_path, capsys):
    path = tmp_path / "bench_plan.json"
    assert main(["bench", "plan", "--policy", str(checkpoint), "--count", "1", "--budget", "5", "--max-expansions", "25",
                 "--executor", "serial", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "training worlds" in out and "steep worlds" in out and "median CPU ratio" in out
    data = json.loads(path.read_text())
    assert list(data["sets"]) == ["training", "steep"]
    steep = data["sets"]["steep"]
    assert steep["worlds"] == ["steep_999_0"] and data["sets"]["training"]["worlds"] == ["training_999_0"]
    for st in data["sets"].values():
        assert set(st["variants"]) == {"unguided 3x1000ms", "guided 3x1000ms", "guided 7x200ms", "unguided 7x200ms"}
        for v in st["variants"].values():
            row = v["per_world"][0]
            assert v["trajectories"] == 1 and 0 < row["expansions"] <= 25 and row["cpu_s"] > 0
            assert row["success"] or row["reason"], "a failed plan says why"
        c, v = st["guided_vs_unguided_fine"], st["variants"]
        ratio = v["unguided 7x200ms"]["median_cpu_s"] / v["guided 7x200ms"]["median_cpu_s"]
        assert c["cpu_ratio_median"] == pytest.approx(ratio, rel=1e-2)
    assert data["memory"]["bench_process_peak_rss_mib"] > 0


def test_bench_plan_plans_each_world_with_every_noise_seed(checkpoint, tmp_path, capsys):
    """--noise-seeds N: N trajectories per world and variant, with distinct seeds, the same for every variant;
    the first seed is what a single-seed bench uses, so figures stay comparable."""
    path = tmp_path / "bench_plan.json"
    assert main(["bench", "plan", "--policy", str(checkpoint), "--count", "2", "--budget", "5", "--max-expansions", "8",
                 "--world-sets", "steep", "--noise-seeds", "2", "--seed", "3", "--executor", "serial",
                 "--json", str(path)]) == 0
    assert "2 worlds x 2 noise seeds" in capsys.readouterr().out
    data = json.loads(path.read_text())
    assert data["noise_seeds"] == 2
    variants = data["sets"]["steep"]["variants"]
    for v in variants.values():
        pairs = [(row["world"], row["seed"]) for row in v["per_world"]]
        assert v["trajectories"] == 4 and pairs == [("steep_999_0", 3), ("steep_999_1", 4), ("steep_999_0", 5),
                                                    ("steep_999_1", 6)]
        assert v["median_cpu_s"] == pytest.approx(float(np.median([row["cpu_s"] for row in v["per_world"]])), abs=1e-3)
    assert main(["bench", "plan", "--policy", str(checkpoint), "--noise-seeds", "0"]) == 2
    assert "argument --noise-seeds: must be an integer >= 1" in error_of(capsys)


def test_bench_plan_records_repeat_prob_and_refuses_a_non_probability(checkpoint, tmp_path, capsys):
    path = tmp_path / "bench_plan.json"
    assert main(["bench", "plan", "--policy", str(checkpoint), "--count", "1", "--budget", "5", "--max-expansions", "8",
                 "--world-sets", "steep", "--repeat-prob", "0.7", "--executor", "serial", "--json", str(path)]) == 0
    assert "repeat the node's action with probability 0.7" in capsys.readouterr().out
    assert json.loads(path.read_text())["repeat_prob"] == 0.7
    assert main(["bench", "plan", "--policy", str(checkpoint), "--repeat-prob", "1.5"]) == 2
    assert "argument --repeat-prob: must be in [0, 1]" in error_of(capsys)


def test_bench_plan_only_solved_names_the_seed_when_a_world_was_planned_several_times():
    from flipper_control.bench.plan import _only

    one = [{"world": "a", "seed": 0, "success": True}, {"world": "b", "seed": 1, "success": False}]
    assert _only(one, [{**r, "success": False} for r in one]) == ["a"]
    two = one + [{"world": "a", "seed": 2, "success": True}, {"world": "b", "seed": 3, "success": True}]
    missed = [{**r, "success": r["seed"] == 2} for r in two]
    assert _only(two, missed) == ["a@0", "b@3"]


def test_bench_plan_worlds_are_none_the_shipped_loops_train_on():
    from flipper_control.bench.plan import BENCH_WORLD_SEED
    from flipper_control.learning.loop import demo_config, load_loop_config, training_world_seed

    full = load_loop_config(Path(__file__).resolve().parents[1] / "configs" / "full.yaml")
    for config in (demo_config(), full):
        assert BENCH_WORLD_SEED not in {training_world_seed(config, k) for k in range(1, config.iterations + 1)}


def test_bench_plan_unknown_world_set_exits_2_before_planning(checkpoint, capsys):
    assert main(["bench", "plan", "--policy", str(checkpoint), "--world-sets", "training", "cliffs"]) == 2
    assert "cliffs" in error_of(capsys)


def test_train_policy_refuses_actions_far_outside_the_flipper_limits_naming_the_file(planned, tmp_path, capsys):
    data = TrajectoryDataset.load(planned)
    for t in data.trajectories:
        t.action[:] = 1.0e6  # a hostile or broken dataset: rc 0 and a kept policy with test MSE 1e12 before
    bad = tmp_path / "bad.safetensors"
    data.save(bad)
    out = tmp_path / "policy"
    assert main(["train-policy", "--data", str(planned), str(bad), "--out", str(out), "--seeds", "1", "--epochs", "1"]) == 2
    err = error_of(capsys)
    assert f"{bad}: " in err and "action (flipper targets) outside" in err and "value 1e+06" in err
    assert not checkpoint_paths(out)[0].exists()
