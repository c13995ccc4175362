"""Scoring of runs (seed 000 section VIII): good 1.0, unclear 0.5, fail 0.0, with the reasons.

good: the required length was traversed within the time limit with nothing unsafe; unclear: traversed,
but with minor problems (a warn-level safety event, or so slow that an operator would have had to
slow down); fail: not traversed, or a fail-level safety event. A world's score is the mean over its
runs. Worlds with sections (the proxy staircase) also get one level per section, judged from the
events inside that section's x interval.

``loss_summary`` and ``loss_text`` say where a world's points went (slow by how much, which limit, stuck where),
from the runs' reasons: the first thing to look at when a score is below 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sim.safety import FAIL, WARN, SafetyEvent, SafetyLimits
from sim.simulator import SUCCESS
from sim.world import World

LEVEL_VALUE = {"good": 1.0, "unclear": 0.5, "fail": 0.0}


@dataclass
class RunResult:
    """One run of a controller on a world."""

    world: str
    seed: int
    level: str
    distance: float
    time: float
    reasons: list[str] = field(default_factory=list)
    sections: dict[str, dict] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return LEVEL_VALUE[self.level]

    def to_dict(self) -> dict:
        out = {"seed": self.seed, "level": self.level, "value": self.value, "distance": round(self.distance, 4),
               "time": round(self.time, 4), "reasons": list(self.reasons)}
        if self.sections:
            out["sections"] = self.sections
        return out


def judge_run(world: World, status: str, events: list[SafetyEvent], time: float, distance: float,
              limits: SafetyLimits, seed: int = 0) -> RunResult:
    """Level and reasons of a finished run."""
    reasons = [e.message for e in events if e.severity == FAIL]
    warns = [e.message for e in events if e.severity == WARN]
    nominal = world.length / world.speed
    if status == SUCCESS and not reasons:
        if time > limits.slow_factor * nominal:
            warns.append(f"slow: {time:.1f} s for {world.length:g} m, limit {limits.slow_factor * nominal:.2f} s "
                         f"(nominal {nominal:.1f} s)")
        level = "unclear" if warns else "good"
        reasons = warns
    else:
        if not reasons:
            reasons = [f"did not finish: {distance:.2f} m of {world.length:g} m"]
        level = "fail"
        reasons = reasons + warns
    result = RunResult(world.name, seed, level, distance, time, reasons)
    if world.sections:
        result.sections = section_levels(world, events, distance, status == SUCCESS)
    return result


def section_levels(world: World, events: list[SafetyEvent], distance: float, finished: bool) -> dict[str, dict]:
    """One level per section: fail if the run failed inside it or never got through it, unclear on a
    warning inside it, else good. Section bounds are distances from the start, like event x."""
    out = {}
    for sec in world.sections:
        inside = [e for e in events if sec.start <= e.x < sec.end]
        fails = [e.message for e in inside if e.severity == FAIL]
        warns = [e.message for e in inside if e.severity == WARN]
        if fails:
            level, reasons = "fail", fails
        elif not finished and distance < sec.end:
            level = "fail"
            reasons = ["not reached" if distance < sec.start else f"run ended inside at {distance:.2f} m"]
        elif warns:
            level, reasons = "unclear", warns
        else:
            level, reasons = "good", []
        out[sec.name] = {"level": level, "value": LEVEL_VALUE[level], "reasons": reasons}
    return out


def world_score(runs: list[RunResult]) -> float:
    """Mean level value over runs (0 for no runs)."""
    return sum(r.value for r in runs) / len(runs) if runs else 0.0


def section_scores(runs: list[RunResult]) -> dict[str, float]:
    """Mean value per section over runs."""
    names = [n for r in runs[:1] for n in r.sections]
    return {n: sum(r.sections[n]["value"] for r in runs) / len(runs) for n in names}


# the messages of sim.safety, sim.mujoco_sim and judge_run above, reduced to what kind of loss they are; a run's
# reasons are all that its JSON keeps, so the kinds are read back from them (older results included)
_LIMIT = re.compile(r"^(pitch|roll) -?\d+ deg beyond (\d+)")
_ACCEL = re.compile(r"^acceleration \d+ m/s\^2 beyond (\d+)")
_PREFIXES = ("slow", "stuck", "did not finish", "left the course", "time limit", "physics blow-up")
_SLOW_LIMIT = re.compile(r"^slow: .* limit (\d+(?:\.\d+)?) s")


def reason_kind(message: str) -> str:
    """The kind of loss a run's reason names: ``pitch past 40 deg``, ``acceleration past 20 m/s^2``, ``slow``,
    ``stuck``, ``did not finish``, ``left the course``, ``BODY touched the terrain``, ...; an unknown message
    gives its text up to the first colon."""
    if m := _LIMIT.match(message):
        return f"{m.group(1)} past {m.group(2)} deg"
    if m := _ACCEL.match(message):
        return f"acceleration past {m.group(1)} m/s^2"
    for prefix in _PREFIXES:
        if message.startswith(prefix):
            return prefix
    return message.split(":", 1)[0].strip()


def loss_summary(runs: list[dict]) -> dict[str, dict]:
    """Kind of loss -> ``{"runs": n, "failed": f, "time": [lo, hi], "distance": [lo, hi]}`` over the runs
    (``RunResult.to_dict`` form) that did not score 1: how many runs name it (once per run), how many of those failed,
    and the span of those runs' end times and distances; ``slow`` also gets the time ``limit`` (s) its message names
    (results written before the message named it have none). Kinds in the order they first appear."""
    out: dict[str, dict] = {}
    for run in runs:
        if run["value"] >= 1.0:
            continue
        for kind in dict.fromkeys(reason_kind(r) for r in run["reasons"]):
            entry = out.setdefault(kind, {"runs": 0, "failed": 0, "time": [run["time"], run["time"]],
                                          "distance": [run["distance"], run["distance"]]})
            entry["runs"] += 1
            entry["failed"] += run["value"] == 0.0
            for key in ("time", "distance"):
                entry[key] = [min(entry[key][0], run[key]), max(entry[key][1], run[key])]
        for m in filter(None, map(_SLOW_LIMIT.match, run["reasons"])):
            out["slow"]["limit"] = float(m.group(1))
    return out


def _span(lo: float, hi: float, unit: str, digits: int) -> str:
    a, b = f"{lo:.{digits}f}", f"{hi:.{digits}f}"
    return f"{a} {unit}" if a == b else f"{a}-{b} {unit}"


def loss_text(world: str, score: float, summary: dict[str, dict]) -> str:
    """One line: ``stairs_up 0.50: slow 4 (16.30-17.02 s, limit 16.03 s), stuck 1 (at 1.40 m)``; slow runs give their end
    times (and the limit, where recorded), a kind whose every run failed gives where those runs ended."""
    parts = []
    for kind, e in summary.items():
        if kind == "slow":
            # to the hundredth: 16.04 s past a 16.03 s limit must not read as 16.0
            where = f" ({_span(*e['time'], 's', 2)}" + (f", limit {e['limit']:.2f} s)" if "limit" in e else ")")
        elif e["failed"] == e["runs"]:
            where = f" (at {_span(*e['distance'], 'm', 2)})"
        else:
            where = ""
        parts.append(f"{kind} {e['runs']}{where}")
    return f"{world} {score:.2f}: " + (", ".join(parts) if parts else "no reason recorded")


def eval_losses(ev: dict) -> dict[str, dict[str, dict]]:
    """World -> ``loss_summary`` for every world of an evaluation (``{"scores": {world: score}, "runs": {world: [run
    dicts]}}``, the learning loop's form) that scored below 1."""
    return {w: loss_summary(ev["runs"][w]) for w, score in ev["scores"].items() if score < 1.0}
