"""sensor_msgs/PointCloud2 <-> numpy for the rosbags message dataclasses (the one boundary adapter for clouds).

A cloud's bytes are read through a numpy structured dtype built from the PointFields (offsets, byte
order, ``point_step`` as item size) and strided by ``row_step``, so padding between fields, at the end
of a point and at the end of a row (organised clouds, ``height > 1``) costs nothing. Malformed clouds
raise :class:`CloudError` whose message names the problem, so that a node or the bag ingester can skip
the message with a warning that says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from perception.messages import header, msg

__all__ = ["CloudError", "POINTFIELD_DTYPES", "cloud_to_array", "cloud_to_xyz", "cloud_dtype", "xyz_to_cloud"]

# sensor_msgs/PointField datatype constants -> numpy type (byte order added per cloud)
POINTFIELD_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.int8),
    2: np.dtype(np.uint8),
    3: np.dtype(np.int16),
    4: np.dtype(np.uint16),
    5: np.dtype(np.int32),
    6: np.dtype(np.uint32),
    7: np.dtype(np.float32),
    8: np.dtype(np.float64),
}
_DATATYPE_OF = {dt: code for code, dt in POINTFIELD_DTYPES.items()}
_XYZ = ("x", "y", "z")


class CloudError(ValueError):
    """A PointCloud2 that cannot be read; the message names the problem."""


def cloud_dtype(fields: list[Any], point_step: int, big_endian: bool) -> np.dtype:
    """Structured dtype of one point: each PointField at its offset (count > 1 as a subarray), item size ``point_step``.

    Raises CloudError for an unknown datatype, a zero count, duplicate or empty names, or fields that do
    not fit in ``point_step``.
    """
    order = ">" if big_endian else "<"
    names, formats, offsets = [], [], []
    end = 0
    for f in fields:
        if f.datatype not in POINTFIELD_DTYPES:
            raise CloudError(f"field {f.name!r} has unknown datatype {f.datatype} (PointField types are 1..8)")
        if f.count < 1:
            raise CloudError(f"field {f.name!r} has count {f.count} (must be >= 1)")
        if not f.name:
            raise CloudError("a field has an empty name")
        if f.name in names:
            raise CloudError(f"field {f.name!r} appears twice")
        base = POINTFIELD_DTYPES[f.datatype].newbyteorder(order)
        names.append(f.name)
        formats.append(base if f.count == 1 else np.dtype((base, (f.count,))))
        offsets.append(f.offset)
        end = max(end, f.offset + base.itemsize * f.count)
    if point_step < end:
        raise CloudError(f"point_step {point_step} < {end} needed by fields")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def _point_view(cloud: Any) -> np.ndarray:
    """The cloud's points as a (height, width) structured view on its bytes (no copy)."""
    height, width = int(cloud.height), int(cloud.width)
    point_step, row_step = int(cloud.point_step), int(cloud.row_step)
    dtype = cloud_dtype(list(cloud.fields), point_step, bool(cloud.is_bigendian))
    data = cloud.data
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    else:  # a list of ints, as a hand-built message may carry
        data = np.asarray(data, dtype=np.uint8).reshape(-1)
    if height * width == 0:
        return np.zeros((height, width), dtype=dtype)
    if row_step < width * point_step:
        raise CloudError(f"row_step {row_step} < {width * point_step} = width*point_step ({width}*{point_step})")
    if data.size < row_step * height:
        raise CloudError(f"data {data.size} bytes < {row_step * height} = row_step*height ({row_step}*{height})")
    # Strides step over end-of-point and end-of-row padding without copying the data.
    return np.ndarray(shape=(height, width), dtype=dtype, buffer=data, strides=(row_step, point_step))


def cloud_to_array(cloud: Any, keep_shape: bool = False) -> np.ndarray:
    """All fields of a PointCloud2 as a packed, native-byte-order structured array (a copy).

    Shape ``(height * width,)``, or ``(height, width)`` with ``keep_shape``. Fields with count > 1 are
    subarrays (``arr['normal']`` has shape (N, 3)). Non-finite points are kept. Raises CloudError.
    """
    view = _point_view(cloud)
    packed = np.dtype([(name, view.dtype.fields[name][0].newbyteorder("=")) for name in view.dtype.names])
    out = np.empty(view.shape, dtype=packed)
    for name in view.dtype.names:
        out[name] = view[name]  # converts byte order field by field
    return out if keep_shape else out.reshape(-1)


