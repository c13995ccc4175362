"""``flipper retrain``: a finished loop iteration's candidates trained again with one imitation change, the history
held fixed, and scored beside the recorded ones (``flipper_control.learning.retrain``)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.numpy import load_file

from flipper_control.checkpoint import load_policy, save_policy
from flipper_control.cli import main
from flipper_control.learning.retrain import (
    _relocated,
    changed_imitation,
    changed_transform,
    paired_summary,
    recorded_candidates,
    retrain_tasks,
)
from flipper_control.learning.tasks import train_task
from perception.real_masks import MaskBorrowing
from planning.dataset import TrajectoryDataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def test_recorded_candidates_read_what_the_loop_recorded(base_run):
    out, report, _ = base_run
    last = recorded_candidates(out)
    assert [c.iteration for c in last] == [2] * len(last) and last
    selection = json.loads((out / "iter_2" / "selection.json").read_text())
    assert {c.seed for c in last} <= {entry["seed"] for entry in selection["candidates"]}
    kept = json.loads((out / "iter_2" / "policy.json").read_text())["weights_sha256"]
    for c in last:
        side = json.loads(c.checkpoint.with_suffix(".json").read_text())
        assert c.kept == (side["weights_sha256"] == kept)
        assert c.imitation == side["metadata"]["train_report"]["config"]
        assert c.dataset == out / "iter_2" / "dataset.safetensors"
    assert [c.iteration for c in recorded_candidates(out, 1)] == [1] * len(recorded_candidates(out, 1))
    with pytest.raises(ValueError, match="iteration 5 has no candidates; iterations with candidates: 1, 2"):
        recorded_candidates(out, 5)


def test_retraining_with_the_recorded_settings_gives_the_recorded_weights(base_run, tmp_path):
    """What makes the study paired: with no change the candidate comes back bit for bit, so a difference is the
    change's."""
    out, _, _ = base_run
    c = recorded_candidates(out)[0]
    task = retrain_tasks([c], {"epochs": 3}, tmp_path)[0] | {"imitation": c.imitation, "out": str(tmp_path / "same")}
    train_task(task)
    again, recorded = load_file(tmp_path / "same.safetensors"), load_file(c.checkpoint.with_suffix(".safetensors"))
    assert again.keys() == recorded.keys()
    for name, tensor in recorded.items():
        assert (again[name] == tensor).all(), name
    train_task(retrain_tasks([c], {"epochs": 3}, tmp_path)[0])
    changed = load_file(tmp_path / out.name / "iter_2" / f"seed_{c.seed}.safetensors")
    assert any((changed[name] != tensor).any() for name, tensor in recorded.items())


def test_a_run_whose_dataset_changed_or_that_is_no_run_is_refused(base_run, tmp_path):
    out, _, _ = base_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = TrajectoryDataset.load(copy / "iter_2" / "dataset.safetensors")
    TrajectoryDataset(data.trajectories[1:]).save(copy / "iter_2" / "dataset.safetensors")
    with pytest.raises(ValueError, match="the dataset changed since"):
        recorded_candidates(copy)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no iteration with candidates"):
        recorded_candidates(tmp_path / "empty")
    with pytest.raises(ValueError, match="not a folder"):
        recorded_candidates(tmp_path / "nothing")


def test_a_moved_run_finds_its_files_under_its_own_folder(tmp_path):
    run = tmp_path / "moved" / "b0"
    (run / "iter_3").mkdir(parents=True)
    (run / "iter_3" / "gan.json").write_text("{}")
    assert _relocated("/elsewhere/b0/iter_3/gan", run, "the candidate's CycleGAN") == str(run / "iter_3" / "gan")
    here = str(run / "iter_3" / "gan")
    assert _relocated(here, run, "the candidate's CycleGAN") == here
    with pytest.raises(ValueError, match="the candidate's CycleGAN /elsewhere/b0/iter_2/gan is gone"):
        _relocated("/elsewhere/b0/iter_2/gan", run, "the candidate's CycleGAN")


def test_the_change_merges_nested_fields_and_is_checked(base_run):
    out, _, _ = base_run
    recorded = recorded_candidates(out)[0].imitation
    merged = changed_imitation(recorded, {"keyframe_weight": 20, "policy": {"hidden": [8]}})
    assert merged["keyframe_weight"] == 20 and merged["policy"]["hidden"] == [8]
    assert merged["policy"]["conv_channels"] == recorded["policy"]["conv_channels"]  # the rest of policy kept
    with pytest.raises(ValueError, match="leaves the recorded imitation settings as they are"):
        changed_imitation(recorded, {"epochs": recorded["epochs"]})
    with pytest.raises(ValueError, match="keyframe_wieght"):
        changed_imitation(recorded, {"keyframe_wieght": 20})
    with pytest.raises(ValueError, match="non-empty mapping"):
        changed_imitation(recorded, "keyframe_weight=20")


