"""``flipper bench plan``: planning cost per trajectory, the Table III analogue, side by side in one run.

On the same worlds and noise seeds, with the same budget, it plans with: unguided 3 actions x 1000 ms
(iteration 1), guided 3 x 1000 ms, guided 7 x 200 ms (later iterations) and unguided 7 x 200 ms (the
baseline that guidance must beat). Each trajectory's CPU seconds are measured in the worker that planned
it (process time, so parallel workers do not inflate each other). A failed trajectory counts with the
CPU time it used, and the success count is reported beside the median. Search cost varies a lot with the
noise seed (the same world can take 150 expansions with one seed and fail within 20,000 with another), so
``noise_seeds`` plans every world that many times, with seeds ``seed + index + r x worlds``, and the
medians run over all of them.

By default it measures on two world sets drawn with the same generator seed (``sim.world_sets``):

- ``training``: the default loop distribution (``configs/demo.yaml``). Most of its worlds (pallets, ramps, rough ground,
  shallow stairs) can be crossed with almost any posture, so every planner needs about the path length
  in expansions and guidance cannot be much cheaper there;
- ``steep``: stairs, steps and drops from the hardest half of the same ranges, where only a few posture
  sequences arrive in time. That is where a guide can save work (seed 000 Table III).
- ``half_steep`` (on request, ``--world-sets``): the two in turn, the distribution ``configs/full.yaml``
  trains on.

With ``--peer ompl`` OMPL's SST and KPIECE1 run on the first set with the same simulator propagation and
the same acceptance rules (no new safety warning, the same schedule bound; ``planning.ompl_peer``).
"""

from __future__ import annotations

import platform
import statistics
from pathlib import Path

from flipper_control.learning.executors import make_executor
from flipper_control.learning.tasks import plan_task
from flipper_control.learning.worker_process import peak_rss_mib
from flipper_control.progress import Step
from planning.planner_config import DEFAULT_MAX_DELAY_S, PlannerConfig
from sim.world_sets import load_set

__all__ = ["bench_plan", "print_bench_plan", "default_policy", "BENCH_WORLD_SEED"]

# The loop plans iteration k on generator seed ``loop seed * 1000 + k``; 999 is none of those for loop seed 0
# (fewer than 999 iterations) or any other loop seed, so the bench plans on worlds no policy was trained on.
BENCH_WORLD_SEED = 999

VARIANTS = (  # label, action set, guided
    ("unguided 3x1000ms", "coarse", False),
    ("guided 3x1000ms", "coarse", True),
    ("guided 7x200ms", "fine", True),
    ("unguided 7x200ms", "fine", False),
)


