"""The whole of Algorithm 1 in ``flipper loop`` at a tiny scale (flipper_control.learning.transfer): real
trajectories from the reality proxy as rosbags, imitation and evaluation through G, simulated rollouts, the
CycleGAN update, the proxy scores, the report and the Fig. 6 analogue, resuming, and the baselines' modes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_loop import tiny_loop

from flipper_control.learning.loop import LoopConfig, run_loop
from flipper_control.learning.tasks import transformed_training_data
from flipper_control.learning.transfer import TransferSteps, deployed_iteration
from flipper_control.learning.transfer_config import TransferConfig
from flipper_control.learning.transfer_tasks import gan_task
from perception.bag_reader import BagReader
from perception.cyclegan import load_gan
from perception.domain_randomization import DomainRandomization, geometric_occlusion
from planning.dataset import Trajectory, TrajectoryDataset
from sim.config_io import config_from_mapping
from sim.scoring import eval_losses

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRANSFER = {"real_runs": 2, "sim_runs": 2, "real_every": 1, "gan": {"epochs": 2, "steps_per_epoch": 5},
            "proxy_eval_worlds": ["proxy/F"], "proxy_eval_runs": 1, "paired_worlds": 2}
# the shared run: G also pulled to the sensor's estimated offset, and taking the map's age (every path that feeds it)
GAN_RUN = TRANSFER | {"estimate_height_offset": True, "gan": {**TRANSFER["gan"], "gan": {"map_age_s": 5.0}}}


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> tuple[Path, dict]:
    """A pool of two workers, so that line 7 really runs beside the next steps (the resume test reruns it serially)."""
    out = tmp_path_factory.mktemp("transfer") / "run"
    report = run_loop(LoopConfig.from_dict(tiny_loop(transfer=GAN_RUN, executor="process", workers=2)), out)
    return out, report


def test_real_trajectories_are_recorded_bags_read_back_by_ingest(gan_run):
    out, report = gan_run
    col = json.loads((out / "real_0" / "collection.json").read_text())
    assert col["label"] == "heuristic" and col["samples"] > 100 and col["driving_s"] > 10
    for i in range(2):  # real rosbag2 folders with the robot's topics, as from the robot
        with BagReader(out / "real_0" / "bags" / f"run_{i}") as reader:
            assert {"/points", "/tf", "/imu/data", "/joint_states"} <= set(reader.topics)
    assert (out / "real_0" / "real_trajectories.safetensors").is_file() and (out / "real_0" / "ingest_report.json").is_file()
    # line 9: the newest policy drives again every real_every iterations, but not after the last one
    assert json.loads((out / "real_1" / "collection.json").read_text())["label"] == "policy of iteration 1"
    assert not (out / "real_2").exists()
    t = report["transfer"]
    assert [c["index"] for c in t["collections"]] == [0, 1]
    assert t["driving_s"] == pytest.approx(sum(c["driving_s"] for c in t["collections"]), abs=0.02)


def test_iteration_2_learns_and_is_scored_through_the_gan_of_iteration_1(gan_run):
    out, report = gan_run
    gan_1 = json.loads((out / "iter_1" / "gan_update.json").read_text())
    assert gan_1["path"] == str(out / "iter_1" / "gan") and not gan_1["diverged"]
    assert set(gan_1["metrics"]["candidates"]) == {"identity", "G", "randomized"}
    # what the held-out metrics stand on, and the content floor wherever the held-out real set has two trajectories
    held = gan_1["held_out"]
    assert held["sim_trajectories"] >= 1 and held["real_states"] == gan_1["metrics"]["real"]["n"]
    floor = gan_1["metrics"]["content_floor"]
    assert (floor is None) == (held["real_trajectories"] < 2)
    assert floor is None or (floor["trajectories"] == held["real_trajectories"] and 0.0 <= floor["accuracy"] <= 1.0)
    assert report["iterations"][0]["transfer"]["gan"]["held_out"] == held
    assert report["iterations"][0]["transfer"]["gan"]["content_floor"] == floor
    # G_1 judged on same-pose pairs, driven once for the run (pairs/) from worlds of their own
    paired = gan_1["paired"]
    assert paired["worlds"] == 2 and paired["pairs"] > 50 and (out / "pairs" / "pairs.safetensors").is_file()
    assert set(paired["metrics"]["candidates"]) == {"identity", "G", "randomized"}
    assert paired["metrics"]["real"]["n"] == paired["pairs"]
    assert paired["metrics"]["candidates"]["identity"]["nan_share"] == 0.0  # exact DEMs: every cell measured
    assert set(paired["nan"]) == {"G", "randomized"} and paired["height_change"]["real"]["cells"] > 0
    gan_2 = json.loads((out / "iter_2" / "gan_update.json").read_text())
    assert gan_2["paired"]["pairs"] == paired["pairs"]  # the same pairs judge every update
    # each update pulls G to the sensor's offset, estimated from its own training sets (the lidar reads high)
    for update in (gan_1, gan_2):
        assert 0.0 < update["height_offset"]["offset_m"] < 0.05 and update["height_offset"]["real_dems"] > 0
    assert report["iterations"][0]["transfer"]["gan"]["height_offset"] == gan_1["height_offset"]
    assert load_gan(out / "iter_2" / "gan")[0].config.map_age_s == 5.0  # G takes the map's age through the updates
    summary = report["iterations"][0]["transfer"]["gan"]["paired"]
    assert summary["candidates"]["G"]["accuracy"] == paired["metrics"]["candidates"]["G"]["classifier"]["accuracy"]
    assert summary["candidates"]["G"]["nan_f1"] == paired["nan"]["G"]["f1"]
    sidecar = json.loads(next((out / "iter_2" / "candidates").glob("*.json")).read_text())
    assert sidecar["metadata"]["dem_transform"] == {"kind": "gan", "path": gan_1["path"]}
    assert json.loads((out / "iter_2" / "selection.json").read_text())["through_gan"] == gan_1["path"]
    assert json.loads((out / "iter_1" / "selection.json").read_text())["through_gan"] is None  # G_0: the identity
    its = report["iterations"]
    assert its[0]["transfer"]["through_gan"] is None and its[1]["transfer"]["through_gan"] == gan_1["path"]
    assert (out / "iter_2" / "sim_states.safetensors").is_file() and (out / "iter_2" / "gan.safetensors").is_file()


def test_the_report_has_table_ii_the_generator_table_and_fig_6(gan_run):
    out, report = gan_run
    last = report["iterations"][-1]["transfer"]
    assert set(last["proxy"]) == {"proxy/F"} and "proxy" not in report["iterations"][0]["transfer"]  # last only
    assert set(report["transfer"]["proxy_baselines"]["heuristic"]) == {"proxy/F"}
    md = (out / "report.md").read_text()
    assert "proxy/F on the reality proxy" in md and "| heuristic (reference) |" in md
    assert "The generator per iteration" in md and "| 2 | G of iteration 1 | trained (sensor offset +" in md
    assert "| real halves (floor) |" in md and "The generator on same-pose pairs" in md
    assert (out / report["transfer"]["figure"]).read_bytes()[:8] == PNG_SIGNATURE
    assert "Real (reality-proxy) driving used" in md
    # where the proxy runs lost points: the proxy file's runs summed up, for the heuristic and the last iteration
    proxy_eval = json.loads((out / "iter_2" / "proxy_eval.json").read_text())
    assert last["proxy"]["proxy/F"]["losses"] == json.loads(json.dumps(eval_losses(proxy_eval["proxy/F"])))
    baseline = json.loads((out / "proxy_baselines.json").read_text())["heuristic"]["proxy/F"]
    assert report["transfer"]["proxy_baselines"]["heuristic"]["proxy/F"]["losses"] == eval_losses(baseline)


def test_a_finished_run_resumes_without_redoing_anything(gan_run, tmp_path):
    out, report = gan_run
    before = {str(p): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name not in
              ("report.json", "report.md", "learning_curve.png", "config.json")}
    again = run_loop(LoopConfig.from_dict(tiny_loop(transfer=GAN_RUN)), out)
    after = {str(p): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and str(p) in before}
    assert after == before
    def results(its):  # wall seconds are measured anew; everything else comes from the steps' files
        return [{k: v for k, v in it.items() if k != "wall_s"} for it in its]

    assert again["transfer"] == report["transfer"] and results(again["iterations"]) == results(report["iterations"])


def test_the_randomize_baseline_trains_on_randomised_dems_without_real_data(tmp_path):
    config = LoopConfig.from_dict(tiny_loop(iterations=1, transfer={**TRANSFER, "mode": "randomize"}))
    report = run_loop(config, tmp_path / "dr")
    sidecar = json.loads(next((tmp_path / "dr" / "iter_1" / "candidates").glob("*.json")).read_text())
    assert sidecar["metadata"]["dem_transform"]["kind"] == "randomize"
    assert not list((tmp_path / "dr").glob("real_*")) and report["transfer"]["collections"] == []
    assert "proxy/F" in report["iterations"][-1]["transfer"]["proxy"]  # scored on the proxy like the GAN run


def test_real_masks_put_the_real_dems_nan_masks_on_the_training_dems(tmp_path):
    config = LoopConfig.from_dict(tiny_loop(iterations=1, transfer={**TRANSFER, "real_masks": {"pitch_bin_deg": 15}}))
    report = run_loop(config, tmp_path / "rm")
    real = str(tmp_path / "rm" / "real_0" / "real_trajectories.safetensors")
    sidecar = json.loads(next((tmp_path / "rm" / "iter_1" / "candidates").glob("*.json")).read_text())
    spec = sidecar["metadata"]["dem_transform"]
    assert spec["kind"] == "gan" and spec["path"] is None  # iteration 1: G_0 is the identity, and it borrows too
    assert spec["real_masks"]["datasets"] == [real] and spec["real_masks"]["config"]["pitch_bin_deg"] == 15
    assert spec["real_masks"]["seed"] == sidecar["metadata"]["seed"]
    data = TrajectoryDataset.load(tmp_path / "rm" / "iter_1" / "dataset.safetensors")
    trained_on = transformed_training_data(data, spec)["dem"]
    exact = data.arrays()["dem"]
    real_masks = {np.isnan(d).tobytes() for d in TrajectoryDataset.load(real).arrays()["dem"]}
    assert not np.isnan(exact).any() and np.isnan(trained_on).any()
    assert all(np.isnan(d).tobytes() in real_masks for d in trained_on)  # every mask is a real DEM's
    np.testing.assert_array_equal(trained_on[~np.isnan(trained_on)], exact[~np.isnan(trained_on)])
    assert "real_masks" in (tmp_path / "rm" / "report.md").read_text()
    other = TrajectoryDataset([Trajectory(np.zeros((3, 10, 5)), np.zeros((3, 6)), np.zeros((3, 4)), True)])
    other.save(tmp_path / "other.safetensors")  # real DEMs of another geometry: refused, naming the file
    with pytest.raises(ValueError, match=r"real_masks from .*other\.safetensors: .*share the DEM geometry"):
        elsewhere = spec["real_masks"] | {"datasets": [str(tmp_path / "other.safetensors")]}
        transformed_training_data(data, spec | {"real_masks": elsewhere})
    assert report["config"]["transfer"]["real_masks"] == {"share": 1.0, "pitch_bin_deg": 15, "min_pool": 20, "start_s": 0.0,
                                                       "ahead_s": 0.0, "ahead_bin_deg": 10.0}


def test_with_gan_shadows_the_pairs_judge_g_as_imitation_sees_it(gan_run, tmp_path):
    """gan_shadows: the same-pose evaluation judges G's DEMs with the terrain's shadows (what imitation trains on), and
    the report's pairs table says so."""
    from flipper_control.learning.paired_eval import load_pairs
    from flipper_control.learning.report import table_paired
    from flipper_control.learning.transfer import _paired_summary

    out, _ = gan_run
    pairs = out / "pairs" / "pairs.safetensors"
    exact = load_pairs(pairs)
    shadow_share = float(geometric_occlusion(exact["exact"], exact["scalars"][:, 0]).mean())
    assert shadow_share > 0.01  # the pairs' worlds cast shadows
    judged = {}
    for shadows in (False, True):
        task = {"sim": [str(out / "iter_1" / "sim_states.safetensors")],
                "real": [str(out / "real_0" / "real_trajectories.safetensors")], "out": str(tmp_path / f"gan_{shadows}"),
                "start": str(out / "iter_1" / "gan"), "seed": 0, "randomization": DomainRandomization().to_dict(),
                "train": {"epochs": 1, "steps_per_epoch": 1, "lr": 1e-9}, "pairs": str(pairs), "shadows": shadows}
        judged[shadows] = gan_task(task)["paired"]
    assert judged[True]["shadows"] is True and judged[False]["shadows"] is False
    with_shadows, without = (judged[k]["nan"]["G"]["predicted_nan_share"] for k in (True, False))
    assert with_shadows >= shadow_share and with_shadows > without
    report = {"iterations": [{"iteration": 1, "transfer": {"gan": {"paired": _paired_summary(judged[True])}}}]}
    assert "G is judged as imitation sees it" in table_paired(report)
    report = {"iterations": [{"iteration": 1, "transfer": {"gan": {"paired": _paired_summary(judged[False])}}}]}
    assert "G is judged as imitation sees it" not in table_paired(report)


