"""Scoring of runs (seed 000 section VIII): good 1.0, unclear 0.5, fail 0.0, with the reasons.

good: the required length was traversed within the time limit with nothing unsafe; unclear: traversed,
but with minor problems (a warn-level safety event, or so slow that an operator would have had to
slow down); fail: not traversed, or a fail-level safety event. A world's score is the mean over its
runs. Worlds with sections (the proxy staircase) also get one level per section, judged from the
events inside that section's x interval.
"""

from __future__ import annotations

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
            warns.append(f"slow: {time:.1f} s for {world.length:g} m, nominal {nominal:.1f} s")
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
