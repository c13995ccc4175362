"""Transfer modes side by side over seeds (issue 15 item 5): read finished (and, marked, unfinished) ``flipper loop``
runs, group them by ``transfer.mode`` (a run without ``transfer:`` is the group ``sim-only``; with ``variants``, each
configuration of a mode a group of its own: ``split_variants``), check that the runs of a group differ only in their
seed, and put per mode the final Table I total (simulated, through G), the proxy scores
(test worlds and Table II's course, also per world), the real driving minutes and the CPU hours side by side, each as
mean, min-max and the number of seeds; the reference controllers of the same runs; the first mode paired seed by seed
with each other mode (``paired_by_seed``); and the issue's verdicts, computed (``compare_verdicts``).

Only finished runs (all iterations in ``report.json``) count in the means and verdicts: an unfinished run's latest
values come from an earlier iteration and would mix policies of different ages. Unfinished runs are listed, marked,
with what they have; a run without ``report.json`` is read from its step files (``baselines.json``,
``proxy_baselines.json``, ``iter_K/eval.json``, ``iter_K/proxy_eval.json``, ``real_C/collection.json``).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from flipper_control.learning.compare_verdicts import EPS, MARGIN, verdicts
from flipper_control.learning.config_fields import NO_RESULT_FIELDS
from flipper_control.learning.report import score_columns

__all__ = ["MARGIN", "SIM_ONLY", "read_run", "compare_runs", "config_differences", "paired_by_seed", "split_variants",
           "stat", "verdicts"]

SIM_ONLY = "sim-only"
MODE_ORDER = ("gan", "identity", "randomize", SIM_ONLY)
NOT_COMPARED = NO_RESULT_FIELDS + ("seed",)  # the fields that change no result, and the seed: the spread over it
# config fields added after runs were recorded, with the value that reproduces what a run without the field did: an
# absent field equals that value (any other value is a real difference). The GAN's are perception.cyclegan's table
# for old checkpoints (a test keeps the two equal); not imported from there, since that would load torch for a diff.
ADDED_FIELDS = {"transfer.gan.gan.noise_channels": 0, "transfer.gan.gan.occlusion_hint": False,
                "coarse.guide_range": "robot", "guided.guide_range": "robot", "imitation.flipper_noise": 0.0,
                "transfer.gan.cycle_skips_hidden": False, "coarse.repeat_prob": 0.0, "guided.repeat_prob": 0.0,
                "coarse.keep_delay_s": None, "guided.keep_delay_s": None, "transfer.gan.height_offset": 0.0,
                "transfer.estimate_height_offset": False, "transfer.gan.gan.map_age_s": 0.0, "imitation.loss": "mse",
                "imitation.huber_delta": 0.05, "coarse.policy_start": 0.0, "guided.policy_start": 0.0,
                "coarse.policy_start_before_s": None, "guided.policy_start_before_s": None,
                "imitation.policy.view_from_x": None, "imitation.policy.prior": "none",
                "imitation.policy.rule_features": False, "transfer.dem_views": 1, "imitation.keyframe_weight": 0.0,
                "first_guide": None}


# ------------------------------------------------------------------------------------------ reading one run
def _load(path: Path, what: str) -> Any | None:
    """A JSON file of a run, or None when it does not exist; unreadable JSON is an error naming the file."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a {what} ({exc})") from None


