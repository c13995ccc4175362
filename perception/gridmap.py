"""DEM <-> grid_map_msgs/msg/GridMap in grid_map's exact layout (the boundary adapter for elevation maps).

Conventions, checked against ANYbotics/grid_map (humble branch) source:

- ``grid_map_core/src/GridMapMath.cpp``: the data matrix has ``size(0)`` rows along x and ``size(1)``
  columns along y (``length_x = rows * resolution``). ``getPositionFromIndex`` puts the centre of cell
  index ``i`` at ``pose + (length/2 - resolution/2) - resolution * i`` with ``i`` the *unwrapped* index,
  so cell (0, 0) is the +x/+y (front-left) corner, rows grow toward -x and columns toward -y -- the
  layout of ``sim.dem``. The matrix is a circular buffer: ``getIndexFromBufferIndex`` gives the
  unwrapped index ``(buffer_index - start_index) mod size``, i.e. ``unwrapped = np.roll(buffer,
  -start, axis)``, with ``outer_start_index`` for rows and ``inner_start_index`` for columns.
- ``grid_map_ros/include/grid_map_ros/GridMapMsgHelpers.hpp`` (``matrixEigenCopyToMultiArrayMessage``):
  one ``std_msgs/Float32MultiArray`` per layer holding the column-major (Eigen default) matrix;
  ``dim[0]`` = label ``column_index``, size = number of columns, stride = rows * cols; ``dim[1]`` = label
  ``row_index``, size = number of rows, stride = rows; ``data_offset`` 0. Readers tell the order by
  ``dim[0].label`` (``isRowMajor``); we read both orders and write column-major.
- ``grid_map_ros/src/GridMapRosConverter.cpp`` (``toMessage``/``fromMessage``): ``layers`` and ``data``
  match one to one; ``info.pose.position`` x, y is the map centre.

One deviation: grid_map itself always writes an identity orientation and ignores it when reading
(grid maps are axis-aligned in their frame). We write the DEM's yaw into ``info.pose.orientation`` and
its base height into ``info.pose.position.z`` so that our own bags are self-describing; a stock
grid_map consumer is only exact when yaw is 0, so publish DEMs in a yaw-aligned frame where that matters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from perception.messages import GRIDMAP, GRIDMAP_INFO, header, msg, to_seconds
from sim.dem import DemSpec

__all__ = ["COLUMN_INDEX", "ROW_INDEX", "GridMapError", "cell_center", "dem_center", "dem_to_gridmap", "gridmap_to_dem",
           "layers_to_gridmap"]

COLUMN_INDEX = "column_index"  # grid_map's storageIndexNames
ROW_INDEX = "row_index"


class GridMapError(ValueError):
    """A GridMap message that cannot be read as a DEM; the message names the problem."""


def dem_center(base_xy: tuple[float, float], yaw: float, spec: DemSpec | None = None) -> tuple[float, float]:
    """Centre of the robot-centric DEM in the frame of ``base_xy``: the GridMap pose position.

    The DEM is not centred on base_link (``spec.front`` ahead, the rest behind), so its centre lies
    ``front - rows * resolution / 2`` ahead of base_link along the heading (and 0 to the side).
    """
    spec = spec or DemSpec()
    ahead = spec.front - spec.rows * spec.resolution / 2
    return (base_xy[0] + math.cos(yaw) * ahead, base_xy[1] + math.sin(yaw) * ahead)


def _layer_message(layer: np.ndarray) -> Any:
    rows, cols = layer.shape
    dim = msg("std_msgs/msg/MultiArrayDimension")
    layout = msg("std_msgs/msg/MultiArrayLayout")(
        dim=[dim(label=COLUMN_INDEX, size=cols, stride=rows * cols), dim(label=ROW_INDEX, size=rows, stride=rows)],
        data_offset=0,
    )
    # ravel(order='F'): column-major like grid_map's Eigen matrices; float32 as the message requires
    return msg("std_msgs/msg/Float32MultiArray")(layout=layout, data=np.asarray(layer, dtype=np.float32).ravel(order="F"))


def layers_to_gridmap(
    layers: Mapping[str, np.ndarray],
    resolution: float,
    center_xy: tuple[float, float],
    frame_id: str,
    t_seconds: float,
    yaw: float = 0.0,
    z: float = 0.0,
    start_index: tuple[int, int] = (0, 0),
) -> Any:
    """A GridMap with one layer per entry of ``layers`` (each (rows, cols), same shape), NaN kept as NaN.

    ``start_index=(outer, inner)`` stores the layers as a circular buffer rotated by that much, as a
    moving grid_map would; readers that honour the start indices see the same cells.
    """
    if not layers:
        raise ValueError("layers_to_gridmap: give at least one layer")
    if not (math.isfinite(resolution) and resolution > 0):
        raise ValueError(f"layers_to_gridmap: resolution must be > 0, got {resolution}")
    arrays = {name: np.asarray(a) for name, a in layers.items()}
    shapes = {a.shape for a in arrays.values()}
    shape = next(iter(shapes))
    if len(shapes) != 1 or len(shape) != 2 or 0 in shape:
        got = {n: a.shape for n, a in arrays.items()}
        raise ValueError(f"layers_to_gridmap: layers must share one non-empty 2D shape, got {got}")
    rows, cols = shape
    outer, inner = int(start_index[0]), int(start_index[1])
    if not (0 <= outer < rows and 0 <= inner < cols):
        raise ValueError(f"layers_to_gridmap: start_index {start_index} outside the {rows} x {cols} buffer")
    pose = msg("geometry_msgs/msg/Pose")(
        position=msg("geometry_msgs/msg/Point")(x=float(center_xy[0]), y=float(center_xy[1]), z=float(z)),
        orientation=msg("geometry_msgs/msg/Quaternion")(x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)),
    )
    info = msg(GRIDMAP_INFO)(resolution=float(resolution), length_x=rows * resolution, length_y=cols * resolution, pose=pose)
    # buffer[b] holds unwrapped cell (b - start) mod size, hence a roll by +start
    data = [_layer_message(np.roll(a, (outer, inner), axis=(0, 1))) for a in arrays.values()]
    names = list(arrays)
    return msg(GRIDMAP)(
        header=header(frame_id, t_seconds),
        info=info,
        layers=names,
        basic_layers=names[:1],  # a cell is valid where the first layer (elevation) is finite, as in elevation_mapping
        data=data,
        outer_start_index=outer,
        inner_start_index=inner,
    )


def dem_to_gridmap(
    dem: np.ndarray,
    resolution: float,
    center_xy: tuple[float, float],
    frame_id: str,
    t_seconds: float,
    yaw: float = 0.0,
    z: float = 0.0,
    layer: str = "elevation",
    start_index: tuple[int, int] = (0, 0),
) -> Any:
    """A GridMap of one DEM (rows along -x, cols along -y, cell (0, 0) front-left) centred at ``center_xy``.

    ``center_xy`` is the DEM's geometric centre in ``frame_id`` (see :func:`dem_center` for a
    robot-centric DEM), ``yaw`` its heading, ``z`` the height its values are relative to.
    """
    return layers_to_gridmap({layer: dem}, resolution, center_xy, frame_id, t_seconds, yaw, z, start_index)


def _layer_matrix(array_msg: Any, name: str) -> np.ndarray:
    dims = list(array_msg.layout.dim)
    if len(dims) != 2:
        raise GridMapError(f"layer {name!r}: layout has {len(dims)} dimensions, expected 2")
    if dims[0].label == COLUMN_INDEX:
        cols, rows, order = dims[0].size, dims[1].size, "F"
    elif dims[0].label == ROW_INDEX:
        rows, cols, order = dims[0].size, dims[1].size, "C"
    else:
        raise GridMapError(f"layer {name!r}: dim[0] label {dims[0].label!r} is neither {COLUMN_INDEX!r} nor {ROW_INDEX!r}")
    values = np.asarray(array_msg.data, dtype=np.float32).reshape(-1)
    start = int(array_msg.layout.data_offset)
    if values.size - start < rows * cols:
        raise GridMapError(f"layer {name!r}: {values.size - start} values < {rows * cols} = {rows} rows x {cols} columns")
    return values[start : start + rows * cols].reshape((rows, cols), order=order)


def _yaw(q: Any) -> float:
    if q.x == q.y == q.z == q.w == 0.0:  # an unset quaternion: grid_map ignores orientation anyway
        return 0.0
    return math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))


def gridmap_to_dem(gridmap: Any, layer: str = "elevation") -> tuple[np.ndarray, dict[str, Any]]:
    """One layer of a GridMap as a DEM float32 (rows, cols) with cell (0, 0) front-left, start indices undone.

    Also returns ``info``: resolution, center (x, y), z, yaw, frame, t (stamp in seconds), length
    (x, y). Raises GridMapError for a missing layer, layers/data of different lengths, an unknown
    layout, too few values, sizes that disagree with ``info.length_x``/``length_y``, or start indices
    outside the buffer.
    """
    layers = list(gridmap.layers)
    if layer not in layers:
        raise GridMapError(f"layer {layer!r} not in GridMap layers {layers}")
    if len(layers) != len(gridmap.data):
        raise GridMapError(f"GridMap has {len(layers)} layers but {len(gridmap.data)} data arrays")
    buffer = _layer_matrix(gridmap.data[layers.index(layer)], layer)
    rows, cols = buffer.shape
    info = gridmap.info
    res = float(info.resolution)
    if not (math.isfinite(res) and res > 0):
        raise GridMapError(f"GridMap resolution must be > 0, got {info.resolution}")
    expected = (round(info.length_x / res), round(info.length_y / res))
    if (rows, cols) != expected:
        raise GridMapError(
            f"layer {layer!r} has {rows} x {cols} cells but info says {info.length_x} x {info.length_y} m at {res} m "
            f"= {expected[0]} x {expected[1]}"
        )
    outer, inner = int(gridmap.outer_start_index), int(gridmap.inner_start_index)
    if not (0 <= outer < rows and 0 <= inner < cols):
        raise GridMapError(f"start indices ({outer}, {inner}) outside the {rows} x {cols} buffer")
    dem = np.roll(buffer, (-outer, -inner), axis=(0, 1)).astype(np.float32)
    pos = info.pose.position
    meta = {
        "resolution": res,
        "center": (float(pos.x), float(pos.y)),
        "z": float(pos.z),
        "yaw": _yaw(info.pose.orientation),
        "frame": gridmap.header.frame_id,
        "t": to_seconds(gridmap.header.stamp),
        "length": (float(info.length_x), float(info.length_y)),
    }
    return dem, meta


def cell_center(gridmap: Any, row: int, col: int) -> tuple[float, float]:
    """(x, y) in the GridMap's frame of the centre of unwrapped cell (row, col), as grid_map's
    ``getPositionFromIndex`` computes it, rotated by the pose's yaw."""
    info = gridmap.info
    res = info.resolution
    along = info.length_x / 2 - res / 2 - res * row  # toward +x from the centre, in the map's own axes
    across = info.length_y / 2 - res / 2 - res * col
    yaw = _yaw(info.pose.orientation)
    c, s = math.cos(yaw), math.sin(yaw)
    return (info.pose.position.x + c * along - s * across, info.pose.position.y + s * along + c * across)
