"""The pure core of ``trainer_node`` and ``planner_node``: which bags are new, what the next step is, and the steps.

The learning loop (``learning.loop``) is resumable step by step: every step writes its output under ``out/`` and is
skipped when that output exists. The nodes drive it from outside, one step at a time, each step in a child process
(``python -m flipper_control.learning.trainer_watch STEP ...``) so that a node stays responsive, can report on
/diagnostics and can stop a step on shutdown (the loop resumes it later):

- ``ingest``: finished recordings in the watched bag folder that no collection holds yet become the next real
  collection ``out/real_N/`` (``bags.ingest``), written in the format the loop's own ``collect_real`` writes, so
  the loop takes the robot's trajectories where it would otherwise drive the reality proxy (Algorithm 1 lines 2
  and 9). Finished means: a folder with a rosbag2 ``metadata.yaml``, not a recorder's hidden ``.NAME.XXXX.partial``
  folder (``perception.bag_partials``), nothing in it changed for ``settle_s``. A bag the ingest cannot read is
  recorded as rejected with its reason and not tried again.
- ``iterate``: iteration K of the loop (``run_loop``, stopped after iteration K) -- only once the real collections
  the loop would otherwise drive on the proxy through iteration K exist, and (``wait_for_planner``) once
  ``planner_node`` has planned iteration K.
- ``publish``: iteration K's policy copied to the checkpoint ``policy_node`` watches, weights first, sidecar last,
  each atomically (the order of ``sim.checkpoint_io``: a sidecar on disk means a complete checkpoint).
- ``plan``: planner_node's step, the loop's own planning of iteration K (guided by iteration K-1's policy; iteration 1
  by the config's ``first_guide``, if any).

The ledger ``out/trainer_state.json`` keeps which bags went into which collection, the rejected ones and the
last published iteration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.io_utils import write_bytes_atomic, write_json_atomic

__all__ = ["LEDGER", "NextStep", "StepRunner", "TrainerConfig", "collections_needed", "finished_bags", "iterations_done",
           "load_ledger", "next_plan_step", "next_step", "node_param", "real_collections", "step_command"]

LEDGER = "trainer_state.json"


def node_param(default: Any, description: str, lo: float | None = None, hi: float | None = None) -> Any:
    """A config field that ``perception.ros_adapter`` declares as a ROS parameter with this description and range."""
    meta: dict[str, Any] = {"description": description}
    if lo is not None or hi is not None:
        meta["range"] = (lo, hi)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainerConfig:
    """trainer_node's parameters (each a ROS parameter with its description and range)."""

    bag_dir: str = node_param("", "folder the recorder writes bags into (watched for finished recordings)")
    loop_config: str = node_param("", "learning-loop YAML (configs/demo.yaml style; transfer.mode gan uses the bags)")
    out: str = node_param("", "the loop's output folder (resumable; the ledger trainer_state.json lives there)")
    checkpoint: str = node_param("", "checkpoint path policy_node watches (its `checkpoint` parameter); empty: none")
    poll_s: float = node_param(5.0, "seconds between looks at the bag folder and the loop's state", 0.05, 3600.0)
    settle_s: float = node_param(10.0, "a recording counts as finished when nothing in it changed for this long", 0.0, 86400.0)
    min_bags: int = node_param(1, "finished new bags needed to make one real collection", 1, 1000)
    wait_for_planner: bool = node_param(False, "leave planning to planner_node: iterate only once it planned the iteration")


@dataclass(frozen=True)
class NextStep:
    """What to do next: ``kind`` is ingest, publish, iterate, plan, wait or done; ``why`` says it in words."""

    kind: str
    why: str
    iteration: int | None = None
    bags: tuple[str, ...] = ()
    collection: int | None = None


# ------------------------------------------------------------------------------------------ state
def _newest_mtime(path: Path) -> float:
    times = [path.stat().st_mtime]
    for p in path.rglob("*"):
        try:
            times.append(p.stat().st_mtime)
        except OSError:  # removed while we looked: it changes, so it is not settled
            return float("inf")
    return max(times)


