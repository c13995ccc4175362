"""The learning loop's report: ``report.json``, ``report.md`` (Table I and Table III analogues; with a ``transfer``
section also Table II on the reality proxy, the test worlds there and the generator's metrics) and a PNG.

Table I (seed 000): the simulated test-world score of each iteration's policy, per world and summed out
of the number of worlds. Table III: the planning cost per trajectory of each iteration's planner. The
reference controllers' scores on the same worlds and seeds are rows of Table I, for context.
"""

from __future__ import annotations

from pathlib import Path

from planning.actions import action_set_label
from sim.io_utils import write_bytes_atomic, write_json_atomic, write_text_atomic
from sim.scoring import loss_text

__all__ = ["write_report", "planner_kind", "table_i", "table_iii", "table_paired", "table_proxy", "table_transfer",
           "proxy_title", "loss_notes"]


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


def loss_notes(rows: list[tuple[str, dict]]) -> list[str]:
    """Markdown bullets of where each (label, evaluation) row lost points (``sim.scoring.loss_text`` per world below 1),
    for rows whose evaluation carries ``losses`` (reports written before it was recorded have none)."""
    out = []
    for label, ev in rows:
        lost = [loss_text(w, ev["scores"][w], summary) for w, summary in (ev.get("losses") or {}).items()]
        if lost:
            out.append(f"- {label}: " + "; ".join(lost))
    return out


def _where_lost(rows: list[tuple[str, dict]]) -> list[str]:
    """The reference rows and the last iteration's, as a paragraph under a table (nothing when none lost points)."""
    notes = loss_notes(rows)
    if not notes:
        return []
    return ["Where the points went (runs per reason; slow: end times and limit; failed runs: where they ended):", "",
            *notes, ""]


def planner_kind(guided: bool, action_set, guide: str | None = None) -> str:
    """How the log and Table III name an iteration's planner: ``guided fine_rear``, ``unguided coarse``, and with a
    reference controller as the guide (``LoopConfig.first_guide``) ``heuristic-guided fine_rear``."""
    return f"{f'{guide}-guided' if guide else 'guided' if guided else 'unguided'} {action_set_label(action_set)}"


def table_iii(report: dict) -> str:
    """Markdown: the planner of each iteration and its cost per trajectory (CPU seconds)."""
    rows = ["| iteration | planner | success | median CPU s / trajectory | median CPU s (successes) | median expansions "
            "| dataset samples | test MSE (baseline) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for it in report["iterations"]:
        p, t = it["planning"], it["training"]
        kind = planner_kind(p["guided"], p["action_set"], p.get("guide"))
        med_ok = "-" if p["cpu_s_median_success"] is None else f"{p['cpu_s_median_success']:.2f}"
        rows.append(f"| {it['iteration']} | {kind} | {p['successes']}/{p['trajectories']} | {p['cpu_s_median']:.2f} | {med_ok} "
                    f"| {p['expansions_median']:g} | {it['dataset']['samples']} "
                    f"| {t['test_mse']:.4f} ({t['baseline_test_mse']:.4f}) |")
    return "\n".join(rows)


def score_columns(ev: dict) -> dict[str, float]:
    """Column -> score of one evaluation (``{"scores": {world: score}, "sections": {world: {section: score}}}``), in
    order: a world with sections (the proxy staircase) gives its sections, as in Table II (F, P, SU1-3, SD1-3)."""
    out: dict[str, float] = {}
    for world, score in ev["scores"].items():
        sections = (ev.get("sections") or {}).get(world)
        out.update(sections if sections else {world: score})
    return out


def table_proxy(report: dict, ref: str) -> str | None:
    """Markdown: the ``ref`` worlds on the reality proxy (``proxy``: F, P and the staircase's sections, the Table II
    analogue; ``test``: the eight test worlds), for the reference controllers and the iterations scored there."""
    if not report.get("transfer"):
        return None
    refs, scored = _proxy_rows(report, ref)
    rows_in = refs + scored
    if not rows_in:
        return None
    header = list(score_columns(rows_in[0][1]))
    rows = ["| policy | " + " | ".join(header) + " | sum |", "|---|" + "---:|" * (len(header) + 1)]
    for label, ev in rows_in:
        cells = list(score_columns(ev).values())
        rows.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in cells) + f" | **{sum(cells):.2f}/{len(cells)}** |")
    return "\n".join(rows)


def _proxy_rows(report: dict, ref: str) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """(label, evaluation) of the ``ref`` worlds on the reality proxy: the reference controllers', then the iterations'
    scored there."""
    t = report["transfer"]
    refs = [(f"{b} (reference)", by_ref[ref]) for b, by_ref in t.get("proxy_baselines", {}).items() if ref in by_ref]
    scored = [(f"iteration {it['iteration']}", it["transfer"]["proxy"][ref]) for it in report["iterations"]
              if ref in it.get("transfer", {}).get("proxy", {})]
    return refs, scored


