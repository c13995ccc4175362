"""The map's age for nodes that transform a stream of DEMs through a G with the map-age input
(``perception.cyclegan``, ``GanConfig.map_age_s``): ``MapClock`` counts seconds from the first DEM stamp, and
``takes_map_age`` tells such a G from other transforms. No torch import, so that nodes load it cheaply."""

from __future__ import annotations

__all__ = ["MapClock", "takes_map_age"]


def takes_map_age(transform) -> bool:
    """Whether a ``SimToReal``-like callable wants the map's age (a G with ``map_age_s`` > 0); plain callables do not."""
    return bool(getattr(transform, "map_age_s", 0.0))


class MapClock:
    """Seconds since the first DEM stamp seen. A stamp earlier than that first one (a simulator reset, a bag played
    again) starts a new map there."""

    def __init__(self):
        self.start_ns: int | None = None

    def age(self, stamp_ns: int) -> float:
        """The map's age at a DEM stamped ``stamp_ns`` (ns)."""
        if self.start_ns is None or stamp_ns < self.start_ns:
            self.start_ns = int(stamp_ns)
        return (int(stamp_ns) - self.start_ns) / 1e9
