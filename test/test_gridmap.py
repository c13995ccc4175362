"""DEM <-> grid_map_msgs/GridMap: grid_map's column-major layout, circular-buffer start indices, geometry, CDR.

Expectations are written from grid_map's own formulas (GridMapMath.cpp: getPositionFromIndex,
getIndexFromBufferIndex; GridMapMsgHelpers.hpp: matrixEigenCopyToMultiArrayMessage), not from the code
under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception.gridmap import GridMapError, cell_center, dem_center, dem_to_gridmap, gridmap_to_dem, layers_to_gridmap
from perception.messages import GRIDMAP, msg, typestore
from sim.dem import DemSpec

ROWS, COLS, RES = 20, 5, 0.1


@pytest.fixture
def dem():
    """A 20 x 5 DEM with a distinct value per cell (100 * row + col) and two unseen (NaN) cells."""
    d = (100.0 * np.arange(ROWS)[:, None] + np.arange(COLS)[None, :]).astype(np.float32)
    d[3, 1] = d[17, 4] = np.nan
    return d


def cdr_round_trip(gridmap):
    raw = typestore().serialize_cdr(gridmap, GRIDMAP)
    return typestore().deserialize_cdr(bytes(raw), GRIDMAP)


def test_layout_is_grid_maps_column_major_float32(dem):
    m = dem_to_gridmap(dem, RES, (1.0, -2.0), "odom", 7.5)
    assert m.layers == ["elevation"] and len(m.data) == 1
    assert (m.outer_start_index, m.inner_start_index) == (0, 0)
    layout = m.data[0].layout
    assert [(d.label, d.size, d.stride) for d in layout.dim] == [("column_index", COLS, ROWS * COLS), ("row_index", ROWS, ROWS)]
    assert layout.data_offset == 0
    data = m.data[0].data
    assert isinstance(data, np.ndarray) and data.dtype == np.float32 and data.shape == (ROWS * COLS,)
    # Eigen column-major: element (r, c) at c * rows + r; columns run along y, rows along x
    for r, c in [(0, 0), (1, 0), (0, 1), (19, 4), (7, 3)]:
        assert data[c * ROWS + r] == 100 * r + c
    assert np.isnan(data[1 * ROWS + 3]) and np.isnan(data[4 * ROWS + 17])
    info = m.info
    assert info.resolution == RES
    assert math.isclose(info.length_x, ROWS * RES) and math.isclose(info.length_y, COLS * RES)  # x: rows, y: columns
    assert (info.pose.position.x, info.pose.position.y) == (1.0, -2.0)
    assert m.header.frame_id == "odom" and (m.header.stamp.sec, m.header.stamp.nanosec) == (7, 500_000_000)


@pytest.mark.parametrize("yaw", [0.0, 0.7, -2.5])
def test_round_trip_through_cdr_keeps_values_nan_and_pose(dem, yaw):
    m = cdr_round_trip(dem_to_gridmap(dem, RES, (3.0, 4.0), "map", 12.25, yaw=yaw, z=0.4))
    back, info = gridmap_to_dem(m)
    assert back.dtype == np.float32 and back.shape == (ROWS, COLS)
    np.testing.assert_array_equal(back, dem)  # NaN in the same cells (assert_array_equal treats NaN == NaN)
    assert np.isnan(back).sum() == 2
    assert info["resolution"] == RES and info["center"] == (3.0, 4.0) and info["z"] == 0.4
    assert math.isclose(info["yaw"], yaw, abs_tol=1e-12) and info["frame"] == "map" and info["t"] == 12.25
    assert info["length"] == pytest.approx((2.0, 0.5))


@pytest.mark.parametrize("start", [(0, 0), (1, 0), (0, 3), (7, 4), (19, 1)])
def test_start_indices_follow_grid_maps_circular_buffer(dem, start):
    m = cdr_round_trip(dem_to_gridmap(dem, RES, (0.0, 0.0), "map", 0.0, start_index=start))
    assert (m.outer_start_index, m.inner_start_index) == start
    buffer = np.asarray(m.data[0].data).reshape((ROWS, COLS), order="F")
    # grid_map: getIndexFromBufferIndex(b) = (b - start) mod size, so buffer cell b holds DEM cell (b - start) mod size
    for b in [(0, 0), (5, 2), (19, 4), (start[0], start[1])]:
        unwrapped = ((b[0] - start[0]) % ROWS, (b[1] - start[1]) % COLS)
        np.testing.assert_array_equal(buffer[b], dem[unwrapped])
    np.testing.assert_array_equal(gridmap_to_dem(m)[0], dem)


def test_hand_built_circular_buffer_is_unrolled(dem):
    """A message written the way a moving grid_map writes it: buffer rotated, start indices set."""
    m = dem_to_gridmap(dem, RES, (0.0, 0.0), "map", 0.0)
    outer, inner = 6, 2
    buffer = np.empty_like(dem)
    for r in range(ROWS):
        for c in range(COLS):
            buffer[(r + outer) % ROWS, (c + inner) % COLS] = dem[r, c]  # getBufferIndexFromIndex
    m.data[0].data = buffer.ravel(order="F")
    m.outer_start_index, m.inner_start_index = outer, inner
    np.testing.assert_array_equal(gridmap_to_dem(m)[0], dem)


def test_row_major_messages_are_read_too(dem):
    m = dem_to_gridmap(dem, RES, (0.0, 0.0), "map", 0.0)
    dim = msg("std_msgs/msg/MultiArrayDimension")
    m.data[0].layout.dim = [
        dim(label="row_index", size=ROWS, stride=ROWS * COLS),
        dim(label="column_index", size=COLS, stride=COLS),
    ]
    m.data[0].data = dem.ravel(order="C")
    np.testing.assert_array_equal(gridmap_to_dem(m)[0], dem)


def test_cell_zero_zero_is_front_left_of_the_centre(dem):
    center = (2.0, -1.0)
    m = dem_to_gridmap(dem, RES, center, "map", 0.0)
    lx, ly, res = m.info.length_x, m.info.length_y, m.info.resolution
    # getPositionFromIndex: pose + (length / 2 - resolution / 2) - resolution * index
    x00, y00 = cell_center(m, 0, 0)
    assert (x00, y00) == pytest.approx((center[0] + lx / 2 - res / 2, center[1] + ly / 2 - res / 2))
    assert x00 > center[0] and y00 > center[1]  # +x (front), +y (left)
    x_last, y_last = cell_center(m, ROWS - 1, COLS - 1)
    assert (x_last, y_last) == pytest.approx((center[0] - lx / 2 + res / 2, center[1] - ly / 2 + res / 2))
    assert cell_center(m, 1, 0)[0] == pytest.approx(x00 - res) and cell_center(m, 0, 1)[1] == pytest.approx(y00 - res)


@pytest.mark.parametrize("yaw", [0.0, 0.6, math.pi / 2, -2.2])
def test_robot_centric_dem_cells_land_where_sim_dem_puts_them(yaw):
    """dem_center + GridMap geometry reproduce sim.dem's cell centres (front 1.3 m, back 0.7 m) in the world."""
    spec = DemSpec()
    base = (4.0, -3.0)
    m = dem_to_gridmap(np.zeros(spec.shape), spec.resolution, dem_center(base, yaw, spec), "map", 0.0, yaw=yaw)
    xs, ys = spec.cell_centers()  # in the robot's yaw frame
    c, s = math.cos(yaw), math.sin(yaw)
    for r, col in [(0, 0), (0, 4), (19, 0), (10, 2), (19, 4)]:
        expected = (base[0] + c * xs[r, col] - s * ys[r, col], base[1] + s * xs[r, col] + c * ys[r, col])
        assert cell_center(m, r, col) == pytest.approx(expected, abs=1e-12)
    assert dem_center(base, 0.0, spec) == pytest.approx((base[0] + 1.3 - 1.0, base[1]))