def proxy_title(ref: str) -> str:
    """The heading of the table of the ``ref`` worlds on the reality proxy."""
    known = {"proxy": "Proxy course on the reality proxy (Table II analogue)", "test": "Test worlds on the reality proxy"}
    return known.get(ref, f"{ref} on the reality proxy")


def table_transfer(report: dict) -> str | None:
    """Markdown: per iteration, the generator its policy learnt through and the held-out transfer metrics of the
    CycleGAN trained after it: the classifier's accuracy (50 % = indistinguishable), its content floor (the same test
    between two trajectory halves of the held-out real set: what content alone tells apart, about what an unpaired
    test of sets this small can show), and the least closed share; with ``transfer.estimate_height_offset`` the
    sensor offset each update estimated."""
    t = report.get("transfer")
    if not t:
        return None
    rows = ["| iteration | policy learnt through | GAN update | classifier: identity / G / randomised | "
            "real halves (floor) | G closed (least) |",
            "|---|---|---|---:|---:|---:|"]
    for it in report["iterations"]:
        tr = it.get("transfer", {})
        gan = tr.get("gan")
        through = "exact DEMs"
        if tr.get("through_gan"):  # .../iter_J/gan
            through = "G of iteration " + tr["through_gan"].split("iter_")[-1].split("/")[0]
        elif t["mode"] == "randomize":
            through = "randomised DEMs"
        if gan is None:
            rows.append(f"| {it['iteration']} | {through} | - | - | - | - |")
            continue
        floor = gan.get("content_floor")  # .get: reports of runs before the floor was measured
        floor = "-" if floor is None else f"{floor['accuracy']:.2f}"
        if gan["diverged"]:
            why = f" ({gan['error']})" if gan.get("error") else ""
            rows.append(f"| {it['iteration']} | {through} | diverged, not used{why} | - | {floor} | - |")
            continue
        m = gan["metrics"]
        acc = " / ".join(f"{m[c]['accuracy']:.2f}" if c in m else "-" for c in ("identity", "G", "randomized"))
        closed = [v for v in m["G"]["closed_share"].values() if v is not None]
        least = f"{min(closed):.2f}" if closed else "-"
        offset = gan.get("height_offset")  # transfer.estimate_height_offset: the sensor offset G was pulled to
        trained = "trained"
        if offset:
            trained += (f" (sensor offset {100 * offset['offset_m']:+.2f} cm)" if offset["offset_m"] is not None
                        else " (no sensor offset estimated: gan_update.json says why)")
        rows.append(f"| {it['iteration']} | {through} | {trained} | {acc} | {floor} | {least} |")
    return "\n".join(rows)


def table_paired(report: dict) -> str | None:
    """Markdown: each GAN update judged on same-pose pairs of exact and reality-proxy DEMs (``transfer.paired_worlds``),
    where content does not differ: the classifier's accuracy (50 % = indistinguishable, the issue's target 65 %; a
    sensor oracle built from the pairs reaches 0.60-0.73), where G and the randomisation put their NaN (F1 against
    the proxy's NaN cells) and the least share of the identity's distance G closed. None when no update was judged
    on pairs."""
    rows = []
    for it in report["iterations"]:
        gan = it.get("transfer", {}).get("gan") or {}
        p = gan.get("paired")
        if not p:
            continue
        c = p["candidates"]
        acc = " / ".join(f"{c[n]['accuracy']:.2f}" if n in c else "-" for n in ("identity", "G", "randomized"))
        f1 = " / ".join("-" if c.get(n, {}).get("nan_f1") is None else f"{c[n]['nan_f1']:.2f}" for n in ("G", "randomized"))
        closed = [v for v in c.get("G", {}).get("closed_share", {}).values() if v is not None]
        rows.append(f"| {it['iteration']} | {p['pairs']} ({p['worlds']} worlds) | {acc} | {f1} | "
                    + (f"{min(closed):.2f} |" if closed else "- |"))
    if not rows:
        return None
    table = "\n".join(["| iteration | pairs | classifier: identity / G / randomised | NaN F1: G / randomised | "
                       "G closed (least) |", "|---|---:|---:|---:|---:|"] + rows)
    if any(((it.get("transfer", {}).get("gan") or {}).get("paired") or {}).get("shadows") for it in report["iterations"]):
        table += ("\n\nG is judged as imitation sees it: its DEMs also lose the cells the terrain hides from the lidar "
                  "(`gan_shadows`).")
    return table


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
        *_where_lost([(f"{b} (reference)", v) for b, v in report.get("baselines", {}).items()]
                     + [(f"iteration {it['iteration']}", it) for it in report["iterations"][-1:]]),
        "## Planning cost per trajectory (Table III analogue)", "", table_iii(report), "",
        "![learning curve](learning_curve.png)", "",
        *_transfer_markdown(report),
        f"Peak resident memory (over every session of a resumed run): the loop's process "
        f"{mem.get('parent_peak_rss_mib', 0):.0f} MiB, "
        f"largest worker {mem.get('max_worker_peak_rss_mib', 0) or 0:.0f} MiB.", "",
    ]
    return "\n".join(lines)