def default_policy(root: str | Path = "demo_out") -> str:
    """The last iteration's policy of a finished ``flipper demo`` in ``root``."""
    its = sorted(Path(root).glob("iter_*/policy.json"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not its:
        raise ValueError(f"no policy found under {root}/iter_*/: run `make demo` first or pass --policy CKPT")
    return str(its[-1].with_suffix(""))


def _peer_task(task: dict) -> dict:
    from planning.ompl_peer import OmplConfig, OmplUnavailable, plan_ompl

    try:
        cfg = OmplConfig(planner=task["planner"], action_set=task["action_set"], time_budget_s=task["budget"],
                         seed=task["seed"], max_delay_s=task["max_delay_s"])
        t = plan_ompl(task["world"], task["seed"], cfg)
    except OmplUnavailable as exc:  # e.g. an ompl build whose SST cannot be constructed from Python
        return {"success": False, "cpu_s": 0.0, "reason": f"unavailable: {exc}", "meta": {}}
    # total_cpu_s includes recording the path (our RRT records while it searches): the like-for-like figure
    return {"success": t.success, "cpu_s": t.meta.get("total_cpu_s", t.meta.get("cpu_s")), "reason": t.reason, "meta": t.meta}


def _summary(rows: list[dict]) -> dict:
    cpus = [r["cpu_s"] for r in rows]
    ok = [r for r in rows if r["success"]]
    return {"trajectories": len(rows), "successes": len(ok), "median_cpu_s": round(statistics.median(cpus), 4),
            "median_cpu_s_successes": round(statistics.median([r["cpu_s"] for r in ok]), 4) if ok else None,
            "max_cpu_s": round(max(cpus), 4), "per_world": rows}


def _comparison(variants: dict) -> dict:
    """Guided against unguided 7 x 200 ms: the median ratio and the worlds only the guided planner solved."""
    g, u = variants["guided 7x200ms"], variants["unguided 7x200ms"]
    return {
        "cpu_ratio_median": round(u["median_cpu_s"] / max(g["median_cpu_s"], 1e-9), 3),
        "guided_successes": g["successes"], "unguided_successes": u["successes"],
        "worlds_only_guided_solved": _only(g["per_world"], u["per_world"]),
        "worlds_only_unguided_solved": _only(u["per_world"], g["per_world"]),
    }


def _only(solved: list[dict], missed: list[dict]) -> list[str]:
    """Worlds (``world@seed`` where a world was planned with several noise seeds) only ``solved`` solved."""
    several = len({r["world"] for r in solved}) < len(solved)
    return sorted({f"{a['world']}@{a['seed']}" if several else a["world"]
                   for a, b in zip(solved, missed, strict=True) if a["success"] and not b["success"]})


def bench_plan(policy: str | None = None, worlds: int = 8, world_seed: int = BENCH_WORLD_SEED, seed: int = 0,
               budget_cpu_s: float = 60.0, max_expansions: int = 20000, peer: str | None = None,
               executor: str = "process", workers: int | None = None,
               world_sets: tuple[str, ...] = ("training", "steep"), noise_seeds: int = 1,
               max_delay_s: float | None = DEFAULT_MAX_DELAY_S, repeat_prob: float = 0.0) -> dict:
    """Plan every variant on ``worlds`` worlds of each set in ``world_sets``; returns the figures (see module
    docstring) with one entry per set under ``sets``."""
    from flipper_control.checkpoint import load_policy

    if not world_sets:
        raise ValueError("bench plan: name at least one world set (training, steep, half_steep)")
    if noise_seeds < 1:
        raise ValueError(f"bench plan: noise_seeds must be >= 1, got {noise_seeds}")
    policy = policy or default_policy()
    load_policy(policy)  # a bad checkpoint stops here, before any work
    by_set = {name: load_set(name, worlds, world_seed) for name in world_sets}  # an unknown set stops here
    tasks, index = [], []
    for set_name, ws in by_set.items():
        for label, aset, guided in VARIANTS:
            cfg = PlannerConfig(action_set=aset, max_cpu_s=budget_cpu_s, max_expansions=max_expansions,
                                max_delay_s=max_delay_s, repeat_prob=repeat_prob)
            for r in range(noise_seeds):
                for i, w in enumerate(ws):
                    task_seed = seed + i + r * len(ws)
                    tasks.append({"world": w, "seed": task_seed, "planner": cfg.to_dict(), "guide": policy if guided else None})
                    index.append((set_name, label, w.name, task_seed))
    out: dict = {"policy": policy, "world_seed": world_seed, "seed": seed, "noise_seeds": noise_seeds,
                 "budget_cpu_s": budget_cpu_s, "max_expansions": max_expansions, "max_delay_s": max_delay_s,
                 "repeat_prob": repeat_prob,
                 "python": platform.python_version(), "sets": {}}
    with make_executor(executor, workers) as ex:
        with Step("bench plan: planning", len(tasks), "trajectory") as step:
            results = ex.map(plan_task, tasks, progress=step)
            step.finish(f"{sum(r['trajectory'].success for r in results)}/{len(tasks)} trajectories found")
        rows: dict[str, dict[str, list[dict]]] = {name: {label: [] for label, _, _ in VARIANTS} for name in by_set}
        for (set_name, label, name, task_seed), r in zip(index, results, strict=True):
            t = r["trajectory"]
            rows[set_name][label].append({"world": name, "seed": task_seed, "success": t.success,
                                          "cpu_s": round(t.meta["cpu_s"], 4), "expansions": t.meta["expansions"],
                                          "tree_mib": t.meta["tree_mib"],
                                          "reason": t.reason})
        for set_name, ws in by_set.items():
            variants = {label: _summary(r) for label, r in rows[set_name].items()}
            out["sets"][set_name] = {"worlds": [w.name for w in ws],
                                     "descriptions": {w.name: w.description for w in ws},
                                     "variants": variants, "guided_vs_unguided_fine": _comparison(variants)}
        ws = by_set[world_sets[0]]
        if peer == "ompl":
            peer_tasks = [{"world": w, "seed": seed + i, "planner": p, "action_set": "coarse", "budget": budget_cpu_s,
                           "max_delay_s": max_delay_s}
                          for p in ("SST", "KPIECE1") for i, w in enumerate(ws)]
            with Step("bench plan: OMPL peer", len(peer_tasks), "trajectory") as step:
                res = ex.map(_peer_task, peer_tasks, progress=step)
                step.finish(f"{sum(bool(r['success']) for r in res)}/{len(peer_tasks)} solved")
            peer_rows: dict[str, list[dict]] = {}
            for t, r in zip(peer_tasks, res, strict=True):
                peer_rows.setdefault(f"OMPL {t['planner']} 3x1000ms", []).append(
                    {"world": t["world"].name, "success": r["success"], "cpu_s": round(r["cpu_s"] or 0.0, 4),
                     "reason": r["reason"]})
            out["sets"][world_sets[0]]["peer"] = {label: _summary(r) for label, r in peer_rows.items()}
        out["memory"] = ex.memory_report() | {"bench_process_peak_rss_mib": round(peak_rss_mib(), 1)}
    out["max_tree_mib"] = max(r["tree_mib"] for by_label in rows.values() for rs in by_label.values() for r in rs)
    return out


def print_bench_plan(r: dict) -> None:
    """The Table III layout on stdout, one table per world set."""
    delay = r.get("max_delay_s")
    print(f"budget {r['budget_cpu_s']:g} CPU s / {r['max_expansions']} expansions per trajectory, at most "
          f"{'the world slack' if delay is None else f'{delay:g} s'} behind schedule, guide {r['policy']}"
          + (f", random draws repeat the node's action with probability {r['repeat_prob']:g}" if r.get("repeat_prob") else ""))
    for set_name, st in r["sets"].items():
        seeds = r.get("noise_seeds", 1)
        print(f"\n{set_name} worlds (generator seed {r['world_seed']}, {len(st['worlds'])} worlds"
              f"{f' x {seeds} noise seeds' if seeds > 1 else ''}):")
        print("| planner | success | median CPU s / trajectory | median CPU s (successes) | max CPU s |")
        print("|---|---:|---:|---:|---:|")
        for label, s in list(st["variants"].items()) + list(st.get("peer", {}).items()):
            med_ok = "-" if s["median_cpu_s_successes"] is None else f"{s['median_cpu_s_successes']:.2f}"
            print(f"| {label} | {s['successes']}/{s['trajectories']} | {s['median_cpu_s']:.2f} | {med_ok} "
                  f"| {s['max_cpu_s']:.2f} |")
        c = st["guided_vs_unguided_fine"]
        print(f"unguided/guided 7x200ms median CPU ratio: {c['cpu_ratio_median']:.2f}x; solved only when guided: "
              f"{', '.join(c['worlds_only_guided_solved']) or 'none'}; only when unguided: "
              f"{', '.join(c['worlds_only_unguided_solved']) or 'none'}")
    m = r["memory"]
    print(f"peak RSS: largest planning worker {m.get('max_worker_peak_rss_mib') or 0:.0f} MiB, "
          f"bench process {m['bench_process_peak_rss_mib']:.0f} MiB; largest tree {r['max_tree_mib']:.1f} MiB")
