"""`flipper bench rl` (Smart Start + HER part): seed 001's comparison of Smart Start alone against Smart Start + HER
on the grid mazes, averaged over seeds: mean episode reward (= success rate, the reward is 1 at the goal) and
steps per episode, over the first ``split`` episodes and after. Written as JSON plus a PNG of both curves.

Both variants of one seed start from the same generator, and HER draws its goals from a generator of its own, so
the two runs take the same actions until their Q tables first differ (after the first success): the difference
measured is HER's, not the seeds'.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from flipper_control.rl.gridworld import maze as load_maze_spec
from flipper_control.rl.smart_start_her import SmartStartHERConfig, train_smart_start_her
from sim.io_utils import check_writable, write_bytes_atomic, write_json_atomic

__all__ = ["VARIANTS", "bench_ss_her", "plot_ss_her", "write_ss_her"]

VARIANTS = {"ss": {"her": False}, "ss+her": {"her": True}, "q": {"smart_start": False, "her": False}}
SEED_CLAIM = "SS+HER doubles the average reward of SS alone over the first 100 episodes, 30 % fewer steps early, 5 % after"


def _summary(rewards: np.ndarray, steps: np.ndarray, split: int) -> dict:
    """Means over (seeds, episodes) before and after ``split``."""
    early, late = slice(0, split), slice(split, None)
    return {"reward_early": float(rewards[:, early].mean()), "steps_early": float(steps[:, early].mean()),
            "reward_late": float(rewards[:, late].mean()) if rewards.shape[1] > split else None,
            "steps_late": float(steps[:, late].mean()) if steps.shape[1] > split else None,
            "reward_all": float(rewards.mean()), "steps_all": float(steps.mean())}


def bench_ss_her(mazes: tuple[str, ...] = ("easy", "medium"), seeds: int = 10, episodes: int = 300, split: int = 100,
                 variants: tuple[str, ...] = ("ss", "ss+her"), config: SmartStartHERConfig | None = None,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Run every variant on every maze for ``seeds`` seeds of ``episodes`` episodes; returns the comparison
    (per maze: per variant the early/late means and the per-episode mean curves; and SS+HER relative to SS)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    if seeds < 1 or episodes < 1 or split < 1:
        raise ValueError(f"seeds, episodes and split must be >= 1, got {seeds}, {episodes}, {split}")
    base = replace(config or SmartStartHERConfig(), episodes=episodes)
    total, done, t0 = len(mazes) * len(variants) * seeds, 0, time.perf_counter()
    out: dict = {"claim": SEED_CLAIM, "seeds": seeds, "episodes": episodes, "split": split,
                 "config": asdict(base), "mazes": {}}
    for spec in mazes:
        m = load_maze_spec(spec)
        per_maze: dict = {"shape": list(m.shape), "shortest_path": m.shortest_path_length(), "variants": {}}
        for variant in variants:
            cfg = replace(base, **VARIANTS[variant])
            rewards, steps, first, tv = [], [], [], time.perf_counter()
            for seed in range(seeds):
                r = train_smart_start_her(m, cfg, seed)
                rewards.append(r["rewards"])
                steps.append(r["steps"])
                first.append(r["first_success_episode"])
                done += 1
                if progress is not None:
                    progress(done, total)
            rw, st = np.asarray(rewards, dtype=float), np.asarray(steps, dtype=float)
            per_maze["variants"][variant] = {**_summary(rw, st, split), "first_success_episode": first,
                                             "seconds": time.perf_counter() - tv,
                                             "mean_reward_curve": rw.mean(0).round(4).tolist(),
                                             "mean_steps_curve": st.mean(0).round(2).tolist()}
        v = per_maze["variants"]
        if "ss" in v and "ss+her" in v:
            ss, her = v["ss"], v["ss+her"]
            ratio = {"reward_early_ratio": her["reward_early"] / ss["reward_early"] if ss["reward_early"] else None,
                     "steps_early_change": her["steps_early"] / ss["steps_early"] - 1.0}
            if ss["steps_late"] is not None:
                ratio["steps_late_change"] = her["steps_late"] / ss["steps_late"] - 1.0
            per_maze["ss_her_vs_ss"] = ratio
        out["mazes"][m.name] = per_maze
    out["seconds"] = time.perf_counter() - t0
    return out


def plot_ss_her(result: dict, path: str | Path, window: int = 10) -> Path:
    """A PNG per maze row: mean reward and steps per episode (moving mean over ``window``), one line per variant."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mazes = result["mazes"]
    fig = Figure(figsize=(10, 3.2 * len(mazes)), dpi=100)
    FigureCanvasAgg(fig)
    kernel = np.ones(window) / window
    for row, (name, data) in enumerate(mazes.items()):
        ax_r, ax_s = fig.add_subplot(len(mazes), 2, 2 * row + 1), fig.add_subplot(len(mazes), 2, 2 * row + 2)
        for variant, v in data["variants"].items():
            for ax, key in ((ax_r, "mean_reward_curve"), (ax_s, "mean_steps_curve")):
                y = np.asarray(v[key])
                smooth = np.convolve(y, kernel, mode="valid") if len(y) >= window else y
                ax.plot(np.arange(len(smooth)) + (len(y) - len(smooth)), smooth, label=variant)
        for ax, label in ((ax_r, "reward per episode"), (ax_s, "steps per episode")):
            ax.axvline(result["split"], color="0.6", ls="--", lw=0.8)
            ax.set_xlabel("episode")
            ax.set_ylabel(label)
            ax.set_title(f"{name} {data['shape'][0]}x{data['shape'][1]} (mean of {result['seeds']} seeds, "
                         f"moving mean {window})", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        ax_s.axhline(data["shortest_path"], color="k", lw=0.6, ls=":")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return write_bytes_atomic(path, buf.getvalue())


def write_ss_her(json_path: str | Path, png_path: str | Path | None = None, **kwargs) -> dict:
    """Run ``bench_ss_her(**kwargs)`` and write its JSON (and PNG; default: the JSON's path with .png)."""
    json_path = Path(json_path)
    png_path = Path(png_path) if png_path is not None else json_path.with_suffix(".png")
    check_writable(json_path, "--json")
    check_writable(png_path, "PNG")
    result = bench_ss_her(**kwargs)
    result["png"] = str(png_path)
    plot_ss_her(result, png_path)
    write_json_atomic(json_path, result)
    return result