def deployed_line(report: dict) -> str:
    """One sentence: which iteration is deployed, the held-out proxy totals that chose it and its proxy scores."""
    d = report["transfer"]["deploy"]
    k = d["iteration"]
    totals = ", ".join(f"{j}: {v:.2f}" for j, v in sorted(d["totals"].items(), key=lambda kv: int(kv[0])))
    entry = next((e for e in report["iterations"] if e["iteration"] == k), {})
    proxy = entry.get("transfer", {}).get("proxy", {})
    names = {"test": "test worlds", "proxy": "course"}
    columns = {ref: score_columns(v) for ref, v in proxy.items()}  # the course scores its sections, as its table
    scores = "; ".join(f"{names.get(ref, ref)} {sum(c.values()):.2f}/{len(c)}" for ref, c in columns.items())
    return (f"Deployed policy: iteration {k} (`iter_{k}/policy`), the best on {len(d['worlds'])} held-out {d['set']} "
            f"worlds x {d['runs']} run(s) on the reality proxy (totals /{len(d['worlds'])} by iteration: {totals}; "
            f"ties go to the later; {d['driving_s'] / 60:.1f} min of driving, counted as real data)"
            + (f"; on the proxy: {scores}" if scores else "") + ".")


def _transfer_markdown(report: dict) -> list[str]:
    t = report.get("transfer")
    if not t:
        return []
    runs = report["config"]["transfer"]["proxy_eval_runs"]
    tc = report["config"]["transfer"]
    masks = tc.get("real_masks") or {}
    by = f", matched by the pitch's change over the next {masks['ahead_s']:g} s" if masks.get("ahead_s") else ""
    borrowed = f" (imitation under NaN masks borrowed from the real DEMs{by}: `real_masks`)" if tc.get("real_masks") else ""
    if tc.get("exact_share"):
        borrowed += f" ({100 * tc['exact_share']:.0f} % of imitation's DEMs left exact: `exact_share`)"
    if tc.get("randomize_share"):
        borrowed += f" ({100 * tc['randomize_share']:.0f} % of imitation's DEMs domain-randomised: `randomize_share`)"
    if tc.get("gan_shadows"):
        borrowed += " (G's DEMs also lose the terrain's shadows: `gan_shadows`)"
    if tc.get("dem_views", 1) > 1:
        borrowed += f" ({tc['dem_views']} transformed copies of each planned state: `dem_views`)"
    lines = [f"## Sim-to-real (Algorithm 1), mode `{t['mode']}`{borrowed}", "",
             f"Real (reality-proxy) driving used: {t.get('driving_s', 0) / 60:.1f} min in {len(t['collections'])} "
             "collection(s): " + ", ".join(f"{c['label']} ({c['driving_s'] / 60:.1f} min, {c['samples']} states)"
                                          for c in t["collections"])
             + (f", and {t['deploy']['driving_s'] / 60:.1f} min choosing the deployed iteration" if t.get("deploy") else "")
             + ".", ""]
    if t.get("deploy"):
        lines += [deployed_line(report), ""]
    for ref in report["config"]["transfer"]["proxy_eval_worlds"]:
        table = table_proxy(report, ref)
        if table:
            refs, scored = _proxy_rows(report, ref)
            lines += [f"### {proxy_title(ref)}, {runs} runs per world", "", table, "", *_where_lost(refs + scored[-1:])]
    table = table_transfer(report)
    if table:
        lines += ["### The generator per iteration (held-out transfer metrics)", "", table, ""]
    table = table_paired(report)
    if table:
        lines += ["### The generator on same-pose pairs (exact and reality-proxy DEMs of the same poses)", "", table, ""]
    if t.get("figure"):
        lines += [f"![Fig. 6 analogue]({t['figure']})", ""]
    return lines


def write_report(out: str | Path, report: dict) -> None:
    """Write report.json, report.md and learning_curve.png into ``out`` (each atomically)."""
    out = Path(out)
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", render_markdown(report))
    if report["iterations"]:
        write_bytes_atomic(out / "learning_curve.png", _plot(report))
