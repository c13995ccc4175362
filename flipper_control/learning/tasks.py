"""The units of work of the learning loop, as top-level functions an executor can ship to a worker.

Each task takes one plain dict and returns plain data; it carries its own seeds, so the result does not
depend on which executor (serial, process pool, Ray) or worker runs it. Workers keep one simulator and
a cache of loaded policies between tasks, which saves rebuilding MuJoCo models and reading checkpoints.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sim.world import World

__all__ = ["plan_task", "eval_task", "train_task", "controller_from_spec", "transformed_training_data", "with_shadows"]

_SIMS: dict[str, Any] = {}
_POLICIES: dict[tuple[str, float], Any] = {}
REALITIES = ("sim", "proxy")  # the exact simulator, or the reality proxy (perturbed robot, lidar DEMs)


def _simulator(reality: str = "sim", reality_config: dict | None = None, proxy_dem: str = "lidar"):
    """This worker's simulator of the given kind, built once; the proxy once per ``reality_config`` (a
    ``RealityProxyConfig.to_dict()`` mapping, None for today's defaults). ``proxy_dem`` other than ``lidar`` wraps
    the proxy so that controllers see another DEM (``sim.dem_ablation``)."""
    import json

    if proxy_dem != "lidar":
        if reality != "proxy":
            raise ValueError(f"proxy_dem {proxy_dem!r} takes the reality proxy's DEM apart; reality is {reality!r}")
        from sim.dem_ablation import DemAblation

        return DemAblation(_simulator(reality, reality_config), proxy_dem)
    key = reality if reality_config is None else f"{reality} {json.dumps(reality_config, sort_keys=True)}"
    if key not in _SIMS:
        if reality == "proxy":
            from sim.reality_config import RealityProxyConfig
            from sim.reality_proxy import RealityProxy

            if len(_SIMS) > 3:  # a loop uses one or two: keep memory flat (a proxy holds a point map)
                _SIMS.clear()
            config = RealityProxyConfig.from_dict(reality_config) if reality_config is not None else None
            _SIMS[key] = RealityProxy(config=config)
        elif reality == "sim":
            from sim.mujoco_sim import MujocoSimulator

            _SIMS[key] = MujocoSimulator()
        else:
            raise ValueError(f"unknown reality {reality!r}; allowed: {', '.join(REALITIES)}")
    return _SIMS[key]


def _policy(path: str):
    from flipper_control.checkpoint import checkpoint_paths, load_policy

    weights, _ = checkpoint_paths(path)
    key = (str(weights), weights.stat().st_mtime)
    if key not in _POLICIES:
        _POLICIES.clear()  # one loop iteration uses one or a few policies: keep memory flat
        _POLICIES[key] = load_policy(path)[0]
    return _POLICIES[key]


def _transform(path: str):
    """This worker's sim -> real transform (``perception.sim_to_real.SimToReal``) of a CycleGAN checkpoint, cached."""
    from perception.sim_to_real import SimToReal
    from sim.checkpoint_io import checkpoint_paths

    weights, _ = checkpoint_paths(path)
    key = ("gan", str(weights), weights.stat().st_mtime)
    if key not in _POLICIES:
        _POLICIES[key] = SimToReal.from_checkpoint(path)
    return _POLICIES[key]


class ThroughTransform:
    """A controller that sees every DEM through a sim -> real transform (Algorithm 1 lines 6 and the Table I
    evaluation: the policy in simulation as it will see DEMs on the robot); pitch, roll and flippers unchanged.
    The transform also gets the run's time (its map's age, for a G that takes it)."""

    def __init__(self, controller, transform):
        self.controller, self.transform = controller, transform

    def reset(self) -> None:
        self.controller.reset()

    def act(self, obs):
        from dataclasses import replace

        return self.controller.act(replace(obs, dem=self.transform(obs.dem, obs.proprio(), map_age=obs.time)))


