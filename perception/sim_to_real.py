"""The sim -> real transform as one callable (issue 15, item 8): ``SimToReal`` wraps a trained generator G so that a
simulated DEM and its scalars go in and a real-looking DEM with NaN comes out, the same for the loop's training
data, ``sim2real_node`` and ``flipper bench gan``. Also ``dem_noise``, G's noise input derived from each DEM.

Networks and checkpoints are in ``perception.cyclegan``; this module only runs a generator. The noise is a
hand-written counter-based generator rather than numpy's or torch's random streams because its numbers must be a
function of the DEM alone (any batch, order, worker or library version gives the same output; see ``dem_noise``).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch

from perception.cyclegan import Generator, decode, encode, hint_plane, load_gan, with_map_youth, youth_of

__all__ = ["SimToReal", "dem_noise"]

# splitmix64's finaliser (Steele et al. 2014): a bijective mix of 64-bit integers whose outputs pass BigCrush
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S32, _LOW32 = (np.uint64(v) for v in (30, 27, 31, 32, 0xFFFFFFFF))


def _mix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> _S30)) * _MIX1  # uint64 arrays wrap modulo 2**64, which is what the mix wants
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


def dem_noise(dems: np.ndarray, scalars: np.ndarray, channels: int, seed: int = 0) -> np.ndarray:
    """G's noise input for (N, R, C) float32 DEMs and their (N, S) float32 scalars: (N, channels, R, C) float32
    N(0, 1) numbers that depend only on each DEM's bytes, its scalars' and ``seed``.

    A 64-bit BLAKE2b of (seed, DEM, scalars) keys a counter-based generator (splitmix64 per cell, Box-Muller from its
    two 32-bit halves). So a DEM gets the same noise alone or in any batch, in any order, on any worker, and the
    numbers are defined by this code rather than by a library's random stream (numpy's and torch's may change
    between versions). The pitch and flipper angles change from step to step while the exact DEM of flat ground
    does not, so successive states still get fresh noise.
    """
    dems, scalars = np.ascontiguousarray(dems, dtype=np.float32), np.ascontiguousarray(scalars, dtype=np.float32)
    n, rows, cols = dems.shape
    key = int(seed).to_bytes(16, "little", signed=False)
    keys = np.fromiter((int.from_bytes(hashlib.blake2b(d.tobytes() + s.tobytes(), digest_size=8, key=key).digest(), "little")
                        for d, s in zip(dems, scalars, strict=True)), dtype=np.uint64, count=n)
    counters = np.arange(1, channels * rows * cols + 1, dtype=np.uint64) * _GOLDEN
    z = _mix64(keys[:, None] + counters[None, :])
    u1 = ((z >> _S32).astype(np.float64) + 1.0) * 2.0**-32  # (0, 1]: log() stays finite
    u2 = (z & _LOW32).astype(np.float64) * 2.0**-32
    normal = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)
    return normal.astype(np.float32).reshape(n, channels, rows, cols)


def _check_seed(seed: int) -> int:
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and 0 <= seed < 2**64):
        raise ValueError(f"SimToReal: seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


class SimToReal:
    """The sim -> real transform as one callable: a simulated DEM and its scalars in, a real-looking DEM with NaN
    out (G's scalars output is not used: the robot measures those). What ``sim2real_node`` and the loop wrap.

    ``transform`` works on batches; calling the object on one DEM takes a fast path (no autograd, one thread's
    worth of small tensors) for control loops. Both feed G the noise ``dem_noise`` derives from each DEM, its
    scalars and ``seed`` (the constructor's unless a call names one): one DEM gives the same output either way.

    ``map_age``: seconds since the DEM's map began (its run's first DEM), for a G with the map-age input
    (``map_age_s`` > 0, ``perception.cyclegan``); None means a map older than ``map_age_s``. Other Gs ignore it.
    """

    def __init__(self, generator: Generator, seed: int = 0):
        self.generator = generator.eval()  # safe: nn.Module.eval(), not Python eval
        self.config = generator.config
        self.noise_channels = generator.noise_channels
        self.occlusion_hint = generator.occlusion_hint
        self.map_age_s = float(self.config.map_age_s)  # > 0: G takes the map's age (callers that know it pass it)
        self.seed = _check_seed(seed)
        rows, cols = self.config.dem_shape
        # one-DEM buffers shared by numpy and torch (no allocation per call; not thread-safe: one transform per thread)
        self._planes = torch.zeros(1, 2 + self.noise_channels + int(self.occlusion_hint), rows, cols)
        self._scalars = torch.zeros(1, self.config.scalar_width)
        self._planes_np, self._scalars_np = self._planes.numpy(), self._scalars.numpy()
        self._dem_np = np.zeros((1, rows, cols), dtype=np.float32)
        self._height_scale = np.float32(self.config.height_scale)

    @classmethod
    def from_checkpoint(cls, path: str | Path, seed: int = 0) -> SimToReal:
        return cls(load_gan(path)[0].g, seed)

    def _noise(self, dems: np.ndarray, scalars: np.ndarray, seed: int | None) -> torch.Tensor | None:
        if not self.noise_channels:
            return None
        seed = self.seed if seed is None else _check_seed(seed)
        return torch.from_numpy(dem_noise(dems, scalars, self.noise_channels, seed))

    def _check(self, dems: np.ndarray, scalars: np.ndarray) -> None:
        rows, cols = self.config.dem_shape
        if dems.shape[1:] != (rows, cols) or scalars.shape != (len(dems), self.config.n_scalars):
            raise ValueError(f"SimToReal: DEMs {dems.shape[1:]} and scalars {scalars.shape[1:]} do not fit the generator "
                             f"(DEM {rows} x {cols}, {self.config.n_scalars} scalars)")

    @torch.inference_mode()
    def transform(self, dems: np.ndarray, scalars: np.ndarray, seed: int | None = None,
                  map_age: np.ndarray | None = None) -> np.ndarray:
        """(N, R, C) DEMs, (N, S) scalars and optionally (N,) map ages (s) -> (N, R, C) float32 DEMs with NaN."""
        dems = np.ascontiguousarray(dems, dtype=np.float32)
        scalars = np.ascontiguousarray(scalars, dtype=np.float32)
        self._check(dems, scalars)
        noise = self._noise(dems, scalars, seed)
        hint = hint_plane(dems, scalars) if self.occlusion_hint else None
        inputs = with_map_youth(scalars, self.config, map_age) if self.map_age_s else scalars
        channels, s = encode(torch.from_numpy(dems), torch.from_numpy(inputs), self.config.height_scale)
        return decode(self.generator(channels, s, noise, hint).channels, self.config.height_scale).numpy()

    def __call__(self, dem: np.ndarray, scalars: np.ndarray, seed: int | None = None,
                 map_age: float | None = None) -> np.ndarray:
        """One DEM (R, C), its scalars (S,) and optionally its map's age (s) -> the transformed DEM (R, C) float32,
        a new array.

        Encoding and decoding run in numpy on preallocated buffers and G's straight-through mask is skipped (its
        forward value is the sign of the raw mask): on 100 cells torch's per-operation overhead, not arithmetic,
        is most of the cost, and this path runs once per DEM on the robot."""
        dem, scalars = np.asarray(dem), np.asarray(scalars)
        n = self.config.n_scalars
        if dem.shape != self._dem_np.shape[1:] or scalars.shape != (n,):
            self._check(dem[None], scalars[None])  # raises with the message
        dem_np, planes = self._dem_np, self._planes_np[0]
        np.copyto(dem_np[0], dem, casting="unsafe")
        np.copyto(self._scalars_np[0, :n], scalars, casting="unsafe")
        if self.map_age_s:  # ``map_youth``'s check and formula on one number, without its arrays (a per-DEM path)
            if map_age is None:
                self._scalars_np[0, n] = 0.0
            elif not (math.isfinite(map_age) and map_age >= 0):
                raise ValueError(f"map age: ages must be finite seconds >= 0, got {map_age!r}")
            else:
                self._scalars_np[0, n] = youth_of(map_age, self.map_age_s)
        measured = ~np.isnan(dem_np[0])
        np.divide(np.where(measured, dem_np[0], np.float32(0.0)), self._height_scale, out=planes[0])
        np.subtract(measured.astype(np.float32) * np.float32(2.0), np.float32(1.0), out=planes[1])
        robot = self._scalars_np[:, :n]  # the noise and the hint depend on the robot's scalars only, as in ``transform``
        if self.noise_channels:
            planes[2:2 + self.noise_channels] = self._noise(dem_np, robot, seed).numpy()[0]
        if self.occlusion_hint:
            planes[-1] = hint_plane(dem_np, robot).numpy()[0, 0]
        with torch.inference_mode():
            out = self.generator.raw(self._planes, self._scalars)[0].numpy()
        cells, shape = self.config.cells, self.config.dem_shape
        heights = out[:cells].reshape(shape) * self._height_scale
        return np.where(out[cells:2 * cells].reshape(shape) >= 0, heights, np.float32(np.nan))