def test_several_layers_each_read_by_name(dem):
    variance = np.full_like(dem, 0.01)
    m = cdr_round_trip(layers_to_gridmap({"elevation": dem, "variance": variance}, RES, (0.0, 0.0), "map", 1.0))
    assert m.layers == ["elevation", "variance"] and m.basic_layers == ["elevation"]
    np.testing.assert_array_equal(gridmap_to_dem(m, "variance")[0], variance)
    np.testing.assert_array_equal(gridmap_to_dem(m, "elevation")[0], dem)


def test_gridmap_serialises_and_deserialises_in_the_typestore(dem):
    m = dem_to_gridmap(dem, RES, (1.5, 2.5), "odom", 3.0, yaw=0.2, z=-0.1, start_index=(2, 1))
    raw = typestore().serialize_cdr(m, GRIDMAP)
    assert isinstance(raw, memoryview) and len(raw) > ROWS * COLS * 4
    back = typestore().deserialize_cdr(bytes(raw), GRIDMAP)
    assert back.header.frame_id == "odom" and back.layers == ["elevation"]
    assert (back.outer_start_index, back.inner_start_index) == (2, 1)
    assert back.info.pose.orientation.z == pytest.approx(math.sin(0.1))
    assert back.info.pose.orientation.w == pytest.approx(math.cos(0.1))
    np.testing.assert_array_equal(back.data[0].data, m.data[0].data)
    # serialising the deserialised message gives the same bytes
    assert bytes(typestore().serialize_cdr(back, GRIDMAP)) == bytes(raw)