def controller_from_spec(spec: dict):
    """A controller from ``{"kind": "policy", "path": CKPT}``, ``{"kind": "heuristic"}`` or ``{"kind": "fixed", "posture": P}``;
    with ``"transform": GAN_CKPT`` it sees every DEM through that CycleGAN's G (``ThroughTransform``)."""
    from flipper_control.controllers import make_controller
    from flipper_control.policy import PolicyController

    if spec["kind"] == "policy":
        controller = PolicyController(_policy(spec["path"]))
    else:
        controller = make_controller(spec["kind"], spec.get("posture"))
    return ThroughTransform(controller, _transform(spec["transform"])) if spec.get("transform") else controller


def _planned_earlier(path: Path, task: dict):
    """The trajectory a previous run of this very task left at ``path``, or None (none, unreadable, or another task's).

    A loop resumed with a changed config is refused before any task runs, so the world, seed and guidance
    recorded in the trajectory are enough to tell that the file answers this task.
    """
    from planning.dataset import DatasetError, TrajectoryDataset

    if not path.is_file():
        return None
    try:
        trajs = TrajectoryDataset.load(path).trajectories
    except DatasetError:
        return None  # writes are atomic, so this is a damaged file: plan again and overwrite it
    if len(trajs) != 1:
        return None
    meta = trajs[0].meta
    wanted = {"world": task["world"].name, "seed": int(task["seed"]), "guided": bool(task.get("guide"))}
    return trajs[0] if all(meta.get(k) == v for k, v in wanted.items()) else None


def plan_task(task: dict) -> dict:
    """Plan one world: ``{world: World, seed, planner: PlannerConfig dict, guide: CKPT path, a controller spec such as
    ``{"kind": "heuristic"}`` (see ``controller_from_spec``) or None}``, and optionally
    ``out``: a file where the trajectory is kept as soon as it is planned.

    With ``out``, a trajectory an interrupted run already planned for this task is read back instead of planned again
    (planning is deterministic per seed, so the result is the same; its ``cpu_s`` stays the original run's).
    Returns ``{"trajectory": Trajectory, "cpu_s": float, "resumed": bool}``.
    """
    from planning.dataset import TrajectoryDataset
    from planning.planner_config import PlannerConfig
    from planning.rrt import plan

    out = Path(task["out"]) if task.get("out") else None
    if out is not None and (earlier := _planned_earlier(out, task)) is not None:
        return {"trajectory": earlier, "cpu_s": 0.0, "resumed": True}
    world: World = task["world"]
    guide = None
    if isinstance(task.get("guide"), dict):  # a reference controller (the heuristic) on the simulator's own DEMs
        guide = controller_from_spec(task["guide"]).act
    elif task.get("guide"):  # a policy trained on G(x) guides through G too: it sees what it learnt from
        guide = controller_from_spec({"kind": "policy", "path": task["guide"], "transform": task.get("guide_transform")}).act
    cpu0 = time.process_time()
    traj = plan(_simulator(), world, seed=int(task["seed"]), config=PlannerConfig.from_dict(task["planner"]), guide=guide)
    if out is not None:
        TrajectoryDataset([traj]).save(out)
    return {"trajectory": traj, "cpu_s": time.process_time() - cpu0, "resumed": False}


