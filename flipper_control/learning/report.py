"""The learning loop's report: ``report.json``, ``report.md`` (Table I and Table III analogues) and a PNG.

Table I (seed 000): the simulated test-world score of each iteration's policy, per world and summed out
of the number of worlds. Table III: the planning cost per trajectory of each iteration's planner. The
reference controllers' scores on the same worlds and seeds are rows of Table I, for context.
"""

from __future__ import annotations

from pathlib import Path

from sim.io_utils import write_bytes_atomic, write_json_atomic, write_text_atomic

__all__ = ["write_report", "table_i", "table_iii"]


def table_i(report: dict) -> str:
    """Markdown: one row per baseline and per iteration, one column per world, and the sum."""
    its = report["iterations"]
    if not its:
        return "(no finished iteration yet)"
    worlds = list(its[0]["scores"])
    rows = ["| policy | " + " | ".join(worlds) + " | sum |", "|---|" + "---:|" * (len(worlds) + 1)]
    for name, b in report.get("baselines", {}).items():
        rows.append(f"| {name} (reference) | " + " | ".join(f"{b['scores'][w]:.2f}" for w in worlds)
                    + f" | {b['total']:.2f}/{b['max']} |")
    for it in its:
        rows.append(f"| iteration {it['iteration']} | " + " | ".join(f"{it['scores'][w]:.2f}" for w in worlds)
                    + f" | **{it['total']:.2f}/{it['max']}** |")
    return "\n".join(rows)


def table_iii(report: dict) -> str:
    """Markdown: the planner of each iteration and its cost per trajectory (CPU seconds)."""
    rows = ["| iteration | planner | success | median CPU s / trajectory | median CPU s (successes) | median expansions "
            "| dataset samples | test MSE (baseline) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for it in report["iterations"]:
        p, t = it["planning"], it["training"]
        kind = ("guided " if p["guided"] else "unguided ") + p["action_set"]
        med_ok = "-" if p["cpu_s_median_success"] is None else f"{p['cpu_s_median_success']:.2f}"
        rows.append(f"| {it['iteration']} | {kind} | {p['successes']}/{p['trajectories']} | {p['cpu_s_median']:.2f} | {med_ok} "
                    f"| {p['expansions_median']:g} | {it['dataset']['samples']} "
                    f"| {t['test_mse']:.4f} ({t['baseline_test_mse']:.4f}) |")
    return "\n".join(rows)


def _plot(report: dict) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = report["iterations"]
    xs = [it["iteration"] for it in its]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.plot(xs, [it["total"] for it in its], "o-", label="learned policy")
    styles = iter(["--", ":", "-."])
    for name, b in report.get("baselines", {}).items():
        ax.axhline(b["total"], linestyle=next(styles, "--"), color="gray", label=f"{name} (reference)")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"simulated test score (max {its[0]['max'] if its else 8})")
    ax.set_ylim(0, (its[0]["max"] if its else 8) + 0.3)
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Learning curve (Table I analogue)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def render_markdown(report: dict) -> str:
    cpu = report.get("cpu_s", {})
    mem = report.get("memory", {})
    lines = [
        "# Learning loop report", "",
        f"Seed {report['seed']}; {len(report['iterations'])} of {report['config']['iterations']} iterations finished; "
        f"wall time {report.get('wall_s', 0):.0f} s; CPU {cpu.get('total', 0):.0f} s ({cpu.get('cpu_hours', 0):.3f} CPU-hours: "
        f"planning {cpu.get('planning', 0):.0f} s, training {cpu.get('training', 0):.0f} s, "
        f"evaluation {cpu.get('evaluation', 0):.0f} s).",
        "",
        f"## Simulated test worlds (Table I analogue), {report['config']['eval_runs']} runs per world", "",
        table_i(report), "",
        "## Planning cost per trajectory (Table III analogue)", "", table_iii(report), "",
        "![learning curve](learning_curve.png)", "",
        f"Peak resident memory: this process {mem.get('parent_peak_rss_mib', 0):.0f} MiB, "
        f"largest worker {mem.get('max_worker_peak_rss_mib', 0) or 0:.0f} MiB.", "",
    ]
    return "\n".join(lines)


def write_report(out: str | Path, report: dict) -> None:
    """Write report.json, report.md and learning_curve.png into ``out`` (each atomically)."""
    out = Path(out)
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", render_markdown(report))
    if report["iterations"]:
        write_bytes_atomic(out / "learning_curve.png", _plot(report))
