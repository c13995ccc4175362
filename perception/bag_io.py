"""rosbag2 files for the learning loop: what the recorder and the tolerant reader share.

The errors, the epoch of the stamps, the storages, the tf frames and the ``Transform`` edge, and naming a bag's
storage and its topics. The recorder is ``perception.bag_writer`` (the leftovers of killed recordings:
``perception.bag_partials``), the reader ``perception.bag_reader`` (damaged storage files: ``perception.bag_salvage``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from rosbags.rosbag2 import StoragePlugin

from perception import bag_salvage

__all__ = ["BagError", "DEFAULT_EPOCH", "FRAMES", "MissingTopicError", "STORAGES", "Transform", "storage_of"]

# 2023-11-14 22:13:20 UTC: stamps of a recording from the proxy look like wall-clock stamps of a robot
DEFAULT_EPOCH = 1_700_000_000.0
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
# REP 105 frames, plus the sensors' own (the URDF's imu_link; the lidar's optical centre)
FRAMES = {"map": "map", "odom": "odom", "base": "base_link", "lidar": "lidar", "imu": "imu_link"}


class BagError(ValueError):
    """A bag that cannot be written or read; the message names the bag and the problem."""


class MissingTopicError(BagError):
    """A bag lacks a topic that the caller needs; the message lists the topics the bag has."""


class Transform(NamedTuple):
    """One tf edge: ``child`` expressed in ``parent``; ``quat`` is (w, x, y, z) as in ``sim``."""

    parent: str
    child: str
    translation: Sequence[float]
    quat: Sequence[float]


def describe_topics(topics: dict[str, str], counts: dict[str, int] | None = None) -> str:
    """'/a (type, n messages), /b (...)' for error messages; '(none)' for an empty bag."""
    if not topics:
        return "(none)"
    return ", ".join(f"{t} ({typ}" + (f", {counts[t]} messages)" if counts and t in counts else ")")
                     for t, typ in sorted(topics.items()))


def storage_of(path: str | Path) -> str:
    """'mcap' or 'sqlite3': the storage of a bag folder or file (by its storage files)."""
    files = bag_salvage.storage_files(Path(path))
    if not files:
        raise BagError(f"{path}: no .mcap or .db3 storage file found")
    return "sqlite3" if files[0].suffix == ".db3" else "mcap"
