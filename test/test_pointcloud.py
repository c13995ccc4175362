"""PointCloud2 <-> numpy: every datatype, byte order, padding, organised clouds, NaN points, CDR, bad input.

Clouds under test are packed byte by byte with ``struct`` (an encoder independent of the code under
test), with padding bytes set to 0xFF so that reading padding by mistake shows up as NaN or garbage.
"""

from __future__ import annotations

import math
import struct
import time

import numpy as np
import pytest

from perception.messages import msg, typestore
from perception.pointcloud import CloudError, cloud_to_array, cloud_to_xyz, xyz_to_cloud

PC2 = "sensor_msgs/msg/PointCloud2"
STRUCT = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
SIZE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}
NUMPY = {1: np.int8, 2: np.uint8, 3: np.int16, 4: np.uint16, 5: np.int32, 6: np.uint32, 7: np.float32, 8: np.float64}


def field(name, offset, datatype, count=1):
    return msg("sensor_msgs/msg/PointField")(name=name, offset=offset, datatype=datatype, count=count)


def hand_cloud(points, fields, point_step, big_endian=False, height=1, row_step=None, is_dense=False, trim=0):
    """A PointCloud2 packed with struct. ``points``: list (height * width) of dicts name -> value(s)."""
    width = len(points) // height
    row_step = width * point_step if row_step is None else row_step
    buf = bytearray(b"\xff" * (row_step * height))
    order = ">" if big_endian else "<"
    for k, p in enumerate(points):
        r, c = divmod(k, width)
        for f in fields:
            values = p[f.name] if f.count > 1 else [p[f.name]]
            values = [int(v) if f.datatype <= 6 else float(v) for v in values]
            struct.pack_into(order + STRUCT[f.datatype] * f.count, buf, r * row_step + c * point_step + f.offset, *values)
    data = np.frombuffer(bytes(buf[: len(buf) - trim]), dtype=np.uint8).copy()
    return msg(PC2)(
        header=msg("std_msgs/msg/Header")(stamp=msg("builtin_interfaces/msg/Time")(sec=1, nanosec=0), frame_id="lidar"),
        height=height, width=width, fields=fields, is_bigendian=big_endian, point_step=point_step,
        row_step=row_step, data=data, is_dense=is_dense,
    )


def cdr_round_trip(cloud):
    raw = typestore().serialize_cdr(cloud, PC2)
    return typestore().deserialize_cdr(bytes(raw), PC2)


def xyz_dicts(xyz):
    return [dict(zip("xyz", p, strict=True)) for p in xyz]


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("datatype", range(1, 9), ids=[STRUCT[d] for d in range(1, 9)])
def test_every_datatype_and_byte_order_with_point_padding(datatype, big_endian):
    signed = datatype in (1, 3, 5, 7, 8)
    xyz = np.array([[1, 2, 3], [-4, 5, -6], [7, -8, 9], [0, 0, 0], [100, -100, 127]], dtype=np.float64)
    if not signed:
        xyz = np.abs(xyz)
    s = SIZE[datatype]
    # shuffled offsets with gaps, then 5 padding bytes at the end of each point
    fields = [field("x", 2 * s + 4, datatype), field("y", 0, datatype), field("z", s + 2, datatype)]
    cloud = hand_cloud(xyz_dicts(xyz), fields, point_step=3 * s + 9, big_endian=big_endian)
    for c in (cloud, cdr_round_trip(cloud)):
        got = cloud_to_xyz(c)
        assert got.dtype == np.float64 and got.shape == (5, 3)
        np.testing.assert_array_equal(got, xyz)
        arr = cloud_to_array(c)
        assert arr.dtype.names == ("x", "y", "z")
        assert arr.dtype["x"] == np.dtype(NUMPY[datatype])  # native order after conversion
        np.testing.assert_array_equal(arr["y"], xyz[:, 1])


def test_organised_cloud_with_row_padding_and_nan_points():
    height, width, point_step = 3, 4, 16
    xyz = np.arange(36, dtype=np.float64).reshape(12, 3) / 4
    xyz[6] = [np.nan, np.nan, np.nan]  # (row 1, col 2): no return
    xyz[11, 2] = np.inf
    fields = [field("x", 0, 7), field("y", 4, 7), field("z", 8, 7)]
    cloud = hand_cloud(xyz_dicts(xyz), fields, point_step, big_endian=True, height=height, row_step=width * point_step + 6)
    assert cloud.row_step == 70
    for c in (cloud, cdr_round_trip(cloud)):
        got = cloud_to_xyz(c)
        np.testing.assert_array_equal(got, xyz[[0, 1, 2, 3, 4, 5, 7, 8, 9, 10]])  # row by row, bad points dropped
        arr = cloud_to_array(c, keep_shape=True)
        assert arr.shape == (height, width)
        assert arr["x"][2, 1] == xyz[9, 0] and arr["z"][0, 3] == xyz[3, 2]
        assert np.isnan(arr["y"][1, 2]) and np.isinf(arr["z"][2, 3])
        assert cloud_to_array(c).shape == (12,)


