"""The issue's figures, computed on the modes ``compare.compare_runs`` aggregated (issue 15 "Figures it must reach"): the
learned G ahead of identity G and of domain randomisation by a margin on the proxy test total, at least two seeds per
mode, each mode against the heuristic of the same runs and against its own simulated total, and for mode gan the
absolute figures and the real driving time. Each verdict says yes, no or "cannot be decided", with the numbers.
"""

from __future__ import annotations

__all__ = ["EPS", "MARGIN", "verdicts"]

MARGIN = 0.3  # issue 15: learned G ahead of identity G and of domain randomisation by at least 0.3/8, averaged over seeds
# issue 15, "Figures it must reach", checked on the mean over seeds of mode gan: (label, proxy ref, threshold)
GAN_FIGURES = (("test worlds on the proxy at least {t}/{m} (the demo's figure)", "test", 6.8),
               ("test worlds on the proxy at least {t}/{m} (the full config's figure)", "test", 7.3),
               ("proxy course at least {t}/{m} (the full config's figure)", "proxy", 7.5))
SIM_GAP = 0.3  # issue 15: the proxy test total within 0.3 of the run's own simulated total
DRIVING_MIN = 35.0  # issue 15: at most 35 minutes of proxy driving over a whole loop
EPS = 1e-6  # scores are rounded to 4 decimals: 6.5 - 6.2 must count as 0.3


def _verdict(claim: str, holds: bool | None, detail: str, value: float | None = None) -> dict:
    answer = {True: "yes", False: "no", None: "cannot be decided"}[holds]
    return {"claim": claim, "holds": holds, "value": value, "detail": detail, "text": f"{claim}: {answer} ({detail})"}


def _mean(agg: dict | None, ref: str) -> float | None:
    s = ((agg or {}).get("proxy", {}).get(ref) or {}).get("total")
    return s["mean"] if s else None


def _ahead(modes: dict, margin: float) -> dict:
    """Learned G ahead of identity G and of domain randomisation on the proxy test total, mean over seeds."""
    gan, others = modes.get("gan"), ("identity", "randomize")
    m = ((gan or {}).get("proxy", {}).get("test") or {}).get("max", 8)
    claim = f"learned G ahead of identity and randomize by >= {margin:g}/{m} on the proxy test total, averaged over seeds"
    g = _mean(gan, "test")
    missing = [x for x in ("gan", *others) if _mean(modes.get(x), "test") is None]
    leads = {x: round(g - _mean(modes[x], "test"), 4) for x in others if g is not None and x not in missing}
    parts = [f"{x} {_mean(modes[x], 'test'):.2f} (n={modes[x]['proxy']['test']['total']['n']})"
             for x in ("gan", *others) if x not in missing]
    detail = ", ".join(parts) if parts else "no scores"
    if missing:
        detail += "; no finished run with proxy test scores of mode " + ", ".join(missing)
    if not leads:
        return _verdict(claim, None, detail)
    by = min(leads.values())
    holds = None if missing and by >= margin - EPS else by >= margin - EPS  # one mode behind already answers no
    return _verdict(claim, holds, f"by {by:+.2f}/{m}: {detail}", by)


def verdicts(modes: dict, baselines: dict, margin: float = MARGIN) -> list[dict]:
    """The issue's figures on the compared runs, computed: the main comparison, the seed count, and per mode the proxy
    test total against the heuristic and against its own simulated total; for mode gan also the absolute figures and
    the real driving time. Each: claim, holds (True, False or None: cannot be decided), value, detail, text."""
    out = [_ahead(modes, margin)]
    counts = {m: a["n"] for m, a in modes.items()}
    out.append(_verdict("at least two finished seeds per mode", all(n >= 2 for n in counts.values()),
                        ", ".join(f"{m} {n}" for m, n in counts.items()), min(counts.values())))
    heur = _mean(baselines.get("heuristic"), "test")
    for mode, agg in modes.items():  # gan first (MODE_ORDER): the method, then its baselines
        p, s = _mean(agg, "test"), (agg["table_i_total"] or {}).get("mean")
        if p is not None:
            m = agg["proxy"]["test"]["max"]
            if heur is not None:
                out.append(_verdict(f"mode {mode}: test worlds on the proxy at or above the heuristic's (same runs)",
                                    p >= heur - EPS, f"by {p - heur:+.2f}/{m}: {p:.2f} vs {heur:.2f}", round(p - heur, 4)))
            if s is not None:
                out.append(_verdict(f"mode {mode}: test worlds on the proxy within {SIM_GAP:g} of its own simulated total",
                                    abs(s - p) <= SIM_GAP + EPS, f"proxy {p:.2f} vs simulated {s:.2f}: gap {s - p:+.2f}",
                                    round(s - p, 4)))
        if mode == "gan":
            out += _gan_figures(agg)
    return out


def _gan_figures(gan: dict) -> list[dict]:
    """The issue's absolute figures for the learned G: proxy scores and the real driving time."""
    out = []
    for label, ref, threshold in GAN_FIGURES:
        v = _mean(gan, ref)
        if v is not None:
            m = gan["proxy"][ref]["max"]
            out.append(_verdict("mode gan: " + label.format(t=threshold, m=m), v >= threshold - EPS,
                                f"{v:.2f}/{m}, mean over n={gan['proxy'][ref]['total']['n']}", v))
    d = gan["driving_min"]
    if d:
        out.append(_verdict(f"mode gan: real (proxy) driving at most {DRIVING_MIN:g} min per run",
                            d["max"] <= DRIVING_MIN + EPS, f"max {d['max']:.1f} min, n={d['n']}", d["max"]))
    return out