def _from_step_files(run: Path, config: dict) -> dict:
    """The report a run without ``report.json`` would have so far, from the step files it has written."""
    report: dict[str, Any] = {"iterations": [], "baselines": _load(run / "baselines.json", "baseline file") or {}}
    if config.get("transfer"):
        cols, c = [], 0
        while (col := _load(run / f"real_{c}" / "collection.json", "collection file")) is not None:
            cols.append(col)
            c += 1
        report["transfer"] = {"mode": config["transfer"].get("mode"), "collections": cols,
                              "driving_s": sum(x["driving_s"] for x in cols),
                              "proxy_baselines": _load(run / "proxy_baselines.json", "proxy baseline file") or {}}
    k = 1
    while (ev := _load(run / f"iter_{k}" / "eval.json", "evaluation file")) is not None:
        entry = {"iteration": k, "scores": ev["scores"], "total": ev["total"], "max": ev["max"]}
        proxy = _load(run / f"iter_{k}" / "proxy_eval.json", "proxy evaluation file")
        if proxy is not None:
            entry["transfer"] = {"proxy": proxy}
        deploy = _load(run / f"iter_{k}" / "deploy_eval.json", "deployment choice file")
        if deploy is not None and "transfer" in report:  # driving that chose the deployed iteration is real data used
            report["transfer"]["driving_s"] += deploy.get("driving_s", 0.0)
        report["iterations"].append(entry)
        k += 1
    return report


def read_run(path: str | Path) -> dict:
    """One loop run's figures: mode, seed, progress, the final Table I, the proxy scores, the reference controllers,
    driving minutes, CPU hours and the configuration. Raises ValueError naming the folder or file for a folder that is
    not a loop run or a file that is not what the loop writes."""
    run = Path(path)
    if not run.is_dir():
        raise ValueError(f"{run}: no such folder" if not run.exists() else f"{run}: not a folder (give a loop run's --out)")
    config = _load(run / "config.json", "loop config")
    if config is None:
        raise ValueError(f"{run}: not a loop run (no config.json; flipper loop writes one into its --out first)")
    if not (isinstance(config, dict) and isinstance(config.get("iterations"), int) and isinstance(config.get("seed"), int)):
        raise ValueError(f"{run / 'config.json'}: not a loop config (no integer fields iterations and seed)")
    transfer = config.get("transfer")
    if transfer is not None and not (isinstance(transfer, dict) and isinstance(transfer.get("mode"), str)):
        raise ValueError(f"{run / 'config.json'}: field transfer must be a mapping with a mode, got {transfer!r}")
    report = _load(run / "report.json", "loop report")
    has_report = report is not None
    where = run / "report.json" if has_report else run
    try:
        if report is None:
            report = _from_step_files(run, config)
        return _summary(run, config, report, has_report)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{where}: not in the format flipper loop writes ({type(exc).__name__}: {exc})") from None


def _summary(run: Path, config: dict, report: dict, has_report: bool) -> dict:
    its = report["iterations"]
    t = report.get("transfer") or {}
    proxy: dict[str, dict] = {}
    for it in reversed(its):  # the newest proxy scores of each world set (the last iteration's, in a finished run)
        for ref, ev in ((it.get("transfer") or {}).get("proxy") or {}).items():
            if ref not in proxy:
                cells = score_columns(ev)
                proxy[ref] = {"iteration": it["iteration"], "cells": cells, "total": round(sum(cells.values()), 4),
                              "max": len(cells)}
    proxy_baselines = {}
    for name, by_ref in (t.get("proxy_baselines") or {}).items():
        proxy_baselines[name] = {}
        for ref, ev in by_ref.items():
            cells = score_columns(ev)
            proxy_baselines[name][ref] = {"cells": cells, "total": round(sum(cells.values()), 4), "max": len(cells)}
    last = its[-1] if its else None
    cpu = report.get("cpu_s")
    driving = None
    if config.get("transfer"):
        driving = t.get("driving_s", sum(c["driving_s"] for c in t.get("collections", [])))
    return {
        "path": str(run), "mode": config["transfer"]["mode"] if config.get("transfer") else SIM_ONLY, "seed": config["seed"],
        "iterations": config["iterations"], "iterations_done": len(its), "has_report": has_report,
        "finished": has_report and len(its) >= config["iterations"],
        "table_i": None if last is None else {"iteration": last["iteration"], "scores": last["scores"],
                                              "total": last["total"], "max": last["max"]},
        "proxy": proxy,
        "baselines": {n: {"scores": b["scores"], "total": b["total"], "max": b["max"]} for n, b in report["baselines"].items()},
        "proxy_baselines": proxy_baselines,
        "driving_min": None if driving is None else round(driving / 60, 3),
        "cpu_hours": None if not cpu else round(cpu.get("cpu_hours", cpu["total"] / 3600), 4),
        "config": config,
    }


