"""The shared message model: typestore with grid_map_msgs, stamps, topic table."""

from __future__ import annotations

import math

import pytest

from perception import messages
from perception.messages import GRIDMAP, GRIDMAP_INFO, TOPIC_TYPES, header, msg, stamp, to_nanoseconds, to_seconds, typestore


def test_typestore_is_one_instance_with_grid_map_msgs():
    ts = typestore()
    assert ts is typestore()
    assert GRIDMAP in ts.types and GRIDMAP_INFO in ts.types
    fields = [f for f in ts.types[GRIDMAP].__dataclass_fields__ if f != "__msgtype__"]
    assert fields == ["header", "info", "layers", "basic_layers", "data", "outer_start_index", "inner_start_index"]
    info_fields = [f for f in ts.types[GRIDMAP_INFO].__dataclass_fields__ if f != "__msgtype__"]
    assert info_fields == ["resolution", "length_x", "length_y", "pose"]


def test_every_topic_type_is_known():
    assert set(TOPIC_TYPES) == {
        messages.POINTS, messages.IMU, messages.JOINT_STATES, messages.TF, messages.TF_STATIC,
        messages.CMD_VEL, messages.ELEVATION_MAP, messages.FLIPPER_COMMANDS,
    }
    for topic, typename in TOPIC_TYPES.items():
        assert msg(typename).__msgtype__ == typename, topic
    assert TOPIC_TYPES["/points"] == "sensor_msgs/msg/PointCloud2"
    assert TOPIC_TYPES["/elevation_map"] == "grid_map_msgs/msg/GridMap"


def test_unknown_type_names_the_expected_form():
    with pytest.raises(KeyError, match="package/msg/Name"):
        msg("sensor_msgs/PointCloud2")


@pytest.mark.parametrize(
    ("t", "sec", "nanosec"),
    [(0.0, 0, 0), (1.5, 1, 500_000_000), (2.9999999999, 3, 0), (1_700_000_000.25, 1_700_000_000, 250_000_000)],
)
def test_stamp_splits_seconds_and_rounds_nanoseconds(t, sec, nanosec):
    s = stamp(t)
    assert (s.sec, s.nanosec) == (sec, nanosec)
    assert to_nanoseconds(s) == sec * 1_000_000_000 + nanosec
    assert math.isclose(to_seconds(s), sec + nanosec * 1e-9)


@pytest.mark.parametrize("t", [-0.1, math.nan, math.inf])
def test_stamp_refuses_negative_and_non_finite(t):
    with pytest.raises(ValueError, match="finite and >= 0"):
        stamp(t)


def test_header_round_trips_through_cdr():
    h = header("base_link", 12.125)
    raw = typestore().serialize_cdr(h, "std_msgs/msg/Header")
    back = typestore().deserialize_cdr(bytes(raw), "std_msgs/msg/Header")
    assert back.frame_id == "base_link"
    assert (back.stamp.sec, back.stamp.nanosec) == (12, 125_000_000)