def test_the_gan_update_reads_only_collections_driven_before_the_iteration(tmp_path):
    for c in range(3):  # a resumed run may already hold later collections (line 9 runs after line 7)
        (tmp_path / f"real_{c}").mkdir()
        (tmp_path / f"real_{c}" / "collection.json").write_text(json.dumps({"dataset": f"real_{c}.safetensors"}))
    steps = TransferSteps(TransferConfig(real_every=2, paired_worlds=0), 0, tmp_path, ex=None, evaluate=None, step=None)
    seen = {k: steps.gan_task(k, "sim.safetensors")["real"] for k in (2, 3, 5)}
    assert seen == {2: ["real_0.safetensors"], 3: ["real_0.safetensors", "real_1.safetensors"],
                    5: ["real_0.safetensors", "real_1.safetensors", "real_2.safetensors"]}


class _Step:
    """A progress step that records its summary line."""

    prefix = ""

    def __init__(self, lines: list):
        self.lines = lines

    def write(self, line):
        self.lines.append(line)

    def finish(self, text):
        self.lines.append(text)

    def close(self):
        pass


def test_a_gan_update_in_flight_is_collected_before_anything_reads_its_generator(tmp_path):
    """Line 7 runs beside the next steps; the next planning (which reads G_{k-1}) must not wait for it, and
    whatever reads G_k (imitation, selection, evaluation) must get G_k, never silently the older generator."""
    events, lines = [], []

    class Pending:
        def __init__(self, k):
            self.k = k

        def result(self):
            events.append(f"waited for {self.k}")
            (tmp_path / f"iter_{self.k}" / "fig6.png").write_bytes(b"")  # drawn already: this fake trained nothing
            g = {"distances": {}, "classifier": {"accuracy": 0.75}, "closed_share": {"nan_map": 0.5}, "nan_share": 0.0}
            return {"diverged": False, "error": None, "path": str(tmp_path / f"iter_{self.k}" / "gan"),
                    "metrics": {"candidates": {"G": g}}, "cpu_s": 2.5}

    class Executor:
        def submit(self, fn, task):
            k = task["seed"] % 1000
            events.append(f"started {k} from {task['start']}")
            return Pending(k)

    for d in ("real_0", "iter_1", "iter_2"):
        (tmp_path / d).mkdir()
    (tmp_path / "real_0" / "collection.json").write_text(json.dumps({"dataset": "real_0.safetensors"}))
    steps = TransferSteps(TransferConfig(paired_worlds=0), 0, tmp_path, ex=Executor(), evaluate=None,
                          step=lambda *a, **kw: _Step(lines))
    entry, cpu = {}, {"transfer": 0.0}
    steps.start_gan_update(1, "sim_1.safetensors", "policy_1", entry, cpu, {})
    assert events == ["started 1 from None"] and "gan" not in entry
    assert steps.gan_before(1) is None and events == ["started 1 from None"]  # planning of iteration 2: no wait
    assert steps.gan_before(2) == str(tmp_path / "iter_1" / "gan")  # imitation of iteration 2: G_1, after waiting
    assert events == ["started 1 from None", "waited for 1"]
    assert entry["gan"]["path"] == str(tmp_path / "iter_1" / "gan") and cpu["transfer"] == 2.5
    assert json.loads((tmp_path / "iter_1" / "gan_update.json").read_text())["path"] == entry["gan"]["path"]
    steps.start_gan_update(2, "sim_2.safetensors", "policy_2", {}, cpu, {})  # G_2 continues from G_1
    assert events[-1] == f"started 2 from {tmp_path / 'iter_1' / 'gan'}"
    assert steps.finish_gan_update()["cpu_s"] == 2.5 and steps.finish_gan_update() is None
    assert any("iter 1: CycleGAN update (line 7) started" in line for line in lines)
    assert "classifier accuracy 0.75, closed nan_map 0.50" in lines


