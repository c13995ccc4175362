"""Record-by-record reading of damaged rosbag2 storage files: what precedes the damage is kept.

rosbags opens an MCAP file from its summary at the end and a SQLite file through its page count, so a
recording cut short (a killed recorder, a full disk, a partial copy) does not open at all. These readers
walk the file from the front instead and stop at the damage, saying where:

- MCAP (https://mcap.dev/spec): magic, then records ``opcode u8, length u64, body``; schemas, channels
  and messages may sit at top level or inside chunk records (uncompressed or zstd). A chunk cut off by
  the end of the file still gives the whole records it holds when it is uncompressed.
- SQLite 3 (rosbag2's ``messages``/``topics`` tables): SQLite refuses a file shorter than its header's
  page count unless ``writable_schema`` is on (the connection stays read-only and immutable); rows are
  then read in id order in batches, and a batch that hits a missing page is probed row by row.
"""

from __future__ import annotations

import mmap
import re
import sqlite3
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import yaml

__all__ = ["iter_records", "list_topics", "metadata_counts", "read_metadata", "storage_files"]

MCAP_MAGIC = b"\x89MCAP0\r\n"
_SUFFIXES = (".mcap", ".db3")
_BATCH = 256  # SQLite rows per query


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


# ------------------------------------------------------------------------------------------ MCAP
def _string(body: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", body, pos)
    pos += 4
    if pos + n > len(body):
        raise struct.error("string runs past its record")
    return body[pos:pos + n].decode("utf-8"), pos + n


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        try:
            from compression import zstd  # Python >= 3.14
        except ImportError:
            from backports import zstd  # what rosbags itself uses before 3.14
        return zstd.decompress(data)[:size]
    raise ValueError(f"chunk compression {compression!r} is not supported (only none and zstd)")


def _walk_mcap(data, start: int, errors: list[str], where: str, top: bool = True) -> Iterator[tuple[int, bytes]]:
    """(opcode, body) of the whole records in ``data[start:]`` (bytes or mmap), descending into chunks
    (``top``: ``data`` is the file, not a chunk's records); damage is described in ``errors``."""
    pos, end = start, len(data)
    while pos < end:
        if pos + 9 > end:
            errors.append(f"{where}: truncated after byte {pos} of {end} ({end - pos} bytes of a record header lost)")
            return
        op, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
        body_start = pos + 9
        if body_start + length > end:
            if op == 0x06 and top:
                yield from _partial_chunk(data[body_start:], errors, f"{where} (cut-off chunk at byte {pos})")
            errors.append(f"{where}: truncated at byte {end}: a record of {length} bytes (opcode 0x{op:02x}) "
                          f"starting at byte {pos} is incomplete")
            return
        body = data[body_start:body_start + length]
        pos = body_start + length
        if op == 0x02:  # footer: the end of the data
            return
        if op == 0x06:
            yield from _chunk(bytes(body), errors, f"{where} (chunk at byte {body_start - 9})")
        else:
            yield op, body


def _chunk(body: bytes, errors: list[str], where: str) -> Iterator[tuple[int, bytes]]:
    try:
        _, _, size, crc = struct.unpack_from("<QQQI", body, 0)
        compression, pos = _string(body, 28)
        (n,) = struct.unpack_from("<Q", body, pos)
        records = _decompress(body[pos + 8:pos + 8 + n], compression, size)
    except Exception as exc:  # noqa: BLE001 - struct, UTF-8 and decompressor errors alike
        errors.append(f"{where}: chunk skipped ({exc})")
        return
    if crc and zlib.crc32(records) != crc:
        errors.append(f"{where}: chunk skipped (CRC mismatch)")
        return
    yield from _walk_mcap(records, 0, errors, where, top=False)


def _partial_chunk(body: bytes, errors: list[str], where: str) -> Iterator[tuple[int, bytes]]:
    """The whole records of an uncompressed chunk whose end is missing."""
    try:
        compression, pos = _string(body, 28)
    except (struct.error, UnicodeDecodeError):
        return
    if compression != "":
        errors.append(f"{where}: a cut-off {compression} chunk cannot be read")
        return
    sink: list[str] = []  # the cut inside the chunk is the file's truncation, reported once by the caller
    yield from _walk_mcap(body, pos + 8, sink, where, top=False)


def _mcap_records(path: Path, errors: list[str]) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as fh:
        if path.stat().st_size < len(MCAP_MAGIC) or fh.read(8) != MCAP_MAGIC:
            errors.append(f"{path.name}: not an MCAP file (bad magic or empty)")
            return
        # mapped, not read: a bag of clouds can be far larger than memory; slices copy one record at a time
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield from _walk_mcap(data, 8, errors, path.name)


def _mcap_iter(path: Path, wanted: set[str] | None, errors: list[str]) -> Iterator[tuple[str, str, int, bytes]]:
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    unknown = 0
    for op, body in _mcap_records(path, errors):
        try:
            if op == 0x03:
                (sid,) = struct.unpack_from("<H", body, 0)
                schemas[sid] = _string(body, 2)[0]
            elif op == 0x04:
                cid, sid = struct.unpack_from("<HH", body, 0)
                topic, _ = _string(body, 4)
                channels[cid] = (topic, schemas.get(sid, ""))
            elif op == 0x05:
                cid, _, log_ns, _ = struct.unpack_from("<HIQQ", body, 0)
                if cid not in channels:
                    unknown += 1
                    continue
                topic, typename = channels[cid]
                if wanted is None or topic in wanted:
                    yield topic, typename, log_ns, body[22:]
        except (struct.error, UnicodeDecodeError) as exc:
            errors.append(f"{path.name}: a malformed record (opcode 0x{op:02x}) skipped ({exc})")
    if unknown:
        errors.append(f"{path.name}: {unknown} messages on channels never declared were skipped")


# ------------------------------------------------------------------------------------------ SQLite
def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    con.execute("PRAGMA writable_schema=ON")  # read a file shorter than its header says (never written)
    return con


def _sqlite_topics(con: sqlite3.Connection) -> dict[int, tuple[str, str]]:
    return {int(i): (str(n), str(t)) for i, n, t in con.execute("SELECT id, name, type FROM topics")}


def _sqlite_iter(path: Path, wanted: set[str] | None, errors: list[str]) -> Iterator[tuple[str, str, int, bytes]]:
    try:
        con = _connect(path)
        topics = _sqlite_topics(con)
    except sqlite3.DatabaseError as exc:
        errors.append(f"{path.name}: unreadable SQLite file ({exc})")
        return
    try:
        try:
            max_id = con.execute("SELECT max(id) FROM messages").fetchone()[0]
        except sqlite3.DatabaseError:
            max_id = None  # the right edge of the table is gone: read until the rows run out
        lost, first, bad_rows, cut_at = 0, 1, 0, None
        query = "SELECT id, topic_id, timestamp, data FROM messages WHERE id >= ? AND id < ? ORDER BY id"
        while max_id is None or first <= max_id:
            last = first + _BATCH if max_id is None else min(first + _BATCH, max_id + 1)
            failed: list[int] = []
            try:
                rows = con.execute(query, (first, last)).fetchall()
            except sqlite3.DatabaseError:  # a page of this batch is missing: take the rows one by one
                rows = []
                for i in range(first, last):
                    try:
                        rows.extend(con.execute(query, (i, i + 1)).fetchall())
                    except sqlite3.DatabaseError:
                        failed.append(i)
            first = last
            if max_id is None and not rows:  # without max(id), the first batch with no row is the end
                cut_at = failed[0] if failed else None
                break
            lost += len(failed)
            for _, topic_id, log_ns, data in rows:
                if topic_id not in topics or not isinstance(data, bytes) or not isinstance(log_ns, int):
                    bad_rows += 1  # a damaged page can yield rows of garbage
                    continue
                topic, typename = topics[topic_id]
                if wanted is None or topic in wanted:
                    yield topic, typename, log_ns, data
        if lost:
            errors.append(f"{path.name}: {lost} rows on damaged or missing pages were skipped")
        if cut_at is not None:
            errors.append(f"{path.name}: no row readable from id {cut_at} on (the file ends early or its last pages "
                          "are damaged)")
        if bad_rows:
            errors.append(f"{path.name}: {bad_rows} malformed rows were skipped")
    finally:
        con.close()


# ------------------------------------------------------------------------------------------ both
def list_topics(path: Path) -> tuple[dict[str, str], str | None]:
    """(topic -> type name, an error or None) of one storage file, as far as it can be read."""
    if path.suffix == ".db3":
        try:
            con = _connect(path)
            try:
                return {n: t for n, t in _sqlite_topics(con).values()}, None
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            return {}, f"unreadable SQLite file ({exc})"
    errors: list[str] = []
    topics: dict[str, str] = {}
    schemas: dict[int, str] = {}
    for op, body in _mcap_records(path, errors):
        try:
            if op == 0x03:
                schemas[struct.unpack_from("<H", body, 0)[0]] = _string(body, 2)[0]
            elif op == 0x04:
                _, sid = struct.unpack_from("<HH", body, 0)
                topics.setdefault(_string(body, 4)[0], schemas.get(sid, ""))
        except (struct.error, UnicodeDecodeError):
            continue
    return topics, ("; ".join(errors) or None)


def iter_records(path: Path, wanted: set[str] | None, errors: list[str]) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, type name, log time ns, CDR bytes) of every readable message of ``wanted`` topics (None: all)
    in file order; what could not be read is described in ``errors`` (appended to)."""
    if path.suffix == ".db3":
        return _sqlite_iter(path, wanted, errors)
    return _mcap_iter(path, wanted, errors)


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


def metadata_counts(path: Path) -> dict[str, int]:
    """topic -> message count from a bag folder's metadata.yaml; empty when it does not say."""
    try:
        return {t["topic_metadata"]["name"]: int(t["message_count"])
                for t in read_metadata(path).get("topics_with_message_count", [])}
    except (KeyError, TypeError, ValueError):
        return {}