def finished_bags(bag_dir: str | Path, settle_s: float, now: float | None = None) -> list[Path]:
    """Finished recordings directly in ``bag_dir``, by name: rosbag2 folders (``metadata.yaml`` inside, written by
    a recorder when it closes), not hidden (a BagRecorder's ``.NAME.XXXX.partial`` folder), unchanged for ``settle_s``."""
    bag_dir = Path(bag_dir)
    if not bag_dir.is_dir():
        return []
    now = time.time() if now is None else now
    out = []
    for p in sorted(bag_dir.iterdir()):
        if p.name.startswith(".") or p.name.endswith(".partial") or p.is_symlink() or not p.is_dir():
            continue
        if (p / "metadata.yaml").is_file() and now - _newest_mtime(p) >= settle_s:
            out.append(p)
    return out


def load_ledger(out: str | Path) -> dict[str, Any]:
    """The ledger: ``{"ingested": {bag: collection}, "rejected": {bag: reason}, "published": K or None}``."""
    try:
        data = json.loads((Path(out) / LEDGER).read_text())
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    return {"ingested": dict(data.get("ingested") or {}), "rejected": dict(data.get("rejected") or {}),
            "published": data.get("published")}


def real_collections(out: str | Path) -> int:
    """How many real collections the loop reads (``real_0 .. real_{N-1}``: it stops at the first one missing)."""
    n = 0
    while (Path(out) / f"real_{n}" / "collection.json").is_file():
        n += 1
    return n


def iterations_done(out: str | Path) -> int:
    """Iterations the loop finished (entries of ``report.json``, written after each whole iteration)."""
    try:
        report = json.loads((Path(out) / "report.json").read_text())
        return len(report.get("iterations", []))
    except (OSError, ValueError, AttributeError):
        return 0


