"""``flipper compare RUN [RUN ...]``: the transfer modes of several ``flipper loop`` runs side by side over seeds
(issue 15 item 5; ``flipper_control.learning.compare``): per mode the final Table I total (simulated, through G), the
test worlds and the proxy course on the reality proxy (also per world), the real driving minutes and the CPU hours as
mean (min-max) over the seeds, the reference controllers of the same runs, the first mode paired seed by seed with
each other mode, and the issue's verdicts, computed.

The Markdown goes to stdout (and ``--out FILE``), the comparison as JSON to ``--json``, both written atomically.
Runs of one mode must differ only in their seed: ``--variants`` makes each configuration of a mode a group of its own
(named by what it changes, paired seed by seed with the first group like a mode), ``--allow-different`` pools them
and lists the differences. Unfinished runs are listed, marked, and not counted in the means.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flipper_control.cli.common import err, non_negative, save_json, save_output
from flipper_control.learning.compare import MARGIN, compare_runs
from flipper_control.learning.report import proxy_title
from sim.io_utils import OutputError, check_writable, write_text_atomic

__all__ = ["add_parsers", "compare_markdown"]

_SHORT = {"test": "test worlds, reality proxy", "proxy": "proxy course (Table II)"}


def _short(ref: str) -> str:
    return _SHORT.get(ref, f"{ref}, reality proxy")


def _fmt(s: dict | None, n: int | None = None) -> str:
    """``mean (min-max)`` of a stat; ``n=k`` when fewer seeds than the group has gave it; ``-`` for none."""
    if not s:
        return "-"
    text = f"{s['mean']:.2f}" if s["min"] == s["max"] else f"{s['mean']:.2f} ({s['min']:.2f}-{s['max']:.2f})"
    return text + (f" n={s['n']}" if n is not None and s["n"] != n else "")


def _refs(cmp: dict) -> list[str]:
    refs = dict.fromkeys(ref for a in cmp["modes"].values() for ref in a["proxy"])
    refs.update(dict.fromkeys(ref for b in cmp["baselines"].values() for ref in b["proxy"]))
    return sorted(refs, key=lambda ref: (["test", "proxy"].index(ref) if ref in ("test", "proxy") else 2, ref))


def _side_by_side(cmp: dict, refs: list[str]) -> list[str]:
    rows = ["| mode | seeds | Table I total (simulated, through G) | " + " | ".join(_short(r) for r in refs)
            + " | real driving (min) | CPU hours |", "|---|---|" + "---:|" * (len(refs) + 3)]
    for mode, a in cmp["modes"].items():
        seeds = (", ".join(map(str, a["seeds"])) + f" (n={a['n']})") if a["n"] else "none finished"
        if a["unfinished"]:
            seeds += f"; {len(a['unfinished'])} unfinished not counted"
        cells = [_fmt(a["proxy"][r]["total"], a["n"]) if r in a["proxy"] else "-" for r in refs]
        rows.append(f"| {mode} | {seeds} | {_fmt(a['table_i_total'], a['n'])} | " + " | ".join(cells)
                    + f" | {_fmt(a['driving_min'], a['n'])} | {_fmt(a['cpu_hours'], a['n'])} |")
    for name, b in cmp["baselines"].items():
        n = (b["table_i_total"] or {}).get("n", 0)
        cells = [_fmt(b["proxy"][r]["total"]) if r in b["proxy"] else "-" for r in refs]
        rows.append(f"| {name} (reference) | same {n} runs | {_fmt(b['table_i_total'])} | " + " | ".join(cells) + " | - | - |")
    return rows


def _per_world(cmp: dict, pick_mode, pick_base) -> list[str] | None:
    """A mode x world table of means: ``pick_mode(aggregate)`` / ``pick_base(baseline)`` give (per_world, total) or None."""
    rows_in = [(m, pick_mode(a)) for m, a in cmp["modes"].items()] + [(f"{n} (reference)", pick_base(b))
                                                                       for n, b in cmp["baselines"].items()]
    rows_in = [(label, got) for label, got in rows_in if got and got[0]]
    if not rows_in:
        return None
    cols = list(dict.fromkeys(c for _, (per, _) in rows_in for c in per))
    rows = ["| mode | " + " | ".join(cols) + " | sum |", "|---|" + "---:|" * (len(cols) + 1)]
    for label, (per, total) in rows_in:
        rows.append(f"| {label} | " + " | ".join(f"{per[c]['mean']:.2f}" if per.get(c) else "-" for c in cols)
                    + f" | **{total['mean']:.2f}/{len(cols)}** |")
    return rows


def _run_rows(cmp: dict, refs: list[str]) -> list[str]:
    rows = ["| run | mode | seed | status | Table I (simulated) | " + " | ".join(_short(r) for r in refs)
            + " | real driving (min) | CPU hours |", "|---|---|---:|---|---:|" + "---:|" * (len(refs) + 2)]
    for r in cmp["runs"]:
        progress = f"{r['iterations_done']}/{r['iterations']} iterations"
        status = f"finished ({progress})" if r["finished"] else f"**unfinished** ({progress}" + (
            ")" if r["has_report"] else "; no report.json, read from its step files)")
        def it_note(k: int, final: int = r["iterations"]) -> str:
            return "" if k == final else f" (iteration {k})"  # an earlier policy's figure, not the final one

        t = r["table_i"]
        table_i = f"{t['total']:.2f}/{t['max']}{it_note(t['iteration'])}" if t else "-"
        cells = [f"{r['proxy'][ref]['total']:.2f}/{r['proxy'][ref]['max']}{it_note(r['proxy'][ref]['iteration'])}"
                 if ref in r["proxy"] else "-" for ref in refs]
        driving = "-" if r["driving_min"] is None else f"{r['driving_min']:.1f}"
        cpu = "-" if r["cpu_hours"] is None else f"{r['cpu_hours']:.3f}"
        rows.append(f"| {r['path']} | {r.get('group', r['mode'])} | {r['seed']} | {status} | {table_i} | " + " | ".join(cells)
                    + f" | {driving} | {cpu} |")
    return rows


def _paired_rows(paired: dict, refs: list[str]) -> list[str]:
    rows = ["| modes | " + " | ".join(_short(r) for r in refs) + " |", "|---|" + "---:|" * len(refs)]
    for pair, per_ref in paired.items():
        cells = []
        for ref in refs:
            p = per_ref.get(ref)
            if not p:
                cells.append("-")
                continue
            se = "" if p["se"] is None else f" +- {p['se']:.2f}"
            cells.append(f"{p['mean']:+.2f}{se} (n={p['n']}; {p['ahead']} / {p['behind']} / {p['tied']})")
        rows.append(f"| {pair} | " + " | ".join(cells) + " |")
    return rows


def compare_markdown(cmp: dict) -> str:
    """The comparison (``learning.compare.compare_runs``) as a Markdown report."""
    refs = _refs(cmp)
    finished = sum(r["finished"] for r in cmp["runs"])
    unfinished = len(cmp["runs"]) - finished
    lines = ["# Transfer modes side by side", "",
             f"{len(cmp['runs'])} runs: {finished} finished"
             + (f", {unfinished} unfinished (listed under Runs, marked, not counted)" if unfinished else "")
             + ". Each figure: mean over the finished seeds (min-max); the reference controllers over the same runs.",
             "", "## Per mode", "", *_side_by_side(cmp, refs), "", "## Verdicts (issue 15)", ""]
    lines += [f"- {v['text']}" for v in cmp["verdicts"]] + [""]
    if cmp["paired"]:
        lines += ["## Paired by seed", "", "The first mode minus each other mode on the seeds both finished: mean difference "
                  "+- its standard error, and in how many seeds the first mode was ahead / behind / tied.", "",
                  *_paired_rows(cmp["paired"], refs), ""]
    for ref in refs:
        table = _per_world(cmp, lambda a, ref=ref: (a["proxy"][ref]["per_world"], a["proxy"][ref]["total"]) if ref in a["proxy"]
                           else None, lambda b, ref=ref: (b["proxy"][ref]["per_world"], b["proxy"][ref]["total"])
                           if ref in b["proxy"] else None)
        if table:
            lines += [f"### {proxy_title(ref)}, per world or section (mean over seeds)", "", *table, ""]
    table = _per_world(cmp, lambda a: (a["table_i_per_world"], a["table_i_total"]),
                       lambda b: (b["table_i_per_world"], b["table_i_total"]))
    if table:
        lines += ["### Simulated test worlds (Table I, final iteration, through G), per world (mean over seeds)", "", *table, ""]
    lines += ["## Runs", "", *_run_rows(cmp, refs), ""]
    if cmp["allowed_differences"]:
        lines += ["## Differences allowed with --allow-different", ""] + [f"- {p}" for p in cmp["allowed_differences"]] + [""]
    if cmp["differences_between_modes"]:
        lines += ["## Configuration differences between the modes (besides transfer.mode, the seed, and transfer.gan "
                  "against a mode that trains no GAN)", ""]
        lines += [f"- {pair}: " + "; ".join(d) for pair, d in cmp["differences_between_modes"].items()] + [""]
    return "\n".join(lines)


def cmd_compare(args) -> int:
    if args.out:  # --out is a report file of this command only: checked here, before reading the runs
        check_writable(args.out, "--out")
        if args.json and Path(args.json).resolve() == Path(args.out).resolve():
            raise OutputError(f"--json {args.json} and --out {args.out} are one file; choose two paths")
    cmp = compare_runs(args.runs, allow_different=args.allow_different, margin=args.margin, variants=args.variants)
    text = compare_markdown(cmp)
    print(text)
    for r in cmp["runs"]:
        if not r["finished"]:
            err(f"flipper compare: {r['path']} is unfinished ({r['iterations_done']}/{r['iterations']} iterations): "
                "listed, not counted")
    for p in cmp["allowed_differences"]:
        err(f"flipper compare: allowed: {p}")
    status = 0
    if args.out:
        status, where = save_output(args.out, lambda p: write_text_atomic(p, text + "\n"), "--out")
        err(f"wrote {where}")
    return max(status, save_json(args.json, cmp))


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``compare`` to the ``flipper`` parser."""
    c = sub.add_parser("compare", help="transfer modes of several loop runs side by side over seeds (issue 15 item 5)")
    c.add_argument("runs", nargs="+", metavar="RUN", help="loop run folders (flipper loop --out); unfinished ones are marked")
    c.add_argument("--json", help="write the comparison (per run, per mode, reference controllers, verdicts) here")
    c.add_argument("--out", metavar="REPORT.md", help="also write the Markdown report here")
    pooling = c.add_mutually_exclusive_group()
    pooling.add_argument("--allow-different", action="store_true",
                         help="pool runs of one mode that differ in more than the seed (the differences are listed)")
    pooling.add_argument("--variants", action="store_true",
                         help="runs of one mode configured differently form groups of their own, named by what they "
                              "change from the mode's first run given (e.g. gan [transfer.gan_shadows=true]), paired "
                              "seed by seed with the first group")
    c.add_argument("--margin", type=non_negative, default=MARGIN,
                   help=f"the lead of learned G over identity and randomize the verdict asks for (default {MARGIN})")
    c.set_defaults(func=cmd_compare)