def eval_task(task: dict) -> dict:
    """Run one controller on one world for the given noise seeds: ``{controller: spec, world: World, seeds: [..]}``,
    optionally ``reality: "proxy"`` to run on the reality proxy instead of the exact simulator (``reality_config``: a
    ``RealityProxyConfig`` mapping, default today's; ``proxy_dem``: which DEM the controller sees there, one of
    ``sim.dem_ablation.PROXY_DEMS``, default ``lidar``), and ``states: True`` to return the visited states too.

    Returns ``{"runs": [RunResult, ...], "cpu_s": float}`` and, with ``states``, ``"trajectories"``: one
    ``planning.dataset.Trajectory`` per run, of the DEMs the simulator (exact) or the proxy (lidar-built) produced --
    not what a transform made of them; with ``proxy_dem``, the DEM the controller saw --, the proprio and the targets,
    with the run's level in its metadata.
    """
    from planning.dataset import Trajectory
    from sim.rollout import Trace, run_episode

    world: World = task["world"]
    cpu0 = time.process_time()
    sim = _simulator(task.get("reality", "sim"), task.get("reality_config"), task.get("proxy_dem", "lidar"))
    runs, trajectories = [], []
    meta = {"reality": task.get("reality", "sim"), "source": "rollout"}
    if task.get("proxy_dem", "lidar") != "lidar":  # states seen through an ablated proxy DEM say so
        meta["proxy_dem"] = task["proxy_dem"]
    for s in task["seeds"]:
        trace = Trace() if task.get("states") else None
        run = run_episode(sim, world, controller_from_spec(task["controller"]), seed=int(s), trace=trace)
        runs.append(run)
        if trace is not None:
            obs = trace.observations
            trajectories.append(Trajectory(  # every run has a first control step: the status is RUNNING at reset
                [o.dem for o in obs], [o.proprio() for o in obs], trace.targets, success=True,
                meta={"world": world.name, "seed": int(s), "level": run.level} | meta))
    out = {"runs": runs, "cpu_s": time.process_time() - cpu0}
    return out | {"trajectories": trajectories} if task.get("states") else out


def transformed_training_data(data, dem_transform: dict | None):
    """What imitation trains on (Algorithm 1 line 5): the dataset's states with their DEMs as the policy will see
    them. ``dem_transform``: None (exact DEMs), ``{"kind": "gan", "path": CKPT or None}`` (G(x); None: the
    identity), optionally with ``"real_masks": {"config": MaskBorrowing dict, "datasets": [real datasets], "seed":
    S}`` (G's heights under NaN masks borrowed from the real DEMs, ``perception.real_masks``) and ``"exact_share": P,
    "seed": S`` (a random share P of the DEMs left exact) and ``"randomize_share": Q, "randomization":
    DomainRandomization dict`` (a disjoint random share Q domain-randomised from the exact DEMs instead) and
    ``"shadows": True, "randomization": DomainRandomization dict`` (G's DEMs also lose the cells the exact terrain
    hides from the lidar; the exact and randomised shares are not touched), or ``{"kind": "randomize", "config":
    DomainRandomization dict, "seed": S}`` (the domain-randomisation baseline). Either kind may name ``"views": V``:
    the states V times, each copy with its own draws (``_view``); the first copy is what V = 1 gives."""
    if not dem_transform:
        return data
    arrays = data.arrays()
    views = int(dem_transform.get("views", 1))
    if views == 1:
        return _transformed_arrays(arrays, dem_transform)
    import numpy as np

    copies = [_transformed_arrays({k: v.copy() for k, v in arrays.items()}, _view(dem_transform, v)) for v in range(views)]
    # the copies of a trajectory keep its id, so imitation's split puts all of them on one side
    return {key: np.concatenate([c[key] for c in copies]) for key in copies[0]}


def _view(dem_transform: dict, v: int) -> dict:
    """The transform of copy ``v``: copy 0 is the transform itself; the others draw from seeds derived from the
    transform's seed and ``v`` (the split, the randomisation, the borrowed masks) and from G's noise seed ``v``."""
    if v == 0:
        return dem_transform
    import numpy as np

    def derived(seed) -> int:
        return int(np.random.SeedSequence([int(seed), 0x76696577, v]).generate_state(1, np.uint64)[0])

    out = {**dem_transform, "gan_seed": v}
    if "seed" in out:
        out["seed"] = derived(out["seed"])
    if out.get("real_masks"):
        out["real_masks"] = {**out["real_masks"], "seed": derived(out["real_masks"]["seed"])}
    return out


