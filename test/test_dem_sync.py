"""``DemSync`` without ROS: clouds wait for the transform at their stamp, and for no longer than their bounds."""

from __future__ import annotations

import numpy as np
import pytest
from test_dem_handler import DRIFT, _cloud_in_lidar, _handler, _terrain_points, _tf_msg

from perception.dem_sync import DemSync
from sim.rotations import quat_to_matrix, yaw_quat


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _odom_tf(t: float, x: float):
    """/tf with base_link at ``x`` in odom (and the map -> odom drift), stamped T0 + t."""
    return _tf_msg(t, [("map", "odom", *DRIFT), ("odom", "base_link", np.array([x, 0.05, 0.1]), yaw_quat(0.2))])


def _map_x(x: float) -> float:
    return float((DRIFT[0] + quat_to_matrix(DRIFT[1]) @ np.array([x, 0.05, 0.1]))[0])


@pytest.fixture(scope="module")
def points():
    return _terrain_points(np.random.default_rng(0), 5000)


def test_a_cloud_waits_for_the_transform_at_its_stamp(points):
    clock = FakeClock()
    sync = DemSync(_handler(self_filter=False), tf_wait=0.5, clock=clock)  # /tf known up to t = 0.0 (x = 0.2)
    assert sync.on_cloud(_cloud_in_lidar(points, t=0.05)) == [] and sync.pending == 1
    # the robot's pose at 0.04 arrives after the cloud: built at once, the cloud would have used the pose at 0.0
    assert sync.on_tf(_odom_tf(0.04, 0.5)) == [] and sync.pending == 1
    (result,) = sync.on_tf(_odom_tf(0.10, 0.9))  # now /tf covers the stamp: built with the pose at 0.04
    assert result.position[0] == pytest.approx(_map_x(0.5))
    assert sync.pending == 0 and sync.forced == 0


def test_a_cloud_is_built_anyway_after_tf_wait(points):
    clock = FakeClock()
    sync = DemSync(_handler(self_filter=False), tf_wait=0.5, clock=clock)
    sync.on_cloud(_cloud_in_lidar(points, t=0.05))
    clock.now += 0.4
    assert sync.poll() == []
    clock.now += 0.2
    (result,) = sync.poll()
    assert result.position[0] == pytest.approx(_map_x(0.2))  # the newest transform it had
    assert sync.forced == 1 and sync.waited_s == pytest.approx(0.6)


def test_at_most_queue_clouds_wait_and_the_oldest_goes_first(points):
    sync = DemSync(_handler(self_filter=False), tf_wait=10.0, queue=2, clock=FakeClock())
    assert sync.on_cloud(_cloud_in_lidar(points, t=0.05)) == []
    assert sync.on_cloud(_cloud_in_lidar(points, t=0.06)) == []
    (first,) = sync.on_cloud(_cloud_in_lidar(points, t=0.07))
    assert first.gridmap.header.stamp.nanosec == _cloud_in_lidar(points, t=0.05).header.stamp.nanosec
    assert sync.pending == 2 and sync.forced == 1
    assert len(sync.on_tf(_odom_tf(0.2, 0.2))) == 2 and sync.forced == 1  # the rest in order, on time


def test_without_joint_states_the_self_filter_stops_holding_clouds(points):
    clock = FakeClock()
    sync = DemSync(_handler(self_filter=True), tf_wait=0.5, clock=clock)
    sync.on_tf(_odom_tf(0.2, 0.2))
    assert sync.on_cloud(_cloud_in_lidar(points, t=0.05)) == []  # covered by /tf, but waits for /joint_states
    clock.now += 1.0
    assert len(sync.poll()) == 1 and sync.forced == 1
    assert len(sync.on_cloud(_cloud_in_lidar(points, t=0.1))) == 1  # none ever came: no more waiting
    assert sync.forced == 1


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="tf_wait"):
        DemSync(_handler(), tf_wait=-1.0)
    with pytest.raises(ValueError, match="queue"):
        DemSync(_handler(), queue=0)
