"""``flipper bench gan --paired-worlds``: generators judged on same-pose pairs of exact and reality-proxy DEMs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flipper_control.bench.gan_paired import paired_transfer
from flipper_control.cli import main
from flipper_control.learning.paired_eval import collect_pairs
from perception.cyclegan import CycleGan, save_gan

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def identity_gan(tmp_path_factory):
    """An untrained CycleGAN: its G is the identity, whatever the noise."""
    path = tmp_path_factory.mktemp("gan") / "gan"
    save_gan(path, CycleGan())
    return path


def test_pairs_share_poses_and_differ_only_in_sensing():
    pairs = collect_pairs(2, world_seed=7, seed=0)
    n = len(pairs["exact"])
    assert pairs["proxy"].shape == pairs["exact"].shape and pairs["scalars"].shape == (n, 6)
    assert set(np.unique(pairs["traj"])) == {0, 1}
    assert not np.isnan(pairs["exact"]).any() and np.isnan(pairs["proxy"]).any()
    # same pose: measured cells of the proxy lie within centimetres of the exact heights
    diff = np.abs(pairs["proxy"] - pairs["exact"])
    assert np.nanmedian(diff) < 0.05


def test_identity_generator_closes_nothing_and_the_oracle_places_nan_exactly(identity_gan):
    r = paired_transfer(str(identity_gan), worlds=2, world_seed=7, seed=0)
    c = r["metrics"]["candidates"]
    assert r["pairs"] == c["G"]["n"] == c["identity"]["n"]
    # an untrained G returns the exact DEMs: the same distances as doing nothing
    for metric in ("nan_map", "nan_fraction", "height", "sliced_wasserstein"):
        assert c["G"]["distances"][metric] == pytest.approx(c["identity"]["distances"][metric], abs=1e-6)
    assert r["paired_nan"]["predicted_nan_share"] == 0.0 and r["paired_nan"]["recall"] == 0.0
    # the terrain's shadows on top: NaN where the proxy has them more often than not, and only there (G adds none)
    shadows = r["paired_nan_shadows"]
    assert shadows["predicted_nan_share"] > 0.0 and shadows["precision"] > 0.5 and shadows["recall"] > 0.0
    assert c["G_shadows"]["closed_share"]["nan_map"] > 0.0
    # the oracle takes the proxy's own NaN cells: every NaN metric is closed completely
    assert c["sensor_oracle"]["closed_share"]["nan_map"] == pytest.approx(1.0)
    assert c["sensor_oracle"]["classifier"]["accuracy"] < c["identity"]["classifier"]["accuracy"]
    assert 0.0 <= r["real_halves_accuracy"] <= 1.0
    assert 0.0 < r["sensor_oracle"]["bias_m"] < 0.05
    # the identity moves no height; the proxy moves its measured cells by its noise and bias (centimetres)
    moved = r["height_change"]
    assert moved["G"]["mean_abs_m"] == 0.0 and moved["G"]["cells"] == c["G"]["n"] * 100
    assert 0.0 < moved["real"]["mean_abs_m"] < 0.05 and moved["real"]["cells"] < moved["G"]["cells"]
    assert moved["randomized"]["mean_abs_m"] > 0.0


def test_bad_requests_are_refused(identity_gan, tmp_path, capsys):
    with pytest.raises(ValueError, match="at least 2 worlds"):
        collect_pairs(1)
    assert main(["bench", "gan", "--paired-worlds", "2"]) == 2
    assert main(["bench", "gan", "--gan", str(identity_gan), "--paired-worlds", "1"]) == 2
    bad = tmp_path / "nope"
    assert main(["bench", "gan", "--gan", str(bad), "--paired-worlds", "2", "--calls", "10", "--repeats", "1"]) != 0
    err = capsys.readouterr().err
    assert "with --gan" in err and "at least 2" in err and "nope" in err


def test_cli_writes_the_paired_table(identity_gan, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "gan", "--gan", str(identity_gan), "--paired-worlds", "2", "--calls", "50", "--repeats", "1",
                 "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["paired"]["pairs"] > 0 and "sensor_oracle" in saved["paired"]["metrics"]["candidates"]
    printed = capsys.readouterr().out
    assert "sensor oracle: bias" in printed and "heights kept, moved from the exact DEM" in printed
    assert "G_shadows's NaN placement at the same pose" in printed
    assert saved["paired"]["height_change"]["G"]["share_over"] == 0.0
