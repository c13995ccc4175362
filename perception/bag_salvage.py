"""Record-by-record reading of damaged rosbag2 storage files: what the damage does not cover is kept.

rosbags opens an MCAP file from its summary at the end and a SQLite file through its page count, so a
recording cut short (a killed recorder, a full disk, a partial copy) does not open at all; and junk inside a
chunk can end rosbags' reading of that chunk without an error. These readers walk the file from the front
instead, say where the damage is, and name the messages it cost where an index still lists them (``Lost``).
This module finds a bag's storage files and reads its metadata.yaml, and hands each file to the walker of its
storage: ``perception.salvage_mcap`` or ``perception.salvage_sqlite``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from perception.salvage_lost import Lost
from perception.salvage_mcap import iter_mcap_records, list_mcap_topics
from perception.salvage_sqlite import iter_sqlite_records, list_sqlite_topics

__all__ = ["iter_records", "list_topics", "metadata_counts", "metadata_topics", "read_metadata", "storage_files"]

_SUFFIXES = (".mcap", ".db3")


def storage_files(path: Path) -> list[Path]:
    """The storage files of a bag folder in split order (``name_0``, ``name_1``, ... ``name_10``), or the file."""
    path = Path(path)
    if path.is_file():
        return [path] if path.suffix in _SUFFIXES else []
    files = [p for p in path.iterdir() if p.suffix in _SUFFIXES and p.is_file()] if path.is_dir() else []

    def split_index(p: Path) -> tuple[int, str]:
        m = re.search(r"_(\d+)$", p.stem)
        return (int(m.group(1)) if m else 0, p.name)

    return sorted(files, key=split_index)


def list_topics(path: Path) -> tuple[dict[str, str], list[str]]:
    """(topic -> type name, the damage found, each prefixed with the file's name) of one storage file, as far as
    it can be read; the damage is described in the words ``iter_records`` uses."""
    if path.suffix == ".db3":
        return list_sqlite_topics(path)
    return list_mcap_topics(path)


def iter_records(path: Path, wanted: set[str] | None, errors: list[str],
                 lost: list[Lost] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, type name, log time ns, CDR bytes) of every readable message of ``wanted`` topics (None: all)
    in file order; what could not be read is described in ``errors`` (appended to), and each message an index
    lists but the damage took is appended to ``lost`` (those of ``wanted`` topics, and those of unknown topic)."""
    if path.suffix == ".db3":
        return iter_sqlite_records(path, wanted, errors, lost)
    return iter_mcap_records(path, wanted, errors, lost)


def read_metadata(path: Path) -> dict:
    """The ``rosbag2_bagfile_information`` of a bag folder's metadata.yaml; empty when missing or unreadable."""
    meta = Path(path) / "metadata.yaml"
    if not meta.is_file():
        return {}
    try:
        info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
        return info if isinstance(info, dict) else {}
    except Exception:  # noqa: BLE001 - a damaged metadata file only costs us what it says
        return {}


def metadata_topics(path: Path) -> dict[str, str]:
    """topic -> type name from a bag folder's metadata.yaml (for a storage file too damaged to list them)."""
    try:
        return {str(t["topic_metadata"]["name"]): str(t["topic_metadata"]["type"])
                for t in read_metadata(path).get("topics_with_message_count", [])}
    except (KeyError, TypeError):
        return {}


def metadata_counts(path: Path) -> dict[str, int]:
    """topic -> message count from a bag folder's metadata.yaml; empty when it does not say."""
    try:
        return {t["topic_metadata"]["name"]: int(t["message_count"])
                for t in read_metadata(path).get("topics_with_message_count", [])}
    except (KeyError, TypeError, ValueError):
        return {}
