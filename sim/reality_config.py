"""The reality proxy's settings: its dynamics perturbation, lidar, odometry and DEM builder, as one typed config.

``RealityProxyConfig`` is what ``--reality-config FILE`` reads (``load_reality_config``: YAML through safe_load,
unknown fields and impossible values refused with the file, section and field named) and what every run on the proxy
records. Kept apart from ``sim.reality_proxy`` so that commands, loop configs and tests can read, check and write a
proxy's settings without the simulator behind them.

Layering: like ``sim.reality_proxy``, this module imports ``perception.dem_builder`` (its ``DemBuilderConfig``) on
purpose: the proxy's DEMs are built by the robot's own DEM builder, so its settings are part of the proxy's.
``test/test_layering.py`` names both imports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from perception.dem_builder import DemBuilderConfig
from sim.config_io import config_from_mapping, in_section
from sim.dem import DemSpec
from sim.lidar import LidarConfig
from sim.mujoco_sim import SimNoise
from sim.odometry import OdometryConfig


@dataclass(frozen=True)
class ProxyDynamics:
    """Seeded per-run perturbations of the robot (half-ranges of uniform draws, relative unless noted),
    wider than ``SimNoise``'s: the gap between the simulator and the real robot, not run-to-run noise.
    Flipper ``delay`` (dead time, s) and ``lag`` (first-order time constant, s) are (low, high) ranges."""

    enabled: bool = True
    friction: float = 0.30
    mass: float = 0.15
    flipper_speed: float = 0.25
    start_x: float = 0.10  # m
    start_yaw: float = 0.05  # rad
    delay: tuple[float, float] = (0.02, 0.10)
    lag: tuple[float, float] = (0.05, 0.25)

    def __post_init__(self) -> None:
        rel = [n for n in ("friction", "mass", "flipper_speed") if not 0 <= getattr(self, n) < 1]
        rng = [n for n in ("delay", "lag") if not 0 <= getattr(self, n)[0] <= getattr(self, n)[1]]
        if rel or rng or self.start_x < 0 or self.start_yaw < 0:
            raise ValueError(f"ProxyDynamics: relative half-ranges must lie in [0, 1) ({rel}), delay/lag must be "
                             f"(low, high) with 0 <= low <= high ({rng}), start offsets >= 0; got {self}")

    def sim_noise(self) -> SimNoise:
        """The part of the perturbation that the MuJoCo simulator applies itself."""
        return SimNoise(enabled=self.enabled, friction=self.friction, mass=self.mass,
                        flipper_speed=self.flipper_speed, start_x=self.start_x, start_yaw=self.start_yaw)


MAX_LEAD_IN = 10.0  # m; far more than the DEM's 2 m reach behind the robot needs


@dataclass(frozen=True)
class RealityProxyConfig:
    """Everything that defines the proxy besides the robot and the physics settings.

    ``substep``: the granularity (s) at which flipper lag, odometry and the lidar's pose advance inside
    one ``step`` (one lidar line at 50 lines/s). ``fuse_range``: returns farther than this from the
    lidar are recorded but not fused into the point map (the DEM reaches 1.3 m; far returns are sparse
    and only grow the map). ``map_voxel``/``map_max_bytes``: the point map's voxel and memory bound.
    """

    dynamics: ProxyDynamics = ProxyDynamics()
    lidar: LidarConfig = LidarConfig()
    odometry: OdometryConfig = OdometryConfig()
    dem_builder: DemBuilderConfig = field(default_factory=DemBuilderConfig)
    substep: float = 0.02
    fuse_range: float = 5.0
    map_voxel: float = 0.05
    map_max_bytes: int = 1 << 30
    self_filter_margin: float = 0.05  # m added around the robot's boxes (range noise, motion within a line)
    warmup: bool = True  # one full 3D scan at the start pose before the run, as the robot waits for it
    # metres the robot drove up to the start pose, scanning, before the run (at the world's speed, level and
    # straight along its start heading; its map kept): a robot driven up to an obstacle has seen the ground
    # behind it, one switched on in front of it has not. 0: the run starts with a fresh map (today's proxy).
    lead_in: float = 0.0

    def __post_init__(self) -> None:
        if not (self.substep > 0 and self.fuse_range > 0 and self.map_voxel > 0 and self.map_max_bytes > 0):
            raise ValueError(f"RealityProxyConfig: substep, fuse_range, map_voxel and map_max_bytes must be > 0, "
                             f"got substep={self.substep}, fuse_range={self.fuse_range}, map_voxel={self.map_voxel}, "
                             f"map_max_bytes={self.map_max_bytes}")
        if not (isinstance(self.lead_in, (int, float)) and 0 <= self.lead_in <= MAX_LEAD_IN):
            raise ValueError(f"RealityProxyConfig: lead_in must be in [0, {MAX_LEAD_IN:g}] m, got {self.lead_in!r}")

    def to_dict(self) -> dict:
        """The YAML-ready form (``from_dict`` reads it back; ``flipper`` commands take it as ``--reality-config``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "reality config") -> RealityProxyConfig:
        """A config from a mapping of its fields, nested sections as mappings (``dynamics``, ``lidar``, ``odometry``,
        ``dem_builder`` with its ``dem``); every field not given keeps today's default. Unknown fields, values of
        the wrong kind and impossible values are ValueErrors naming ``source`` and the section."""
        sections = {"dynamics": ProxyDynamics, "lidar": LidarConfig, "odometry": OdometryConfig}
        tuples = {"delay", "lag", "mount", "body_min", "body_max"}  # YAML gives lists; configs stay hashable
        try:
            if not isinstance(data, dict):
                raise ValueError(f"expected a mapping of RealityProxyConfig fields, got {type(data).__name__}")
            data = dict(data)
            for name, kind in sections.items():
                if name in data:
                    data[name] = in_section(name, lambda d, k=kind, n=name: config_from_mapping(k, _tupled(d, tuples), n),
                                            data[name])
            if "dem_builder" in data:
                builder = _tupled(data["dem_builder"], tuples)
                if isinstance(builder, dict) and "dem" in builder:
                    builder["dem"] = in_section("dem_builder.dem", lambda d: _stack_dem(config_from_mapping(DemSpec, d, "dem")),
                                                builder["dem"])
                data["dem_builder"] = in_section("dem_builder", lambda d: config_from_mapping(DemBuilderConfig, d, "dem_builder"),
                                                 builder)
            return config_from_mapping(cls, data, "RealityProxyConfig")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: {exc}") from None

    @staticmethod
    def ideal(**overrides) -> RealityProxyConfig:
        """No dynamics perturbation, no range noise or dropouts, no drift: only the lidar's geometry
        (occlusion, range, resolution) separates the proxy's DEM from the exact one."""
        cfg = RealityProxyConfig(dynamics=ProxyDynamics(enabled=False),
                                 lidar=LidarConfig(range_sigma=0.0, dropout=0.0),
                                 odometry=OdometryConfig(enabled=False))
        return replace(cfg, **overrides)