def test_paired_summary_means_standard_error_and_worlds(base_run):
    out, _, _ = base_run
    c = recorded_candidates(out)[0]
    cands = [c, c, c]
    recorded = [{"a": 1.0, "b": 0.5}, {"a": 1.0, "b": 1.0}, {"a": 0.5, "b": 0.5}]
    retrained = [{"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0}, {"a": 0.5, "b": 0.0}]
    s = paired_summary(cands, recorded, retrained)
    assert [r["difference"] for r in s["candidates"]] == [0.5, 0.0, -0.5]
    assert s["difference_mean"] == 0.0 and s["difference_se"] == pytest.approx(0.2887, abs=1e-4)
    assert (s["ahead"], s["behind"], s["n"]) == (1, 1, 3)
    assert s["worlds"] == {"a": {"recorded": 0.8333, "retrained": 0.8333}, "b": {"recorded": 0.6667, "retrained": 0.6667}}
    level = paired_summary([c], [{"a": 0.9, "b": 0.0}], [{"a": 0.7, "b": 0.2}])  # equal totals, sums rounded apart
    assert math.copysign(1.0, level["candidates"][0]["difference"]) == 1.0 and level["ahead"] == level["behind"] == 0


def test_cli_retrains_scores_both_and_resumes(base_run, tmp_path, capsys):
    out, _, _ = base_run
    study, summary_path = tmp_path / "study", tmp_path / "retrain.json"
    args = ["retrain", str(out), "--change", "{epochs: 3}", "--out", str(study), "--worlds", "flat", "--reality", "sim",
            "--runs", "1", "--executor", "serial", "--json", str(summary_path)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads(summary_path.read_text())
    assert summary["n"] == len(recorded_candidates(out)) and summary["change"] == {"epochs": 3}
    assert f"| **mean of {summary['n']}** |" in printed and "| flat |" in printed
    retrained = study / out.name / "iter_2"
    weights = sorted(retrained.glob("seed_*.safetensors"))
    assert len(weights) == summary["n"]
    side = json.loads(weights[0].with_suffix(".json").read_text())
    assert side["metadata"]["change"] == {"epochs": 3} and side["metadata"]["train_report"]["epochs"] == 3
    # the recorded candidate's score is what flipper eval gives it on the same world and seeds
    c = recorded_candidates(out)[0]
    assert main(["eval", "--policy", str(c.checkpoint), "--worlds", "flat", "--runs", "1", "--reality", "sim",
                 "--executor", "serial", "--json", str(tmp_path / "eval.json")]) == 0
    assert summary["candidates"][0]["recorded"] == json.loads((tmp_path / "eval.json").read_text())["total"]
    stamps = [w.stat().st_mtime_ns for w in weights]
    capsys.readouterr()
    assert main(args) == 0  # resumed: nothing trained again, the scores read back
    err = capsys.readouterr().err
    assert "0 world evaluations" in err
    assert [w.stat().st_mtime_ns for w in weights] == stamps
    assert json.loads(summary_path.read_text())["candidates"] == summary["candidates"]
    other = ["retrain", str(out), "--change", "{epochs: 4}", "--out", str(study), "--executor", "serial"]
    assert main(other) == 2  # its checkpoints would pass for this change's
    assert "holds the study of change {'epochs': 3}" in capsys.readouterr().err


def test_cli_bad_change_or_run_exits_2_naming_it(base_run, tmp_path, capsys):
    out, _, _ = base_run
    assert main(["retrain", str(out), "--change", "{lr: -1}", "--out", str(tmp_path / "s"), "--executor", "serial"]) == 2
    assert "lr must be a positive number" in capsys.readouterr().err
    assert main(["retrain", str(out), "--change", "{epochs: [", "--out", str(tmp_path / "s"), "--executor", "serial"]) == 2
    assert "is not a YAML mapping" in capsys.readouterr().err
    assert main(["retrain", str(tmp_path), "--change", "{epochs: 3}", "--out", str(tmp_path / "s")]) == 2
    assert "no iteration with candidates" in capsys.readouterr().err
    (tmp_path / "taken").write_text("a file where the study's folder would go")
    assert main(["retrain", str(out), "--change", "{epochs: 3}", "--out", str(tmp_path / "taken")]) == 2
    assert "--out" in capsys.readouterr().err


def test_cli_reuse_takes_the_recorded_scores_of_an_earlier_study(base_run, tmp_path, capsys):
    """A second change scores only its own checkpoints: the recorded candidates' scores come from the first study,
    and only where the same weights were scored the same way."""
    out = tmp_path / "run"
    shutil.copytree(base_run[0], out)  # the last check rewrites a recorded candidate
    common = [str(out), "--worlds", "flat", "--reality", "sim", "--runs", "1", "--executor", "serial"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["retrain", *common, "--change", "{epochs: 3}", "--out", str(first), "--json", str(tmp_path / "a.json")]) == 0
    n = json.loads((tmp_path / "a.json").read_text())["n"]
    capsys.readouterr()
    assert main(["retrain", *common, "--change", "{epochs: 4}", "--out", str(second), "--reuse", str(first),
                 "--json", str(tmp_path / "b.json")]) == 0
    err = capsys.readouterr().err
    assert f"the scores of {n} recorded candidate(s) taken from there" in err
    assert f": {n} world evaluations" in err  # the retrained checkpoints only, one world each
    a, b = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    assert [r["recorded"] for r in b["candidates"]] == [r["recorded"] for r in a["candidates"]]
    # other noise seeds: nothing of the first study matches, so everything is scored
    assert main(["retrain", *common, "--seed", "7", "--change", "{epochs: 4}", "--out", str(tmp_path / "third"),
                 "--reuse", str(first)]) == 0
    err = capsys.readouterr().err
    assert "the scores of 0 recorded candidate(s)" in err and f": {2 * n} world evaluations" in err
    # a recorded checkpoint whose weights changed since is scored again, not taken from the cache
    c = recorded_candidates(out)[0]
    policy, metadata = load_policy(c.checkpoint)
    with torch.no_grad():
        next(policy.parameters()).add_(0.01)
    save_policy(c.checkpoint, policy, metadata)
    assert main(["retrain", *common, "--change", "{epochs: 4}", "--out", str(tmp_path / "fourth"), "--reuse",
                 str(first)]) == 0
    err = capsys.readouterr().err
    assert f"the scores of {n - 1} recorded candidate(s)" in err and f": {n + 1} world evaluations" in err
    assert main(["retrain", *common, "--change", "{epochs: 4}", "--out", str(tmp_path / "x"), "--reuse",
                 str(tmp_path / "nowhere")]) == 2
    assert "--reuse" in capsys.readouterr().err


def test_a_transfer_change_rebuilds_each_candidates_dem_transform_as_the_loop_would(base_run, tmp_path, capsys):
    """``--transfer`` retrains on the DEM transform the loop would have built with the changed ``transfer:`` section
    (here: real masks borrowed by the change of pitch ahead, from the run's own real collection)."""
    from tiny_loop import tiny_loop

    from flipper_control.learning.loop import LoopConfig, run_loop

    out = tmp_path / "gan_run"
    run_loop(LoopConfig.from_dict(tiny_loop(iterations=1, transfer={
        "real_runs": 2, "sim_runs": 2, "real_every": 1, "gan": {"epochs": 2, "steps_per_epoch": 5}})), out)
    c = recorded_candidates(out)[0]
    assert c.dem_transform is None  # iteration 1 of a plain gan loop: the identity, exact DEMs
    built = changed_transform(c, {"real_masks": {"ahead_s": 1.0}})
    assert built == {"kind": "gan", "path": None, "real_masks": {
        "config": MaskBorrowing(ahead_s=1.0).to_dict(), "datasets": [str(out / "real_0" / "real_trajectories.safetensors")],
        "seed": c.seed}}
    with pytest.raises(ValueError, match="leaves .* DEM transform as it was"):
        changed_transform(c, {"real_every": 2})
    with pytest.raises(ValueError, match="ahead_s must be"):
        changed_transform(c, {"real_masks": {"ahead_s": -1.0}})
    with pytest.raises(ValueError, match="no transfer: section"):
        changed_transform(recorded_candidates(base_run[0])[0], {"real_masks": {}})
    study = tmp_path / "study"
    common = ["--out", str(study), "--worlds", "flat", "--reality", "sim", "--runs", "1", "--executor", "serial"]
    assert main(["retrain", str(out), "--transfer", "{real_masks: {ahead_s: 1.0}}", "--seeds", str(c.seed), *common,
                 "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 1
    side = json.loads((study / out.name / "iter_1" / f"seed_{c.seed}.json").read_text())
    assert side["metadata"]["dem_transform"] == built and side["metadata"]["transfer_change"] == {"real_masks": {"ahead_s": 1.0}}
    capsys.readouterr()
    assert main(["retrain", str(out), "--transfer", "{real_masks: {}}", "--seeds", "99999", *common]) == 2
    assert "--seeds 99999: no such candidate" in capsys.readouterr().err
    assert main(["retrain", str(out), *common]) == 2
    assert "needs --change (imitation fields), --transfer" in capsys.readouterr().err