def test_a_diverging_gan_is_not_saved_and_the_last_good_generator_stays(gan_run, tmp_path):
    out, _ = gan_run
    task = {"sim": [str(out / "iter_1" / "sim_states.safetensors")],
            "real": [str(out / "real_0" / "real_trajectories.safetensors")], "out": str(tmp_path / "gan"),
            "start": None, "seed": 0, "randomization": None, "train": {"epochs": 1, "steps_per_epoch": 3, "lr": 1e30}}
    result = gan_task(task)
    assert result["diverged"] and "turned" in result["error"] and result["path"] is None
    assert not (tmp_path / "gan.safetensors").exists()
    # the loop then keeps the newest good generator for the next iteration
    for k, path in ((1, "good/gan"), (2, None)):
        (tmp_path / f"iter_{k}").mkdir()
        (tmp_path / f"iter_{k}" / "gan_update.json").write_text(json.dumps({"path": path, "diverged": path is None}))
    steps = TransferSteps(TransferConfig(paired_worlds=0), 0, tmp_path, ex=None, evaluate=None, step=None)
    assert steps.gan_before(3) == "good/gan" and steps.gan_before(2) == "good/gan" and steps.gan_before(1) is None


def test_an_update_without_level_ground_in_a_set_trains_without_the_offset_and_says_why(gan_run, tmp_path):
    """A real set whose DEMs never show the ground under the tracks gives no estimate: the update trains with the
    config's offset (0), records why, and the report's generator table says so."""
    from flipper_control.learning.report import table_transfer
    from flipper_control.policy import TRACK_REACH
    from sim.dem import DemSpec

    out, _ = gan_run
    real = TrajectoryDataset.load(out / "real_0" / "real_trajectories.safetensors")
    blind = np.abs(DemSpec().cell_centers()[0][:, 0]) <= TRACK_REACH  # the rows under the tracks
    for t in real.trajectories:
        t.dem[:, blind] = np.nan
    real.save(tmp_path / "blind.safetensors")
    task = {"sim": [str(out / "iter_1" / "sim_states.safetensors")], "real": [str(tmp_path / "blind.safetensors")],
            "out": str(tmp_path / "gan"), "start": None, "seed": 0, "randomization": None,
            "train": {"epochs": 1, "steps_per_epoch": 2}, "estimate_height_offset": True}
    result = gan_task(task)
    assert result["height_offset"]["offset_m"] is None and "real set shows level ground" in result["height_offset"]["error"]
    assert result["path"] == str(tmp_path / "gan") and not result["diverged"]
    _, meta = load_gan(tmp_path / "gan")
    assert meta["train_report"]["config"]["height_offset"] == 0.0
    report = {"transfer": {"mode": "gan"}, "iterations": [{"iteration": 1, "transfer": {"gan": {
        "diverged": False, "error": None, "height_offset": result["height_offset"],
        "metrics": {"G": {"accuracy": 0.9, "closed_share": {"nan_map": 0.1}}}}}}]}
    assert "trained (no sensor offset estimated: gan_update.json says why)" in table_transfer(report)


