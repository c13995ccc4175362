"""The coarse-to-fine learning loop (seed 000, Algorithm 1, lines 3-5): plan -> imitate -> evaluate.

Iteration 1 plans unguided with the coarse action set (3 actions, 1000 ms), or with ``first_guide`` guided by a
reference controller with the guided planner; every later iteration plans guided by the previous iteration's policy
with the fine set (7 actions, 200 ms). After planning, the
trajectories of all iterations so far are aggregated, ``candidates`` policies are trained from different
seeds, the best by simulated score on the selection worlds is kept (seed 000 trains 10, keeps the best two and
drives both on the robot; docs/sim2real_experiments.md, "Choosing between the two best", says why the loop does not), and the kept
policy is evaluated on the evaluation worlds (Table I analogue). The configuration is ``loop_config.LoopConfig``.

Every step writes its output atomically under ``out/iter_K/`` and is skipped when that output exists, so
a killed loop run again with the same ``--out`` continues from the last finished step; within the planning and
training steps, every finished trajectory and candidate is kept too (``iter_K/plans/``, ``candidates/``). ``out/config.json``
records the configuration; resuming with a different one is refused (the outputs would not match), except for
where tasks run, ``transfer.proxy_eval_every``, ``transfer.paired_worlds`` and ``transfer.deploy_*``, which change no
trained result (``config_fields``).
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flipper_control.controllers import rule_record
from flipper_control.learning.config_fields import NO_RESULT_FIELDS, without_fields
from flipper_control.learning.executors import make_executor
from flipper_control.learning.loop_config import (
    DEMO_CONFIG,
    LoopConfig,
    demo_config,
    load_loop_config,
    selection_seed,
    training_world_seed,
)
from flipper_control.learning.report import planner_kind, score_columns
from flipper_control.learning.tasks import eval_task, plan_task, train_task
from flipper_control.learning.transfer import TransferSteps, collection_entry
from flipper_control.learning.worker_process import merge_memory_reports
from flipper_control.progress import Step
from planning.dataset import TrajectoryDataset
from sim.io_utils import write_bytes_atomic, write_json_atomic
from sim.scoring import eval_losses, section_scores, world_score
from sim.world_sets import generated_worlds, resolve_worlds

# the config side lives in loop_config; these names stay importable from here
__all__ = ["LoopConfig", "run_loop", "load_loop_config", "demo_config", "DEMO_CONFIG", "selection_seed",
           "training_world_seed"]


# ------------------------------------------------------------------------------------------ helpers
LOG_PREFIX = "[loop] "


def _log(msg: str) -> None:
    print(f"{LOG_PREFIX}{msg}", file=sys.stderr, flush=True)


def _step(label: str, total: int, unit: str, bar: bool | None = None) -> Step:
    """One step of the loop: a bar on a terminal (``bar=False``: none, for a step running beside others), then its
    summary line (``flipper_control.progress``)."""
    return Step(label, total, unit, prefix=LOG_PREFIX, bar=bar)


def _controller_spec(name: str) -> dict:
    kind, _, posture = name.partition(":")
    return {"kind": kind, "posture": posture or None}


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None  # missing or half-written by an older version: the step runs again


class _Loop:
    def __init__(self, config: LoopConfig, out: Path):
        self.c, self.out = config, out
        self.ex = make_executor(config.executor, config.workers, config.ray_address)
        self.transfer = (TransferSteps(config.transfer, config.seed, out, self.ex, self.evaluate, _step)
                         if config.transfer is not None else None)

    def _gan(self, k: int) -> str | None:
        """The CycleGAN through which iteration ``k``'s policy learns and is scored: G_{k-1} (None: the identity)."""
        return self.transfer.gan_before(k) if self.transfer is not None else None

    def _policy_spec(self, path: str, k: int) -> dict:
        return {"kind": "policy", "path": path, "transform": self._gan(k)}

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, spec: dict, worlds, runs: int, seed: int, label: str, reality: str = "sim",
                 reality_config: dict | None = None) -> dict:
        tasks = [{"controller": spec, "world": w, "seeds": [seed + r for r in range(runs)], "reality": reality,
                  "reality_config": reality_config} for w in worlds]
        with _step(label, len(tasks), "world") as step:
            results = self.ex.map(eval_task, tasks, progress=step)
            per_world = {w.name: round(world_score(r["runs"]), 4) for w, r in zip(worlds, results, strict=True)}
            sections = {w.name: {k: round(v, 4) for k, v in section_scores(r["runs"]).items()}
                        for w, r in zip(worlds, results, strict=True) if w.sections}
            columns = score_columns({"scores": per_world, "sections": sections}).values()  # as the report's table
            step.finish(f"{sum(columns):.2f}/{len(columns)}")
        return {"scores": per_world, "total": round(sum(per_world.values()), 4), "max": len(worlds), "sections": sections,
                "runs": {w.name: [x.to_dict() for x in r["runs"]] for w, r in zip(worlds, results, strict=True)},
                "cpu_s": round(sum(r["cpu_s"] for r in results), 3)}

    def baselines(self) -> dict:
        path = self.out / "baselines.json"
        done = _read_json(path)
        if done is not None:
            return done
        worlds = resolve_worlds(list(self.c.eval_worlds))
        result = {b: self.evaluate(_controller_spec(b), worlds, self.c.eval_runs, self.c.eval_seed, f"baseline {b}")
                  for b in self.c.baselines}
        write_json_atomic(path, result)
        return result

    # ---------------------------------------------------------------- one iteration
    def plan(self, k: int, guide: str | dict | None) -> dict:
        d = self.out / f"iter_{k}"
        summary = _read_json(d / "plans.json")
        if summary is not None and (d / "plans.safetensors").is_file():
            _log(f"iter {k}: planned earlier: {summary['successes']}/{summary['trajectories']} found "
                 f"(median {summary['cpu_s_median']} CPU s per trajectory)")
            return summary
        c, t0 = self.c, time.perf_counter()
        planner = c.guided if guide else c.coarse  # unguided: iteration 1 without first_guide
        worlds = generated_worlds(c.training_set, c.training_worlds, seed=training_world_seed(c, k))
        # Each trajectory is kept in plans/ as soon as it is planned, so an interrupted run loses at most the
        # trajectories in flight (a full-scale iteration plans for about half an hour).
        pieces = d / "plans"
        tasks = [{"world": w, "seed": (seed := c.seed * 100_000 + k * 1000 + i * c.plans_per_world + j),
                  "planner": planner.to_dict(), "guide": guide,
                  "guide_transform": self._gan(k - 1) if isinstance(guide, str) else None,
                  "out": str(pieces / f"seed_{seed}.safetensors")}
                 for i, w in enumerate(worlds) for j in range(c.plans_per_world)]
        by = guide["kind"] if isinstance(guide, dict) else None  # a reference controller guides (first_guide)
        label = f"iter {k}: planning {planner_kind(bool(guide), planner.action_set, by)}"
        with _step(label, len(tasks), "trajectory") as step:
            results = self.ex.map(plan_task, tasks, progress=step)
            trajs = [r["trajectory"] for r in results]
            earlier = sum(bool(r.get("resumed")) for r in results)
            from_policy = sum("policy_start_s" in t.meta for t in trajs)  # rooted where the guide drove
            step.finish(f"{sum(t.success for t in trajs)}/{len(trajs)} found, median "
                        f"{statistics.median(t.meta['cpu_s'] for t in trajs):.2f} CPU s per trajectory"
                        + (f", {from_policy} from the policy's own states" if planner.policy_start else "")
                        + (f" ({earlier} planned earlier)" if earlier else ""))
        TrajectoryDataset(trajs).save(d / "plans.safetensors")
        cpus = [t.meta["cpu_s"] for t in trajs]
        ok = [t for t in trajs if t.success]
        summary = {
            "iteration": k, "guided": guide is not None, "planner": planner.to_dict(),
            "trajectories": len(trajs), "successes": len(ok), "success_rate": round(len(ok) / len(trajs), 4),
            "cpu_s_total": round(sum(cpus), 3), "cpu_s_median": round(statistics.median(cpus), 3),
            "cpu_s_median_success": round(statistics.median([t.meta["cpu_s"] for t in ok]), 3) if ok else None,
            "expansions_median": statistics.median(t.meta["expansions"] for t in trajs),
            "samples": sum(len(t) for t in ok),
            "failures": [{"world": t.meta["world"], "reason": t.reason} for t in trajs if not t.success],
            "wall_s": round(time.perf_counter() - t0, 2),  # this session's: a resumed step counts only its own
            "planned_earlier": earlier,
        }
        if planner.policy_start:
            summary["policy_starts"] = from_policy
        if by is not None:
            summary["guide"] = by
        write_json_atomic(d / "plans.json", summary)
        shutil.rmtree(pieces, ignore_errors=True)  # plans.safetensors holds them all now
        return summary

    def aggregate(self, k: int) -> tuple[Path, str, int, int]:
        d = self.out / f"iter_{k}"
        path = d / "dataset.safetensors"
        if path.is_file():
            data = TrajectoryDataset.load(path)
        else:
            data = TrajectoryDataset()
            for j in range(1, k + 1):
                data.extend(TrajectoryDataset.load(self.out / f"iter_{j}" / "plans.safetensors"))
            data.save(path)
        return path, data.sha256(), len(data.successful), data.n_samples

    def train_and_select(self, k: int, dataset: Path, data_hash: str) -> dict:
        d = self.out / f"iter_{k}"
        done = _read_json(d / "selection.json")
        if done is not None and (d / "policy.json").is_file():
            return done
        c, t0 = self.c, time.perf_counter()
        seeds = [c.seed * 1000 + k * 100 + i for i in range(c.candidates)]
        tasks = [{"dataset": str(dataset), "imitation": c.imitation.to_dict(), "seed": s,
                  "out": str(d / "candidates" / f"seed_{s}"),
                  "dem_transform": self.transfer.dem_transform(k, s) if self.transfer is not None else None,
                  "metadata": {"data_sha256": data_hash, "iteration": k, "loop_seed": c.seed}} for s in seeds]
        with _step(f"iter {k}: training {len(seeds)} candidates", len(tasks), "candidate") as step:
            trained = self.ex.map(train_task, tasks, progress=step)
            resumed = sum(bool(t.get("resumed")) for t in trained)
            step.finish(f"best test mse {min(t['report']['test_mse'] for t in trained):.5f}"
                        + (f" ({resumed} trained earlier)" if resumed else ""))
        worlds = resolve_worlds(list(c.selection_worlds))
        # Fresh noise seeds every iteration, shared by all its candidates and the carried policy. With the same
        # seeds each time (the simulator is deterministic per seed), a carried policy would keep the score that
        # made it win once (the best of several noisy draws) and no new candidate could fairly beat it.
        sel_seed = selection_seed(c, k)
        cands, selection_cpu = [], 0.0
        for s, t in ([self._ensemble(d, seeds, trained)] if c.ensemble else zip(seeds, trained, strict=True)):
            ev = self.evaluate(self._policy_spec(t["path"], k), worlds, c.selection_runs, sel_seed,
                               f"iter {k}: selecting, " + (f"ensemble of {len(seeds)}" if c.ensemble else f"candidate {s}"))
            selection_cpu += ev["cpu_s"]
            cands.append({"seed": s, "path": t["path"], "score": ev["total"], "test_mse": t["report"]["test_mse"],
                          "baseline_test_mse": t["report"]["baseline_test_mse"], "train_s": t["report"]["seconds"],
                          "samples_train": t["report"]["samples_train"], **({"members": seeds} if c.ensemble else {})})
        if c.carry_best and k > 1:
            prev = json.loads((self.out / f"iter_{k - 1}" / "selection.json").read_text())
            kept = prev["candidates"][0]
            ev = self.evaluate(self._policy_spec(str(self.out / f"iter_{k - 1}" / "policy"), k), worlds, c.selection_runs,
                               sel_seed, f"iter {k}: selecting, carried policy of iteration {k - 1}")
            selection_cpu += ev["cpu_s"]
            cands.append({**kept, "path": str(self.out / f"iter_{k - 1}" / "policy"), "score": ev["total"],
                          "carried_from": kept.get("carried_from", k - 1)})
        # ties: a new policy beats a carried one, then the lower imitation test error, then the lower seed
        cands.sort(key=lambda x: (-x["score"], "carried_from" in x, x["test_mse"], x["seed"]))
        best = cands[0]
        # the kept policy is copied (not linked) so that the iteration folder is self-contained
        for suffix in (".safetensors", ".json"):
            src, dst = Path(best["path"] + suffix), d / f"policy{suffix}"
            write_bytes_atomic(dst, src.read_bytes())
        selection = {"iteration": k, "candidates": cands, "kept": best["seed"], "selection_worlds": list(c.selection_worlds),
                     "through_gan": self._gan(k),
                     "selection_runs": c.selection_runs, "selection_seed": sel_seed, "data_sha256": data_hash,
                     "train_cpu_s": round(sum(t["cpu_s"] for t in trained), 3), "selection_cpu_s": round(selection_cpu, 3),
                     "wall_s": round(time.perf_counter() - t0, 2)}
        write_json_atomic(d / "selection.json", selection)
        return selection

    @staticmethod
    def _ensemble(d: Path, seeds: list[int], trained: list[dict]) -> tuple[int, dict]:
        """(seed, training result) of the mean of the trained candidates, written to ``d/candidates/ensemble`` as one
        checkpoint (``LoopConfig.ensemble``): its seed is the first member's, its test MSE the members' mean (the
        ensemble's own is not measured), its training time theirs summed."""
        from flipper_control.checkpoint import load_policy, save_policy
        from flipper_control.policy import ensemble_of

        members = [load_policy(t["path"])[0] for t in trained]
        path = d / "candidates" / "ensemble"
        save_policy(path, ensemble_of(members), {"members": [t["path"] for t in trained], "seeds": seeds})
        reports = [t["report"] for t in trained]
        report = {"test_mse": statistics.fmean(r["test_mse"] for r in reports),
                  "baseline_test_mse": reports[0]["baseline_test_mse"], "seconds": sum(r["seconds"] for r in reports),
                  "samples_train": reports[0]["samples_train"]}
        return seeds[0], {"path": str(path), "report": report}

    def evaluate_policy(self, k: int) -> dict:
        d = self.out / f"iter_{k}"
        done = _read_json(d / "eval.json")
        if done is not None:
            return done
        worlds, t0 = resolve_worlds(list(self.c.eval_worlds)), time.perf_counter()
        ev = self.evaluate(self._policy_spec(str(d / "policy"), k), worlds, self.c.eval_runs, self.c.eval_seed,
                           f"iter {k}: evaluating" + (" (through G)" if self._gan(k) else ""))
        ev["wall_s"] = round(time.perf_counter() - t0, 2)
        write_json_atomic(d / "eval.json", ev)
        return ev


