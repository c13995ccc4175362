"""How the policy completes a DEM's missing cells before its convolutions (``PolicyConfig.footprint_reach`` and
``nan_fill``): the main tracks' contact plane under the footprint, and interpolation along each DEM column. Pure torch
on batches; ``NanAwarePolicy.complete`` applies them, and ``learning.sensor_offset`` uses the plane as the ground's
reference.
"""

from __future__ import annotations

import torch

__all__ = ["fill_columns", "footprint_heights"]


def footprint_heights(pitch: torch.Tensor, roll: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                      depth: float) -> torch.Tensor:
    """Heights (B, rows, cols) relative to base_link of the main tracks' contact plane under cell centres ``x``,
    ``y`` (rows, cols; the DEM's yaw frame) for a robot at ``pitch``, ``roll`` (B,) radians (REP 103: pitch > 0 nose
    down) whose base_link lies ``depth`` metres above that plane (the wheel radius: base_link is on the axles).

    The plane is where the tracks touch the ground, so the terrain under them lies at or below it: equal on a
    level floor or a ramp, lower under the gaps between stair nosings. A DEM cell reports the highest point of its
    area, so it may read a few centimetres above the plane at its centre (checked against the simulator's exact
    DEMs in ``test_policy``: 99 % of the cells under the tracks within 3 cm above it, on stairs).
    """
    tp, tr = torch.tan(pitch).view(-1, 1, 1), torch.tan(roll).view(-1, 1, 1)
    lowest = (depth / (torch.cos(pitch) * torch.cos(roll))).view(-1, 1, 1)
    return -x * tp + y * tr - lowest


def fill_columns(values: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
    """``values`` (..., rows, cols) with every cell where ``measured`` is False replaced by a linear interpolation
    along its column between the nearest measured cells above and below it, by the nearest one's value where only
    one side has one, and by 0 in a column with no measured cell. Measured cells are returned unchanged.

    Why: with missing cells at 0 the value convolution sees an edge wherever a lidar shadow begins (behind a stair
    nosing the heights fall from the tread's to 0), the very pattern of a drop; filled, a shadow continues the
    terrain around it and only the mask says it was not seen. Gradients reach the measured values it copies.
    """
    rows = values.shape[-2]
    idx = torch.arange(rows, device=values.device).view(rows, 1).expand(values.shape)
    prev_idx = torch.where(measured, idx, -1).cummax(dim=-2).values  # last measured row at or above; -1: none
    next_idx = torch.where(measured, idx, rows).flip(-2).cummin(dim=-2).values.flip(-2)  # first at or below
    has_prev, has_next = prev_idx >= 0, next_idx < rows
    v_prev = values.gather(-2, prev_idx.clamp(0, rows - 1))
    v_next = values.gather(-2, next_idx.clamp(0, rows - 1))
    w = (idx - prev_idx).to(values.dtype) / (next_idx - prev_idx).clamp(min=1).to(values.dtype)
    between = v_prev + (v_next - v_prev) * w
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    filled = torch.where(has_prev & has_next, between, torch.where(has_prev, v_prev, torch.where(has_next, v_next, zero)))
    return torch.where(measured, values, filled)
