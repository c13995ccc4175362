"""What the record-by-record reading of a damaged storage file could not read: the ``Lost`` record.

The MCAP and SQLite walkers (``perception.salvage_mcap``, ``perception.salvage_sqlite``) append one per message an
index lists but the damage took; ``BagReader`` says from them where its losses were.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Lost"]


class Lost(NamedTuple):
    """A message a storage file's index lists but whose record is damaged, and where it was.

    ``topic`` is None where the damage hides it (a SQLite row on a damaged page); ``offset`` is the byte offset
    of the record in the file (None inside a compressed chunk, or for SQLite); ``chunk`` the byte offset of its
    MCAP chunk record; ``row`` its SQLite row id; ``log_ns`` its log time, where an index still says it.
    """

    file: str
    topic: str | None
    log_ns: int | None
    offset: int | None = None
    chunk: int | None = None
    row: int | None = None
