"""The Fig. 6 analogue of seed 000: DEMs transformed by the generators. Columns x_r, G_s(x_r), G(G_s(x_r)), x_s,
G(x_s), G_s(G(x_s)) for one real and one simulated state; top row the heights (blue -1 m, green 0, red +1 m, grey
where NaN), bottom row the masks (blue NaN, red measured). The states shown are drawn with a seeded generator
among those with the most NaN (real) and the most relief (simulated), where the transform has something to do."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from sim.io_utils import write_bytes_atomic

__all__ = ["transfer_figure"]


def _pick(dems: np.ndarray, score: np.ndarray, rng: np.random.Generator) -> int:
    """A random index among the top quarter by ``score``."""
    top = np.argsort(score)[-max(1, len(score) // 4):]
    return int(rng.choice(top))


def transfer_figure(gan_path: str | Path, sim_states: str | Path, real_states: str | Path, out_png: str | Path,
                    seed: int = 0) -> dict:
    """Draw the figure for the CycleGAN at ``gan_path`` and write it to ``out_png``; returns which states it shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from perception.cyclegan import decode, encode, load_gan, with_map_youth
    from perception.map_clock import trajectory_ages
    from planning.dataset import TrajectoryDataset

    gan, _ = load_gan(gan_path)
    scale = gan.config.height_scale
    rng = np.random.default_rng(seed)
    sim, real = TrajectoryDataset.load(sim_states).arrays(), TrajectoryDataset.load(real_states).arrays()
    i_r = _pick(real["dem"], np.isnan(real["dem"]).mean(axis=(1, 2)), rng)
    i_s = _pick(sim["dem"], np.nanmax(sim["dem"], axis=(1, 2)) - np.nanmin(sim["dem"], axis=(1, 2)), rng)

    def through(net, dem, scalars):
        out = net(*encode(torch.from_numpy(dem), torch.from_numpy(scalars), scale))
        return out.channels, out.scalars

    def inputs(arrays, i):  # the state's DEM and the networks' scalars (with its map's youth, for a G that takes it)
        age = trajectory_ages(arrays["traj_id"])[i:i + 1]
        return arrays["dem"][i:i + 1].astype(np.float32), with_map_youth(arrays["proprio"][i:i + 1], gan.config, age)

    with torch.inference_mode():
        (xr, sr), (xs, ss) = inputs(real, i_r), inputs(sim, i_s)
        gs_r = through(gan.g_s, xr, sr)
        g_gs_r = gan.g(*gs_r)
        g_s = through(gan.g, xs, ss)
        gs_g_s = gan.g_s(*g_s)
        columns = [("x_r", xr[0]), ("G_s(x_r)", decode(gs_r[0], scale)[0].numpy()),
                   ("G(G_s(x_r))", decode(g_gs_r.channels, scale)[0].numpy()), ("x_s", xs[0]),
                   ("G(x_s)", decode(g_s[0], scale)[0].numpy()), ("G_s(G(x_s))", decode(gs_g_s.channels, scale)[0].numpy())]
    fig, axes = plt.subplots(2, 6, figsize=(9, 5.2), dpi=100)
    heights_cmap = matplotlib.colormaps["jet"].with_extremes(bad="0.8")
    for j, (title, dem) in enumerate(columns):
        axes[0, j].imshow(dem, cmap=heights_cmap, vmin=-1.0, vmax=1.0)
        axes[1, j].imshow(np.where(np.isnan(dem), 0.0, 1.0), cmap="coolwarm", vmin=0.0, vmax=1.0)
        axes[0, j].set_title(title, fontsize=9)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("heights", fontsize=9)
    axes[1, 0].set_ylabel("mask", fontsize=9)
    fig.suptitle("DEMs transformed by the generators (Fig. 6 analogue); front at the top", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(out_png, buf.getvalue())
    return {"figure": str(out_png), "real_index": i_r, "sim_index": i_s,
            "nan_share": {title: float(np.isnan(dem).mean()) for title, dem in columns}}
