"""`flipper bench gan --paired-worlds N`: the CycleGAN's generator judged on DEMs with the *same content*.

The loop's transfer metrics compare held-out unpaired sets: simulated states of a few trajectories against real
states of a few others. Those sets differ in what they show (other worlds, other poses) as well as in how they
were sensed, and the two-sample classifier sees both: two halves of the *real* set, split by trajectory, are
themselves told apart well above chance. That floor hides how far G is from the sensor it imitates.

The reality proxy gives pairs: at every control step of a heuristic run, the exact DEM of the simulator and the
proxy's DEM at the same true pose. Here every candidate is built from the exact DEMs and compared with the proxy's
DEMs of the same steps, so only the sensing differs:

- ``identity``: the exact DEMs (doing nothing), the baseline of the closed shares;
- ``G``: the checkpoint's ``SimToReal`` on the exact DEMs and their true scalars;
- ``G_shadows``: G's output with the terrain's shadow from the lidar's nominal mount also hidden
  (``geometric_occlusion`` of the exact DEM, as ``transfer.gan_shadows`` trains on);
- ``randomized``: the default domain randomisation (``perception.domain_randomization``);
- ``sensor_oracle``: the exact heights with the proxy's own NaN cells, shifted by the pairs' mean height
  difference and given Gaussian noise of the pairs' residual spread. It uses the pairs, so it is not a method:
  it shows what the metrics reward (a candidate that gets bias, noise and NaN placement right), and that the
  classifier target can be met at all.

Besides, ``real_halves`` is the classifier's accuracy between the two trajectory halves of the proxy DEMs (the
unpaired content floor), ``paired_nan`` G's per-pose NaN agreement (``paired_nan_shadows``: G_shadows'), and
``height_change`` how far the proxy itself, G and the randomisation move the heights they keep from the exact DEM
(``perception.paired_metrics``): the proxy's own change is the sensor's; a G that moves heights much further
changes the terrain. Pairs serve evaluation only; the CycleGAN never trains on them (seed 000 assumes unpaired data).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from flipper_control.learning.paired_eval import collect_pairs

__all__ = ["paired_transfer"]

WORLD_SET = "training"  # the generated family the loop's real and simulated trajectories drive on


def _sensor_oracle(exact: np.ndarray, proxy: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Exact heights with the proxy's NaN cells, plus the pairs' mean difference and Gaussian residual noise."""
    diff = proxy - exact
    bias = float(np.nanmean(diff))
    spread = float(np.nanstd(diff))
    oracle = np.where(np.isnan(proxy), np.nan, exact + bias + rng.normal(0.0, spread, exact.shape))
    return oracle.astype(np.float32), {"bias_m": bias, "noise_m": spread}


def paired_transfer(checkpoint: str, worlds: int = 6, world_seed: int = 424_242, seed: int = 0, reality_config=None,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Transfer metrics of identity, G, domain randomisation and the sensor oracle against the proxy's DEMs of the
    same poses (see the module docstring). ``world_seed`` picks worlds outside the loop's (its seeds are below
    100,000 x the loop seed); ``seed`` the proxy's noise, the randomisation and the metrics."""
    from perception.domain_randomization import geometric_occlusion, randomize
    from perception.paired_metrics import height_change
    from perception.sim_to_real import SimToReal
    from perception.transfer_metrics import transfer_report

    transform = SimToReal.from_checkpoint(checkpoint)  # refuse a bad checkpoint before any driving
    pairs = collect_pairs(worlds, world_seed, seed, reality_config, progress, world_set=WORLD_SET)
    exact, proxy, scalars, traj = pairs["exact"], pairs["proxy"], pairs["scalars"], pairs["traj"]
    rng = np.random.default_rng(seed)
    from perception.map_clock import trajectory_ages

    g = transform.transform(exact, scalars, map_age=trajectory_ages(traj))  # each run's steps in order from its start
    g_shadows = np.where(geometric_occlusion(exact, scalars[:, 0]), np.float32(np.nan), g)
    oracle, oracle_params = _sensor_oracle(exact, proxy, rng)
    randomized = randomize(exact, rng, pitch=scalars[:, 0])
    candidates = {"identity": (exact, None), "G": (g, None), "G_shadows": (g_shadows, None), "randomized": (randomized, None),
                  "sensor_oracle": (oracle, None)}
    # real_traj: whole runs on each side of the content floor's halves, which differ in content only
    report = transfer_report((proxy, None), candidates, seed=seed, real_traj=traj)
    halves = None if report["content_floor"] is None else report["content_floor"]["accuracy"]
    return {"checkpoint": checkpoint, "worlds": worlds, "world_seed": world_seed, "seed": seed, "pairs": len(exact),
            "metrics": report, "sensor_oracle": oracle_params, "real_halves_accuracy": halves,
            "paired_nan": _agreement(g, proxy), "paired_nan_shadows": _agreement(g_shadows, proxy),
            "height_change": {name: height_change(dems, exact) for name, dems in
                              (("real", proxy), ("G", g), ("randomized", randomized))}}


def format_paired(result: dict[str, Any]) -> str:
    """The paired table: per candidate its classifier accuracy and closed share per metric."""
    from perception.transfer_metrics import METRICS

    m = result["metrics"]
    lines = [f"same-pose pairs on the reality proxy: {result['pairs']} DEMs from {result['worlds']} heuristic runs "
             f"(world seed {result['world_seed']})",
             "| candidate | classifier accuracy | " + " | ".join(f"closed {x}" for x in METRICS) + " |",
             "|---|---:|" + "---:|" * len(METRICS)]
    for name, c in m["candidates"].items():
        shares = [("-" if c["closed_share"][x] is None else f"{c['closed_share'][x]:.2f}") for x in METRICS]
        lines.append(f"| {name} | {c['classifier']['accuracy']:.2f} | " + " | ".join(shares) + " |")
    o = result["sensor_oracle"]
    lines.append(f"sensor oracle: bias {o['bias_m'] * 100:.2f} cm, noise {o['noise_m'] * 100:.2f} cm, the proxy's own NaN "
                 f"cells; classifier between two halves of the real runs (content floor of unpaired tests): "
                 + ("-" if result["real_halves_accuracy"] is None else f"{result['real_halves_accuracy']:.2f}"))
    for name, p in (("G", result["paired_nan"]), ("G_shadows", result["paired_nan_shadows"])):
        f1 = "-" if p["f1"] is None else f"{p['f1']:.2f}"
        lines.append(f"{name}'s NaN placement at the same pose: agreement {p['agreement']:.3f}, F1 {f1}, "
                     f"NaN share {p['predicted_nan_share']:.3f} (real {p['real_nan_share']:.3f})")
    moved = ", ".join(f"{name} {_moved(c)}" for name, c in result["height_change"].items())
    lines.append(f"heights kept, moved from the exact DEM of the same pose (mean |change|, share past 5 cm): {moved}")
    return "\n".join(lines)


def _agreement(dems: np.ndarray, proxy: np.ndarray) -> dict[str, Any]:
    from perception.paired_metrics import paired_nan_agreement

    return {k: v for k, v in paired_nan_agreement(dems, proxy).items() if k != "agreement_map"}


def _moved(change: dict[str, Any]) -> str:
    if change["mean_abs_m"] is None:
        return "- (no cell kept)"
    return f"{change['mean_abs_m'] * 100:.1f} cm, {change['share_over'] * 100:.0f} %"