def test_a_collapsed_gan_with_finite_losses_is_not_saved_either(gan_run, tmp_path):
    import torch

    from perception.cyclegan import CycleGan, GanConfig, save_gan

    out, _ = gan_run
    collapsed = CycleGan(GanConfig())
    with torch.no_grad():  # every raw mask far below 0: G hides every cell, and a few tiny steps cannot undo it
        cells = collapsed.config.dem_shape[0] * collapsed.config.dem_shape[1]
        collapsed.g.fc.bias[cells:2 * cells] = -1e3
    save_gan(tmp_path / "collapsed", collapsed)
    task = {"sim": [str(out / "iter_1" / "sim_states.safetensors")],
            "real": [str(out / "real_0" / "real_trajectories.safetensors")], "out": str(tmp_path / "gan"),
            "start": str(tmp_path / "collapsed"), "seed": 0, "randomization": None,
            "train": {"epochs": 1, "steps_per_epoch": 1, "lr": 1e-9}}
    result = gan_task(task)
    assert result["diverged"] and result["path"] is None and result["error"].startswith("collapsed: G hides 100 %")
    # no metric exists for a G that hides everything; the identity's stay in gan_update.json, and nothing crashed
    assert set(result["metrics"]["candidates"]) == {"identity"}
    assert not (tmp_path / "gan.safetensors").exists()


