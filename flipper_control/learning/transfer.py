"""The sim-to-real half of Algorithm 1 in the learning loop: a ``transfer:`` section in the loop config
(``TransferConfig``, in ``flipper_control.learning.transfer_config``).

- line 2 (and 9): real trajectories driven on the reality proxy -- by ``initial_controller`` before any policy
  exists, then every ``real_every`` iterations by the newest policy -- recorded as rosbags and read back with
  ``ingest``, the same path as bags from the robot (``real_C/``);
- line 5: imitation on G_k(x) of the planned states (the policy learns from DEMs as it will see them), and the
  candidates are selected and Table I is scored in simulation through G_k;
- line 6: rollouts of the new policy in simulation through G_k; their exact DEMs are the simulated states x_s;
- line 7: the CycleGAN, continued from G_k, trained on those x_s and all real states (``iter_K/gan``); a GAN
  whose loss turns non-finite is not used: the loop keeps the last good generator and says so. The iteration's
  policy pi_k goes with it: ``gan.lambda_task`` > 0 makes the GAN policy-aware (G is also trained to keep pi_k's
  action on G(x_s) at its action on x_s), and at any lambda_task the update measures that action gap on held-out
  states (``task_consistency`` in ``gan_update.json`` and the report).

G_0 is the identity (no transform), so iteration 1 is today's loop. ``mode`` chooses the variant: ``gan`` (the
above), ``identity`` (G held at the identity: the ablation that shows whether the GAN does anything) or
``randomize`` (imitation on domain-randomised DEMs instead: what most users would try first). Every variant
scores its policy on the reality proxy (the test worlds and the proxy course F, P, SU1-3, SD1-3: Table II).
With ``deploy_worlds`` > 0 those iterations also drive on held-out generated worlds on the proxy, and the best
there is the deployed policy (``deployed_policy`` in the report; the test worlds play no part in choosing it).
Every step writes its output atomically and is skipped when it exists, as the rest of the loop.

Line 7 runs beside the next steps: the update is submitted to one worker (``Executor.submit``) while line 9's
collection, the proxy scores and the next iteration's planning, none of which reads G_k, run on the others.
It is collected (``finish_gan_update``) before anything that reads G_k: ``gan_before`` does so itself, and the loop
does it before imitation. The update is deterministic and runs in a worker process of its own, so what it
computes does not depend on what runs beside it; only the wall time does (the CycleGAN's steps run on one core,
which the loop used to leave idle). An interrupted run loses the update in flight and runs it again on resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.io_utils import write_json_atomic
from sim.scoring import eval_losses

if TYPE_CHECKING:
    from flipper_control.learning.executors import Pending
    from flipper_control.learning.transfer_config import TransferConfig

__all__ = ["TransferSteps", "collection_entry", "deployed_iteration"]


def collection_entry(col: dict) -> dict:
    """What the report keeps of a collection of real trajectories."""
    return {key: col[key] for key in ("index", "label", "driving_s", "samples", "levels")}


def _metrics_summary(metrics: dict) -> dict:
    """Per candidate: the distances, the classifier's accuracy and the closed shares (the report's table)."""
    return {name: {"distances": c["distances"], "accuracy": c["classifier"]["accuracy"], "closed_share": c["closed_share"],
                   "nan_share": c["nan_share"]} for name, c in metrics["candidates"].items()}


def _paired_summary(paired: dict | None) -> dict | None:
    """What the report keeps of a GAN update's same-pose evaluation: per candidate its classifier accuracy, closed
    shares and NaN F1, and whether G was judged with the terrain's shadows (``gan_shadows``)."""
    if not paired:
        return None
    m = paired["metrics"]
    return {"pairs": paired["pairs"], "worlds": paired["worlds"], "shadows": paired.get("shadows", False),
            "candidates": {name: {"accuracy": c["classifier"]["accuracy"], "closed_share": c["closed_share"],
                                  "nan_f1": paired["nan"].get(name, {}).get("f1")}
                           for name, c in m["candidates"].items()}}


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@dataclass
class _GanInFlight:
    """A line-7 update submitted beside the next steps, and where its result goes once it is collected."""

    k: int
    states: str  # iteration k's simulated states (x_s), for the Fig. 6 analogue
    pending: Pending | None  # None: gan_update.json existed (a resumed run)
    done: dict | None  # that file's content
    step: Any  # the progress step that prints the update's summary line
    entry: dict  # the iteration's transfer entry of the report
    cpu: dict
    transfer_report: dict


