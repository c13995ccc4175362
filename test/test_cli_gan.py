"""``flipper train-gan``, ``flipper eval --states/--transform`` and ``flipper bench gan`` end to end, in-process, on
small real data: simulated rollouts of the heuristic and lidar-built DEMs of the reality proxy."""

from __future__ import annotations

import json

import pytest
import torch

from flipper_control.checkpoint import save_policy
from flipper_control.cli import main
from flipper_control.policy import NanAwarePolicy, PolicyConfig
from perception.cyclegan import load_gan
from planning.dataset import TrajectoryDataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py
WORLDS = ["step_up", "step_down"]


@pytest.fixture(scope="module")
def states(tmp_path_factory):
    """Visited states of the heuristic on two worlds: exact DEMs (sim) and the proxy's DEMs (real stand-in)."""
    root = tmp_path_factory.mktemp("states")
    for reality in ("sim", "proxy"):
        assert main(["eval", "--controller", "heuristic", "--worlds", *WORLDS, "--runs", "2", "--reality", reality,
                     "--executor", "serial", "--states", str(root / f"{reality}.safetensors")]) == 0
    return root / "sim.safetensors", root / "proxy.safetensors"


def test_eval_states_are_the_dems_each_reality_built(states):
    sim, proxy = (TrajectoryDataset.load(p) for p in states)
    assert len(sim) == len(proxy) == 4 and {t.meta["reality"] for t in proxy.trajectories} == {"proxy"}
    assert not any(t.dem.size and (t.dem != t.dem).any() for t in sim.trajectories)  # exact DEMs: no NaN
    assert sum(int((t.dem != t.dem).sum()) for t in proxy.trajectories) > 0  # lidar-built DEMs: NaN where unseen
    assert all(t.meta["level"] in ("good", "unclear", "fail") and len(t) > 50 for t in sim.trajectories)