def test_unset_orientation_reads_as_zero_yaw(dem):
    m = dem_to_gridmap(dem, RES, (0.0, 0.0), "map", 0.0)
    q = m.info.pose.orientation
    q.x = q.y = q.z = q.w = 0.0
    assert gridmap_to_dem(m)[1]["yaw"] == 0.0


def _broken(dem, change):
    m = dem_to_gridmap(dem, RES, (0.0, 0.0), "map", 0.0)
    change(m)
    return m


def _set(obj, name, value):
    setattr(obj, name, value)


BAD_GRIDMAPS = {
    "missing layer": (lambda m: _set(m, "layers", ["height"]), r"layer 'elevation' not in GridMap layers \['height'\]"),
    "layers vs data": (lambda m: _set(m, "layers", ["elevation", "variance"]), "2 layers but 1 data arrays"),
    "short data": (lambda m: _set(m.data[0], "data", np.zeros(99, dtype=np.float32)), r"99 values < 100 = 20 rows x 5 columns"),
    "bad label": (lambda m: _set(m.data[0].layout.dim[0], "label", "x"), "neither 'column_index' nor 'row_index'"),
    "one dim": (lambda m: _set(m.data[0].layout, "dim", m.data[0].layout.dim[:1]), "1 dimensions, expected 2"),
    "length mismatch": (lambda m: _set(m.info, "length_x", 1.0), "20 x 5 cells but info says 1.0 x 0.5"),
    "zero resolution": (lambda m: _set(m.info, "resolution", 0.0), "resolution must be > 0"),
    "start outside": (lambda m: _set(m, "outer_start_index", 20), r"start indices \(20, 0\) outside the 20 x 5 buffer"),
}


@pytest.mark.parametrize("case", list(BAD_GRIDMAPS))
def test_bad_gridmaps_raise_naming_the_problem(dem, case):
    change, message = BAD_GRIDMAPS[case]
    with pytest.raises(GridMapError, match=message):
        gridmap_to_dem(_broken(dem, change))


@pytest.mark.parametrize(
    ("layers", "kwargs", "message"),
    [
        ({}, {}, "at least one layer"),
        ({"elevation": np.zeros((3,))}, {}, "non-empty 2D shape"),
        ({"elevation": np.zeros((3, 2)), "variance": np.zeros((2, 3))}, {}, "share one"),
        ({"elevation": np.zeros((3, 2))}, {"resolution": 0.0}, "resolution must be > 0"),
        ({"elevation": np.zeros((3, 2))}, {"start_index": (3, 0)}, "outside the 3 x 2 buffer"),
    ],
)
def test_layers_to_gridmap_rejects_bad_arguments(layers, kwargs, message):
    args = {"resolution": RES, "center_xy": (0.0, 0.0), "frame_id": "map", "t_seconds": 0.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        layers_to_gridmap(layers, **args)
