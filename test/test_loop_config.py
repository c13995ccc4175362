"""LoopConfig (flipper_control/learning/loop_config.py): building, validation, YAML loading and the shipped configs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from tiny_loop import tiny_loop

from flipper_control.learning.imitation_config import ImitationConfig
from flipper_control.learning.loop import DEMO_CONFIG, LoopConfig, demo_config, load_loop_config
from planning.planner_config import PlannerConfig
from sim.world import WorldError

REPO = Path(__file__).resolve().parents[1]
EVAL_WORLDS = ["flat", "step_up"]  # tiny_loop's (as in test_loop.py)


def tiny_config(**changes) -> LoopConfig:
    return LoopConfig.from_dict(tiny_loop(**changes))


def test_config_round_trips_through_to_dict_and_json():
    config = tiny_config()
    assert LoopConfig.from_dict(config.to_dict()) == config
    assert LoopConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert isinstance(config.coarse, PlannerConfig) and isinstance(config.imitation, ImitationConfig)
    assert config.eval_worlds == tuple(EVAL_WORLDS)


def test_a_planner_section_changes_only_the_fields_it_names():
    config = LoopConfig.from_dict({"guided": {"guide_range": "actions"}, "coarse": {"max_cpu_s": 12.0}})
    assert config.guided == replace(LoopConfig().guided, guide_range="actions")  # still the fine set, its budgets
    assert config.guided.action_set == "fine"
    assert config.coarse == replace(LoopConfig().coarse, max_cpu_s=12.0)


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match="iteratons"):
        LoopConfig.from_dict({"iteratons": 3})
    with pytest.raises(ValueError, match="max_expansion"):
        LoopConfig.from_dict({"coarse": {"max_expansion": 10}})
    with pytest.raises(ValueError, match="epoch"):
        LoopConfig.from_dict({"imitation": {"epoch": 3}})


@pytest.mark.parametrize(("changes", "message"), [
    ({"executor": "threads"}, "executor must be one of serial, process, ray"),
    ({"iterations": 0}, "iterations must be an integer >= 1"),
    ({"iterations": True}, "iterations must be an integer, got True"),
    ({"candidates": -1}, "candidates must be an integer >= 1"),
    ({"eval_runs": 1.5}, "eval_runs must be an integer >= 1"),
    ({"workers": 0}, "workers must be an integer >= 1"),
    ({"baselines": ["random"]}, "baseline 'random'"),
    ({"coarse": {"action_set": "bogus"}}, "bogus"),
    ({"training_set": "test"}, "training_set must be one of training, steep, half_steep"),
    ({"coarse": {"policy_start": 0.5}}, "coarse.policy_start must be 0"),
    ({"guided": {"policy_start": 2.0}}, "policy_start must be in"),
    ({"guided": {"policy_start_before_s": 0.0}}, "policy_start_before_s must be > 0"),
    ({"first_guide": "heuristics"}, "first_guide must be one of None, heuristic, got 'heuristics'"),
])
def test_invalid_values_are_refused_with_a_reason(changes, message):
    with pytest.raises(ValueError, match=message):
        LoopConfig.from_dict(changes)


@pytest.mark.parametrize("changes", [{"imitation": "small"}, {"coarse": 5}, {"seed": "a"}, {"eval_seed": -1},
                                     {"carry_best": "no"}, {"ensemble": 1}])
def test_mistyped_values_are_refused_when_the_config_is_built(changes):
    with pytest.raises(ValueError, match=next(iter(changes))):
        LoopConfig.from_dict(changes)


@pytest.mark.parametrize("field", ["eval_worlds", "selection_worlds"])
def test_an_unknown_world_fails_when_the_config_is_built(field, tmp_path):
    with pytest.raises(WorldError, match="nosuchworld"):
        LoopConfig.from_dict({field: ["flat", "nosuchworld"]})
    path = tmp_path / "loop.yaml"
    path.write_text(f"{field}: [nosuchworld]\n")
    with pytest.raises(ValueError, match="nosuchworld") as info:
        load_loop_config(path)
    assert str(path) in str(info.value)


def test_load_loop_config_names_a_missing_or_malformed_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ValueError, match="nope.yaml"):
        load_loop_config(missing)
    listed = tmp_path / "list.yaml"
    listed.write_text("- iterations\n- 2\n")
    with pytest.raises(ValueError, match="list.yaml"):
        load_loop_config(listed)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_loop_config(empty) == LoopConfig()


def test_demo_yaml_equals_the_embedded_demo_config():
    from flipper_control.rl.flipper_cup import DEMO_ITERATIONS

    assert load_loop_config(REPO / "configs" / "demo.yaml") == demo_config()
    assert demo_config() == LoopConfig.from_dict(DEMO_CONFIG)
    assert DEMO_ITERATIONS == demo_config().iterations  # flipper-CUP's defaults: the demo's last policy and sources


def test_demo_brisk_yaml_is_the_demo_with_plans_within_2_s_of_schedule():
    """configs/demo_brisk.yaml must stay the demo plus the schedule bound, the guided set and the imitation DEMs its
    figures were measured with (the plain fine set and G's DEMs only; the demo now guides with the rear-pressed set
    and randomises half of imitation's DEMs)."""
    brisk, demo = load_loop_config(REPO / "configs" / "demo_brisk.yaml"), demo_config()
    assert brisk.first_guide is None and demo.first_guide == "heuristic"  # measured with unguided coarse iteration 1
    assert brisk.coarse.max_delay_s == brisk.guided.max_delay_s == 2.0 and demo.guided.max_delay_s == 3.5
    assert brisk.guided.action_set == "fine" and demo.guided.action_set == "fine_rear"
    assert brisk.transfer.randomize_share == 0.0 and demo.transfer.randomize_share == 0.5
    assert replace(brisk, coarse=replace(brisk.coarse, max_delay_s=demo.coarse.max_delay_s),
                   guided=replace(brisk.guided, max_delay_s=demo.guided.max_delay_s, action_set=demo.guided.action_set),
                   transfer=replace(brisk.transfer, randomize_share=demo.transfer.randomize_share),
                   first_guide=demo.first_guide) == demo


def test_full_yaml_is_seed_000_scale():
    full = load_loop_config(REPO / "configs" / "full.yaml")
    assert full.iterations >= 7 and full.candidates == 10
    assert full.coarse.action_set == "coarse" and full.guided.action_set == "fine"
    assert full.executor == "process"
    # what the README says it trains on, and the per-epoch cap that keeps later iterations as cheap as early ones
    assert full.training_set == "half_steep" and full.imitation.samples_per_epoch == 50_000
    # Algorithm 1 at full scale: the GAN, and the 5 proxy runs per world
    assert full.transfer is not None and full.transfer.mode == "gan" and full.transfer.proxy_eval_runs == 5