@pytest.mark.parametrize("bad", [(0, np.nan), (1, np.nan), (2, np.nan), (0, np.inf), (2, -np.inf)])
def test_non_finite_points_are_dropped_when_not_dense(bad):
    xyz = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    xyz[1, bad[0]] = bad[1]
    fields = [field("x", 0, 8), field("y", 8, 8), field("z", 16, 8)]
    got = cloud_to_xyz(hand_cloud(xyz_dicts(xyz), fields, 24, is_dense=False))
    np.testing.assert_array_equal(got, xyz[[0, 2]])


def test_fields_with_count_above_one():
    points = [
        {"x": 1.0, "y": 2.0, "z": 3.0, "normal": (0.0, 0.6, 0.8), "ring": 7},
        {"x": -1.0, "y": 0.5, "z": 0.25, "normal": (1.0, 0.0, 0.0), "ring": 65535},
    ]
    fields = [field("x", 0, 7), field("y", 4, 7), field("z", 8, 7), field("normal", 12, 7, count=3), field("ring", 24, 4)]
    for c in (cloud := hand_cloud(points, fields, 32), cdr_round_trip(cloud)):
        arr = cloud_to_array(c)
        assert arr["normal"].shape == (2, 3)
        np.testing.assert_allclose(arr["normal"], [[0.0, 0.6, 0.8], [1.0, 0.0, 0.0]], rtol=1e-7)
        np.testing.assert_array_equal(arr["ring"], [7, 65535])
        np.testing.assert_array_equal(cloud_to_xyz(c), [[1, 2, 3], [-1, 0.5, 0.25]])


def test_data_as_bytes_or_list_of_ints():
    xyz = np.array([[1.5, -2.0, 0.25]])
    cloud = hand_cloud(xyz_dicts(xyz), [field("x", 0, 7), field("y", 4, 7), field("z", 8, 7)], 12)
    raw = cloud.data.tobytes()
    for data in (raw, list(raw), memoryview(raw)):
        cloud.data = data
        np.testing.assert_array_equal(cloud_to_xyz(cloud), xyz)


@pytest.mark.parametrize("organised", [None, (2, 3)], ids=["flat", "organised"])
@pytest.mark.parametrize("point_pad", [0, 5])
@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("datatype", range(1, 9), ids=[STRUCT[d] for d in range(1, 9)])
def test_xyz_to_cloud_round_trips_through_cdr(datatype, big_endian, point_pad, organised):
    rng = np.random.default_rng(datatype)
    xyz = rng.uniform(-1.0, 1.0, size=(6, 3)) * (0.9 if datatype > 6 else 100.0)
    if datatype in (2, 4, 6):
        xyz = np.abs(xyz)
    intensity = np.arange(6, dtype=np.uint16) * 1000
    normal = rng.normal(size=(6, 3))
    packed = 3 * SIZE[datatype] + 2 + 24
    cloud = xyz_to_cloud(
        xyz, "lidar", 4.5, extra={"intensity": intensity, "normal": normal}, dtype=NUMPY[datatype],
        big_endian=big_endian, point_step=packed + point_pad, organised_shape=organised,
        row_step=None if organised is None else 3 * (packed + point_pad) + 3,
    )
    assert isinstance(cloud.data, np.ndarray) and cloud.data.dtype == np.uint8  # what rosbags needs
    assert [(f.name, f.datatype, f.count) for f in cloud.fields] == [
        ("x", datatype, 1), ("y", datatype, 1), ("z", datatype, 1), ("intensity", 4, 1), ("normal", 8, 3),
    ]
    assert cloud.point_step == packed + point_pad and (cloud.height, cloud.width) == (organised or (1, 6))
    assert cloud.data.size == cloud.row_step * cloud.height and cloud.is_dense
    back = cdr_round_trip(cloud)
    assert back.header.frame_id == "lidar" and (back.header.stamp.sec, back.header.stamp.nanosec) == (4, 500_000_000)
    expected = np.rint(xyz) if datatype <= 6 else xyz
    np.testing.assert_allclose(cloud_to_xyz(back), expected, rtol=1e-6 if datatype == 7 else 0, atol=1e-7)
    arr = cloud_to_array(back)
    np.testing.assert_array_equal(arr["intensity"], intensity)
    np.testing.assert_array_equal(arr["normal"], normal)


def test_xyz_to_cloud_bytes_match_struct_layout():
    xyz = np.array([[1.0, 2.0, 3.0], [-0.5, 0.25, 8.0]])
    cloud = xyz_to_cloud(xyz, "lidar", 0.0, extra={"intensity": np.array([3, 9], dtype=np.uint16)}, point_step=16)
    expected = struct.pack("<fffH2x", 1, 2, 3, 3) + struct.pack("<fffH2x", -0.5, 0.25, 8, 9)
    assert cloud.data.tobytes() == expected
    be = xyz_to_cloud(xyz, "lidar", 0.0, dtype=np.float64, big_endian=True)
    assert be.is_bigendian and be.data.tobytes() == struct.pack(">6d", *xyz.ravel())


