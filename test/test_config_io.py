"""Configs with wrong kinds of values, nested or not, stop with a message naming the config and the field
(sim.config_io), before any work: the hostile-user cases of the hardening issue."""

from __future__ import annotations

import pytest
import yaml

from flipper_control.learning.loop import load_loop_config
from flipper_control.policy import MAX_PARAMETERS, NanAwarePolicy, PolicyConfig


@pytest.mark.parametrize(
    "text, needle",
    [
        ('coarse: {max_expansions: "x"}', "coarse: max_expansions must be an integer, got 'x'"),
        ("imitation: {epochs: 1e9}", "imitation: epochs must be an integer, got '1e9' (YAML reads an exponent"),
        ('guided: {max_delay_s: "3"}', "guided: max_delay_s must be a number, got '3' (quoted in the file?)"),
        ('carry_best: "yes"', "loop config: carry_best must be true or false, got 'yes'"),
        ("selection_worlds: 5", "loop config: selection_worlds must be a name or a list of names, got 5"),
        ('coarse: {smart_start: {c_ss: "a"}}', "coarse.smart_start: c_ss must be a number, got 'a'"),
        ("baselines: [heuristic, fixed:warp]", "baseline 'fixed:warp': unknown posture 'warp'"),
        ("imitation: {policy: {hidden: [100000000]}}", "parameters is more than a flipper policy needs"),
        ("imitation: {lr: null}", "imitation: lr must be a number, got null"),
        # nested sections are named by their path in the file, not by the class that checks them
        ("imitation: {policy: {hiden: [8]}}", "imitation.policy: unknown field(s) hiden; allowed:"),
        ("transfer: {gan: {epochs: 0}}", "transfer.gan: epochs must be an integer >= 1, got 0"),
        ("transfer: {gan: {gan: {chanels: 3}}}", "transfer.gan.gan: unknown field(s) chanels"),
        ("transfer: {randomization: {dropuot: 0.1}}", "transfer.randomization: unknown field(s) dropuot"),
        ("transfer: {reality: {lidar: {period: -3}}}", "transfer.reality: lidar: period must be > 0 s, got -3"),
        ("transfer: {real_masks: {bins: 3}}", "transfer.real_masks: "),
    ],
)
def test_a_wrong_kind_of_value_names_the_file_config_and_field(tmp_path, text, needle):
    path = tmp_path / "loop.yaml"
    path.write_text(text + "\n")
    yaml.safe_load(path.read_text())  # the file itself is valid YAML: the value is what is wrong
    with pytest.raises(ValueError) as info:
        load_loop_config(path)
    assert str(info.value).startswith(f"{path}: ") and needle in str(info.value)


@pytest.mark.parametrize("config", [PolicyConfig(), PolicyConfig(hidden=(), conv_kernel=5), PolicyConfig(hidden=(64, 32))])
def test_parameter_count_is_what_the_network_builds(config):
    assert config.parameter_count() == sum(p.numel() for p in NanAwarePolicy(config).parameters())


def test_the_parameter_bound_leaves_room_for_real_policies():
    assert PolicyConfig(hidden=(512, 512), conv_channels=32).parameter_count() < MAX_PARAMETERS


def test_a_section_error_keeps_its_path_through_nesting_and_a_process_pool():
    import pickle

    from sim.config_io import SectionError, in_section

    def inner(_):
        raise ValueError("GanConfig: kernel must be odd, got 4")

    with pytest.raises(SectionError) as info:
        in_section("transfer", lambda d: in_section("gan", lambda e: in_section("gan", inner, e), d), {})
    assert str(info.value) == "transfer.gan.gan: kernel must be odd, got 4"
    copy = pickle.loads(pickle.dumps(info.value))  # workers send errors back pickled
    assert (copy.path, copy.problem, str(copy)) == (info.value.path, info.value.problem, str(info.value))
    # a message that already names the section is not named twice; one without a checker's label is kept whole
    with pytest.raises(SectionError, match=r"^reality: lidar: period"):
        in_section("reality", lambda d: (_ for _ in ()).throw(ValueError("reality: lidar: period < 0")), {})
    with pytest.raises(SectionError, match=r"^guided: unknown action set 'foo'$"):
        in_section("guided", lambda d: (_ for _ in ()).throw(ValueError("unknown action set 'foo'")), {})
