"""trainer_watch, the core of trainer_node and planner_node, without ROS: which bags are finished and new, what the
next step is, and the steps themselves (ingest into a collection the loop reads, publish a checkpoint, the child
process runner)."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from tiny_loop import tiny_loop

from flipper_control.checkpoint import load_policy, save_policy
from flipper_control.controllers import make_controller
from flipper_control.learning.bags import record_proxy_run
from flipper_control.learning.loop import LoopConfig
from flipper_control.learning.trainer_watch import (
    NextStep,
    StepRunner,
    TrainerConfig,
    collections_needed,
    finished_bags,
    ingest_collection,
    iterations_done,
    load_ledger,
    main,
    next_plan_step,
    next_step,
    plan_iteration,
    publish_checkpoint,
    real_collections,
)
from flipper_control.learning.transfer import TransferSteps, collection_entry
from flipper_control.policy import NanAwarePolicy, PolicyConfig
from sim.world_sets import resolve_world

GAN = LoopConfig.from_dict(tiny_loop(iterations=4, transfer={"mode": "gan", "real_every": 2}))


def _bag(root, name, age_s=100.0):
    d = root / name
    d.mkdir(parents=True)
    (d / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    (d / "data.mcap").write_bytes(b"x")
    old = time.time() - age_s
    for p in (d / "metadata.yaml", d / "data.mcap", d):
        os.utime(p, (old, old))
    return d


def _done_iterations(out, n):
    (out / "report.json").write_text(json.dumps({"iterations": [{"iteration": k} for k in range(1, n + 1)]}))


def _collection(out, i):
    (out / f"real_{i}").mkdir(parents=True, exist_ok=True)
    (out / f"real_{i}" / "collection.json").write_text("{}")


def test_only_finished_recordings_count(tmp_path):
    bags = tmp_path / "bags"
    done = _bag(bags, "run_1")
    _bag(bags, ".run_2.abcd.partial")  # a BagRecorder still writing (hidden, renamed when it closes)
    fresh = _bag(bags, "run_3", age_s=0.0)  # ros2 bag record just closed it: not settled yet
    (bags / "run_4").mkdir()  # no metadata.yaml: rosbag2 writes it when the recording ends
    (bags / "notes.txt").write_text("not a bag")
    assert finished_bags(bags, settle_s=10.0) == [done]
    assert finished_bags(bags, settle_s=0.0) == [done, fresh]
    (done / "data.mcap").write_bytes(b"more")  # written to again: not finished after all
    assert finished_bags(bags, settle_s=10.0) == []
    assert finished_bags(tmp_path / "missing", 0.0) == []


def test_collections_the_loop_would_drive_on_the_proxy():
    # gan, real_every 2, 4 iterations: real_0 before iteration 1, real_1 after iteration 2 (not after 4: the last)
    assert [collections_needed(GAN, k) for k in (1, 2, 3, 4)] == [1, 2, 2, 2]
    assert collections_needed(LoopConfig.from_dict(tiny_loop()), 3) == 0
    assert collections_needed(LoopConfig.from_dict(tiny_loop(transfer={"mode": "identity"})), 3) == 0


def test_next_step_walks_the_loop(tmp_path):
    out, bags_dir = tmp_path / "out", tmp_path / "bags"
    out.mkdir()
    trainer = TrainerConfig(bag_dir=str(bags_dir), out=str(out), checkpoint=str(tmp_path / "live" / "policy"))
    step = next_step(GAN, trainer, out, [])
    assert step.kind == "wait" and "needs 1 real collection" in step.why
    bag = _bag(bags_dir, "run_1")
    step = next_step(GAN, trainer, out, [bag])
    assert (step.kind, step.bags, step.collection) == ("ingest", (str(bag),), 0)
    _collection(out, 0)
    (out / "trainer_state.json").write_text(json.dumps({"ingested": {"run_1": 0}}))
    assert next_step(GAN, trainer, out, [bag]) == NextStep("iterate", "iteration 1 of 4", iteration=1)
    _done_iterations(out, 1)
    assert next_step(GAN, trainer, out, [bag]).kind == "publish"
    state = load_ledger(out) | {"published": 1}
    (out / "trainer_state.json").write_text(json.dumps(state))
    # iteration 2 ends with a collection due (real_1): it waits for recordings of the published policy 1 driving
    step = next_step(GAN, trainer, out, [bag])
    assert step.kind == "wait" and step.iteration == 2 and "needs 2 real collection(s), 1 exist" in step.why
    _collection(out, 1)
    assert next_step(GAN, trainer, out, [bag]) == NextStep("iterate", "iteration 2 of 4", iteration=2)
    _done_iterations(out, 2)
    (out / "trainer_state.json").write_text(json.dumps(state | {"published": 2}))
    assert next_step(GAN, trainer, out, [bag]).iteration == 3  # no collection after 3 (not due) nor 4 (the last)
    planned = TrainerConfig(**{**trainer.__dict__, "wait_for_planner": True})
    assert "planner_node" in next_step(GAN, planned, out, [bag]).why
    (out / "iter_3").mkdir()
    (out / "iter_3" / "plans.json").write_text("{}")
    assert next_step(GAN, planned, out, [bag]).kind == "iterate"
    _done_iterations(out, 4)
    (out / "trainer_state.json").write_text(json.dumps(state | {"published": 4}))
    assert next_step(GAN, trainer, out, [bag]).kind == "done"


def test_rejected_bags_are_not_retried_and_min_bags_waits(tmp_path):
    out, bags_dir = tmp_path / "out", tmp_path / "bags"
    out.mkdir()
    a, b = _bag(bags_dir, "a"), _bag(bags_dir, "b")
    (out / "trainer_state.json").write_text(json.dumps({"rejected": {"a": "MissingTopicError: no /points"}}))
    two = TrainerConfig(bag_dir=str(bags_dir), out=str(out), min_bags=2)
    assert next_step(GAN, two, out, [a, b]).kind == "wait"  # one new bag of the two asked for
    assert next_step(GAN, TrainerConfig(out=str(out)), out, [a, b]).bags == (str(b),)


def test_next_plan_step_waits_for_the_guide(tmp_path):
    out = tmp_path / "out"
    assert next_plan_step(GAN, out) == NextStep("plan", "planning iteration 1 (unguided)", iteration=1)
    (out / "iter_1").mkdir(parents=True)
    (out / "iter_1" / "plans.json").write_text("{}")
    step = next_plan_step(GAN, out)
    assert step.kind == "wait" and "iteration 1's policy" in step.why
    (out / "iter_1" / "policy.json").write_text("{}")
    assert next_plan_step(GAN, out).kind == "plan" and next_plan_step(GAN, out).iteration == 2


def test_planner_node_plans_iteration_1_with_the_loops_first_guide(tmp_path):
    """planner_node's planning step asks the loop what guides iteration 1: with first_guide: heuristic it plans guided by
    the rule, as `flipper loop` does, and says so in its step."""
    import yaml

    from planning.dataset import TrajectoryDataset

    data = tiny_loop(iterations=1, training_worlds=1, first_guide="heuristic")
    config_path, out = tmp_path / "loop.yaml", tmp_path / "out"
    config_path.write_text(yaml.safe_dump(data))
    assert next_plan_step(LoopConfig.from_dict(data), out) == NextStep(
        "plan", "planning iteration 1 (heuristic-guided)", iteration=1)
    plan_iteration(config_path, out, 1)
    summary = json.loads((out / "iter_1" / "plans.json").read_text())
    assert summary["guided"] is True and summary["guide"] == "heuristic" and summary["planner"]["action_set"] == "fine"
    assert all(t.meta["guided"] for t in TrajectoryDataset.load(out / "iter_1" / "plans.safetensors").trajectories)


def test_ingest_makes_a_collection_the_loop_reads(tmp_path):
    out, bags_dir = tmp_path / "out", tmp_path / "bags"
    good = record_proxy_run(resolve_world("flat"), make_controller("heuristic"), bags_dir / "run_1", seed=3,
                            max_time=1.5)["bag"]
    broken = bags_dir / "run_2"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("not: [a, bag")
    result = ingest_collection(out, 0, [str(good), str(broken)])
    assert result["index"] == 0 and result["samples"] > 0 and result["bags"] == [str(good)]
    ledger = load_ledger(out)
    assert ledger["ingested"] == {"run_1": 0} and list(ledger["rejected"]) == ["run_2"]
    assert real_collections(out) == 1
    collection_entry(json.loads((out / "real_0" / "collection.json").read_text()))  # the report's fields exist
    steps = TransferSteps(GAN.transfer, GAN.seed, out, None, None, None)
    assert steps.real_datasets() == [str(out / "real_0" / "real_trajectories.safetensors")]
    assert steps.collect_real(0, {"kind": "heuristic"}, "pi_0")["label"] == "robot recordings 0"  # not driven again


def test_publish_copies_weights_then_sidecar(tmp_path):
    out = tmp_path / "out"
    save_policy(out / "iter_2" / "policy", NanAwarePolicy(PolicyConfig(hidden=(16,), conv_channels=4)), {"seed": 7})
    dest = tmp_path / "live" / "policy"
    publish_checkpoint(out, 2, dest)
    for suffix in (".safetensors", ".json"):
        assert (dest.parent / f"policy{suffix}").read_bytes() == (out / "iter_2" / f"policy{suffix}").read_bytes()
    assert load_policy(dest)[1]["seed"] == 7
    assert load_ledger(out)["published"] == 2
    with pytest.raises(FileNotFoundError):
        publish_checkpoint(out, 3, dest)  # no such iteration: nothing replaced
    assert load_ledger(out)["published"] == 2


def test_iterations_done_reads_the_report(tmp_path):
    assert iterations_done(tmp_path) == 0
    (tmp_path / "report.json").write_text("{half")
    assert iterations_done(tmp_path) == 0
    _done_iterations(tmp_path, 3)
    assert iterations_done(tmp_path) == 3


def test_step_runner_reports_exit_and_stops(tmp_path):
    runner = StepRunner(tmp_path / "logs")
    runner.start(NextStep("plan", "x"), [sys.executable, "-c", "print('half way'); raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="still running"):
        runner.start(NextStep("plan", "y"), [sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 20
    while (rc := runner.poll()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rc == 3 and runner.tail() == "half way" and not runner.running
    runner.start(NextStep("plan", "z"), [sys.executable, "-c", "import time; time.sleep(60)"])
    t0 = time.monotonic()
    runner.stop(timeout=5)
    assert not runner.running and time.monotonic() - t0 < 5


def test_child_entry_names_a_failure(tmp_path, capsys):
    assert main(["publish", str(tmp_path), "1", str(tmp_path / "dest")]) == 1
    assert "publish failed: FileNotFoundError" in capsys.readouterr().err
    assert main(["nonsense"]) == 1


@pytest.mark.slow
def test_run_iteration_stops_after_the_iteration_asked_for(tmp_path):
    """A real (tiny) loop run through the child entry: iteration 1 only, then 2 resumes from it; publish follows."""
    from flipper_control.learning.trainer_watch import run_iteration

    config = tmp_path / "loop.yaml"
    config.write_text(json.dumps(tiny_loop()))  # JSON is YAML
    out = tmp_path / "out"
    run_iteration(config, out, 1)
    assert iterations_done(out) == 1 and not (out / "iter_2").exists()
    trainer = TrainerConfig(out=str(out), checkpoint=str(tmp_path / "live" / "policy"))
    loop = LoopConfig.from_dict(tiny_loop())
    assert next_step(loop, trainer, out, []) == NextStep("publish", f"iteration 1's policy -> {trainer.checkpoint}",
                                                         iteration=1)
    assert main(["publish", str(out), "1", trainer.checkpoint]) == 0
    assert next_step(loop, trainer, out, []).iteration == 2
    plans = (out / "iter_1" / "plans.safetensors").stat().st_mtime_ns
    run_iteration(config, out, 2)
    assert iterations_done(out) == 2 and (out / "iter_1" / "plans.safetensors").stat().st_mtime_ns == plans  # resumed
