"""Record-by-record reading of a damaged SQLite 3 storage file (rosbag2's ``messages``/``topics`` tables), for
``perception.bag_salvage``.

SQLite refuses a file shorter than its header's page count unless ``writable_schema`` is on (the connection stays
read-only and immutable); rows are then read in id order in batches, and a batch that hits a missing page is
probed row by row. The ``timestamp_idx`` index, stored apart from the rows, still gives the log times of rows it
cannot read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from perception.salvage_lost import Lost

__all__ = ["iter_sqlite_records", "list_sqlite_topics"]

_BATCH = 256  # SQLite rows per query


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    con.execute("PRAGMA writable_schema=ON")  # read a file shorter than its header says (never written)
    return con


def _sqlite_topics(con: sqlite3.Connection) -> dict[int, tuple[str, str]]:
    return {int(i): (str(n), str(t)) for i, n, t in con.execute("SELECT id, name, type FROM topics")}


def _index_times(con: sqlite3.Connection) -> dict[int, int]:
    """row id -> log time from rosbag2's ``timestamp_idx`` (a covering index: its pages are apart from the rows',
    so it can outlive their damage); what it gives before its own damage, empty without it."""
    times: dict[int, int] = {}
    try:
        for i, t in con.execute("SELECT id, timestamp FROM messages INDEXED BY timestamp_idx"):
            if isinstance(i, int) and isinstance(t, int):
                times[i] = t
    except sqlite3.DatabaseError:
        pass
    return times


def _rows_text(ids: list[int], times: dict[int, int]) -> str:
    """'rows 120-128, log times 1700000001.200-1700000001.400 s' (as far as the timestamp index says)."""
    stamps = [times[i] for i in ids if i in times]
    rows = f"row {ids[0]}" if len(ids) == 1 else f"rows {min(ids)}-{max(ids)}"
    return rows + (f", log times {min(stamps) / 1e9:.3f}-{max(stamps) / 1e9:.3f} s" if stamps else "")


def iter_sqlite_records(path: Path, wanted: set[str] | None, errors: list[str],
                        lost: list[Lost] | None) -> Iterator[tuple[str, str, int, bytes]]:
    """``bag_salvage.iter_records`` of a SQLite file."""
    try:
        con = _connect(path)
        topics = _sqlite_topics(con)
    except sqlite3.DatabaseError as exc:
        errors.append(f"{path.name}: unreadable SQLite file ({exc})")
        return
    times: dict[int, int] | None = None  # the timestamp index: which rows exist, and their log times
    try:
        try:
            max_id = con.execute("SELECT max(id) FROM messages").fetchone()[0]
        except sqlite3.DatabaseError:  # the right edge of the table is gone: the index may still know it
            max_id = -1
        # a damaged page can also give a garbage maximum; no row takes fewer than 8 bytes of the file
        if max_id is not None and not (isinstance(max_id, int) and 0 <= max_id <= path.stat().st_size // 8):
            times = _index_times(con)
            max_id = max(times) if times else None  # None: read until the rows run out
        returned = bytearray((max_id or 0) + 1)  # 1 where a query gave the row (rowids of rosbag2 run 1, 2, ...)
        failed: list[int] = []
        first, bad_rows, cut_at = 1, 0, None
        query = "SELECT id, topic_id, timestamp, data FROM messages WHERE id >= ? AND id < ? ORDER BY id"
        while max_id is None or first <= max_id:
            last = first + _BATCH if max_id is None else min(first + _BATCH, max_id + 1)
            failed_here: list[int] = []
            try:
                rows = con.execute(query, (first, last)).fetchall()
            except sqlite3.DatabaseError:  # a page of this batch is missing: take the rows one by one
                rows = []
                for i in range(first, last):
                    try:
                        rows.extend(con.execute(query, (i, i + 1)).fetchall())
                    except sqlite3.DatabaseError:
                        failed_here.append(i)
            first = last
            if max_id is None and not rows:  # without max(id), the first batch with no row is the end
                cut_at = failed_here[0] if failed_here else None
                break
            failed += failed_here
            if len(returned) < last:
                returned.extend(bytes(last - len(returned)))
            for row_id, topic_id, log_ns, data in rows:
                returned[row_id] = 1
                if topic_id not in topics or not isinstance(data, bytes) or not isinstance(log_ns, int):
                    bad_rows += 1  # a damaged page can yield rows of garbage
                    continue
                topic, typename = topics[topic_id]
                if wanted is None or topic in wanted:
                    yield topic, typename, log_ns, data
        times = _index_times(con) if times is None else times
        # rows that exist (the index lists them, or their id is below the table's largest) but no query gave: a
        # damaged interior page can hide a whole run of rows from SQLite without an error
        expected = sorted(times) if times else range(1, (max_id or 0) + 1)
        failed_set = set(failed)
        hidden = [i for i in expected if (i >= len(returned) or not returned[i]) and i not in failed_set
                  and (cut_at is None or i < cut_at)]
        if failed:
            errors.append(f"{path.name}: {len(failed)} rows on damaged or missing pages were skipped "
                          f"({_rows_text(failed, times)})")
        if hidden:
            source = "the timestamp index lists" if times else f"with ids up to the table's largest ({max_id})"
            errors.append(f"{path.name}: {len(hidden)} rows {source} could not be found (a damaged page hides them: "
                          f"{_rows_text(hidden, times)})")
        if cut_at is not None:
            after = sorted(i for i in times if i >= cut_at)
            hidden += after
            errors.append(f"{path.name}: no row readable from id {cut_at} on (the file ends early or its last pages "
                          "are damaged)" + (f"; the timestamp index lists {len(after)} more ({_rows_text(after, times)})"
                                            if after else ""))
        if bad_rows:
            errors.append(f"{path.name}: {bad_rows} malformed rows were skipped")
        if lost is not None:  # which topic a lost row had is on the lost page itself
            lost.extend(Lost(path.name, None, times.get(i), row=i) for i in sorted(failed + hidden))
    finally:
        con.close()


def list_sqlite_topics(path: Path) -> tuple[dict[str, str], list[str]]:
    """``bag_salvage.list_topics`` of a SQLite file: its ``topics`` table."""
    try:
        con = _connect(path)
        try:
            return {n: t for n, t in _sqlite_topics(con).values()}, []
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return {}, [f"{path.name}: unreadable SQLite file ({exc})"]
