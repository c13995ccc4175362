"""ES fine-tuning (``flipper_control.learning.finetune``, ``flipper finetune``): the update climbs, a run's fitness
ranks runs as the evaluation does, only the named layers move, a resumed run ends where an uninterrupted one does,
and bad settings are refused by name. Episodes are few and the network tiny, so the module runs in seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flipper_control.checkpoint import load_policy, save_policy
from flipper_control.cli import main
from flipper_control.learning.finetune import (
    EsState,
    FinetuneConfig,
    centred_ranks,
    episode_fitness,
    es_update,
    finetune,
    state_paths,
    tuned_parameters,
)
from flipper_control.policy import NanAwarePolicy, PolicyConfig
from sim.scoring import RunResult
from sim.world_sets import generated_worlds

TINY = {"pairs": 1, "worlds_per_generation": 1, "training_worlds": 2}


@pytest.fixture(scope="module")
def base_policy(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("ft") / "base"
    save_policy(path, NanAwarePolicy(PolicyConfig(hidden=(16,), conv_channels=4)), {"seed": 3})
    return path


def test_centred_ranks_keep_the_order_within_plus_minus_a_half():
    r = centred_ranks(np.array([0.3, -2.0, 5.0, 0.31]))
    assert r == pytest.approx([-1 / 6, -0.5, 0.5, 1 / 6])


def test_the_es_update_climbs_a_smooth_score():
    """On -|theta - target|^2 the antithetic rank estimate with Adam must close most of the distance."""
    config = FinetuneConfig(pairs=8, sigma=0.05, step=0.02)
    rng = np.random.default_rng(0)
    target = rng.normal(size=30)
    state = EsState(np.zeros(30), np.zeros(30), np.zeros(30), 0, {})
    start = np.linalg.norm(state.theta - target)
    for _ in range(150):
        eps = rng.standard_normal((config.pairs, 30))
        members = [state.theta + config.sigma * e for e in eps] + [state.theta - config.sigma * e for e in eps]
        es_update(state, eps, np.array([-np.sum((m - target) ** 2) for m in members]), config)
    assert state.generation == 150
    assert np.linalg.norm(state.theta - target) < 0.3 * start


def test_fitness_orders_runs_as_the_evaluation_and_then_by_time_and_progress():
    world = generated_worlds("training", 1, 0)[0]
    nominal = world.length / world.speed
    config = FinetuneConfig()

    def run(level, distance, time):
        return RunResult(world.name, 0, level, distance, time)

    on_time = episode_fitness(run("good", world.length, nominal), world, config)
    late = episode_fitness(run("good", world.length, 1.1 * nominal), world, config)
    unclear = episode_fitness(run("unclear", world.length, nominal), world, config)
    far_fail = episode_fitness(run("fail", 0.8 * world.length, 3 * nominal), world, config)
    near_fail = episode_fitness(run("fail", 0.2 * world.length, 3 * nominal), world, config)
    assert on_time == pytest.approx(1.3)
    assert on_time > late > unclear > far_fail > near_fail
    assert late == pytest.approx(1.3 - 0.01)
    assert far_fail == pytest.approx(0.24)  # a fail is not charged for its time


def test_layers_select_parameters_by_name_or_prefix_and_unknown_ones_are_refused(base_policy):
    policy, _ = load_policy(base_policy)
    assert tuned_parameters(policy, ("head.2",)) == ["head.2.weight", "head.2.bias"]
    assert tuned_parameters(policy, ("head.2.bias", "conv_mask")) == ["conv_mask.weight", "conv_mask.bias", "head.2.bias"]
    with pytest.raises(ValueError, match="no parameter or module 'head.9'.*head.2.bias"):
        tuned_parameters(policy, ("head.9",))


@pytest.mark.parametrize("change, message", [
    ({"pairs": 0}, "pairs must be an integer >= 1"),
    ({"sigma": -0.1}, "sigma must be a positive number"),
    ({"worlds_per_generation": 30}, "cannot exceed training_worlds"),
    ({"training_set": "test"}, "training_set must be one of"),
    ({"layers": []}, "layers must name at least one"),
    ({"lateness_weight": float("nan")}, "lateness_weight must be a number >= 0"),
])
def test_bad_settings_are_refused_by_name(change, message):
    with pytest.raises(ValueError, match=message):
        FinetuneConfig.from_dict(change)


def test_only_the_named_layer_moves_and_a_resumed_run_ends_where_a_straight_one_does(base_policy, tmp_path):
    config = FinetuneConfig.from_dict({**TINY, "generations": 2})
    straight = finetune(str(base_policy), tmp_path / "straight", config, seed=5)
    assert straight["generations"] == 2 and straight["episodes_this_run"] == 2 * 3
    assert all(state_paths(tmp_path / "straight")[i].is_file() for i in (0, 1))

    finetune(str(base_policy), tmp_path / "resumed", FinetuneConfig.from_dict({**TINY, "generations": 1}), seed=5)
    resumed = finetune(str(base_policy), tmp_path / "resumed", config, seed=5)
    assert resumed["resumed_at"] == 1 and resumed["episodes_this_run"] == 3
    def timeless(log):
        return [{k: v for k, v in e.items() if k != "wall_s"} for e in log]

    assert timeless(resumed["log"]) == timeless(straight["log"])

    base, _ = load_policy(base_policy)
    a, meta = load_policy(tmp_path / "straight")
    b, _ = load_policy(tmp_path / "resumed")
    moved = []
    for (name, p0), p1, p2 in zip(base.named_parameters(), a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p1, p2), name  # resumed == straight, weight for weight
        if not torch.equal(p0, p1):
            moved.append(name)
    assert moved == ["head.2.weight", "head.2.bias"]
    assert meta["seed"] == 3 and meta["finetune"]["tuned_parameters"] == moved  # the base's metadata is kept

    with pytest.raises(ValueError, match=r"other inputs \(seed differ\)"):
        finetune(str(base_policy), tmp_path / "straight", config, seed=6)
    with pytest.raises(ValueError, match="at generation 2, past the 1 asked for"):
        finetune(str(base_policy), tmp_path / "straight", FinetuneConfig.from_dict({**TINY, "generations": 1}), seed=5)


def test_the_command_writes_a_checkpoint_and_its_summary_and_names_bad_config_files(base_policy, tmp_path, capsys):
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(json.dumps(TINY))
    out, summary = tmp_path / "tuned", tmp_path / "summary.json"
    assert main(["finetune", "--policy", str(base_policy), "--out", str(out), "--config", str(cfg), "--generations",
                 "1", "--executor", "serial", "--json", str(summary)]) == 0
    printed = capsys.readouterr()
    assert "finetuned policy" in printed.out
    assert "generation 1/1: mean level value on its runs" in printed.err  # not a terminal: a line per generation
    report = json.loads(summary.read_text())
    assert report["generations"] == 1 and report["transform"] is None and len(report["log"]) == 1
    assert load_policy(out)[1]["finetune"]["config"]["pairs"] == 1

    cfg.write_text("pairs: 1\nsigmaa: 0.1\n")
    assert main(["finetune", "--policy", str(base_policy), "--out", str(tmp_path / "x"), "--config", str(cfg),
                 "--executor", "serial"]) == 2
    err = capsys.readouterr().err
    assert "flipper: error: " in err and str(cfg) in err and "sigmaa" in err


def test_the_command_refuses_a_report_that_would_replace_the_checkpoints_sidecar(base_policy, tmp_path, capsys):
    """``--out y.safetensors`` names checkpoint ``y``: its sidecar is ``y.json``, which ``--json`` must not take."""
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(json.dumps(TINY))  # were the check to miss, the run would be short and the test fail at once
    assert main(["finetune", "--policy", str(base_policy), "--out", str(tmp_path / "y.safetensors"), "--json",
                 str(tmp_path / "y.json"), "--config", str(cfg), "--generations", "1", "--executor", "serial"]) == 2
    assert "is a file that --out" in capsys.readouterr().err
    assert not (tmp_path / "y.es.json").exists()  # refused before any generation ran