def _transformed_arrays(arrays: dict, dem_transform: dict) -> dict:
    """One copy of ``transformed_training_data``: ``arrays`` (``TrajectoryDataset.arrays()``) with its DEMs
    transformed as ``dem_transform`` says (its ``views`` ignored)."""
    if dem_transform["kind"] == "gan":
        exact = arrays["dem"]
        if dem_transform.get("path"):
            from perception.map_clock import trajectory_ages

            # every planned trajectory begins at its world's start, where a run's map begins
            arrays["dem"] = _transform(dem_transform["path"]).transform(exact, arrays["proprio"],
                                                                        seed=dem_transform.get("gan_seed"),
                                                                        map_age=trajectory_ages(arrays["traj_id"]))
        if dem_transform.get("real_masks"):
            arrays["dem"] = _with_real_masks(arrays["dem"], exact, arrays, dem_transform["real_masks"])
        if dem_transform.get("shadows"):
            arrays["dem"] = with_shadows(arrays["dem"], exact, arrays["proprio"][:, 0], dem_transform.get("randomization"))
        exact_share, randomize_share = dem_transform.get("exact_share", 0.0), dem_transform.get("randomize_share", 0.0)
        if exact_share or randomize_share:
            import numpy as np

            # one draw per DEM splits the set: [0, exact) exact, [exact, exact + randomised) randomised, the rest G's.
            # Writing into arrays["dem"] is safe even when it is ``exact``: arrays() concatenates, a fresh array
            u = np.random.default_rng([int(dem_transform["seed"]), 11]).random(len(exact))
            keep = u < exact_share  # these DEMs stay the simulator's own, all cells seen
            arrays["dem"][keep] = exact[keep]
            pick = ~keep & (u < exact_share + randomize_share)
            if pick.any():  # a small dataset may draw none
                arrays["dem"][pick] = _randomized(exact[pick], arrays["proprio"][pick, 0], dem_transform.get("randomization"),
                                                  np.random.default_rng([int(dem_transform["seed"]), 12]))
    elif dem_transform["kind"] == "randomize":
        import numpy as np

        arrays["dem"] = _randomized(arrays["dem"], arrays["proprio"][:, 0], dem_transform.get("config"),
                                    np.random.default_rng(int(dem_transform["seed"])))
    else:
        raise ValueError(f"unknown DEM transform {dem_transform['kind']!r}; allowed: gan, randomize")
    return arrays


def _randomized(dems, pitch, config: dict | None, rng):
    """``dems`` domain-randomised (``perception.domain_randomization``) under a DomainRandomization dict (None: its
    defaults), the mount turned by each DEM's ``pitch``."""
    from perception.domain_randomization import DomainRandomization, randomize

    return randomize(dems, rng, DomainRandomization.from_dict(config or {}), pitch=pitch)


def with_shadows(dems, exact, pitch, config: dict | None):
    """``dems`` with NaN also where the terrain of ``exact`` hides a cell from the lidar's nominal mount turned by each
    DEM's ``pitch`` (``perception.domain_randomization.geometric_occlusion`` under a DomainRandomization dict)."""
    import numpy as np

    from perception.domain_randomization import DomainRandomization, geometric_occlusion

    hidden = geometric_occlusion(exact, pitch, DomainRandomization.from_dict(config or {}))
    return np.where(hidden, np.float32(np.nan), dems)  # a new array: with no generator (G_0), ``dems`` is ``exact``


def _steps(traj_id):
    """Each sample's index in its trajectory, from the ``traj_id`` of ``TrajectoryDataset.arrays`` (contiguous runs)."""
    import numpy as np

    starts = np.flatnonzero(np.r_[True, traj_id[1:] != traj_id[:-1]]) if len(traj_id) else np.zeros(0, np.int64)
    return np.arange(len(traj_id)) - np.repeat(starts, np.diff(np.r_[starts, len(traj_id)]))


