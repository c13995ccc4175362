"""Record-by-record reading of a damaged MCAP storage file (https://mcap.dev/spec), for ``perception.bag_salvage``.

An MCAP file is magic, then records ``opcode u8, length u64, body``; schemas, channels and messages may sit at
top level or inside chunk records (uncompressed, zstd or lz4). A chunk cut off by the end of the file still gives
the whole records it holds when it is uncompressed. Where the file's end (footer, summary) is intact, its chunk
indexes locate the chunks after a damaged stretch, and each chunk's message indexes locate the messages after
damage inside the chunk.
"""

from __future__ import annotations

import bisect
import mmap
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from perception.salvage_lost import Lost

__all__ = ["iter_mcap_records", "list_mcap_topics"]

MCAP_MAGIC = b"\x89MCAP0\r\n"
_IN_CHUNK = (0x03, 0x04, 0x05)  # what a chunk may hold: schemas, channels, messages
_LOST = -1  # pseudo-opcode of the walkers: a message the file's index lists whose record cannot be read


class _ChunkIndex(NamedTuple):
    """A chunk index record (0x08) of the summary: where a chunk is and what it holds."""

    start_ns: int
    end_ns: int
    offset: int  # of the chunk record in the file
    length: int  # of the whole chunk record
    index_offsets: dict[int, int]  # channel id -> file offset of its message index record
    compression: str
    compressed_size: int
    uncompressed_size: int