def test_transfer_config_errors_name_the_field():
    with pytest.raises(ValueError, match="^transfer: mode must be one of gan, identity, randomize"):
        LoopConfig.from_dict(tiny_loop(transfer={"mode": "cyclegan"}))
    with pytest.raises(ValueError, match="initial_controller 'magic'"):
        LoopConfig.from_dict(tiny_loop(transfer={"initial_controller": "magic"}))
    with pytest.raises(ValueError, match="transfer.gan: epochs must be an integer"):
        LoopConfig.from_dict(tiny_loop(transfer={"gan": {"epochs": "many"}}))
    with pytest.raises(ValueError, match="estimate_height_offset needs mode gan"):
        LoopConfig.from_dict(tiny_loop(transfer={"mode": "identity", "estimate_height_offset": True}))
    with pytest.raises(ValueError, match=r"estimate_height_offset replaces gan.height_offset \(0.01\): set one"):
        LoopConfig.from_dict(tiny_loop(transfer={"estimate_height_offset": True, "gan": {"height_offset": 0.01}}))
    with pytest.raises(ValueError, match="estimate_height_offset must be true or false"):
        LoopConfig.from_dict(tiny_loop(transfer={"estimate_height_offset": "yes"}))
    with pytest.raises(ValueError, match="real_masks needs mode gan"):
        LoopConfig.from_dict(tiny_loop(transfer={"mode": "randomize", "real_masks": {}}))
    with pytest.raises(ValueError, match="^transfer.real_masks: .*bins"):
        LoopConfig.from_dict(tiny_loop(transfer={"real_masks": {"bins": 3}}))
    with pytest.raises(ValueError, match="deploy_worlds 4 needs proxy_eval_every > 0"):
        LoopConfig.from_dict(tiny_loop(transfer={"deploy_worlds": 4}))
    with pytest.raises(ValueError, match="deploy_set must be one of training, steep, half_steep, steep_kinds, got 'test'"):
        LoopConfig.from_dict(tiny_loop(transfer={"deploy_set": "test"}))
    with pytest.raises(ValueError, match="deploy_worlds must be an integer >= 0"):
        LoopConfig.from_dict(tiny_loop(transfer={"deploy_worlds": -1}))
    with pytest.raises(ValueError, match="deploy_runs must be an integer >= 1"):
        LoopConfig.from_dict(tiny_loop(transfer={"deploy_runs": 0}))
    assert config_from_mapping(LoopConfig, tiny_loop(), "x").transfer is None  # no section: today's loop


