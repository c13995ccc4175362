"""Whether a trained generator is fit to use, judged by its held-out transfer metrics (``transfer_report``).

A CycleGAN can fail without a non-finite loss (``GanDivergedError`` catches those): the generator may collapse
into hiding most of the DEM, or drift so that its DEMs lie farther from the real ones than the simulated DEMs it
was given. Either would teach the policy on worse inputs than no transform at all, so the loop treats such a
generator as diverged and keeps the last good one; ``flipper train-gan`` warns.

The bounds sit far outside what healthy updates show, so that they catch failures, not a weak update: in 66 GAN
updates of demo-scale loops (the runs of "G moves the terrain" in docs/sim2real_experiments.md: lambda_p 0 to 3,
300 and 1,200 steps per update) G hid at most 15 % of the held-out cells against the real sets' 8-19 %, and every
update closed at least 15 % of the identity's distance on one metric or more (single metrics may go the wrong way:
with ``lambda_p: 0`` the heights ended 1.5 times the identity's distance from real).
"""

from __future__ import annotations

import numpy as np

__all__ = ["COLLAPSE_FACTOR", "COLLAPSE_MARGIN", "DRIFT_SHARE", "generator_failure", "judged_report"]

COLLAPSE_FACTOR = 2.0  # G may hide at most this many times the real DEMs' share of cells ...
COLLAPSE_MARGIN = 0.2  # ... plus this share, before it counts as collapsed
DRIFT_SHARE = -0.25  # closed shares all below this: G at least 25 % farther from real than the identity everywhere


def generator_failure(nan_share: float, real_nan_share: float, closed_share: dict[str, float | None] | None,
                      name: str = "G") -> str | None:
    """Why a generator must not be used, or None when it may. ``nan_share``: the share of held-out cells it hides
    (``real_nan_share``: the real DEMs'); ``closed_share``: its ``transfer_report`` entry's closed shares, None where
    no metric could be computed (a generator that hides every cell). Collapsed: it hides more than
    ``COLLAPSE_FACTOR`` x the real share + ``COLLAPSE_MARGIN``; drifted: on every metric with a baseline it closed
    less than ``DRIFT_SHARE`` of the identity's distance."""
    bound = COLLAPSE_FACTOR * real_nan_share + COLLAPSE_MARGIN
    if nan_share > bound:
        return (f"collapsed: {name} hides {100 * nan_share:.0f} % of the held-out cells, the real DEMs "
                f"{100 * real_nan_share:.0f} % (bound {100 * bound:.0f} %)")
    closed = {m: v for m, v in (closed_share or {}).items() if v is not None}
    if closed and all(v < DRIFT_SHARE for v in closed.values()):
        worst = ", ".join(f"{m} {v:.2f}" for m, v in closed.items())
        return (f"drifted away from the real DEMs: {name} is farther from them than the untransformed DEMs on "
                f"every transfer metric (closed share {worst}; bound {DRIFT_SHARE})")
    return None


def judged_report(real_dems: np.ndarray, candidates: dict[str, np.ndarray], seed: int = 0,
                  name: str = "G", real_traj: np.ndarray | None = None) -> tuple[dict, str | None]:
    """The held-out ``transfer_report`` of ``candidates`` (DEMs with NaN; ``identity`` the baseline) against
    ``real_dems``, and ``generator_failure``'s verdict on the candidate ``name``. A candidate that hides every cell
    has no metric: it is left out of the report and judged by its NaN share alone (collapsed). ``real_traj`` (the
    trajectory of each real DEM) adds the classifier's content floor to the report."""
    from perception.transfer_metrics import transfer_report

    g = candidates[name]
    measured = {k: (v, None) for k, v in candidates.items() if k != name or np.isfinite(v).any()}
    report = transfer_report((real_dems, None), measured, seed=seed, real_traj=real_traj)
    failure = generator_failure(float(np.isnan(g).mean()), float(np.isnan(real_dems).mean()),
                                report["candidates"].get(name, {}).get("closed_share"), name)
    return report, failure