def collections_needed(config, k: int) -> int:
    """Real collections the loop (``config``: a LoopConfig) would drive on the reality proxy up to and including
    iteration ``k``: 1 before iteration 1 and one more after each iteration whose collection is due (gan mode);
    0 without a gan transfer, where the loop reads no real data."""
    t = config.transfer
    if t is None or t.mode != "gan":
        return 0
    due = [j for j in range(1, k + 1) if j % t.real_every == 0 and j < config.iterations]
    return 1 + (max(j // t.real_every for j in due) if due else 0)


def next_step(config, trainer: TrainerConfig, out: str | Path, bags: list[Path]) -> NextStep:
    """trainer_node's next step for loop ``config`` in ``out``, given the finished bags of the watched folder."""
    out = Path(out)
    ledger = load_ledger(out)
    new = tuple(str(b) for b in bags if b.name not in ledger["ingested"] and b.name not in ledger["rejected"])
    have = real_collections(out)
    if len(new) >= trainer.min_bags:
        return NextStep("ingest", f"{len(new)} new recording(s) -> real collection {have}", bags=new, collection=have)
    done = iterations_done(out)
    if done and trainer.checkpoint and ledger["published"] != done:
        return NextStep("publish", f"iteration {done}'s policy -> {trainer.checkpoint}", iteration=done)
    k = done + 1
    if k > config.iterations:
        return NextStep("done", f"all {config.iterations} iterations done")
    need = collections_needed(config, k)
    if have < need:
        return NextStep("wait", f"iteration {k} needs {need} real collection(s), {have} exist: waiting for "
                                f"{trainer.min_bags - len(new)} more finished recording(s) in {trainer.bag_dir}",
                        iteration=k)
    if trainer.wait_for_planner and not (out / f"iter_{k}" / "plans.json").is_file():
        return NextStep("wait", f"iteration {k}: waiting for planner_node's plans ({out / f'iter_{k}' / 'plans.json'})",
                        iteration=k)
    return NextStep("iterate", f"iteration {k} of {config.iterations}", iteration=k)


def next_plan_step(config, out: str | Path) -> NextStep:
    """planner_node's next step in loop folder ``out``: plan the first iteration without plans, once the policy of
    the iteration before (its guide) exists."""
    out = Path(out)
    for k in range(1, config.iterations + 1):
        if (out / f"iter_{k}" / "plans.json").is_file():
            continue
        if k > 1 and not (out / f"iter_{k - 1}" / "policy.json").is_file():
            return NextStep("wait", f"iteration {k}: waiting for iteration {k - 1}'s policy (its guide)", iteration=k)
        how = "guided" if k > 1 else f"{config.first_guide}-guided" if config.first_guide else "unguided"
        return NextStep("plan", f"planning iteration {k} ({how})", iteration=k)
    return NextStep("done", f"all {config.iterations} iterations planned")


def step_command(step: NextStep, trainer_or_paths: dict[str, str]) -> list[str]:
    """The child process that runs ``step`` (``python -m flipper_control.learning.trainer_watch ...``)."""
    p = trainer_or_paths
    base = [sys.executable, "-m", "flipper_control.learning.trainer_watch", step.kind]
    if step.kind == "ingest":
        return base + [p["out"], str(step.collection), *step.bags]
    if step.kind == "publish":
        return base + [p["out"], str(step.iteration), p["checkpoint"]]
    if step.kind in ("iterate", "plan"):
        return base + [p["loop_config"], p["out"], str(step.iteration)]
    if step.kind == "plan_worlds":
        return base + [p["worlds"], p["out"], p["checkpoint"], p["action_set"], p["seed"]]
    raise ValueError(f"no child process runs a {step.kind!r} step")


class StepRunner:
    """One step at a time in a child process (its own process group), output to a log file; ``poll`` says when it
    ended and how, ``stop`` ends it (SIGTERM, then SIGKILL) -- the loop resumes a stopped step later."""

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        self.proc: subprocess.Popen | None = None
        self.step: NextStep | None = None
        self.started = 0.0
        self.log_path: Path | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, step: NextStep, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Start ``argv`` for ``step``; only one step runs at a time."""
        if self.running:
            raise RuntimeError(f"a {self.step.kind} step is still running")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{step.kind}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=env)
        self.step, self.started = step, time.monotonic()

    def tail(self, chars: int = 300) -> str:
        """The end of the step's output (its last progress line, or why it failed)."""
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""
        lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
        return lines[-1][-chars:] if lines else ""

    def poll(self) -> int | None:
        """The exit status once the step ended (then the runner is free again), else None."""
        if self.proc is None or self.proc.poll() is None:
            return None
        rc, self.proc = self.proc.returncode, None
        return rc

    def stop(self, timeout: float = 10.0) -> None:
        """End a running step: SIGTERM to its group (it unwinds, stopping its workers), SIGKILL after ``timeout``."""
        if not self.running:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                self.proc.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None


# ------------------------------------------------------------------------------------------ the steps
def _update_ledger(out: Path, **changes: Any) -> None:
    ledger = load_ledger(out)
    for key, value in changes.items():
        ledger[key] = {**ledger[key], **value} if isinstance(value, dict) else value
    write_json_atomic(out / LEDGER, ledger)


def ingest_collection(out: str | Path, index: int, bags: list[str]) -> dict[str, Any]:
    """Bags -> ``out/real_<index>/`` as the loop's ``collect_real`` leaves it; unreadable bags are rejected (ledger)."""
    from flipper_control.learning.bags import INGEST_TOPICS, ingest
    from perception.bag_reader import BagReader
    from planning.dataset import TrajectoryDataset

    out, good, rejected = Path(out), [], {}
    for bag in bags:
        try:
            with BagReader(bag) as reader:
                reader.require(INGEST_TOPICS)
            good.append(bag)
        except Exception as exc:  # noqa: BLE001 - any unreadable bag is set aside with its reason, the others go on
            rejected[Path(bag).name] = f"{type(exc).__name__}: {exc}"
    if rejected:
        _update_ledger(out, rejected=rejected)
    if not good:
        return {"index": None, "rejected": rejected}
    d = out / f"real_{index}"
    t0 = time.process_time()
    summary = ingest(good, d, overwrite=True)  # a killed ingest left only partial output
    data = TrajectoryDataset.load(summary["dataset"])
    driving = sum((t.meta.get("t1") or 0) - (t.meta.get("t0") or 0) for t in data.trajectories)
    result = {"index": index, "controller": {"kind": "robot"}, "label": f"robot recordings {index}",
              "worlds": [Path(b).name for b in good], "driving_s": round(driving, 2), "samples": summary["samples"],
              "dataset": summary["dataset"], "levels": ["recorded"] * len(good),
              "cpu_s": round(time.process_time() - t0, 3), "bags": [str(b) for b in good]}
    write_json_atomic(d / "collection.json", result)  # last: the loop reads a collection only once this exists
    _update_ledger(out, ingested={Path(b).name: index for b in good})
    return result


class _Stop(Exception):
    """Raised from run_loop's on_iteration hook to end the run after the iteration asked for."""


def run_iteration(config_path: str | Path, out: str | Path, k: int) -> None:
    """Run (or resume) the loop in ``out`` up to iteration ``k`` and stop there (later iterations wait for data)."""
    from flipper_control.learning.loop import load_loop_config, run_loop

    def stop(entry: dict) -> None:
        if entry["iteration"] >= k:
            raise _Stop()

    try:
        run_loop(load_loop_config(config_path), out, on_iteration=stop)
    except _Stop:
        pass


def publish_checkpoint(out: str | Path, k: int, dest: str | Path) -> None:
    """Copy iteration ``k``'s policy to ``dest`` (weights first, then the sidecar, each atomically)."""
    from sim.checkpoint_io import checkpoint_paths

    src = checkpoint_paths(Path(out) / f"iter_{k}" / "policy")
    for s, d in zip(src, checkpoint_paths(dest), strict=True):
        write_bytes_atomic(d, s.read_bytes())
    _update_ledger(Path(out), published=k)


def plan_iteration(config_path: str | Path, out: str | Path, k: int) -> None:
    """The loop's own planning step of iteration ``k`` (``out/iter_K/plans.*``), guided by iteration k-1's policy (in
    iteration 1 by the config's ``first_guide``, if any)."""
    from flipper_control.learning.loop import _Loop, iteration_guide, load_loop_config

    out = Path(out).resolve()
    config = load_loop_config(config_path)
    loop = _Loop(config, out)
    try:
        loop.plan(k, iteration_guide(config, out, k))
    finally:
        loop.ex.close()


def plan_worlds(worlds: str, out: str | Path, checkpoint: str, action_set: str, seed: int) -> dict[str, Any]:
    """``flipper plan``'s path: the worlds (names, sets or files, comma separated) planned one by one, guided by
    ``checkpoint`` if given, written as one dataset to ``out`` and a summary to ``out``.json."""
    from flipper_control.learning.tasks import plan_task
    from planning.dataset import TrajectoryDataset
    from planning.planner_config import PlannerConfig
    from sim.world_sets import resolve_worlds

    refs = [w.strip() for w in worlds.split(",") if w.strip()]
    resolved = resolve_worlds(refs)
    config = PlannerConfig(action_set=action_set)
    trajs = []
    for i, w in enumerate(resolved):
        r = plan_task({"world": w, "seed": seed + i, "planner": config.to_dict(), "guide": checkpoint or None})
        trajs.append(r["trajectory"])
        print(f"planned {i + 1}/{len(resolved)}: {w.name} {'found' if r['trajectory'].success else 'FAILED'}",
              file=sys.stderr, flush=True)
    TrajectoryDataset(trajs).save(out)
    summary = {"worlds": refs, "seed": seed, "planner": config.to_dict(), "guide": checkpoint or None,
               "trajectories": [t.summary() for t in trajs]}
    write_json_atomic(f"{out}.json", summary)
    return summary


def _on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # unwind: the loop's executors stop their workers in their finally blocks


def main(argv: list[str] | None = None) -> int:
    """Child-process entry: ``ingest OUT INDEX BAG...``, ``publish OUT K DEST``, ``iterate|plan CONFIG OUT K``,
    ``plan_worlds WORLDS OUT CHECKPOINT ACTION_SET SEED``. Exit 0 done, 1 failed (the reason on stderr), 130 stopped."""
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _on_sigterm)
    kind, args = argv[0], argv[1:]
    try:
        if kind == "ingest":
            result = ingest_collection(args[0], int(args[1]), args[2:])
            print(json.dumps({k: v for k, v in result.items() if k != "bags"}), flush=True)
        elif kind == "publish":
            publish_checkpoint(args[0], int(args[1]), args[2])
        elif kind == "iterate":
            run_iteration(args[0], args[1], int(args[2]))
        elif kind == "plan":
            plan_iteration(args[0], args[1], int(args[2]))
        elif kind == "plan_worlds":
            plan_worlds(args[0], args[1], args[2], args[3], int(args[4]))
        else:
            raise ValueError(f"unknown step {kind!r}")
    except KeyboardInterrupt:
        print(f"{kind}: stopped (resumes where it left off)", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - the node shows the reason; its next attempt starts a fresh process
        print(f"{kind} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