def deployed_iteration(totals: dict[int, float]) -> int:
    """The iteration to deploy from its total on the held-out proxy worlds: the best; a tie goes to the later
    iteration (more data behind it, and the loop's own answer where the held-out worlds cannot tell)."""
    if not totals:
        raise ValueError("no iteration was scored on the held-out proxy worlds")
    return max(totals, key=lambda k: (totals[k], k))


class TransferSteps:
    """The transfer steps of one loop run, over its executor and output folder; ``evaluate`` is the loop's own
    evaluation (``_Loop.evaluate``), so the proxy scores use the same machinery and report format. ``step(label,
    total, unit, bar=None)`` makes a progress step (``bar=False``: summary lines only)."""

    def __init__(self, config: TransferConfig, loop_seed: int, out: Path, ex, evaluate, step):
        self.c, self.seed, self.out, self.ex, self._evaluate, self._step = config, loop_seed, out, ex, evaluate, step
        self._reality = config.reality.to_dict() if config.reality is not None else None
        self._in_flight: _GanInFlight | None = None

    # ---------------------------------------------------------------- which G each iteration uses
    def gan_before(self, k: int) -> str | None:
        """G_{k-1}: the newest good generator of the iterations before ``k`` (None: the identity). Waits for an update
        of an iteration before ``k`` that is still running beside (never falls back to an older generator)."""
        if self.c.mode != "gan":
            return None
        if self._in_flight is not None and self._in_flight.k < k:
            self.finish_gan_update()
        for j in range(k - 1, 0, -1):
            done = _read_json(self.out / f"iter_{j}" / "gan_update.json")
            if done is not None and done.get("path"):
                return done["path"]
        return None

    def dem_transform(self, k: int, seed: int) -> dict | None:
        """What imitation of iteration ``k`` trains on (``tasks.transformed_training_data``)."""
        views = {"views": self.c.dem_views} if self.c.dem_views > 1 else {}  # absent: one draw, as before the field
        if self.c.mode == "randomize":
            return {"kind": "randomize", "config": self.c.randomization.to_dict(), "seed": seed} | views
        gan = self.gan_before(k)
        shares = {"exact_share": self.c.exact_share, "seed": seed} if self.c.exact_share > 0 else {}
        if self.c.randomize_share > 0:  # G_0 (the identity) too: iteration 1 mixes exact and randomised DEMs
            shares |= {"randomize_share": self.c.randomize_share, "randomization": self.c.randomization.to_dict(),
                       "seed": seed}
        if self.c.gan_shadows:  # G_0 too: iteration 1's exact DEMs lose their shadows
            shares |= {"shadows": True, "randomization": self.c.randomization.to_dict()}
        if self.c.real_masks is not None and self.c.mode == "gan":  # G_0 (the identity) borrows masks too
            return {"kind": "gan", "path": gan, "real_masks": {"config": self.c.real_masks.to_dict(),
                                                               "datasets": self.real_datasets_before(k), "seed": seed}} \
                | shares | views
        if not (gan or self.c.randomize_share > 0 or self.c.gan_shadows):
            return None  # exact DEMs: nothing to draw, one copy
        # G_0 with shadows only draws nothing either: its copies would be equal
        return {"kind": "gan", "path": gan} | shares | (views if gan or self.c.randomize_share > 0 else {})

    # ---------------------------------------------------------------- line 2 / 9: real trajectories
    def collection_due(self, k: int, iterations: int) -> bool:
        """Whether new real trajectories are driven with iteration ``k``'s policy (line 9)."""
        return self.c.mode == "gan" and k % self.c.real_every == 0 and k < iterations

    def collect_real(self, index: int, controller: dict, label: str) -> dict:
        """Drive ``real_runs`` proxy runs with ``controller``, record them as bags, ingest them: ``real_<index>/``."""
        from flipper_control.learning.bags import ingest
        from flipper_control.learning.transfer_tasks import record_task
        from sim.world_sets import generated_worlds

        d = self.out / f"real_{index}"
        done = _read_json(d / "collection.json")
        if done is not None:
            return done
        worlds = generated_worlds(self.c.worlds, self.c.real_runs, seed=self.seed * 1000 + 500 + index)
        tasks = [{"world": w, "controller": controller, "bag": str(d / "bags" / f"run_{i}"), "reality_config": self._reality,
                  "seed": self.seed * 100_000 + 50_000 + index * 100 + i} for i, w in enumerate(worlds)]
        with self._step(f"real trajectories {index} ({label}) on the reality proxy", len(tasks), "run") as step:
            runs = self.ex.map(record_task, tasks, progress=step)
            summary = ingest([r["bag"] for r in runs], d, overwrite=True)  # a killed ingest left only partial output
            driving = sum(r["sim_time"] for r in runs)
            step.finish(f"{summary['samples']} states, {driving / 60:.1f} min of driving")
        result = {"index": index, "controller": controller, "label": label, "worlds": [w.name for w in worlds],
                  "driving_s": round(driving, 2), "samples": summary["samples"], "dataset": summary["dataset"],
                  "levels": [r["level"] for r in runs], "cpu_s": round(sum(r["cpu_s"] for r in runs), 3)}
        write_json_atomic(d / "collection.json", result)
        return result

    def real_datasets(self) -> list[str]:
        """Every finished collection's dataset, oldest first."""
        out, i = [], 0
        while (done := _read_json(self.out / f"real_{i}" / "collection.json")) is not None:
            out.append(done["dataset"])
            i += 1
        return out

    def real_datasets_before(self, k: int) -> list[str]:
        """The collections a fresh run holds when iteration ``k`` trains and updates G: line 2's, then one after
        every ``real_every``-th iteration before ``k`` (collection c is driven after iteration c x real_every's
        GAN update). Not the later ones a resumed run already holds: a retrained step sees what it saw first."""
        return self.real_datasets()[:1 + (k - 1) // self.c.real_every]

    # ---------------------------------------------------------------- line 6 and 7: rollouts and the GAN
    def rollouts(self, k: int, policy: str) -> str:
        """States of iteration ``k``'s policy driving in simulation through G_{k-1}: ``iter_K/sim_states``."""
        from flipper_control.learning.tasks import eval_task
        from planning.dataset import TrajectoryDataset
        from sim.world_sets import generated_worlds

        path = self.out / f"iter_{k}" / "sim_states.safetensors"
        if path.is_file():
            return str(path)
        worlds = generated_worlds(self.c.worlds, self.c.sim_runs, seed=self.seed * 1000 + 700 + k)
        spec = {"kind": "policy", "path": policy, "transform": self.gan_before(k)}
        tasks = [{"controller": spec, "world": w, "seeds": [self.seed * 100_000 + 70_000 + k * 100 + i], "states": True}
                 for i, w in enumerate(worlds)]
        with self._step(f"iter {k}: simulated rollouts (line 6)", len(tasks), "run") as step:
            results = self.ex.map(eval_task, tasks, progress=step)
            data = TrajectoryDataset([t for r in results for t in r["trajectories"]])
            step.finish(f"{data.n_samples} states")
        data.save(path)
        return str(path)

    def gan_task(self, k: int, sim_states: str, policy: str | None = None) -> dict:
        """The line-7 task of iteration ``k``: G_k from G_{k-1} on iteration ``k``'s simulated states and the real
        ones driven before it (``iter_K/gan``). ``policy`` (pi_k's checkpoint) is the task model of
        ``gan.lambda_task`` and what the action gap measures; ``pairs`` the same-pose pairs G_k is judged on."""
        return {"sim": [sim_states], "real": self.real_datasets_before(k), "out": str(self.out / f"iter_{k}" / "gan"),
                "start": self.gan_before(k), "train": self.c.gan.to_dict(), "seed": self.seed * 1000 + k,
                "randomization": self.c.randomization.to_dict(), "policy": policy, "pairs": self.pairs(),
                "estimate_height_offset": self.c.estimate_height_offset, "shadows": self.c.gan_shadows}

    def pairs(self, cpu: dict | None = None) -> str | None:
        """The run's same-pose pairs (``pairs/pairs.safetensors``): heuristic runs on ``paired_worlds`` generated
        worlds on the reality proxy, driven once, the first time a GAN update needs them (their CPU seconds go to
        ``cpu["transfer"]``); None when off."""
        from flipper_control.learning.paired_eval import pair_task, pair_tasks, save_pairs, stack_pairs

        if self.c.mode != "gan" or self.c.paired_worlds == 0:
            return None
        path = self.out / "pairs" / "pairs.safetensors"
        if path.is_file():
            return str(path)
        world_seed = self.seed * 1000 + 900  # apart from the training (k), real (500 + c) and rollout (700 + k) worlds
        tasks = pair_tasks(self.c.worlds, self.c.paired_worlds, world_seed, self.seed, self._reality)
        with self._step("same-pose pairs for judging G (heuristic on the reality proxy)", len(tasks), "run") as step:
            runs = self.ex.map(pair_task, tasks, progress=step)
            pairs = stack_pairs(runs)
            step.finish(f"{len(pairs['exact'])} pairs")
        if cpu is not None:
            cpu["transfer"] += sum(r["cpu_s"] for r in runs)
        save_pairs(path, pairs, {"worlds": [t["world"].name for t in tasks], "world_seed": world_seed, "seed": self.seed,
                                 "reality_config": self._reality, "controller": "heuristic"})
        return str(path)

    def start_gan_update(self, k: int, sim_states: str, policy: str, entry: dict, cpu: dict,
                         transfer_report: dict) -> None:
        """Submit iteration ``k``'s update (or take ``iter_K/gan_update.json`` of an earlier session) and return at
        once; ``finish_gan_update`` collects it into ``entry``, ``cpu`` and ``transfer_report``."""
        from flipper_control.learning.transfer_tasks import gan_task

        self.finish_gan_update()  # at most one in flight: G_k continues from G_{k-1}
        done = _read_json(self.out / f"iter_{k}" / "gan_update.json")
        pending = step = None
        if done is None:
            self.pairs(cpu)  # driven here at most once per run, with its CPU time counted
            task = self.gan_task(k, sim_states, policy)
            step = self._step(f"iter {k}: CycleGAN update (line 7)", 1, "task", bar=False)
            step.write(f"{step.prefix}iter {k}: CycleGAN update (line 7) started on one worker, beside the next steps")
            pending = self.ex.submit(gan_task, task)
        self._in_flight = _GanInFlight(k, sim_states, pending, done, step, entry, cpu, transfer_report)

    def finish_gan_update(self) -> dict | None:
        """Wait for the update in flight (if any), write ``iter_K/gan_update.json``, its Fig. 6 analogue, and fill in
        the report entry; returns its result (None when none was in flight)."""
        g, self._in_flight = self._in_flight, None
        if g is None:
            return None
        result = g.done
        if result is None:
            try:
                result = g.pending.result()
            finally:
                g.step.close()
            if result["diverged"]:
                g.step.finish(f"diverged ({result['error']}); keeping the previous generator")
            else:
                m = result["metrics"]["candidates"]["G"]
                offset, said = result.get("height_offset"), ""
                if offset:
                    said = (f"; sensor height offset {100 * offset['offset_m']:+.2f} cm" if offset["offset_m"] is not None
                            else f"; no sensor height offset ({offset['error']})")
                g.step.finish(f"classifier accuracy {m['classifier']['accuracy']:.2f}, closed "
                              + ", ".join(f"{n} {v:.2f}" for n, v in m["closed_share"].items() if v is not None) + said)
            write_json_atomic(self.out / f"iter_{g.k}" / "gan_update.json", result)
        g.cpu["transfer"] += result["cpu_s"]
        g.entry["gan"] = {"diverged": result["diverged"], "error": result["error"], "path": result["path"],
                          "metrics": _metrics_summary(result["metrics"]) if result["metrics"] else None,
                          "task_consistency": result.get("task_consistency"),  # .get: a gan_update.json of an older run
                          "content_floor": (result["metrics"] or {}).get("content_floor"),
                          "held_out": result.get("held_out"), "paired": _paired_summary(result.get("paired")),
                          "height_offset": result.get("height_offset")}
        if result["path"]:
            from flipper_control.learning.transfer_figure import transfer_figure

            figure = self.out / f"iter_{g.k}" / "fig6.png"
            if not figure.is_file():
                transfer_figure(result["path"], g.states, self.real_datasets_before(g.k)[-1], figure, seed=self.seed)
            g.transfer_report["figure"] = str(figure.relative_to(self.out))
        return result

    # ---------------------------------------------------------------- Table II: scores on the reality proxy
    def proxy_due(self, k: int, iterations: int) -> bool:
        every = self.c.proxy_eval_every
        return k == iterations or (every > 0 and k % every == 0)

    def proxy_eval(self, k: int, policy: str) -> dict:
        """The policy on the reality proxy: the test worlds and the proxy course (``iter_K/proxy_eval.json``)."""
        from sim.world_sets import resolve_worlds

        path = self.out / f"iter_{k}" / "proxy_eval.json"
        done = _read_json(path)
        if done is not None:
            return done
        result = {}
        for ref in self.c.proxy_eval_worlds:
            worlds = resolve_worlds([ref])
            result[ref] = self._evaluate({"kind": "policy", "path": policy}, worlds, self.c.proxy_eval_runs, 0,
                                         f"iter {k}: {ref} worlds on the reality proxy", reality="proxy",
                                         reality_config=self._reality)
        write_json_atomic(path, result)
        return result

    def deploy_eval(self, k: int, policy: str) -> dict | None:
        """Iteration ``k``'s policy on the held-out proxy worlds that choose the deployed iteration
        (``iter_K/deploy_eval.json``); None when ``deploy_worlds`` is 0."""
        if self.c.deploy_worlds == 0:
            return None
        from sim.world_sets import generated_worlds

        path = self.out / f"iter_{k}" / "deploy_eval.json"
        asked = {"set": self.c.deploy_set, "worlds": self.c.deploy_worlds, "runs": self.c.deploy_runs}
        done = _read_json(path)
        if done is not None and done.get("asked") == asked:  # a run resumed with other deploy_* settings drives anew
            return done
        # generator seeds: training worlds seed x 1000 + k, collections + 500 + i, rollouts + 700 + k; these + 900
        worlds = generated_worlds(self.c.deploy_set, self.c.deploy_worlds, seed=self.seed * 1000 + 900)
        label = f"iter {k}: {len(worlds)} held-out {self.c.deploy_set} worlds on the reality proxy (which iteration to deploy)"
        result = {"asked": asked} | self._evaluate({"kind": "policy", "path": policy}, worlds, self.c.deploy_runs,
                                                   self.seed * 100_000 + 90_000, label, reality="proxy",
                                                   reality_config=self._reality)
        result["driving_s"] = round(sum(r["time"] for runs in result["runs"].values() for r in runs), 2)
        write_json_atomic(path, result)
        return result

    def proxy_baselines(self) -> dict:
        """The reference controllers on the reality proxy, once (``proxy_baselines.json``): Table II's context."""
        path = self.out / "proxy_baselines.json"
        done = _read_json(path)
        if done is not None:
            return done
        from sim.world_sets import resolve_worlds

        result = {}
        for b in self.c.proxy_baselines:
            kind, _, posture = b.partition(":")
            result[b] = {ref: self._evaluate({"kind": kind, "posture": posture or None}, resolve_worlds([ref]),
                                             self.c.proxy_eval_runs, 0, f"baseline {b}: {ref} worlds on the reality proxy",
                                             reality="proxy", reality_config=self._reality) for ref in self.c.proxy_eval_worlds}
        write_json_atomic(path, result)
        return result

    # ---------------------------------------------------------------- one iteration's transfer steps
    def after_iteration(self, k: int, iterations: int, policy: str, cpu: dict, transfer_report: dict,
                        wait: bool = False) -> dict:
        """Algorithm 1 lines 6, 7 and 9 after iteration ``k``'s policy is chosen, and its scores on the reality proxy;
        returns the iteration's ``transfer`` entry of the report (CPU seconds are added to ``cpu``). Line 7 runs
        beside line 9 and the proxy scores and, unless ``wait`` or this is the last iteration, beside what follows
        until ``finish_gan_update`` (the entry's ``gan`` is filled in then)."""
        entry: dict[str, Any] = {"through_gan": self.gan_before(k)}
        if self.c.mode == "gan":
            states = self.rollouts(k, policy)
            self.start_gan_update(k, states, policy, entry, cpu, transfer_report)
            if self.collection_due(k, iterations):  # line 9: new real trajectories with the newest policy
                col = self.collect_real(k // self.c.real_every, {"kind": "policy", "path": policy}, f"policy of iteration {k}")
                cpu["transfer"] += col["cpu_s"]
                transfer_report["collections"].append(collection_entry(col))
        if self.proxy_due(k, iterations):
            proxy = self.proxy_eval(k, policy)
            cpu["evaluation"] += sum(v["cpu_s"] for v in proxy.values())
            entry["proxy"] = {ref: {key: v[key] for key in ("scores", "total", "max", "sections")} | {"losses": eval_losses(v)}
                              for ref, v in proxy.items()}
            if (dep := self.deploy_eval(k, policy)) is not None:
                cpu["evaluation"] += dep["cpu_s"]
                entry["deploy"] = {key: dep[key] for key in ("scores", "total", "max", "driving_s")}
                choice = transfer_report.setdefault("deploy", {"set": self.c.deploy_set, "worlds": list(dep["scores"]),
                                                               "runs": self.c.deploy_runs, "totals": {}, "driving_s": 0.0})
                choice["totals"][str(k)] = dep["total"]
                choice["driving_s"] = round(choice["driving_s"] + dep["driving_s"], 2)
                choice["iteration"] = deployed_iteration({int(j): v for j, v in choice["totals"].items()})
        if wait or k == iterations:
            self.finish_gan_update()
        transfer_report["driving_s"] = round(sum(c["driving_s"] for c in transfer_report["collections"])
                                             + transfer_report.get("deploy", {}).get("driving_s", 0.0), 2)
        return entry