def test_a_run_resumed_with_proxy_eval_every_and_deploy_worlds_adds_scores_and_a_deployed_policy_only(gan_run, tmp_path):
    src, first = gan_run
    out = tmp_path / "run"
    shutil.copytree(src, out)  # a copy: the shared run stays as the other tests expect it
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name not in
              ("report.json", "report.md", "learning_curve.png", "config.json")}
    assert not (out / "iter_1" / "proxy_eval.json").exists() and "deployed_policy" not in first
    deploy = {"deploy_worlds": 2, "deploy_runs": 1}  # the default set: steep_kinds
    report = run_loop(LoopConfig.from_dict(tiny_loop(transfer={**GAN_RUN, "proxy_eval_every": 1, **deploy})), out)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # no step ran again
    assert (out / "iter_1" / "proxy_eval.json").is_file()
    assert set(report["iterations"][0]["transfer"]["proxy"]) == {"proxy/F"}
    assert json.loads((out / "config.json").read_text())["transfer"]["proxy_eval_every"] == 1
    # both iterations drove the same two held-out steep worlds on the proxy; the better one is deployed
    t = report["transfer"]
    evals = [json.loads((out / f"iter_{k}" / "deploy_eval.json").read_text()) for k in (1, 2)]
    assert list(evals[0]["scores"]) == list(evals[1]["scores"]) == t["deploy"]["worlds"]
    assert t["deploy"]["worlds"] == ["steep_kinds_900_0", "steep_kinds_900_1"]  # loop seed 0: generator seed 900
    assert evals[0]["asked"] == {"set": "steep_kinds", "worlds": 2, "runs": 1}
    assert t["deploy"]["totals"] == {"1": evals[0]["total"], "2": evals[1]["total"]}
    k = deployed_iteration({1: evals[0]["total"], 2: evals[1]["total"]})
    assert t["deploy"]["iteration"] == k and report["deployed_policy"] == f"iter_{k}/policy.safetensors"
    assert report["final_policy"] == "iter_2/policy.safetensors"  # the last iteration's, as before
    # that driving is real data used: it counts beside the collections
    assert evals[0]["driving_s"] > 5 and t["deploy"]["driving_s"] == pytest.approx(evals[0]["driving_s"] + evals[1]["driving_s"])
    assert t["driving_s"] == pytest.approx(sum(c["driving_s"] for c in t["collections"]) + t["deploy"]["driving_s"], abs=0.02)
    md = (out / "report.md").read_text()
    assert f"Deployed policy: iteration {k} (`iter_{k}/policy`), the best on 2 held-out steep_kinds worlds" in md
    assert "min choosing the deployed iteration" in md
    with pytest.raises(ValueError, match="real_runs: recorded 2, asked 3"):  # a setting that changes results still refuses
        run_loop(LoopConfig.from_dict(tiny_loop(transfer={**GAN_RUN, "real_runs": 3})), out)