def _string(body, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", body, pos)
    pos += 4
    if pos + n > len(body):
        raise struct.error("string runs past its record")
    return bytes(body[pos:pos + n]).decode("utf-8"), pos + n


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        try:
            from compression import zstd  # Python >= 3.14
        except ImportError:
            from backports import zstd  # what rosbags itself uses before 3.14
        return zstd.decompress(data)[:size]
    if compression == "lz4":
        from lz4.frame import decompress  # a dependency of rosbags

        return decompress(data)[:size]
    raise ValueError(f"chunk compression {compression!r} is not supported (only none, zstd and lz4)")


def _header(data, pos: int) -> tuple[int, int] | None:
    """(opcode, body length) of the record at ``pos``, or None when not even its 9-byte header is there."""
    if pos + 9 > len(data):
        return None
    return data[pos], struct.unpack_from("<Q", data, pos + 1)[0]


class _McapFile:
    """One MCAP file, memory-mapped, walked from the front record by record.

    Damage is found where a record cannot be what it claims: an opcode that is no MCAP record, a length that
    runs past its container, a message on an undeclared channel, outside its chunk's time range (as the summary
    says) or off the offsets its channel's message index lists. Where the
    file's end (footer and summary) is intact, its chunk indexes locate the chunks after a damaged stretch and
    each chunk's message indexes locate the messages after damage inside the chunk, so only what the damage
    covers is lost, and the index names each lost message (channel, log time, offset).
    """

    def __init__(self, data, name: str, errors: list[str]):
        self.data, self.name, self.errors = data, name, errors
        self.chunks: dict[int, _ChunkIndex] = {}
        self.summary_records: list[tuple[int, bytes]] = []  # schemas and channels, repeated in the summary
        self.summary_start: int | None = None
        self.declared: set[int] = set()  # channel ids seen in channel records
        self._read_summary()

    # -------------------------------------------------------------- the file's end: footer and summary
    def _read_summary(self) -> None:
        data, end = self.data, len(self.data)
        footer = end - 8 - 29  # footer record: opcode, length 20, summary start, summary offset start, crc
        if footer < 8 or data[end - 8:end] != MCAP_MAGIC or _header(data, footer) != (0x02, 20):
            return
        (start,) = struct.unpack_from("<Q", data, footer + 9)
        if not 8 <= start < footer:
            return
        self.summary_start = start
        pos = start
        while (h := _header(data, pos)) is not None and pos + 9 + h[1] <= footer:
            op, length = h
            body = bytes(data[pos + 9:pos + 9 + length])
            pos += 9 + length
            try:
                if op in (0x03, 0x04):
                    self.summary_records.append((op, body))
                    if op == 0x04:
                        self.declared.add(struct.unpack_from("<H", body, 0)[0])
                elif op == 0x08:
                    self._chunk_index(body)
            except (struct.error, UnicodeDecodeError):
                continue  # a damaged summary record only costs what it would have located

    def _chunk_index(self, body: bytes) -> None:
        start_ns, end_ns, offset, length = struct.unpack_from("<QQQQ", body, 0)
        (n,) = struct.unpack_from("<I", body, 32)
        offsets = {cid: off for cid, off in struct.iter_unpack("<HQ", body[36:36 + n])} if n % 10 == 0 else {}
        compression, pos = _string(body, 36 + n + 8)
        compressed, uncompressed = struct.unpack_from("<QQ", body, pos)
        # a chunk record holds at least its header (49 bytes): a smaller length is a damaged index, never followed
        if 8 <= offset and 49 <= length and offset + length <= len(self.data):
            self.chunks[offset] = _ChunkIndex(start_ns, end_ns, offset, length, offsets, compression, compressed,
                                              uncompressed)

    def _next_chunk(self, pos: int) -> int | None:
        later = [c for c in self.chunks if c > pos]
        return min(later) if later else None

    # -------------------------------------------------------------- top level
    def records(self) -> Iterator[tuple[int, Any]]:
        """(opcode, body) of every readable record, descending into chunks; ``(_LOST, (channel, log_ns, offset,
        chunk))`` for each indexed message that cannot be read. Schemas and channels of the summary come first,
        so messages whose channel record is damaged still find their topic."""
        yield from self.summary_records
        data, end, intact_end = self.data, len(self.data), self.summary_start is not None
        pos = 8
        while pos < end:
            h = _header(data, pos)
            if h is None:
                self.errors.append(f"{self.name}: truncated after byte {pos} of {end} ({end - pos} bytes of a record "
                                   "header lost)")
                return
            op, length = h
            body_start = pos + 9
            fits = body_start + length <= end
            if op == 0x02 and fits:  # footer: the end of the data
                return
            if pos in self.chunks and not (op == 0x06 and fits and 9 + length == self.chunks[pos].length):
                # a chunk whose record header is damaged: the summary still knows where its records are
                ci = self.chunks[pos]
                self.errors.append(f"{self.name}: the header of the chunk at byte {pos} is damaged (opcode 0x{op:02x}, "
                                   f"length {length}); its records are read where the summary's chunk index puts them")
                yield from self._chunk(pos, ci.length - 9, header_ok=False)
                pos += ci.length
                continue
            if fits and 0x01 <= op <= 0x0F and not (op == 0x05 and not self._message_ok(data[body_start:body_start + 22])):
                if op == 0x06:
                    yield from self._chunk(pos, length, header_ok=True)
                else:
                    if op == 0x04 and length >= 2:
                        self.declared.add(struct.unpack_from("<H", data, body_start)[0])
                    yield op, data[body_start:body_start + length]
                pos = body_start + length
                continue
            if not fits and not intact_end:  # the file was cut short (a killed recorder, a partial copy)
                if op == 0x06:
                    yield from self._partial_chunk(data[body_start:], f"{self.name} (cut-off chunk at byte {pos})")
                self.errors.append(f"{self.name}: truncated at byte {end}: a record of {length} bytes (opcode 0x{op:02x}) "
                                   f"starting at byte {pos} is incomplete")
                return
            if intact_end and pos >= self.summary_start:
                self.errors.append(f"{self.name}: a record at byte {pos} of the summary section is damaged (opcode "
                                   f"0x{op:02x}, length {length}); the data before it was read")
                return
            nxt = self._next_chunk(pos)
            what = (f"a record at byte {pos} is damaged (opcode 0x{op:02x}, length {length}"
                    + (", runs past the end of the file)" if not fits else ")"))
            if nxt is None:
                self.errors.append(f"{self.name}: {what}; " + (
                    f"no chunk after it: bytes {pos}-{self.summary_start} unread" if intact_end else
                    "nothing after it can be located (the file has no intact summary)"))
                return
            self.errors.append(f"{self.name}: {what}; resumed at the next chunk, at byte {nxt} (bytes {pos}-{nxt} unread)")
            pos = nxt

    def _message_ok(self, head) -> bool:
        """A top-level (unchunked) message header names a declared channel (when channels are known)."""
        return len(head) >= 22 and (not self.declared or struct.unpack_from("<H", head, 0)[0] in self.declared)

    # -------------------------------------------------------------- chunks
    def _message_indexes(self, chunk_pos: int, chunk_end: int) -> dict[int, tuple[int, int]]:
        """offset in the chunk's records -> (channel id, log time) from the chunk's message index records: those the
        summary's chunk index points to, else those that follow the chunk record."""
        data, out = self.data, {}
        ci = self.chunks.get(chunk_pos)
        if ci is not None and ci.index_offsets:
            positions = sorted(ci.index_offsets.values())
        else:
            positions, pos = [], chunk_end
            while (h := _header(data, pos)) is not None and h[0] == 0x07 and pos + 9 + h[1] <= len(data):
                positions.append(pos)
                pos += 9 + h[1]
        for pos in positions:
            h = _header(data, pos)
            if h is None or h[0] != 0x07 or pos + 9 + h[1] > len(data) or h[1] < 6:
                self.errors.append(f"{self.name}: the message index at byte {pos} (chunk at byte {chunk_pos}) is damaged")
                continue
            cid, n = struct.unpack_from("<HI", data, pos + 9)
            if n % 16 or 6 + n > h[1]:
                self.errors.append(f"{self.name}: the message index at byte {pos} (chunk at byte {chunk_pos}) is damaged")
                continue
            for log_ns, off in struct.iter_unpack("<QQ", data[pos + 15:pos + 15 + n]):
                out[off] = (cid, log_ns)
        return out

    def _chunk(self, pos: int, length: int, header_ok: bool) -> Iterator[tuple[int, Any]]:
        """The records of the chunk record at ``pos`` (body ``length`` bytes), resuming after damage at the next
        message its message index lists; then a _LOST record for every indexed message not read."""
        data, ci = self.data, self.chunks.get(pos)
        where = f"{self.name}: chunk at byte {pos}"
        index = self._message_indexes(pos, pos + 9 + length)
        body_start = pos + 9
        try:
            if not header_ok:
                raise struct.error("header damaged")
            size, crc = struct.unpack_from("<QI", data, body_start + 16)
            compression, rpos = _string(data, body_start + 28)
            (n,) = struct.unpack_from("<Q", data, rpos)
            rpos += 8
            if rpos + n > body_start + length:
                raise struct.error("records run past the chunk")
        except (struct.error, UnicodeDecodeError):
            if ci is None:
                self.errors.append(f"{where}: chunk skipped (its header is damaged and the file has no intact summary)")
                yield from self._lost_all(index, pos)
                return
            if header_ok:  # (a header damaged up to its length was reported by the caller)
                self.errors.append(f"{where}: its header is damaged; its records are read where the summary's chunk "
                                   "index puts them")
            size, crc, compression, n = ci.uncompressed_size, 0, ci.compression, ci.compressed_size
            rpos = body_start + 8 + 8 + 8 + 4 + 4 + len(compression.encode()) + 8
        try:
            records = _decompress(bytes(data[rpos:rpos + n]), compression, size)
        except Exception as exc:  # noqa: BLE001 - decompressor errors of every kind
            self.errors.append(f"{where}: chunk skipped ({exc})")
            yield from self._lost_all(index, pos)
            return
        if crc and zlib.crc32(records) != crc:
            self.errors.append(f"{where}: chunk skipped (CRC mismatch)")
            yield from self._lost_all(index, pos)
            return
        base = rpos if compression == "" else None  # file offset of the records, where they are stored as they are
        # the time range from the summary, not from the header: junk in the header's times must not reject the chunk
        span = (ci.start_ns, ci.end_ns) if ci is not None else None
        yield from self._chunk_records(records, index, span, base, pos, where)

    def _partial_chunk(self, body, where: str) -> Iterator[tuple[int, Any]]:
        """The whole records of an uncompressed chunk whose end is missing (a cut-off file: no message index)."""
        try:
            compression, pos = _string(body, 28)
        except (struct.error, UnicodeDecodeError):
            return
        if compression != "":
            self.errors.append(f"{where}: a cut-off {compression} chunk cannot be read")
            return
        sink: list[str] = []  # the cut inside the chunk is the file's truncation, reported once by the caller
        errors, self.errors = self.errors, sink
        try:
            yield from self._chunk_records(body[pos + 8:], {}, None, None, None, where)
        finally:
            self.errors = errors

    def _chunk_records(self, records, index: dict[int, tuple[int, int]], span: tuple[int, int] | None, base: int | None,
                       chunk: int | None, where: str) -> Iterator[tuple[int, Any]]:
        """Walk a chunk's records; at a record that cannot be what it claims, skip to the next offset the message
        index lists (one error per damaged stretch); then _LOST for every indexed message not read."""
        pos, end = 0, len(records)
        resume = sorted(index)
        read: set[int] = set()
        indexed = {cid for cid, _ in index.values()}
        bad_from: int | None = None  # start of the damaged stretch being skipped

        def at(p: int) -> str:
            return f"byte {base + p}" if base is not None else f"byte {p} of its decompressed records"

        while pos < end:
            h = _header(records, pos)
            ok = h is not None and h[0] in _IN_CHUNK and pos + 9 + h[1] <= end
            if ok and h[0] == 0x05:
                ok = h[1] >= 22
                if ok:
                    cid, _, log_ns = struct.unpack_from("<HIQ", records, pos + 9)
                    known = cid in self.declared or cid in indexed or not (self.declared or indexed)
                    # a channel with a message index must list this record there (else we are off the records' grid)
                    ok = (known and (span is None or span[0] <= log_ns <= span[1] or span[0] > span[1])
                          and (cid not in indexed or pos in index))
            if not ok:
                bad_from = pos if bad_from is None else bad_from
                i = bisect.bisect_right(resume, pos)
                if i == len(resume):
                    break
                pos = resume[i]
                continue
            if bad_from is not None:
                self.errors.append(f"{where}: damaged from {at(bad_from)} to {at(pos)} (resumed at the next message "
                                   "its index lists)")
                bad_from = None
            op, length = h
            if op == 0x04 and length >= 2:
                self.declared.add(struct.unpack_from("<H", records, pos + 9)[0])
            elif op == 0x05:
                read.add(pos)
            yield op, records[pos + 9:pos + 9 + length]
            pos += 9 + length
        if bad_from is not None:
            self.errors.append(f"{where}: damaged from {at(bad_from)}; the rest of the chunk ({end - bad_from} bytes) "
                               + ("holds no readable message its index lists" if resume else
                                  "cannot be located (no message index)"))
        for off in sorted(set(index) - read):
            cid, log_ns = index[off]
            yield _LOST, (cid, log_ns, None if base is None else base + off, chunk)

    def _lost_all(self, index: dict[int, tuple[int, int]], chunk: int) -> Iterator[tuple[int, Any]]:
        for _, (cid, log_ns) in sorted(index.items()):
            yield _LOST, (cid, log_ns, None, chunk)


def _mcap_records(path: Path, errors: list[str]) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as fh:
        if path.stat().st_size < len(MCAP_MAGIC) or fh.read(8) != MCAP_MAGIC:
            errors.append(f"{path.name}: not an MCAP file (bad magic or empty)")
            return
        # mapped, not read: a bag of clouds can be far larger than memory; slices copy one record at a time
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield from _McapFile(data, path.name, errors).records()


def iter_mcap_records(path: Path, wanted: set[str] | None, errors: list[str],
                      lost: list[Lost] | None) -> Iterator[tuple[str, str, int, bytes]]:
    """``bag_salvage.iter_records`` of an MCAP file."""
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
                    yield topic, typename, log_ns, bytes(body[22:])
            elif op == _LOST and lost is not None:
                cid, log_ns, offset, chunk = body
                topic = channels.get(cid, (None, ""))[0]
                if topic is not None and (wanted is None or topic in wanted):
                    lost.append(Lost(path.name, topic, log_ns, offset, chunk))
        except (struct.error, UnicodeDecodeError) as exc:
            errors.append(f"{path.name}: a malformed record (opcode 0x{op:02x}) skipped ({exc})")
    if unknown:
        errors.append(f"{path.name}: {unknown} messages on channels never declared were skipped")


def list_mcap_topics(path: Path) -> tuple[dict[str, str], list[str]]:
    """``bag_salvage.list_topics`` of an MCAP file: its schema and channel records, as far as they can be read."""
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
    return topics, errors
