"""Evaluate controllers over worlds: runs, per-world scores, section scores and the Table I layout."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sim.mujoco_sim import MujocoSimulator
from sim.rollout import run_episode
from sim.scoring import RunResult, loss_summary, loss_text, section_scores, world_score
from sim.world import World


@dataclass
class WorldEvaluation:
    world: str
    runs: list[RunResult] = field(default_factory=list)

    @property
    def score(self) -> float:
        return world_score(self.runs)

    def losses(self) -> dict[str, dict]:
        """Where this world's points went (``sim.scoring.loss_summary``); empty when every run scored 1."""
        return loss_summary([r.to_dict() for r in self.runs])

    def to_dict(self) -> dict:
        runs = [r.to_dict() for r in self.runs]
        out = {"world": self.world, "score": round(self.score, 4), "runs": runs}
        sections = section_scores(self.runs)
        if sections:
            out["sections"] = {k: round(v, 4) for k, v in sections.items()}
        losses = loss_summary(runs)
        if losses:
            out["losses"] = losses
        return out


def evaluate(controller_factory, worlds: list[World], runs: int, seed: int, sim: MujocoSimulator | None = None,
             control_dt: float = 0.1, progress: Callable[[int, int], None] | None = None) -> list[WorldEvaluation]:
    """Run a fresh controller ``runs`` times on each world; run r of every world uses noise seed seed + r.
    ``progress(worlds done, worlds)`` is called after each world."""
    sim = sim or MujocoSimulator()
    results = []
    for i, world in enumerate(worlds):
        ev = WorldEvaluation(world.name)
        for r in range(runs):
            ev.runs.append(run_episode(sim, world, controller_factory(), seed=seed + r, control_dt=control_dt))
        results.append(ev)
        if progress is not None:
            progress(i + 1, len(worlds))
    return results


def score_table(columns: dict[str, list[WorldEvaluation]]) -> str:
    """A Markdown table: one row per controller, one column per world, and the total (Table I layout)."""
    names = [ev.world for ev in next(iter(columns.values()))]
    head = "| controller | " + " | ".join(names) + " | sum |"
    sep = "|---|" + "---:|" * (len(names) + 1)
    rows = [head, sep]
    for label, evs in columns.items():
        total = sum(ev.score for ev in evs)
        rows.append(f"| {label} | " + " | ".join(f"{ev.score:.2f}" for ev in evs) + f" | {total:.2f}/{len(evs)} |")
    return "\n".join(rows)


def loss_lines(columns: dict[str, list[WorldEvaluation]]) -> list[str]:
    """Markdown bullets, per controller, of every world it scored below 1 and why (``sim.scoring.loss_text``);
    empty when every run of every controller scored 1."""
    lines = []
    for label, evs in columns.items():
        lost = [loss_text(ev.world, ev.score, ev.losses()) for ev in evs if ev.score < 1.0]
        if lost:
            lines.append(f"- {label}: " + "; ".join(lost))
    return lines


def section_table(columns: dict[str, list[WorldEvaluation]]) -> str:
    """Table II layout for worlds with sections: each section is its own column."""
    header: list[str] = []
    rows = []
    for label, evs in columns.items():
        cells = []
        for ev in evs:
            sections = section_scores(ev.runs)
            if sections:
                cells += [(k, v) for k, v in sections.items()]
            else:
                cells.append((ev.world, ev.score))
        header = [k for k, _ in cells]
        total = sum(v for _, v in cells)
        rows.append(f"| {label} | " + " | ".join(f"{v:.2f}" for _, v in cells) + f" | {total:.2f}/{len(cells)} |")
    return "\n".join(["| controller | " + " | ".join(header) + " | sum |", "|---|" + "---:|" * (len(header) + 1)] + rows)