def _with_real_masks(dems, exact, arrays: dict, spec: dict):
    """``dems`` (G's output) with its NaN cells refilled from ``exact``, then masked by borrowed real NaN masks;
    ``arrays``: the training arrays (their pitch and trajectory ids)."""
    import numpy as np

    from perception.map_clock import STATE_PERIOD_S
    from perception.real_masks import MaskBorrowing, borrow_real_masks, pitch_change_ahead
    from planning.dataset import TrajectoryDataset

    if not spec.get("datasets"):
        raise ValueError("real_masks: no real dataset to borrow NaN masks from (the loop collects one before iteration 1)")
    real = [TrajectoryDataset.load(path).arrays() for path in spec["datasets"]]
    masks = np.concatenate([np.isnan(r["dem"]) for r in real])
    real_pitch = np.concatenate([r["proprio"][:, 0] for r in real])
    heights = np.where(np.isnan(dems), exact, dems)
    config = MaskBorrowing.from_dict(spec.get("config") or {})
    ahead = real_ahead = None
    if config.ahead_s > 0:  # both sets hold one state per control period
        steps = round(config.ahead_s / STATE_PERIOD_S)
        ahead = pitch_change_ahead(arrays["proprio"][:, 0], arrays["traj_id"], steps)
        real_ahead = np.concatenate([pitch_change_ahead(r["proprio"][:, 0], r["traj_id"], steps) for r in real])
    try:
        return borrow_real_masks(heights, arrays["proprio"][:, 0], masks, real_pitch,
                                 np.random.default_rng(int(spec["seed"])), config,
                                 step=_steps(arrays["traj_id"]), real_step=np.concatenate([_steps(r["traj_id"]) for r in real]),
                                 control_dt=STATE_PERIOD_S, ahead=ahead, real_ahead=real_ahead)
    except ValueError as exc:  # name the files: the core only sees arrays
        raise ValueError(f"real_masks from {', '.join(map(str, spec['datasets']))}: {exc}") from exc


def train_task(task: dict) -> dict:
    """Train one candidate policy: ``{dataset: PATH, imitation: dict, seed, out: CKPT path, metadata: dict}``, and
    optionally ``dem_transform`` (see ``transformed_training_data``).

    Skips training when a complete checkpoint with the same seed, data hash and DEM transform is already at
    ``out`` (a resumed loop). Returns ``{"report": dict, "cpu_s": float, "path": str}``.
    """
    import json

    from flipper_control.checkpoint import checkpoint_paths, save_policy
    from flipper_control.learning.imitation import train_policy
    from flipper_control.learning.imitation_config import ImitationConfig
    from planning.dataset import TrajectoryDataset

    out = Path(task["out"])
    _, sidecar = checkpoint_paths(out)
    meta = dict(task.get("metadata", {}))
    if task.get("dem_transform"):
        meta["dem_transform"] = task["dem_transform"]
    if sidecar.is_file():
        try:
            old = json.loads(sidecar.read_text())["metadata"]
            if (old.get("seed") == task["seed"] and old.get("data_sha256") == meta.get("data_sha256")
                    and old.get("dem_transform") == meta.get("dem_transform")):
                return {"report": old["train_report"], "cpu_s": 0.0, "path": str(out), "resumed": True}
        except (ValueError, KeyError):
            pass  # unreadable: train again and overwrite
    cpu0 = time.process_time()
    data = transformed_training_data(TrajectoryDataset.load(task["dataset"]), task.get("dem_transform"))
    config = ImitationConfig.from_dict(task["imitation"])
    policy, report = train_policy(data, config, seed=int(task["seed"]))
    rep = report.to_dict()
    rep.pop("loss_history", None)
    save_policy(out, policy, {**meta, "seed": int(task["seed"]), "train_report": rep})
    return {"report": rep, "cpu_s": time.process_time() - cpu0, "path": str(out), "resumed": False}
