"""Guiding-trajectory datasets (planning/dataset.py): safetensors round trip, training arrays, content hash, bad files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy

from planning.dataset import FORMAT, DatasetError, Trajectory, TrajectoryDataset


def _trajectory(length: int, seed: int, world: str = "stairs_up", nan: bool = False) -> Trajectory:
    rng = np.random.default_rng(seed)
    dem = rng.normal(-0.09, 0.1, (length, 20, 5)).astype(np.float32)
    if nan:
        dem[rng.random(dem.shape) < 0.25] = np.nan
    return Trajectory(dem, rng.uniform(-1, 1, (length, 6)), rng.uniform(-1, 1, (length, 4)), success=True,
                      meta={"world": world, "seed": seed, "cpu_s": 1.5, "expansions": 42, "action_set": "coarse"})


def _dataset() -> TrajectoryDataset:
    return TrajectoryDataset([
        _trajectory(7, 0, nan=True),
        Trajectory.failed("time limit reached", (20, 5), {"world": "step_up", "seed": 1, "cpu_s": 30.0}),
        _trajectory(4, 2, world="pallet"),
    ])


def _equal(a: TrajectoryDataset, b: TrajectoryDataset) -> None:
    assert len(a) == len(b)
    for ta, tb in zip(a.trajectories, b.trajectories, strict=True):
        assert (ta.success, ta.reason, ta.meta) == (tb.success, tb.reason, tb.meta)
        for name in ("dem", "proprio", "action"):
            np.testing.assert_array_equal(getattr(ta, name), getattr(tb, name))  # NaN == NaN here


def test_round_trip_keeps_failed_metadata_and_nan(tmp_path):
    ds = _dataset()
    path = ds.save(tmp_path / "d.safetensors")
    back = TrajectoryDataset.load(path)
    _equal(ds, back)
    failed = back.trajectories[1]
    assert not failed.success and len(failed) == 0 and failed.reason == "time limit reached"
    assert failed.meta == {"world": "step_up", "seed": 1, "cpu_s": 30.0} and failed.dem.shape == (0, 20, 5)
    assert np.isnan(back.trajectories[0].dem).sum() == np.isnan(ds.trajectories[0].dem).sum() > 0
    assert back.trajectories[0].dem.dtype == np.float32
    assert [t.summary()["samples"] for t in back.trajectories] == [7, 0, 4]


def test_arrays_hold_only_successful_samples():
    ds = _dataset()
    ds.trajectories.append(Trajectory(np.zeros((3, 20, 5)), np.zeros((3, 6)), np.zeros((3, 4)), success=False, reason="rolled"))
    arrays = ds.arrays()
    assert arrays["dem"].shape == (11, 20, 5) and arrays["proprio"].shape == (11, 6) and arrays["action"].shape == (11, 4)
    assert arrays["traj_id"].tolist() == [0] * 7 + [2] * 4  # indices into ``trajectories``, failed ones skipped
    np.testing.assert_array_equal(arrays["action"][7:], ds.trajectories[2].action)
    assert ds.n_samples == 11 and len(ds.successful) == 2
    empty = TrajectoryDataset([Trajectory.failed("x", (20, 5))]).arrays()
    assert empty["dem"].shape == (0, 20, 5) and len(empty["traj_id"]) == 0
    assert TrajectoryDataset().arrays()["action"].shape == (0, 4)


def test_extend_aggregates_iterations(tmp_path):
    first, second = _dataset(), TrajectoryDataset([_trajectory(5, 9, world="rubble")])
    assert first.extend(second) is first
    first.extend([_trajectory(2, 10)])
    assert len(first) == 5 and first.n_samples == 7 + 4 + 5 + 2
    assert first.arrays()["traj_id"].tolist() == [0] * 7 + [2] * 4 + [3] * 5 + [4] * 2
    _equal(first, TrajectoryDataset.load(first.save(tmp_path / "all.safetensors")))


def test_sha256_identifies_the_content(tmp_path):
    ds = _dataset()
    digest = ds.sha256()
    assert len(digest) == 64 and all(ds.sha256() == digest for _ in range(10))  # to_bytes() is not byte-stable; the hash is
    assert TrajectoryDataset.load(ds.save(tmp_path / "d.safetensors")).sha256() == digest
    # and across processes (safetensors orders its metadata map differently per call and per process)
    code = "import sys; from planning.dataset import TrajectoryDataset as D; print(D.load(sys.argv[1]).sha256())"
    path = str(tmp_path / "d.safetensors")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == digest
    changed = _dataset()
    changed.trajectories[2].action[0, 0] += 1e-3
    assert changed.sha256() != digest
    relabelled = _dataset()
    relabelled.trajectories[1].meta["world"] = "step_down"
    assert relabelled.sha256() != digest
    retimed = _dataset()  # the same trajectories planned again on a busier machine: the same data
    for t in retimed.trajectories:
        t.meta["cpu_s"] *= 3.0
    assert retimed.sha256() == digest and retimed.trajectories[0].meta["cpu_s"] == 4.5  # the record itself is kept


def test_empty_dataset_round_trips(tmp_path):
    back = TrajectoryDataset.load(TrajectoryDataset().save(tmp_path / "empty.safetensors"))
    assert len(back) == 0 and back.n_samples == 0


@pytest.mark.parametrize("damage", ["truncated", "cut_header", "garbage", "empty_file"])
def test_damaged_files_raise_naming_the_path(tmp_path, damage):
    good = _dataset().save(tmp_path / "good.safetensors").read_bytes()
    data = {"truncated": good[:-50], "cut_header": good[:20], "garbage": b"not a dataset" * 40, "empty_file": b""}[damage]
    path = tmp_path / f"{damage}.safetensors"
    path.write_bytes(data)
    with pytest.raises(DatasetError, match=f"{path}.*not a readable safetensors"):
        TrajectoryDataset.load(path)


def test_missing_file_raises_naming_the_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(DatasetError, match=f"{path}: no such dataset file"):
        TrajectoryDataset.load(path)


def _write(path, arrays, metadata):
    path.write_bytes(safetensors.numpy.save(arrays, metadata=metadata))
    return path


def test_wrong_format_and_inconsistent_headers_raise(tmp_path):
    ds = _dataset()
    arrays, header = ds._payload()
    good = {"format": FORMAT, "trajectories": json.dumps(header)}
    for name, meta, arr, message in [
        ("fmt", {**good, "format": "trajectories/0"}, arrays, "format 'trajectories/0', expected"),
        ("nofmt", {"trajectories": good["trajectories"]}, arrays, "not a trajectory dataset .no format"),
        ("json", {**good, "trajectories": "[{"}, arrays, "not valid JSON"),
        ("shape", {**good, "trajectories": "{\"a\": 1}"}, arrays, "must be a list of objects"),
        ("count", {**good, "trajectories": json.dumps(header[:1])}, arrays, "do not add up to the 11 samples"),
        ("missing", good, {k: v for k, v in arrays.items() if k != "traj_id"}, r"missing arrays \['traj_id'\]"),
        ("nonfinite", good, {**arrays, "action": np.where(np.arange(11)[:, None] == 3, np.nan, arrays["action"])}, "non-finite"),
    ]:
        path = _write(tmp_path / f"{name}.safetensors", {k: np.ascontiguousarray(v) for k, v in arr.items()}, meta)
        with pytest.raises(DatasetError, match=f"{path}: .*{message}"):
            TrajectoryDataset.load(path)


def test_inconsistent_trajectory_arrays_raise():
    with pytest.raises(DatasetError, match="trajectory arrays disagree"):
        Trajectory(np.zeros((3, 20, 5)), np.zeros((2, 6)), np.zeros((3, 4)), success=True)
