"""Same-pose pairs as the loop keeps them (flipper_control.learning.paired_eval) and the report's table of them."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors.numpy

from flipper_control.learning.paired_eval import load_pairs, paired_summary, save_pairs
from flipper_control.learning.report import table_paired
from flipper_control.learning.transfer_config import TransferConfig


def _pairs(n_traj: int = 4, per: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    """Exact flat DEMs and 'proxy' DEMs of the same poses: 1 cm higher, the two front rows unmeasured."""
    rng = np.random.default_rng(seed)
    exact = (-0.09 + 0.02 * rng.standard_normal((n_traj * per, 20, 5))).astype(np.float32)
    proxy = exact + np.float32(0.01)
    proxy[:, :2] = np.nan
    return {"exact": exact, "proxy": proxy, "scalars": np.zeros((len(exact), 6), np.float32),
            "traj": np.repeat(np.arange(n_traj), per)}


def test_pairs_round_trip_and_bad_files_name_themselves(tmp_path):
    pairs = _pairs()
    path = save_pairs(tmp_path / "pairs.safetensors", pairs, {"worlds": ["a", "b", "c", "d"]})
    back = load_pairs(path)
    assert all(np.array_equal(back[k], pairs[k], equal_nan=True) for k in pairs)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated.safetensors: not a readable pairs file"):
        load_pairs(truncated)
    safetensors.numpy.save_file({k: v for k, v in pairs.items() if k != "traj"}, str(tmp_path / "no_traj.safetensors"))
    with pytest.raises(ValueError, match="without traj"):
        load_pairs(tmp_path / "no_traj.safetensors")
    safetensors.numpy.save_file(pairs | {"proxy": pairs["proxy"][:-1]}, str(tmp_path / "short.safetensors"))
    with pytest.raises(ValueError, match="do not pair up"):
        load_pairs(tmp_path / "short.safetensors")


def test_a_transform_that_does_what_the_sensor_does_is_judged_close_on_pairs():
    pairs = _pairs()

    def like_the_proxy(dems, scalars, map_age):  # the sensor's own change: what a perfect G would learn
        out = dems + np.float32(0.01)
        out[:, :2] = np.nan
        return out

    s = paired_summary(like_the_proxy, pairs, seed=0)
    c = s["metrics"]["candidates"]
    assert s["pairs"] == 240 and s["worlds"] == 4 and set(c) == {"identity", "G"}
    assert c["identity"]["classifier"]["accuracy"] > 0.95 and c["G"]["classifier"]["accuracy"] <= 0.6
    assert s["nan"]["G"]["f1"] == 1.0 and c["G"]["closed_share"]["nan_map"] == pytest.approx(1.0)
    assert s["height_change"]["G"]["mean_abs_m"] == pytest.approx(0.01, abs=1e-6)
    assert s["metrics"]["content_floor"] is None  # the candidates show the proxy's own poses: 50 % is the mark


def test_paired_worlds_must_allow_two_halves():
    assert TransferConfig(paired_worlds=0).paired_worlds == 0 and TransferConfig().paired_worlds == 4
    for bad in (1, -2, 2.5, True):
        with pytest.raises(ValueError, match="paired_worlds must be 0"):
            TransferConfig(paired_worlds=bad)


def test_the_report_table_of_same_pose_pairs():
    paired = {"pairs": 812, "worlds": 4, "candidates": {
        "identity": {"accuracy": 0.97, "closed_share": {"nan_map": 0.0}, "nan_f1": None},
        "G": {"accuracy": 0.93, "closed_share": {"nan_map": 0.61, "height": 0.12, "classifier": None}, "nan_f1": 0.1},
        "randomized": {"accuracy": 0.8, "closed_share": {"nan_map": 0.3}, "nan_f1": 0.42}}}
    report = {"iterations": [{"iteration": 1, "transfer": {"gan": {"paired": paired}}},
                             {"iteration": 2, "transfer": {"gan": {"paired": None}}},  # pairs off, or an older run
                             {"iteration": 3, "transfer": {}}]}
    rows = table_paired(report).splitlines()
    assert len(rows) == 3 and "NaN F1: G / randomised" in rows[0]
    assert rows[2] == "| 1 | 812 (4 worlds) | 0.97 / 0.93 / 0.80 | 0.10 / 0.42 | 0.12 |"
    assert table_paired({"iterations": report["iterations"][1:]}) is None