def test_xyz_to_cloud_marks_nan_clouds_not_dense():
    xyz = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 0.0]])
    cloud = xyz_to_cloud(xyz, "lidar", 0.0)
    assert cloud.is_dense is False
    np.testing.assert_array_equal(cloud_to_xyz(cloud), xyz[:1])


@pytest.mark.parametrize("xyz", [np.zeros((0, 3)), np.full((4, 3), np.nan)], ids=["empty", "all-nan"])
def test_empty_and_all_nan_clouds_give_no_points(xyz):
    got = cloud_to_xyz(cdr_round_trip(xyz_to_cloud(xyz, "lidar", 1.0)))
    assert got.shape == (0, 3) and got.dtype == np.float64


def xyz_fields():
    return [field("x", 0, 7), field("y", 4, 7), field("z", 8, 7)]


def _cloud(**changes):
    cloud = hand_cloud(xyz_dicts(np.ones((10, 3))), xyz_fields(), 12)
    for name, value in changes.items():
        setattr(cloud, name, value)
    return cloud


BAD_CLOUDS = {
    "no z": (lambda: _cloud(fields=xyz_fields()[:2]), r"missing field 'z'"),
    "no x": (lambda: _cloud(fields=[field("intensity", 0, 7), *xyz_fields()[1:]]), r"missing field 'x'"),
    "point_step short": (lambda: _cloud(point_step=8, row_step=80), r"point_step 8 < 12 needed by fields"),
    "data short": (
        lambda: hand_cloud(xyz_dicts(np.ones((10, 3))), xyz_fields(), 12, trim=24),
        r"data 96 bytes < 120 = row_step\*height",
    ),
    "organised data short": (
        lambda: hand_cloud(xyz_dicts(np.ones((6, 3))), xyz_fields(), 12, height=2, row_step=40, trim=1),
        r"data 79 bytes < 80 = row_step\*height",
    ),
    "row_step short": (lambda: _cloud(row_step=100), r"row_step 100 < 120 = width\*point_step"),
    "unknown datatype": (lambda: _cloud(fields=[*xyz_fields()[:2], field("z", 8, 9)]), r"field 'z' has unknown datatype 9"),
    "x count 2": (lambda: _cloud(fields=[field("x", 0, 7, 2), *xyz_fields()[1:]], point_step=12), r"field 'x' has count 2"),
    "zero count": (lambda: _cloud(fields=[*xyz_fields(), field("ring", 11, 2, 0)]), r"field 'ring' has count 0"),
    "duplicate": (lambda: _cloud(fields=[*xyz_fields(), field("y", 0, 7)]), r"field 'y' appears twice"),
}


@pytest.mark.parametrize("case", list(BAD_CLOUDS))
def test_malformed_clouds_raise_cloud_error_naming_the_problem(case):
    make, message = BAD_CLOUDS[case]
    with pytest.raises(CloudError, match=message):
        cloud_to_xyz(make())
    assert issubclass(CloudError, ValueError)  # callers may catch ValueError


def test_cloud_to_array_checks_layout_but_not_xyz():
    cloud = _cloud(fields=[field("intensity", 0, 7)], point_step=12)
    assert cloud_to_array(cloud).dtype.names == ("intensity",)
    with pytest.raises(CloudError, match="point_step 2 < 4"):
        cloud_to_array(_cloud(fields=[field("intensity", 0, 7)], point_step=2, row_step=20))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": np.zeros((4, 2))}, r"shape \(N, 3\)"),
        ({"organised_shape": (3, 3)}, "does not hold 4 points"),
        ({"point_step": 8}, "point_step 8 < 12"),
        ({"organised_shape": (2, 2), "row_step": 20}, "row_step 20 < width"),
        ({"extra": {"flag": np.ones(4, dtype=bool)}}, "no PointField datatype"),
        ({"extra": {"intensity": np.ones(3)}}, "extra field 'intensity'"),
        ({"extra": {"x": np.ones(4)}}, "extra field 'x'"),
        ({"points": np.full((4, 3), np.nan), "dtype": np.int16}, "cannot hold NaN"),
        ({"dtype": np.float16}, "no PointField datatype"),
    ],
)
def test_xyz_to_cloud_rejects_bad_arguments(kwargs, message):
    args = {"points": np.zeros((4, 3)), "frame_id": "lidar", "t_seconds": 0.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        xyz_to_cloud(**args)


def test_large_cloud_reads_fast_enough_for_the_dem_builder():
    """1M points: reading xyz must not dominate the DEM builder's 30 M points/s budget (a loose bound)."""
    xyz = np.random.default_rng(0).normal(size=(1_000_000, 3))
    cloud = xyz_to_cloud(xyz, "lidar", 0.0, extra={"intensity": np.ones(1_000_000, dtype=np.float32)}, point_step=32)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        got = cloud_to_xyz(cloud)
        best = min(best, time.perf_counter() - t0)
    np.testing.assert_allclose(got, xyz.astype(np.float32))
    assert best < 0.25, f"cloud_to_xyz took {best:.3f} s for 1M points"