# ------------------------------------------------------------------------------------------ configurations
def _leaf_differences(a: dict, b: dict, ignore: tuple[str, ...], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every leaf where two recorded configs differ, ``"absent"`` for a field
    a config lacks (for a field in ``ADDED_FIELDS``, absent means its value there); keys in ``ignore`` skipped."""
    rows = []
    for key in sorted(set(a) | set(b)):
        if prefix + key in ignore:
            continue
        x, y = (c.get(key, ADDED_FIELDS.get(prefix + key, "absent")) for c in (a, b))
        if isinstance(x, dict) and isinstance(y, dict):
            rows += _leaf_differences(x, y, ignore, f"{prefix}{key}.")
        elif x != y:
            rows.append((prefix + key, x, y))
    return rows


def _text(value: Any) -> str:
    return value if value == "absent" else json.dumps(value)[:60]


def config_differences(a: dict, b: dict, ignore: tuple[str, ...] = NOT_COMPARED) -> list[str]:
    """``dotted.key: A vs B`` for every leaf where two recorded configs differ (``absent``: the field is not in that
    config, e.g. recorded by an older version; for a field in ``ADDED_FIELDS`` absent means its value there),
    skipping the keys in ``ignore``."""
    return [f"{key}: {_text(x)} vs {_text(y)}" for key, x, y in _leaf_differences(a, b, ignore)]


def _ignored(mode: str) -> tuple[str, ...]:
    """What runs of ``mode`` may differ in without differing in results: ``transfer.gan`` too in a mode that trains no
    GAN (identity, randomize)."""
    return NOT_COMPARED + (() if mode == "gan" else ("transfer.gan",))


def _label_text(value: Any) -> str:
    """A changed value as a group's name shows it: a mapping with a ``name`` (an action set spelled out in full) by that
    name, anything else as JSON text (cut to 60 characters)."""
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return value["name"]
    return _text(value)


def split_variants(groups: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Each mode's runs split by configuration: the runs configured as the mode's first run keep the mode's name, each
    other configuration becomes a group of its own named by what it changes, ``gan [transfer.gan_shadows=true]``
    (``--variants``: two variants of one mode, each over seeds, paired seed by seed)."""
    out: dict[str, list[dict]] = {}
    for mode, runs in groups.items():
        base = runs[0]["config"]
        for r in runs:
            diff = _leaf_differences(base, r["config"], _ignored(mode))
            label = mode + (" [" + "; ".join(f"{key}={_label_text(y)}" for key, _, y in diff) + "]" if diff else "")
            out.setdefault(label, []).append(r)
    return out


def _check_groups(groups: dict[str, list[dict]], allow_different: bool) -> list[str]:
    """Within a mode, runs may differ only in the seed, and each seed once: the problems found (raised as one error
    unless ``allow_different``). ``transfer.gan`` is not compared in modes that train no GAN (identity, randomize):
    it does not change their results."""
    problems = []
    for mode, runs in groups.items():
        first = runs[0]
        for r in runs[1:]:
            diff = config_differences(first["config"], r["config"], _ignored(first["mode"]))
            if diff:
                problems.append(f"runs of mode {mode} differ in more than the seed: {first['path']} vs {r['path']}: "
                                + "; ".join(diff))
        seeds = [r["seed"] for r in runs]
        for s in sorted({s for s in seeds if seeds.count(s) > 1}):
            problems.append(f"runs of mode {mode} share seed {s}: " + ", ".join(r["path"] for r in runs if r["seed"] == s)
                            + " (a spread over seeds needs each seed once)")
    if problems and not allow_different:
        raise ValueError("; ".join(problems) + " (compare runs that differ only in the seed, pass --variants to compare "
                         "the configurations as groups of their own, or --allow-different to pool them)")
    return problems


def _between_modes(firsts: dict[str, dict]) -> dict[str, list[str]]:
    """Configuration differences of each group's first run from the first group's, besides the mode and the seed: the
    modes should get the same budget. ``transfer.gan`` counts only between two modes that train a GAN."""
    out = {}
    (first, a), *others = firsts.items()
    for label, b in others:
        ignore = NOT_COMPARED + ("transfer.mode",) + (() if a["mode"] == b["mode"] == "gan" else ("transfer.gan",))
        if d := config_differences(a["config"], b["config"], ignore):
            out[f"{first} vs {label}"] = d
    return out


# ------------------------------------------------------------------------------------------ aggregation
def stat(values: list[float]) -> dict | None:
    """Mean, min, max and n of ``values`` (None when there are none)."""
    if not values:
        return None
    return {"mean": round(statistics.fmean(values), 4), "min": round(min(values), 4), "max": round(max(values), 4),
            "n": len(values)}


def _per_cell(evs: list[dict]) -> dict[str, dict]:
    """Per column (world or section), the stat over several evaluations' cells, in first-seen order."""
    names: dict[str, None] = {}
    for ev in evs:
        names.update(dict.fromkeys(ev))
    return {name: stat([ev[name] for ev in evs if name in ev]) for name in names}


def _aggregate(runs: list[dict]) -> dict:
    done = [r for r in runs if r["finished"]]
    refs = _refs(done)
    return {
        "seeds": sorted(r["seed"] for r in done), "n": len(done),
        "unfinished": [r["path"] for r in runs if not r["finished"]],
        "table_i_total": stat([r["table_i"]["total"] for r in done]),
        "table_i_max": done[0]["table_i"]["max"] if done else None,
        "table_i_per_world": _per_cell([r["table_i"]["scores"] for r in done]),
        "proxy": {ref: {"total": stat([r["proxy"][ref]["total"] for r in done if ref in r["proxy"]]),
                        "max": next(r["proxy"][ref]["max"] for r in done if ref in r["proxy"]),
                        "per_world": _per_cell([r["proxy"][ref]["cells"] for r in done if ref in r["proxy"]])}
                  for ref in refs},
        "driving_min": stat([r["driving_min"] for r in done if r["driving_min"] is not None]),
        "cpu_hours": stat([r["cpu_hours"] for r in done if r["cpu_hours"] is not None]),
    }


def paired_by_seed(groups: dict[str, list[dict]]) -> dict[str, dict]:
    """The first mode (gan, where given) against each other mode, seed by seed, on every proxy set both were scored on.

    Why: the seeds' spread (0.4/8 and more between seeds of one mode) is mostly the seeds' own -- which worlds got
    planned, which candidate won -- and two modes run on one seed share it, so the per-seed differences are a far
    sharper measure than the difference of two means. Per pair and set: the seeds both modes finished, the mean
    difference, its standard error (sample standard deviation / sqrt(n); None below two seeds) and how many seeds
    the first mode was ahead in, behind in or tied.
    """
    done = {m: {r["seed"]: r for r in g if r["finished"]} for m, g in groups.items()}
    first, *others = list(done) or [None]
    out: dict[str, dict] = {}
    for other in others:
        seeds = sorted(set(done[first]) & set(done[other]))
        per_ref = {}
        for ref in _refs([*done[first].values(), *done[other].values()]):
            both = [s for s in seeds if ref in done[first][s]["proxy"] and ref in done[other][s]["proxy"]]
            diffs = [done[first][s]["proxy"][ref]["total"] - done[other][s]["proxy"][ref]["total"] for s in both]
            if not diffs:
                continue
            per_ref[ref] = {"seeds": both, "n": len(diffs), "mean": round(statistics.fmean(diffs), 4),
                            "se": round(statistics.stdev(diffs) / len(diffs) ** 0.5, 4) if len(diffs) >= 2 else None,
                            "ahead": sum(d > EPS for d in diffs), "behind": sum(d < -EPS for d in diffs),
                            "tied": sum(abs(d) <= EPS for d in diffs)}
        if per_ref:
            out[f"{first} - {other}"] = per_ref
    return out


def _refs(runs: list[dict]) -> list[str]:
    """The proxy world sets the policies of ``runs`` were scored on: the test worlds and the proxy course first."""
    seen = dict.fromkeys(ref for r in runs for ref in r["proxy"])
    return sorted(seen, key=lambda ref: (["test", "proxy"].index(ref) if ref in ("test", "proxy") else 2, ref))


def _baselines(runs: list[dict]) -> dict:
    """The reference controllers over every run given (they are scored first, so unfinished runs have them too)."""
    names = dict.fromkeys(n for r in runs for n in list(r["baselines"]) + list(r["proxy_baselines"]))
    out = {}
    for name in names:
        sims = [r["baselines"][name] for r in runs if name in r["baselines"]]
        proxies = [r["proxy_baselines"][name] for r in runs if name in r["proxy_baselines"]]
        out[name] = {"table_i_total": stat([b["total"] for b in sims]),
                     "table_i_per_world": _per_cell([b["scores"] for b in sims]),
                     "proxy": {ref: {"total": stat([p[ref]["total"] for p in proxies if ref in p]),
                                     "per_world": _per_cell([p[ref]["cells"] for p in proxies if ref in p])}
                               for ref in dict.fromkeys(x for p in proxies for x in p)}}
    return out


def _group_key(groups: dict[str, list[dict]]):
    """Sort key of the groups: by mode (gan first, as MODE_ORDER), a mode's base configuration before its variants,
    variants in the order their first run was given."""
    order = list(groups)

    def key(label: str) -> tuple:
        mode = groups[label][0]["mode"]
        return (MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER), mode, label != mode, order.index(label))
    return key


