"""The ``transfer:`` section of a loop config (``TransferConfig``): which variant of Algorithm 1's sim-to-real half
runs and with what settings.

Kept apart from the steps that run it (``flipper_control.learning.transfer``) so that loop configs, the trainer node
and tests read and check a ``transfer:`` section without the machinery behind it. Nested sections are built with
``sim.config_io.in_section``, so an error names its path in the file (``transfer.gan: epochs must be ...``); the
controllers and world names it gives are checked here, before any work starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from perception.domain_randomization import DomainRandomization
from perception.gan_training import GanTrainConfig
from perception.real_masks import MaskBorrowing
from sim.config_io import config_from_mapping, in_section
from sim.reality_config import RealityProxyConfig

__all__ = ["MODES", "TransferConfig"]

MODES = ("gan", "identity", "randomize")


def _gan_default() -> GanTrainConfig:
    return GanTrainConfig(epochs=20)


@dataclass(frozen=True)
class TransferConfig:
    """The ``transfer:`` section of a loop config (see the module docstring)."""

    mode: str = "gan"  # gan, identity or randomize
    worlds: str = "training"  # the generated set the proxy (real) and simulated rollouts drive on
    real_runs: int = 8  # proxy runs per collection of real trajectories (one per world)
    real_every: int = 2  # K: new real trajectories with the newest policy every K iterations (line 9)
    initial_controller: str = "heuristic"  # pi_0 of line 2: drives the first collection
    sim_runs: int = 8  # rollouts of each new policy in simulation (line 6), one per world
    gan: GanTrainConfig = field(default_factory=_gan_default)
    randomization: DomainRandomization = field(default_factory=DomainRandomization)
    proxy_eval_worlds: tuple[str, ...] = ("test", "proxy")  # scored on the reality proxy (Table II: proxy)
    proxy_eval_runs: int = 3
    proxy_eval_every: int = 0  # also score on the proxy every N iterations; 0: the last iteration only
    proxy_baselines: tuple[str, ...] = ("heuristic",)  # reference controllers scored once on the proxy (Table II)
    reality: RealityProxyConfig | None = None  # the proxy's settings (RealityProxyConfig fields); None: today's
    # mode gan: imitation also puts real DEMs' NaN masks on the training DEMs (perception.real_masks); None: off
    real_masks: MaskBorrowing | None = None
    # mode gan: the share of imitation's DEMs kept exact (the simulator's heights, not G's): G cannot know what the
    # robot saw before (a map begun at the start or long before it), so a policy that learnt on G(x) alone may
    # answer a better-seen map wrongly (docs/sim2real_experiments.md, "The map's history"); 0: G(x) only
    exact_share: float = 0.0
    # modes gan and identity: the share of imitation's DEMs domain-randomised (``randomization`` applied to the exact
    # DEM) instead of passed through G (identity: left exact): G learnt how many cells the lidar misses but not which,
    # randomisation places them by geometry (docs/sim2real_experiments.md, "G and randomisation together"); 0: G(x) only
    randomize_share: float = 0.0
    # modes gan and identity: the DEMs passed through G (identity: left exact) also lose the cells the terrain hides
    # from the mast (``randomization``'s nominal mount turned by the pitch: ``geometric_occlusion`` of the exact DEM),
    # added to G's own NaN: G places its NaN almost at random, the lidar's shadows lie behind edges
    # (docs/sim2real_experiments.md, "G's DEMs with the terrain's shadows"); False: G's NaN only
    gan_shadows: bool = False
    # mode gan: every GAN update is also judged on same-pose pairs of exact and reality-proxy DEMs from heuristic runs
    # on this many generated worlds (collected once per run, pairs/; flipper_control.learning.paired_eval), where the
    # sets differ in sensing only: the loop's unpaired held-out sets differ in content too, so much that two halves of
    # the real set are told apart as well as G(x_s) is (docs/sim2real_experiments.md); 0: off. Evaluation only.
    paired_worlds: int = 4
    # mode gan: every GAN update sets ``gan.height_offset`` (how far above the simulator the real sensor reads the
    # ground) to its estimate from the update's own unpaired sets, against the ground under the tracks
    # (flipper_control.learning.sensor_offset); False: ``gan.height_offset`` as given (default 0)
    estimate_height_offset: bool = False
    # imitation trains on this many transformed copies of each planned state, each with its own draws (G's per-DEM
    # noise, the randomisation, the split into exact / randomised / G's shares, the borrowed masks): a policy that
    # saw one draw per state may learn that draw's holes; samples_per_epoch keeps the training cost flat. 1: one draw
    dem_views: int = 1
    # every iteration scored on the proxy (proxy_eval_every, and the last) also drives deploy_runs runs on each of
    # deploy_worlds generated ``deploy_set`` worlds held out from the test worlds, the training worlds and the
    # collections; the report deploys the iteration that scores best there (ties: the later one). The proxy's test
    # worlds then judge a policy chosen without them, as a robot's own test drives would choose a checkpoint. That
    # driving is real data used: it counts in driving_s. 0: off (the loop's last policy is the one deployed)
    deploy_worlds: int = 0
    deploy_set: str = "steep_kinds"  # each kind of flipper obstacle in turn (sim.world_sets)
    deploy_runs: int = 1

    def __post_init__(self) -> None:
        sections = {"gan": GanTrainConfig.from_dict, "randomization": DomainRandomization.from_dict,
                    "reality": lambda d: RealityProxyConfig.from_dict(d, "reality"), "real_masks": MaskBorrowing.from_dict}
        for name, build in sections.items():
            if isinstance(getattr(self, name), dict):
                object.__setattr__(self, name, in_section(name, build, getattr(self, name)))
        for name in ("proxy_eval_worlds", "proxy_baselines"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        from flipper_control.controllers import make_controller
        from sim.world_sets import GENERATED_SETS, resolve_worlds

        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.worlds not in GENERATED_SETS:
            problems.append(f"worlds must be one of {', '.join(GENERATED_SETS)}, got {self.worlds!r}")
        if self.deploy_set not in GENERATED_SETS:
            problems.append(f"deploy_set must be one of {', '.join(GENERATED_SETS)}, got {self.deploy_set!r}")
        dw = self.deploy_worlds
        if not (isinstance(dw, int) and not isinstance(dw, bool) and dw >= 0):
            problems.append(f"deploy_worlds must be an integer >= 0 (0: off), got {dw!r}")
        elif dw > 0 and isinstance(self.proxy_eval_every, int) and self.proxy_eval_every == 0:
            problems.append(f"deploy_worlds {dw} needs proxy_eval_every > 0: the deployed policy is chosen among the "
                            "iterations scored on the proxy, and with 0 that is the last one alone")
        for name in ("real_runs", "real_every", "sim_runs", "proxy_eval_runs", "deploy_runs"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                problems.append(f"{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.exact_share, bool) or not isinstance(self.exact_share, int | float) \
                or not 0.0 <= self.exact_share <= 1.0:
            problems.append(f"exact_share must be a fraction in [0, 1], got {self.exact_share!r}")
        elif self.exact_share > 0 and self.mode != "gan":
            problems.append(f"exact_share needs mode gan (the other modes train on exact or randomised DEMs), got mode "
                            f"{self.mode!r}")
        if isinstance(self.randomize_share, bool) or not isinstance(self.randomize_share, int | float) \
                or not 0.0 <= self.randomize_share <= 1.0:
            problems.append(f"randomize_share must be a fraction in [0, 1], got {self.randomize_share!r}")
        elif self.randomize_share > 0 and self.mode == "randomize":
            problems.append(f"randomize_share needs mode gan or identity (mode randomize randomises every DEM; set it to "
                            f"0 there), got {self.randomize_share}")
        elif not any(p.startswith("exact_share") for p in problems) and self.exact_share + self.randomize_share > 1.0:
            problems.append(f"exact_share + randomize_share must be at most 1, got {self.exact_share} + "
                            f"{self.randomize_share}")
        if not isinstance(self.gan_shadows, bool):
            problems.append(f"gan_shadows must be true or false, got {self.gan_shadows!r}")
        elif self.gan_shadows and self.mode == "randomize":
            problems.append("gan_shadows needs mode gan or identity (mode randomize already hides the shadows, with "
                            "its jittered mount); set it to false there")
        if self.real_masks is not None and self.mode != "gan":
            problems.append(f"real_masks needs mode gan (the only mode that drives real trajectories), got mode {self.mode!r}")
        if not isinstance(self.estimate_height_offset, bool):
            problems.append(f"estimate_height_offset must be true or false, got {self.estimate_height_offset!r}")
        elif self.estimate_height_offset and self.mode != "gan":
            problems.append(f"estimate_height_offset needs mode gan (the only mode that trains a GAN), got mode {self.mode!r}")
        elif self.estimate_height_offset and self.gan.height_offset != 0:
            problems.append(f"estimate_height_offset replaces gan.height_offset ({self.gan.height_offset}): set one of them")
        dv = self.dem_views
        if not (isinstance(dv, int) and not isinstance(dv, bool) and 1 <= dv <= 8):
            problems.append(f"dem_views must be an integer in [1, 8], got {dv!r}")
        elif dv > 1 and self.mode == "identity" and self.randomize_share == 0:
            problems.append(f"dem_views {dv} needs a transform that draws (mode gan or randomize, or identity with "
                            "randomize_share > 0): mode identity alone would train on identical copies")
        pw = self.paired_worlds
        if not (isinstance(pw, int) and not isinstance(pw, bool) and (pw == 0 or pw >= 2)):
            problems.append(f"paired_worlds must be 0 (off) or an integer >= 2 (one world shows one kind of terrain), "
                            f"got {pw!r}")
        if not (isinstance(self.proxy_eval_every, int) and self.proxy_eval_every >= 0):
            problems.append(f"proxy_eval_every must be an integer >= 0, got {self.proxy_eval_every!r}")
        controllers = [("initial_controller", self.initial_controller)] + [("proxy_baselines", b) for b in self.proxy_baselines]
        for name, value in controllers:
            kind, _, posture = value.partition(":")
            try:
                make_controller(kind, posture or None)
            except ValueError as exc:
                problems.append(f"{name} {value!r}: {exc}")
        if problems:
            raise ValueError("transfer config: " + "; ".join(problems))
        resolve_worlds(list(self.proxy_eval_worlds))  # unknown world names fail here, before any work

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gan"], d["randomization"] = self.gan.to_dict(), self.randomization.to_dict()
        d["reality"] = self.reality.to_dict() if self.reality is not None else None
        d["real_masks"] = self.real_masks.to_dict() if self.real_masks is not None else None
        d["proxy_eval_worlds"], d["proxy_baselines"] = list(self.proxy_eval_worlds), list(self.proxy_baselines)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransferConfig:
        return config_from_mapping(cls, data, "transfer config")

