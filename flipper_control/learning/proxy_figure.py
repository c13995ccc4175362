"""The seed 000 Fig. 3 analogue: the exact simulated DEM beside the reality proxy's DEM on stairs.

A controller drives the reality proxy over a world; at every control step the proxy's DEM (built from
ray-cast lidar returns fused under drifting odometry) and the exact DEM of the simulator at the same true
pose are taken. The figure shows both at the step whose exact DEM spans the largest height range (the
robot facing the most stair), and the per-cell NaN frequency of the proxy's DEM over the whole run.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from sim.io_utils import write_bytes_atomic
from sim.simulator import RUNNING


def collect_dems(world, controller, seed: int = 0, control_dt: float = 0.1, proxy=None) -> dict[str, Any]:
    """Run ``controller`` on the proxy; returns per-step exact DEMs, proxy DEMs, times, true poses and the true
    scalars (pitch, roll, four flipper angles: what G takes beside the exact DEM)."""
    from sim.reality_proxy import RealityProxy

    proxy = proxy or RealityProxy()
    controller.reset()
    obs = proxy.reset(world, seed=seed)
    exact, approx, times, poses, scalars = [], [], [], [], []
    while True:
        truth = proxy.sim.observation()
        exact.append(truth.dem)  # the simulator's exact DEM at the true pose
        scalars.append(truth.proprio())
        approx.append(obs.dem)
        times.append(proxy.time)
        poses.append(np.concatenate(proxy.pose()))
        if proxy.status != RUNNING:
            break
        obs = proxy.step(controller.act(obs), control_dt)
    return {"exact": np.stack(exact), "proxy": np.stack(approx), "time": np.asarray(times), "pose": np.stack(poses),
            "scalars": np.stack(scalars), "status": proxy.status, "spec": proxy.dem_spec}


def proxy_figure(world, out_png: str | Path, controller, seed: int = 0, control_dt: float = 0.1,
                 proxy=None) -> dict[str, Any]:
    """Write the figure (PNG, atomically) and return its numbers: chosen step, NaN share, DEM differences;
    ``proxy``: the reality proxy to run (default one with today's settings)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    run = collect_dems(world, controller, seed, control_dt, proxy=proxy)
    exact, approx, spec = run["exact"], run["proxy"], run["spec"]
    k = int(np.argmax(exact.max(axis=(1, 2)) - exact.min(axis=(1, 2))))
    nan_freq = np.isnan(approx).mean(axis=0)
    both = np.isfinite(approx[k])
    err = np.abs(approx[k] - exact[k])[both]
    r = spec.resolution
    # imshow extent in the robot's frame: rows run from `front` backwards, columns from left (+y) to right
    extent = (spec.cols * r / 2, -spec.cols * r / 2, spec.front - spec.rows * r, spec.front)
    lo = float(np.nanmin([np.nanmin(exact[k]), np.nanmin(approx[k]) if both.any() else np.inf]))
    hi = float(np.nanmax([np.nanmax(exact[k]), np.nanmax(approx[k]) if both.any() else -np.inf]))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")  # NaN (never seen) in light grey

    fig, axes = plt.subplots(1, 3, figsize=(9.5, 5.2), constrained_layout=True)
    x, y = run["pose"][k][:2]
    fig.suptitle(f"{world.name}, seed {seed}: t = {run['time'][k]:.1f} s, robot at x = {x:.2f} m, y = {y:.2f} m")
    for ax, dem, title in ((axes[0], exact[k], "simulated DEM (exact)"), (axes[1], approx[k], "reality proxy DEM")):
        im = ax.imshow(np.ma.masked_invalid(dem), cmap=cmap, vmin=lo, vmax=hi, extent=extent, aspect="equal")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("y (m, left +)")
    axes[0].set_ylabel("x (m, ahead of base_link)")
    fig.colorbar(im, ax=axes[:2], label="height relative to base_link (m); grey: NaN", shrink=0.8)
    im2 = axes[2].imshow(nan_freq, cmap="magma", vmin=0, vmax=1, extent=extent, aspect="equal")
    axes[2].set_title(f"NaN frequency over the run\n({len(approx)} DEMs)", fontsize=10)
    axes[2].set_xlabel("y (m, left +)")
    fig.colorbar(im2, ax=axes[2], label="share of steps with NaN", shrink=0.8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    write_bytes_atomic(out_png, buf.getvalue())
    return {"world": world.name, "seed": seed, "png": str(out_png), "steps": len(approx), "status": run["status"],
            "step": k, "time": float(run["time"][k]), "nan_share_step": float(np.isnan(approx[k]).mean()),
            "nan_share_run": float(nan_freq.mean()), "nan_frequency": nan_freq.round(4).tolist(),
            "mean_abs_error_step": float(err.mean()) if err.size else None,
            "max_abs_error_step": float(err.max()) if err.size else None}