def compare_runs(paths: list[str | Path], allow_different: bool = False, margin: float = MARGIN,
                 variants: bool = False) -> dict:
    """Read the runs in ``paths``, group them by transfer mode and compare the modes; returns the comparison (the
    JSON of ``flipper compare``; ``compare_markdown`` renders it). Raises ValueError for a folder that is not a loop
    run, a run given twice, or runs of one mode that differ in more than the seed (unless ``allow_different`` pools
    them, or ``variants`` makes each configuration a group of its own: ``split_variants``)."""
    if not paths:
        raise ValueError("no runs given: name one or more loop run folders")
    if allow_different and variants:
        raise ValueError("allow_different pools a mode's configurations and variants separates them: choose one")
    seen: dict[Path, str] = {}
    for p in paths:
        key = Path(p).resolve()
        if key in seen:
            raise ValueError(f"{p}: given twice (also as {seen[key]})")
        seen[key] = str(p)
    runs = [read_run(p) for p in paths]
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["mode"], []).append(r)
    if variants:  # the runs in the order given, so that the first run of a mode names its base configuration
        groups = split_variants(groups)
    groups = {m: sorted(groups[m], key=lambda r: r["seed"]) for m in sorted(groups, key=_group_key(groups))}
    for label, g in groups.items():
        for r in g:
            r["group"] = label  # the run's row in the report names its group (its mode, or its variant of it)
    problems = _check_groups(groups, allow_different)
    between = _between_modes({label: g[0] for label, g in groups.items()})
    modes = {m: _aggregate(g) for m, g in groups.items()}
    baselines = _baselines(runs)
    return {"runs": [{k: v for k, v in r.items() if k != "config"} for r in runs], "modes": modes, "baselines": baselines,
            "paired": paired_by_seed(groups), "verdicts": verdicts(modes, baselines, margin), "margin": margin,
            "allowed_differences": problems,
            "differences_between_modes": between}