def _results_config(d: dict) -> dict:
    """The part of a config that decides the results: all but ``config_fields.NO_RESULT_FIELDS`` (where tasks
    run, how often the policy is also scored on the proxy)."""
    return without_fields(d, NO_RESULT_FIELDS)


def _differences(have: dict, wanted: dict, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, recorded value, asked value) for every leaf where two configs differ, as JSON text."""
    rows = []
    for key in sorted(set(have) | set(wanted)):
        a, b = have.get(key, "<absent>"), wanted.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            rows += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            rows.append((prefix + key, *(v if v == "<absent>" else json.dumps(v)[:60] for v in (a, b))))
    return rows


def iteration_guide(config: LoopConfig, out: str | Path, k: int) -> str | dict | None:
    """What guides iteration ``k``'s planning in loop folder ``out``: iteration k-1's policy (its checkpoint path), and
    for iteration 1 the ``first_guide`` controller's spec (``{"kind": "heuristic"}``) or None (unguided). The loop and
    planner_node's planning step (``trainer_watch.plan_iteration``) both ask here, so that they plan alike."""
    if k > 1:
        return str(Path(out) / f"iter_{k - 1}" / "policy")
    return {"kind": config.first_guide} if config.first_guide else None


def run_loop(config: LoopConfig, out: str | Path, on_iteration: Callable[[dict], None] | None = None) -> dict:
    """Run (or resume) the loop in ``out``; returns the report dict (also written as report.json/md/png).

    CPU and wall seconds are read back from each step's own JSON, so a resumed run reports the work of
    all sessions once, whichever session did it.
    """
    from flipper_control.learning.report import write_report

    out = Path(out).resolve()  # absolute: tasks carry paths into it, and Ray workers may run in other folders
    recorded = _read_json(out / "config.json")
    if recorded is not None:
        try:  # a run recorded before a field existed holds that field's default, or what the older version did
            for key in ("coarse", "guided"):
                if isinstance(recorded.get(key), dict):
                    recorded[key].setdefault("max_delay_s", None)  # planned before the bound existed: none
            recorded = LoopConfig.from_dict(recorded).to_dict()
        except (ValueError, TypeError):
            pass  # not a loop config we can read: it differs, which the check below says
    wanted = _results_config(json.loads(json.dumps(config.to_dict())))
    have = _results_config(json.loads(json.dumps(recorded))) if isinstance(recorded, dict) else None
    if recorded is not None and have != wanted:
        differ = "; ".join(f"{key}: recorded {a}, asked {b}" for key, a, b in _differences(have or {}, wanted))
        raise ValueError(f"{out} holds a loop run with a different configuration ({out / 'config.json'}; {differ}); "
                         "set the recorded values to resume it, use a new --out, or delete the folder to start over")
    # memory peaks are not in the steps' JSON: a resumed run starts from the last report's
    earlier_report = _read_json(out / "report.json") if recorded is not None else None
    earlier_memory = earlier_report.get("memory") if isinstance(earlier_report, dict) else None
    write_json_atomic(out / "config.json", config.to_dict())
    loop = _Loop(config, out)
    report: dict[str, Any] = {"config": config.to_dict(), "seed": config.seed, "iterations": []}
    cpu = {"planning": 0.0, "training": 0.0, "evaluation": 0.0}
    wall = 0.0
    try:
        _log(f"{config.iterations} iterations, {config.training_worlds} training worlds each, executor {config.executor}"
             f" ({loop.ex.workers} workers), out {out}")
        baselines = loop.baselines()
        report["baselines"] = {b: {"scores": v["scores"], "total": v["total"], "max": v["max"], "losses": eval_losses(v)}
                               for b, v in baselines.items()}
        cpu["evaluation"] += sum(v["cpu_s"] for v in baselines.values())
        if loop.transfer is not None:
            cpu["transfer"] = 0.0
            report["transfer"] = {"mode": config.transfer.mode, "collections": []}
            proxy_baselines = loop.transfer.proxy_baselines()
            cpu["evaluation"] += sum(v["cpu_s"] for by_ref in proxy_baselines.values() for v in by_ref.values())
            report["transfer"]["proxy_baselines"] = {b: {ref: {key: v[key] for key in ("scores", "total", "max", "sections")}
                                                         | {"losses": eval_losses(v)} for ref, v in by_ref.items()}
                                                     for b, by_ref in proxy_baselines.items()}
            if loop.transfer.c.mode == "gan":  # Algorithm 1 line 2: real trajectories of pi_0
                initial = _controller_spec(config.transfer.initial_controller)
                col = loop.transfer.collect_real(0, initial, config.transfer.initial_controller)
                cpu["transfer"] += col["cpu_s"]
                report["transfer"]["collections"].append(collection_entry(col))
        # which rule each reference name runs today (a file read after the defaults change still says); a folder whose
        # baselines were scored by older code and resumed is not told apart: such runs are started anew (README)
        names = [*report["baselines"], *report.get("transfer", {}).get("proxy_baselines", {}),
                 *([config.transfer.initial_controller] if config.transfer is not None else []), config.first_guide or ""]
        report["reference_rules"] = {n: r for n in dict.fromkeys(names) if (r := rule_record(n)) is not None}
        for k in range(1, config.iterations + 1):
            plans = loop.plan(k, iteration_guide(config, out, k))
            dataset, data_hash, n_traj, n_samples = loop.aggregate(k)
            t_wait = time.perf_counter()
            if loop.transfer is not None:  # G_{k-1}, trained beside the planning above, is what imitation reads
                loop.transfer.finish_gan_update()
            waited = time.perf_counter() - t_wait
            selection = loop.train_and_select(k, dataset, data_hash)
            ev = loop.evaluate_policy(k)
            policy = str(out / f"iter_{k}" / "policy")
            best = selection["candidates"][0]
            cpu["planning"] += plans["cpu_s_total"]
            cpu["training"] += selection["train_cpu_s"]
            cpu["evaluation"] += selection["selection_cpu_s"] + ev["cpu_s"]
            wall += plans["wall_s"] + selection["wall_s"] + ev["wall_s"] + waited
            entry = {
                "iteration": k, "scores": ev["scores"], "total": ev["total"], "max": ev["max"], "losses": eval_losses(ev),
                "planning": {key: plans[key] for key in ("guided", "trajectories", "successes", "success_rate", "cpu_s_total",
                                                         "cpu_s_median", "cpu_s_median_success", "expansions_median")}
                | {"action_set": plans["planner"]["action_set"]} | ({"guide": plans["guide"]} if "guide" in plans else {}),
                "dataset": {"trajectories": n_traj, "samples": n_samples, "sha256": data_hash},
                "training": {"kept_seed": best["seed"], "selection_score": best["score"], "test_mse": best["test_mse"],
                             "baseline_test_mse": best["baseline_test_mse"], "candidates": len(selection["candidates"]),
                             "cpu_s": selection["train_cpu_s"]},
                "policy": str(Path(f"iter_{k}") / "policy.safetensors"),
                "wall_s": round(plans["wall_s"] + selection["wall_s"] + ev["wall_s"] + waited, 2),
            }
            if loop.transfer is not None:
                t0 = time.perf_counter()
                # a caller that stops after an iteration (trainer_watch) gets its GAN update finished with it
                entry["transfer"] = loop.transfer.after_iteration(k, config.iterations, policy, cpu, report["transfer"],
                                                                  wait=on_iteration is not None)
                entry["wall_s"] = round(entry["wall_s"] + time.perf_counter() - t0, 2)
                wall += time.perf_counter() - t0
            report["iterations"].append(entry)
            _log(f"iter {k}: test total {ev['total']:.2f}/{ev['max']} (dataset {n_samples} samples from {n_traj} trajectories)")
            report["cpu_s"] = {key: round(v, 3) for key, v in cpu.items()} | {"total": round(sum(cpu.values()), 3),
                                                                               "cpu_hours": round(sum(cpu.values()) / 3600, 4)}
            report["memory"] = merge_memory_reports(earlier_memory, loop.ex.memory_report())
            report["wall_s"] = round(wall, 2)
            report["final_policy"] = entry["policy"]
            if "deploy" in report.get("transfer", {}):  # chosen on held-out proxy worlds (transfer.deploy_worlds)
                report["deployed_policy"] = str(Path(f"iter_{report['transfer']['deploy']['iteration']}") / "policy.safetensors")
            write_report(out, report)
            if on_iteration:
                on_iteration(entry)
    finally:
        loop.ex.close()
    return report
