"""Retraining a finished loop iteration's candidates with one imitation or DEM-transform change, the history held fixed.

A change to imitation measured over whole loops drowns in the seeds' spread: every iteration's plans follow the last
policy and every G learns from its runs, so two loops part ways from the first change on. This study holds the
history fixed instead (docs/sim2real_experiments.md, "Retraining the last iteration"): each candidate of iteration K
is trained again on its own aggregated dataset, with its own DEM transform (the G and the randomisation of its
iteration) and training seed, and only the change applied; then the recorded and the retrained candidates are scored
on the same worlds with the same noise seeds, by default the loop's own proxy scoring (the reality proxy's test
worlds, 5 runs, seeds 0-4), and compared candidate by candidate. Retraining with no change gives the recorded
weights back bit for bit (a fixed thread count; ``flipper_control.learning.imitation``), so the pairs differ by the
change alone.

``recorded_candidates`` reads what a run recorded (and refuses a run whose dataset changed since),
``changed_imitation`` merges and checks the change, ``changed_transform`` rebuilds a candidate's DEM transform under
changed ``transfer:`` fields (the loop's own ``TransferSteps`` over the run's folder), ``retrain_tasks`` and
``score_tasks`` are the work for an executor (``tasks.train_task``, ``tasks.eval_task``), ``score_key`` names a score
in a study's cache, and ``paired_summary`` is the comparison. ``flipper retrain`` wires them (``flipper_control.cli.learning``).

Half of a study's scoring is the recorded candidates, the same in every study of the same runs. A score's key holds
the checkpoint's path and its weights' sha256 with everything the scoring depends on, so a later study may take the
recorded candidates' scores from an earlier study's cache (``flipper retrain --reuse DIR``) and score only its own
retrained checkpoints: a key can match only where the same weights were scored the same way.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Recorded", "recorded_candidates", "changed_imitation", "changed_transform", "retrain_tasks", "score_tasks",
           "score_key", "paired_summary"]


@dataclass(frozen=True)
class Recorded:
    """One candidate a loop trained: where its checkpoint and training data are, and how it was trained."""

    run: Path
    iteration: int
    seed: int
    checkpoint: Path  # without suffix
    dataset: Path
    imitation: dict  # the ImitationConfig mapping it was trained with
    dem_transform: dict | None
    metadata: dict  # the sidecar's metadata, less the train report and the transform
    kept: bool  # the iteration's policy (the selection kept it)

    @property
    def label(self) -> str:
        return f"{self.run.name} iter {self.iteration} seed {self.seed}"


def _iterations(run: Path) -> list[int]:
    found = []
    for d in run.glob("iter_*"):
        suffix = d.name[len("iter_"):]
        if suffix.isdigit() and any((d / "candidates").glob("seed_*.json")):
            found.append(int(suffix))
    return sorted(found)


def _relocated(path: str, run: Path, what: str) -> str:
    """``path`` as recorded, or, where the run was moved since, the same file under ``run`` (the loop records its
    own files by paths under its folder: ``iter_3/gan``, ``real_0/dataset.safetensors``)."""
    recorded = Path(path)
    candidates = [recorded, recorded.with_suffix(".json"), recorded.with_suffix(".safetensors")]
    if any(p.is_file() for p in candidates):
        return path
    moved = run / recorded.parent.name / recorded.name
    if any(p.is_file() for p in (moved, moved.with_suffix(".json"), moved.with_suffix(".safetensors"))):
        return str(moved)
    raise ValueError(f"{run}: {what} {path} is gone, and {moved} is not there either")


def _transform_here(dem_transform: dict | None, run: Path) -> dict | None:
    if not dem_transform:
        return dem_transform
    out = copy.deepcopy(dem_transform)
    if out.get("path"):
        out["path"] = _relocated(out["path"], run, "the candidate's CycleGAN")
    masks = out.get("real_masks")
    if masks and masks.get("datasets"):
        masks["datasets"] = [_relocated(p, run, "a real dataset of its borrowed masks") for p in masks["datasets"]]
    return out


def recorded_candidates(run: str | Path, iteration: int | None = None) -> list[Recorded]:
    """The candidates of ``run``'s iteration ``iteration`` (None: its last iteration with candidates), in seed order.

    Raises ValueError naming the run when it has no such iteration, when a sidecar is unreadable or lacks what the
    loop records, or when the iteration's dataset is not the one the candidates were trained on (its sha256)."""
    from planning.dataset import DatasetError, TrajectoryDataset

    run = Path(run)
    if not run.is_dir():
        raise ValueError(f"{run}: not a folder (a finished `flipper loop --out` folder was expected)")
    found = _iterations(run)
    if not found:
        raise ValueError(f"{run}: no iteration with candidates (iter_K/candidates/seed_*.json): not a loop's folder, "
                         "or its first iteration has not trained yet")
    k = found[-1] if iteration is None else iteration
    if k not in found:
        raise ValueError(f"{run}: iteration {k} has no candidates; iterations with candidates: "
                         f"{', '.join(map(str, found))}")
    it = run / f"iter_{k}"
    dataset = it / "dataset.safetensors"
    try:
        data_hash = TrajectoryDataset.load(dataset).sha256()
    except (DatasetError, OSError) as e:
        raise ValueError(f"{run}: iteration {k}'s training data {dataset} cannot be read: {e}") from e
    kept_sha = _sidecar(it / "policy.json").get("weights_sha256") if (it / "policy.json").is_file() else None
    out = []
    for sidecar in sorted((it / "candidates").glob("seed_*.json")):
        side = _sidecar(sidecar)
        meta = side.get("metadata") or {}
        try:
            report_config = meta["train_report"]["config"]
            seed = int(meta["seed"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{sidecar}: not a loop candidate's sidecar (no metadata.seed or train_report.config)") from e
        if meta.get("data_sha256") != data_hash:
            raise ValueError(f"{sidecar}: trained on data with sha256 {meta.get('data_sha256')}, but {dataset} now has "
                             f"{data_hash}: the dataset changed since, so the candidate cannot be trained again")
        rest = {key: v for key, v in meta.items() if key not in ("train_report", "dem_transform", "seed")}
        out.append(Recorded(run, k, seed, sidecar.with_suffix(""), dataset, dict(report_config),
                            _transform_here(meta.get("dem_transform"), run), rest,
                            kept=kept_sha is not None and side.get("weights_sha256") == kept_sha))
    return sorted(out, key=lambda r: r.seed)


def _sidecar(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable checkpoint sidecar: {e}") from e


def _merged(base: dict, change: Mapping) -> dict:
    out = dict(base)
    for key, value in change.items():
        out[key] = _merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def changed_imitation(recorded: dict, change: Mapping[str, Any]) -> dict:
    """``recorded`` (an ImitationConfig mapping) with ``change`` merged in (nested: ``{policy: {hidden: [256]}}``
    changes one field of the policy), checked as an ``ImitationConfig``; a change that changes nothing is refused."""
    from flipper_control.learning.imitation_config import ImitationConfig

    if not isinstance(change, Mapping) or not change:
        raise ValueError(f"the change must be a non-empty mapping of ImitationConfig fields, got {change!r}")
    merged = ImitationConfig.from_dict(_merged(recorded, change)).to_dict()
    if merged == ImitationConfig.from_dict(recorded).to_dict():
        raise ValueError(f"the change {dict(change)} leaves the recorded imitation settings as they are")
    return merged


def changed_transform(candidate: Recorded, change: Mapping[str, Any]) -> dict | None:
    """The DEM transform ``candidate`` would have trained on had its run's ``transfer:`` section held ``change`` too
    (nested: ``{real_masks: {ahead_s: 2}}``), built by the loop's own ``TransferSteps.dem_transform`` over the run's
    folder (its generators and real collections). Raises ValueError naming the run when it has no ``transfer:``
    section, when the change is not a valid one, or when it leaves the candidate's transform as it was."""
    from flipper_control.learning.transfer import TransferSteps
    from flipper_control.learning.transfer_config import TransferConfig

    if not isinstance(change, Mapping) or not change:
        raise ValueError(f"the transfer change must be a non-empty mapping of TransferConfig fields, got {change!r}")
    try:
        config = json.loads((candidate.run / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{candidate.run}: no readable config.json, so its transfer settings are unknown: {e}") from e
    recorded = config.get("transfer")
    if not isinstance(recorded, dict):
        raise ValueError(f"{candidate.run}: its loop has no transfer: section (the simulation-only loop); a transfer "
                         "change applies to runs of Algorithm 1 only")
    try:
        transfer = TransferConfig.from_dict(_merged(recorded, change))
    except (TypeError, ValueError) as e:
        raise ValueError(f"the transfer change {dict(change)}: {e}") from e
    steps = TransferSteps(transfer, int(config.get("seed", 0)), candidate.run, ex=None, evaluate=None, step=None)
    built = _transform_here(steps.dem_transform(candidate.iteration, candidate.seed), candidate.run)
    if built == candidate.dem_transform:
        raise ValueError(f"the transfer change {dict(change)} leaves {candidate.label}'s DEM transform as it was")
    return built


def retrain_tasks(candidates: Sequence[Recorded], change: Mapping[str, Any] | None, out: Path,
                  transfer_change: Mapping[str, Any] | None = None) -> list[dict]:
    """``tasks.train_task`` work: each candidate trained again with ``change`` (ImitationConfig fields) and/or
    ``transfer_change`` (TransferConfig fields: its DEM transform rebuilt, ``changed_transform``), to
    ``out/<run>/iter_K/seed_S`` (a complete checkpoint there with the same seed, data and transform is kept: a resumed
    study trains nothing twice)."""
    if not change and not transfer_change:
        raise ValueError("nothing to change: give an imitation change, a transfer change, or both")
    names = _run_names(candidates)
    what = ({"change": dict(change)} if change else {}) | ({"transfer_change": dict(transfer_change)} if transfer_change else {})
    return [{"dataset": str(c.dataset), "imitation": changed_imitation(c.imitation, change) if change else c.imitation,
             "seed": c.seed, "out": str(out / names[c.run] / f"iter_{c.iteration}" / f"seed_{c.seed}"),
             "dem_transform": changed_transform(c, transfer_change) if transfer_change else c.dem_transform,
             "metadata": c.metadata | {"retrained_from": str(c.checkpoint)} | what} for c in candidates]


def _run_names(candidates: Sequence[Recorded]) -> dict[Path, str]:
    """A folder name per run: its own, or with its position where two runs share one (``a/b0`` and ``b/b0``)."""
    runs = list(dict.fromkeys(c.run for c in candidates))
    names = [r.name for r in runs]
    return {r: (n if names.count(n) == 1 else f"{i}_{n}") for i, (r, n) in enumerate(zip(runs, names, strict=True))}


def score_tasks(checkpoint: str, candidate: Recorded, worlds: Sequence, seeds: Sequence[int], reality: str,
                reality_config: dict | None) -> list[dict]:
    """``tasks.eval_task`` work for one checkpoint on ``worlds``: on the reality proxy it sees the proxy's DEMs; in
    simulation (``reality`` "sim") it sees them through the candidate's own G when it trained on one, as the loop's
    Table I scores it."""
    spec: dict = {"kind": "policy", "path": checkpoint}
    gan = (candidate.dem_transform or {}).get("path") if (candidate.dem_transform or {}).get("kind") == "gan" else None
    if reality == "sim" and gan:
        spec["transform"] = gan
    return [{"controller": spec, "world": w, "seeds": list(seeds), "reality": reality,
             "reality_config": reality_config if reality == "proxy" else None} for w in worlds]


def score_key(checkpoint: str, reality: str, reality_config: dict | None, seeds: Sequence[int],
              worlds: Sequence[str]) -> str:
    """The cache key of one checkpoint's scores: its path, its weights' sha256 (from its sidecar), the reality, the
    proxy's settings, the noise seeds and the world names. Raises ValueError when the sidecar is unreadable."""
    sha = _sidecar(Path(checkpoint).with_suffix(".json")).get("weights_sha256")
    return json.dumps([checkpoint, sha, reality, reality_config, list(seeds), list(worlds)], sort_keys=True)


def paired_summary(candidates: Sequence[Recorded], recorded: Sequence[dict[str, float]],
                   retrained: Sequence[dict[str, float]]) -> dict:
    """The comparison: per candidate the recorded and retrained totals over the worlds (each world the mean run value),
    and over candidates the means, the paired difference with its standard error and how many went up or down, and
    each world's means."""
    rows, diffs = [], []
    for c, a, b in zip(candidates, recorded, retrained, strict=True):
        ta, tb = sum(a.values()), sum(b.values())
        rows.append({"candidate": c.label, "run": str(c.run), "iteration": c.iteration, "seed": c.seed, "kept": c.kept,
                     "recorded": round(ta, 4), "retrained": round(tb, 4), "difference": round(tb - ta, 4) + 0.0})
        diffs.append(tb - ta)  # (+ 0.0 above: a sum's rounding left at -0.0 would print as "-0.00")
    n = len(diffs)
    mean = sum(diffs) / n if n else math.nan
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else math.nan
    worlds = list(recorded[0]) if recorded else []
    return {"candidates": rows, "n": n,
            "recorded_mean": round(sum(r["recorded"] for r in rows) / n, 4) if n else None,
            "retrained_mean": round(sum(r["retrained"] for r in rows) / n, 4) if n else None,
            "difference_mean": round(mean, 4) if n else None, "difference_se": round(se, 4) if n > 1 else None,
            "ahead": sum(d > 1e-9 for d in diffs), "behind": sum(d < -1e-9 for d in diffs),
            "worlds": {w: {"recorded": round(sum(a[w] for a in recorded) / n, 4),
                           "retrained": round(sum(b[w] for b in retrained) / n, 4)} for w in worlds}}