def cloud_to_xyz(cloud: Any) -> np.ndarray:
    """Finite x, y, z of a PointCloud2 as float64 (N, 3), organised clouds flattened row by row.

    x, y and z may have any PointField datatype (converted to float64) and either byte order. Points
    with a NaN or infinite coordinate are dropped whatever ``is_dense`` says. An empty or all-NaN cloud
    gives shape (0, 3) (the caller decides whether to warn). Raises CloudError for a cloud without x, y
    or z, an x/y/z with count != 1, or a malformed layout.
    """
    names = [f.name for f in cloud.fields]
    for axis in _XYZ:
        if axis not in names:
            raise CloudError(f"missing field {axis!r} (fields: {names})")
    for f in cloud.fields:
        if f.name in _XYZ and f.count != 1:
            raise CloudError(f"field {f.name!r} has count {f.count}, expected 1")
    view = _point_view(cloud)
    xyz = np.empty((view.size, 3), dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # garbage bytes decode to NaN or inf: dropped just below
        for i, axis in enumerate(_XYZ):
            xyz[:, i] = view[axis].reshape(-1)
    finite = np.isfinite(xyz).all(axis=1)
    return xyz if finite.all() else xyz[finite]


def _field_dtype(array: np.ndarray, name: str) -> np.dtype:
    dt = np.dtype(array.dtype).newbyteorder("=")
    if dt not in _DATATYPE_OF:
        raise ValueError(f"field {name!r}: dtype {array.dtype} has no PointField datatype (use int8..uint32, float32, float64)")
    return dt


def xyz_to_cloud(
    points: np.ndarray,
    frame_id: str,
    t_seconds: float,
    extra: Mapping[str, np.ndarray] | None = None,
    dtype: Any = np.float32,
    big_endian: bool = False,
    point_step: int | None = None,
    organised_shape: tuple[int, int] | None = None,
    row_step: int | None = None,
) -> Any:
    """A sensor_msgs/msg/PointCloud2 of ``points`` (N, 3) with fields x, y, z of ``dtype``, then ``extra``.

    ``extra`` maps field names to arrays of shape (N,) (count 1) or (N, k) (count k), each keeping its
    own dtype. Fields are packed in order; ``point_step`` (>= the packed size) and ``row_step`` (>=
    width * point_step) add zeroed padding. ``organised_shape=(height, width)`` with height * width == N
    lays the points out row by row. ``is_dense`` is true when every x, y, z is finite. Integer ``dtype``
    rounds the coordinates (and refuses non-finite ones).
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"xyz_to_cloud: points must have shape (N, 3), got {points.shape}")
    n = points.shape[0]
    xyz_dtype = _field_dtype(np.empty(0, dtype=dtype), "x")
    columns: list[tuple[str, np.ndarray, np.dtype, int]] = []
    if xyz_dtype.kind in "iu":
        if not np.isfinite(points).all():
            raise ValueError("xyz_to_cloud: integer coordinates cannot hold NaN or inf")
        points = np.rint(points)
    for i, axis in enumerate(_XYZ):
        columns.append((axis, points[:, i], xyz_dtype, 1))
    for name, values in (extra or {}).items():
        values = np.asarray(values)
        if name in _XYZ or values.shape[:1] != (n,) or values.ndim > 2:
            raise ValueError(f"xyz_to_cloud: extra field {name!r} must be a new name with shape (N,) or (N, k), N = {n}")
        count = 1 if values.ndim == 1 else values.shape[1]
        columns.append((name, values, _field_dtype(values, name), count))

    field_type = msg("sensor_msgs/msg/PointField")
    fields, offset = [], 0
    for name, _, dt, count in columns:
        fields.append(field_type(name=name, offset=offset, datatype=_DATATYPE_OF[dt], count=count))
        offset += dt.itemsize * count
    point_step = offset if point_step is None else int(point_step)
    if point_step < offset:
        raise ValueError(f"xyz_to_cloud: point_step {point_step} < {offset} needed by the fields")
    height, width = (1, n) if organised_shape is None else (int(organised_shape[0]), int(organised_shape[1]))
    if height * width != n:
        raise ValueError(f"xyz_to_cloud: organised_shape {organised_shape} does not hold {n} points")
    row_step = width * point_step if row_step is None else int(row_step)
    if row_step < width * point_step:
        raise ValueError(f"xyz_to_cloud: row_step {row_step} < width*point_step = {width * point_step}")

    layout = cloud_dtype(fields, point_step, big_endian)
    packed = np.zeros(n, dtype=layout)  # zeros: padding bytes must not leak memory contents into bags
    for name, values, _, _ in columns:
        packed[name] = values
    if row_step == width * point_step:
        data = packed.view(np.uint8)
    else:
        data = np.zeros((height, row_step), dtype=np.uint8)
        data[:, : width * point_step] = packed.view(np.uint8).reshape(height, width * point_step)
    xyz_finite = bool(np.isfinite(points).all())
    return msg("sensor_msgs/msg/PointCloud2")(
        header=header(frame_id, t_seconds),
        height=height,
        width=width,
        fields=fields,
        is_bigendian=bool(big_endian),
        point_step=point_step,
        row_step=row_step,
        data=data.reshape(-1),
        is_dense=xyz_finite,
    )