def _stack_dem(dem: DemSpec) -> DemSpec:
    """``dem`` if it is the DEM every consumer of the proxy's DEMs reads, else a ValueError saying why it may not
    change: the policies learn on the exact simulator's DEMs, the heuristic and the CycleGAN read the same grid, so a
    proxy building another one would feed all of them cells they do not expect (a reality config models the
    sensing, not the policy's input)."""
    if dem != DemSpec():
        stack = DemSpec()
        raise ValueError(f"the proxy must build the DEM that the policies, the heuristic and the "
                         f"CycleGAN read ({stack.rows} x {stack.cols} cells of {stack.resolution} m, front edge "
                         f"{stack.front} m ahead); a reality config models the sensing and may not change it, got "
                         f"{dem.rows} x {dem.cols} cells of {dem.resolution} m, front {dem.front} m")
    return dem


def _tupled(section: Any, names: set[str]) -> Any:
    if not isinstance(section, dict):
        return section
    return {k: tuple(v) if k in names and isinstance(v, list) else v for k, v in section.items()}


def load_reality_config(path: str | Path) -> RealityProxyConfig:
    """Read a reality-proxy config YAML (safe_load); errors name the file, the section and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such reality config file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not a readable YAML file ({exc})") from None
    return RealityProxyConfig.from_dict(data if data is not None else {}, str(path))
