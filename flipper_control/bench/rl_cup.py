"""`flipper bench rl` (CUP part): CUP against plain SAC at the same environment-step budget on the point-goal target
task (``rl.cup``'s module doc says why this task), over a few seeds; JSON plus a PNG of the evaluation curves.

The three source policies are trained first with SAC on their own goals (their steps are reported apart: in the
paper they are given). Then, per seed, plain SAC and CUP start from the same seed and configuration; only CUP's
actor loss differs. Reported: the deterministic evaluation return and success rate over time, the final values,
and how often CUP's critic chose a source as guidance (the paper's Fig. 3).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from flipper_control.rl.cup import ENV_WALLS, SOURCE_GOALS, TARGET_GOAL, train_source, train_target
from flipper_control.rl.sac import SACConfig, evaluate_actor
from sim.io_utils import check_writable, write_bytes_atomic, write_json_atomic

__all__ = ["bench_cup", "plot_cup", "write_cup"]


def bench_cup(seeds: int = 2, steps: int = 3000, source_steps: int = 3000, config: SACConfig | None = None,
              final_episodes: int = 20, progress: Callable[[int, int], None] | None = None, wall: bool = False) -> dict:
    """Train the sources, then SAC and CUP for ``steps`` environment steps per seed; returns the comparison.
    ``wall``: the target is ``PointGoalWall-v0`` (the sources are trained without the wall either way)."""
    import torch

    env_id = "PointGoalWall-v0" if wall else "PointGoal-v0"
    target_wall = ENV_WALLS[env_id]
    if seeds < 1 or steps < 1 or source_steps < 1:
        raise ValueError(f"seeds, steps and source_steps must be >= 1, got {seeds}, {steps}, {source_steps}")
    base = config or SACConfig(lr=1e-3, eval_every=500)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: one thread is fastest and leaves the other cores alone
    t0, done, total = time.perf_counter(), 0, len(SOURCE_GOALS) + 2 * seeds
    try:
        sources, source_report = [], {}
        for k, (name, goal) in enumerate(SOURCE_GOALS.items()):
            actor, rec = train_source(goal, replace(base, total_steps=source_steps), 100 + k)
            sources.append(actor)
            on_target = evaluate_actor(actor, lambda: _target_env(target_wall), final_episodes, 3_000_000)
            source_report[name] = {"goal": list(goal), "own_task_eval": rec["evals"][-1][1:],
                                   "on_target_return": float(np.mean(on_target[0])), "seconds": rec["seconds"]}
            done += 1
            if progress is not None:
                progress(done, total)
        runs: dict[str, list[dict]] = {"sac": [], "cup": []}
        for seed in range(seeds):
            for method in ("sac", "cup"):
                agent, rec = train_target(sources if method == "cup" else [], replace(base, total_steps=steps), seed,
                                          wall=target_wall)
                returns, successes = evaluate_actor(agent.actor, lambda: _target_env(target_wall), final_episodes,
                                                    2_000_000 + seed)
                runs[method].append({"seed": seed, "evals": rec["evals"], "final_return": float(np.mean(returns)),
                                     "final_success_rate": float(np.mean(successes)), "seconds": rec["seconds"],
                                     "guided_fraction_per_500_updates": rec["guided_fraction"]})
                done += 1
                if progress is not None:
                    progress(done, total)
    finally:
        torch.set_num_threads(threads)
    summary = {m: {"final_return_mean": float(np.mean([r["final_return"] for r in rs])),
                   "final_success_rate_mean": float(np.mean([r["final_success_rate"] for r in rs])),
                   "area_under_eval_curve": float(np.mean([np.mean([e[1] for e in r["evals"]]) for r in rs]))}
               for m, rs in runs.items()}
    return {"task": {"target_goal": list(TARGET_GOAL), "horizon": 50, "success_radius": 0.15,
                     "wall": None if target_wall is None else {"y": target_wall[0], "half_width": target_wall[1]},
                     "env": env_id},
            "seeds": seeds, "steps": steps, "source_steps": source_steps, "config": base.to_dict(),
            "sources": source_report, "runs": runs, "summary": summary,
            "cup_wins_final_return": summary["cup"]["final_return_mean"] > summary["sac"]["final_return_mean"],
            "seconds": time.perf_counter() - t0}


def _target_env(wall: tuple[float, float] | None = None):
    from flipper_control.rl.cup import PointGoalEnv

    return PointGoalEnv(TARGET_GOAL, wall=wall)


def plot_cup(result: dict, path: str | Path) -> Path:
    """Evaluation return against environment steps, mean over seeds (thin lines: each seed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for method, color in (("sac", "tab:blue"), ("cup", "tab:orange")):
        curves = np.asarray([[e[1] for e in r["evals"]] for r in result["runs"][method]])
        steps = [e[0] for e in result["runs"][method][0]["evals"]]
        for c in curves:
            ax.plot(steps, c, color=color, alpha=0.3, lw=0.8)
        ax.plot(steps, curves.mean(0), color=color, lw=2, label=f"{method} (mean of {len(curves)} seeds)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (-sum of distances)")
    ax.set_title(f"CUP vs SAC on {result['task'].get('env', 'PointGoal-v0')} {tuple(result['task']['target_goal'])}, sources "
                 f"{', '.join(result['sources'])}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return write_bytes_atomic(path, buf.getvalue())


def write_cup(json_path: str | Path, png_path: str | Path | None = None, **kwargs) -> dict:
    """Run ``bench_cup(**kwargs)`` and write its JSON (and PNG; default: the JSON's path with .png)."""
    json_path = Path(json_path)
    png_path = Path(png_path) if png_path is not None else json_path.with_suffix(".png")
    check_writable(json_path, "--json")
    check_writable(png_path, "PNG")
    result = bench_cup(**kwargs)
    result["png"] = str(png_path)
    plot_cup(result, png_path)
    write_json_atomic(json_path, result)
    return result