def test_train_gan_writes_a_checkpoint_with_its_losses_and_the_transfer_metrics(states, tmp_path, capsys):
    out, report = tmp_path / "gan", tmp_path / "gan_report.json"
    assert main(["train-gan", "--sim", str(states[0]), "--real", str(states[1]), "--out", str(out), "--epochs", "2",
                 "--json", str(report)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "| identity |" in printed and "| G |" in printed and "warning" not in captured.err
    gan, meta = load_gan(out)
    history = meta["train_report"]["history"]
    assert len(history["cycle"]) == 2 and all(v == v for v in history["d"])  # one entry per epoch, finite
    data = json.loads(report.read_text())
    assert data["checkpoint"] == str(out) and set(data["transfer_metrics"]["candidates"]) == {"identity", "G"}
    assert data["warnings"] == []
    # Table I through G: the policy (here the heuristic) sees every DEM through the transform
    assert main(["eval", "--controller", "heuristic", "--worlds", "flat", "--runs", "1", "--executor", "serial",
                 "--transform", str(out)]) == 0
    assert f"through G of {out}" in capsys.readouterr().out


def test_train_gan_warns_when_the_simulated_set_misses_more_cells_than_the_real_one(states, tmp_path, capsys):
    report = tmp_path / "swapped.json"
    assert main(["train-gan", "--sim", str(states[1]), "--real", str(states[0]), "--out", str(tmp_path / "g"),
                 "--epochs", "1", "--json", str(report)]) == 0  # a warning, not an error: the user may mean it
    assert "warning: the simulated set misses more cells than the real one" in capsys.readouterr().err
    assert "swapped" in json.loads(report.read_text())["warnings"][0]


def test_train_gan_warns_that_a_collapsed_generator_should_not_be_used(states, tmp_path, capsys):
    from perception.cyclegan import CycleGan, GanConfig, save_gan

    collapsed = CycleGan(GanConfig())
    cells = 20 * 5
    with torch.no_grad():  # every raw mask far below 0: G hides every cell
        collapsed.g.fc.bias[cells:2 * cells] = -1e3
    save_gan(tmp_path / "collapsed", collapsed)
    (tmp_path / "tiny.yaml").write_text("epochs: 1\nsteps_per_epoch: 1\nlr: 1.0e-9\n")
    report = tmp_path / "report.json"
    assert main(["train-gan", "--sim", str(states[0]), "--real", str(states[1]), "--out", str(tmp_path / "g"),
                 "--resume", str(tmp_path / "collapsed"), "--config", str(tmp_path / "tiny.yaml"),
                 "--json", str(report)]) == 0  # written: the user may want to look at it
    captured = capsys.readouterr()
    assert "warning: this G should not be used: collapsed: G hides 100 %" in captured.err
    assert "| identity |" in captured.out and "| G |" not in captured.out  # no metric exists for it
    assert json.loads(report.read_text())["warnings"][-1].startswith("this G should not be used")


def test_eval_refuses_checkpoints_for_another_dem_grid_before_any_run(tmp_path, capsys):
    from perception.cyclegan import CycleGan, GanConfig, save_gan

    save_gan(tmp_path / "small_gan", CycleGan(GanConfig(dem_shape=(10, 5), channels=4, conv_layers=1, disc_hidden=8)))
    save_policy(tmp_path / "small_policy", NanAwarePolicy(PolicyConfig(dem_shape=(10, 5))))
    save_policy(tmp_path / "policy", NanAwarePolicy())
    assert main(["eval", "--policy", str(tmp_path / "policy"), "--worlds", "flat", "--transform",
                 str(tmp_path / "small_gan")]) == 2
    assert "a CycleGAN for DEMs of 10 x 5 cells; the simulator and the reality proxy give 20 x 5" in capsys.readouterr().err
    assert main(["eval", "--policy", str(tmp_path / "small_policy"), "--worlds", "flat"]) == 2
    assert "small_policy: a policy for DEMs of 10 x 5 cells" in capsys.readouterr().err


def test_train_gan_estimates_the_sensors_height_offset_or_takes_it_given(states, tmp_path, capsys):
    """--height-offset auto: the lidar-built DEMs read the ground under the tracks about a centimetre or two above the
    exact ones; the estimate is printed, trained with and recorded. A number is taken as given; a word is refused."""
    report = tmp_path / "auto_report.json"
    assert main(["train-gan", "--sim", str(states[0]), "--real", str(states[1]), "--out", str(tmp_path / "auto"),
                 "--epochs", "1", "--height-offset", "auto", "--json", str(report)]) == 0
    assert "sensor height offset: +" in capsys.readouterr().err
    data = json.loads(report.read_text())
    offset = data["height_offset"]
    assert 0.003 < offset["offset_m"] < 0.03 and offset["real_dems"] > 100
    assert data["train_report"]["config"]["height_offset"] == offset["offset_m"]
    assert main(["train-gan", "--sim", str(states[0]), "--real", str(states[1]), "--out", str(tmp_path / "given_gan"),
                 "--epochs", "1", "--height-offset", "0.02", "--json", str(tmp_path / "given.json")]) == 0
    given = json.loads((tmp_path / "given.json").read_text())
    assert given["height_offset"] is None and given["train_report"]["config"]["height_offset"] == 0.02
    assert main(["train-gan", "--sim", str(states[0]), "--real", str(states[1]), "--out", str(tmp_path / "g"),
                 "--height-offset", "high"]) == 2
    assert "expected 'auto' or metres" in capsys.readouterr().err
    assert main(["train-gan", "--sim", str(states[0]), "--real", str(states[1]), "--out", str(tmp_path / "g"),
                 "--height-offset", "2"]) == 2
    assert "height_offset must be a number of metres within +-0.5" in capsys.readouterr().err


def test_train_gan_bad_input_names_what_and_where(states, tmp_path, capsys):
    assert main(["train-gan", "--sim", str(states[0]), "--real", str(tmp_path / "none.safetensors"),
                 "--out", str(tmp_path / "g")]) == 2
    assert "none.safetensors" in capsys.readouterr().err
    assert main(["train-gan", "--sim", str(states[0]), "--real", str(states[1]), "--out", str(tmp_path / "g"),
                 "--json", str(tmp_path / "g.json")]) == 2
    assert "is a file that --out" in capsys.readouterr().err
    assert main(["train-gan", "--sim", str(states[0]), "--real", str(states[1]), "--out", str(tmp_path / "g"),
                 "--resume", str(states[1])]) == 2  # a dataset is not a checkpoint
    assert "flipper: error:" in capsys.readouterr().err


def test_train_gan_with_a_policy_trains_the_task_term_and_records_the_policy(states, tmp_path, capsys):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_policy(tmp_path / "policy", NanAwarePolicy())
    (tmp_path / "short.yaml").write_text("steps_per_epoch: 4\nbatch_size: 16\n")
    out, report = tmp_path / "gan", tmp_path / "gan_report.json"
    assert main(["train-gan", "--sim", str(states[0]), "--real", str(states[1]), "--out", str(out), "--epochs", "1",
                 "--config", str(tmp_path / "short.yaml"), "--policy", str(tmp_path / "policy"), "--lambda-task", "2.5",
                 "--json", str(report)]) == 0
    assert "mean |pi(G(x_s)) - pi(x_s)|" in capsys.readouterr().out
    _, meta = load_gan(out)
    sha = json.loads((tmp_path / "policy.json").read_text())["weights_sha256"]
    consistency = meta["task_consistency"]
    assert consistency["lambda_task"] == 2.5
    assert consistency["policy"] == {"path": str(tmp_path / "policy"), "weights_sha256": sha}
    assert consistency["action_gap"]["G"] >= 0 and meta["train_report"]["config"]["lambda_task"] == 2.5
    assert len(meta["train_report"]["history"]["task"]) == 1  # the task term per epoch
    assert json.loads(report.read_text())["task_consistency"] == consistency


def test_train_gan_refuses_a_task_weight_without_a_fitting_policy(states, tmp_path, capsys):
    base = ["train-gan", "--sim", str(states[0]), "--real", str(states[1]), "--out", str(tmp_path / "g"), "--epochs", "1"]
    assert main([*base, "--lambda-task", "1"]) == 2
    assert "--lambda-task weighs how far G moves a policy's action: it needs --policy CKPT" in capsys.readouterr().err
    (tmp_path / "task.yaml").write_text("lambda_task: 1.0\n")
    assert main([*base, "--config", str(tmp_path / "task.yaml")]) == 2
    assert "lambda_task = 1.0 needs --policy CKPT" in capsys.readouterr().err
    assert main([*base, "--lambda-task", "-1", "--policy", "p"]) == 2
    assert "--lambda-task: must be a finite number >= 0" in capsys.readouterr().err
    save_policy(tmp_path / "small", NanAwarePolicy(PolicyConfig(dem_shape=(10, 5))))
    assert main([*base, "--policy", str(tmp_path / "small"), "--lambda-task", "1"]) == 2
    assert "--policy " + str(tmp_path / "small") + ": the policy takes 10 x 5 DEMs" in capsys.readouterr().err
    assert main([*base, "--policy", str(states[0])]) == 2  # a dataset is not a policy checkpoint
    assert "--policy " + str(states[0]) in capsys.readouterr().err
    assert not (tmp_path / "g.safetensors").exists()


def test_bench_gan_measures_the_transform_beside_the_policy(tmp_path, capsys):
    path = tmp_path / "bench_gan.json"
    assert main(["bench", "gan", "--calls", "200", "--repeats", "1", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["sim_to_real"]["ms_per_dem"] > 0 and data["policy_act_numpy"]["ms_per_decision"] > 0
    assert data["meets_target"] == (data["sim_to_real"]["ms_per_dem"] <= 0.5)