def test_deploy_scores_are_reused_only_for_the_settings_that_drove_them(tmp_path):
    calls = []

    def evaluate(spec, worlds, runs, seed, label, reality="sim", reality_config=None):
        calls.append(([w.name for w in worlds], runs, reality))
        return {"scores": {w.name: 1.0 for w in worlds}, "total": float(len(worlds)), "max": len(worlds),
                "runs": {w.name: [{"time": 10.0}] * runs for w in worlds}, "cpu_s": 1.0}

    def steps(**deploy):
        config = TransferConfig(proxy_eval_every=1, **deploy)
        return TransferSteps(config, 3, tmp_path, None, evaluate, None)

    (tmp_path / "iter_2").mkdir()
    first = steps(deploy_worlds=2).deploy_eval(2, "p")
    assert calls == [(["steep_kinds_3900_0", "steep_kinds_3900_1"], 1, "proxy")]  # loop seed 3: generator seed 3900
    assert first["driving_s"] == 20.0 and steps(deploy_worlds=2).deploy_eval(2, "p") == first and len(calls) == 1
    again = steps(deploy_worlds=2, deploy_runs=2).deploy_eval(2, "p")  # other settings: driven anew
    assert len(calls) == 2 and again["driving_s"] == 40.0 and again["asked"]["runs"] == 2
    assert steps().deploy_eval(2, "p") is None and len(calls) == 2  # off: nothing driven


def test_the_deployed_iteration_is_the_best_on_the_held_out_worlds_and_a_tie_goes_to_the_later():
    assert deployed_iteration({2: 3.5, 4: 4.0, 6: 3.9}) == 4
    assert deployed_iteration({2: 4.0, 4: 4.0, 7: 3.0}) == 4
    assert deployed_iteration({7: 1.0}) == 7
    with pytest.raises(ValueError, match="no iteration was scored"):
        deployed_iteration({})
