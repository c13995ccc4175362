"""Tolerant reading of rosbag2 files: ``BagReader`` reads what it can and its ``BagReport`` says what it could not.

``BagReader`` reads what it can: messages that do not deserialise are skipped and counted, a bag without
``metadata.yaml`` (a killed ``ros2 bag record``) or with a truncated or corrupt storage file is read
record by record (``perception.bag_salvage``) around the damage, and a ``BagReport`` says what was skipped,
and what was lost per topic and where. A damaged bag is never read quietly short: rosbags' MCAP reader ends
a chunk without an error at junk in it, so its pass is checked against the index's message counts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from rosbags.rosbag2 import Reader

from perception import bag_salvage
from perception.bag_io import BagError, MissingTopicError, describe_topics
from perception.messages import TOPIC_TYPES, typestore
from perception.salvage_lost import Lost

__all__ = ["BagMessage", "BagReader", "BagReport"]


class BagMessage(NamedTuple):
    """One message read from a bag: topic, log time (ns since the Unix epoch), the deserialised message."""

    topic: str
    log_ns: int
    msg: Any


@dataclass
class BagReport:
    """What reading a bag found: its topics, what was read, what was skipped and why (JSON-ready)."""

    path: str
    topics: dict[str, str] = field(default_factory=dict)  # topic -> type name
    read: Counter = field(default_factory=Counter)  # topic -> messages delivered
    skipped: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # reason -> topic -> count
    errors: list[str] = field(default_factory=list)  # storage-level damage, in words
    salvaged: bool = False  # read record by record (no index, or a damaged file)

    def skip(self, reason: str, topic: str, n: int = 1) -> None:
        """Count ``n`` messages of ``topic`` skipped for ``reason``."""
        self.skipped[reason][topic] += n

    @property
    def n_skipped(self) -> int:
        """Messages skipped for any reason."""
        return sum(sum(c.values()) for c in self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types."""
        return {"path": self.path, "topics": dict(self.topics), "read": dict(self.read),
                "skipped": {r: dict(c) for r, c in self.skipped.items()}, "errors": list(self.errors),
                "salvaged": self.salvaged}


class BagReader:
    """Reads messages of chosen topics from a bag folder, or a single ``.mcap``/``.db3`` file.

    An intact bag is read through rosbags' indexed reader (messages in log-time order). A bag that
    rosbags cannot open, whose reading breaks off, or whose reading delivers fewer messages than its index
    promised, is read record by record from its storage files (file order, which is arrival order for
    recorders), past the damage where the files' indexes locate what follows it. What is lost is counted per
    topic and ``report.errors`` says where (file, byte offset or SQLite rows, log times).
    Messages that fail to deserialise, or whose type is unknown, are skipped and counted.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"{self.path}: no such bag (a rosbag2 folder, .mcap or .db3 file)")
        self.report = BagReport(str(self.path))
        self._reader: Reader | None = None
        self._counts: dict[str, int] = {}
        try:
            reader = Reader(self.path)
            reader.open()
            self._reader = reader
            for conn in reader.connections:
                self.report.topics.setdefault(conn.topic, conn.msgtype)
                self._counts[conn.topic] = self._counts.get(conn.topic, 0) + conn.msgcount
        except Exception as exc:  # noqa: BLE001 - rosbags raises several types for damaged bags
            self.report.salvaged = True
            self.report.errors.append(f"rosbags could not open the bag ({exc}); reading it record by record")
            self._salvage_index()

    def _salvage_index(self) -> None:
        files = bag_salvage.storage_files(self.path)
        if not files:
            raise BagError(f"{self.path}: no .mcap or .db3 storage file found")
        for f in files:
            topics, errors = bag_salvage.list_topics(f)
            for topic, typename in topics.items():
                self.report.topics.setdefault(topic, typename)
            # in the words messages() will use, so that reading the bag does not repeat them
            self.report.errors.extend(e for e in errors if e not in self.report.errors)
        # metadata.yaml, where there is one, still says which topics and how many messages the bag held
        for topic, typename in bag_salvage.metadata_topics(self.path).items():
            self.report.topics.setdefault(topic, typename)
        self._counts = bag_salvage.metadata_counts(self.path)

    def close(self) -> None:
        """Close the underlying rosbags reader (the report stays)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def custom_data(self) -> dict[str, str]:
        """The recorder's ``custom_data`` (metadata.yaml), e.g. world and seed of a proxy recording; may be empty."""
        data = bag_salvage.read_metadata(self.path).get("custom_data") if self.path.is_dir() else None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    @property
    def counts(self) -> dict[str, int]:
        """topic -> messages the bag's index (or its metadata.yaml, for a salvaged bag) says it holds; may be empty."""
        return dict(self._counts)

    @property
    def topics(self) -> dict[str, str]:
        """topic -> type name of every topic the bag has (as far as it could be read)."""
        return dict(self.report.topics)

    def require(self, topics: Iterable[str]) -> None:
        """Raise MissingTopicError naming the missing topics and listing the ones the bag has; raise BagError when
        one has another type than the topic's (``messages.TOPIC_TYPES``): its messages lack the fields read."""
        topics = list(topics)
        missing = [t for t in topics if t not in self.report.topics]
        if missing:
            raise MissingTopicError(f"{self.path}: no {', '.join(missing)} in the bag; its topics: "
                                    f"{describe_topics(self.report.topics, self._counts or None)}")
        wrong = [f"{t} is {self.report.topics[t]}, expected {TOPIC_TYPES[t]}" for t in topics
                 if t in TOPIC_TYPES and self.report.topics[t] != TOPIC_TYPES[t]]
        if wrong:
            raise BagError(f"{self.path}: {'; '.join(wrong)} (remap the topic, or record it with that type)")

    def _decode(self, topic: str, typename: str, raw: bytes | memoryview) -> Any | None:
        store = typestore()
        if typename not in store.types:
            self.report.skip(f"unknown type {typename}", topic)
            return None
        try:
            return store.deserialize_cdr(raw, typename)
        except Exception:  # noqa: BLE001 - garbage CDR raises anything from struct.error to IndexError
            self.report.skip("does not deserialise", topic)
            return None

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Deserialised messages of ``topics`` (default: all), skipping what cannot be read (see ``report``).

        The indexed pass (log-time order) is checked against the index's message counts when it ends: rosbags
        ends a chunk without an error at junk in its records, so a pass that delivers fewer messages than the
        index promised is treated like one that broke off. Either way the rest is read record by record and
        comes after what the indexed pass delivered (so not in log-time order); once a bag is known to be
        damaged, later calls read it record by record from the start (file order, which is arrival order for
        recorders). What is still missing is counted per topic ("lost to storage damage") and described in
        ``report.errors`` with where it was, as far as the files' indexes say.
        """
        wanted = set(self.report.topics if topics is None else topics)
        delivered: Counter[tuple[str, int]] = Counter()  # (topic, log time) of what the indexed pass gave
        got: Counter[str] = Counter()  # topic -> messages found in this call, readable or not
        if self._reader is not None and not self.report.salvaged:
            conns = [c for c in self._reader.connections if c.topic in wanted]
            try:
                for conn, log_ns, raw in self._reader.messages(connections=conns):
                    m = self._decode(conn.topic, conn.msgtype, raw)
                    delivered[(conn.topic, log_ns)] += 1
                    got[conn.topic] += 1
                    if m is not None:
                        self.report.read[conn.topic] += 1
                        yield BagMessage(conn.topic, log_ns, m)
            except Exception as exc:  # noqa: BLE001 - storage damage surfaces as any of several types
                self.report.salvaged = True
                self.report.errors.append(f"reading broke off ({type(exc).__name__}: {exc}); "
                                          "reading the rest record by record")
            else:
                short = {t: (got[t], self._counts[t]) for t in sorted(wanted) if got[t] < self._counts.get(t, 0)}
                if not short:
                    return
                self.report.salvaged = True
                self.report.errors.append("the indexed read ended early without an error ("
                                          + ", ".join(f"{t} {n} of {c}" for t, (n, c) in short.items())
                                          + "); reading the rest record by record")
        # record by record; what the indexed pass delivered before it broke off is not repeated
        errors: list[str] = []
        lost: list[Lost] = []
        for f in bag_salvage.storage_files(self.path):
            for topic, typename, log_ns, raw in bag_salvage.iter_records(f, wanted, errors, lost):
                if delivered[(topic, log_ns)]:
                    delivered[(topic, log_ns)] -= 1
                    continue
                got[topic] += 1
                m = self._decode(topic, typename, raw)
                if m is not None:
                    self.report.read[topic] += 1
                    yield BagMessage(topic, log_ns, m)
        self.report.errors.extend(e for e in errors if e not in self.report.errors)
        # what the indexed pass read (its keys stay in the Counter) is not lost, whatever the salvage reader thinks
        lost = [x for x in lost if x.topic is None or (x.topic, x.log_ns) not in delivered]
        for topic in sorted(wanted):  # what the bag's index promised but could not be read
            n = self._counts.get(topic, 0) - got[topic]
            if n > 0:
                self.report.skip("lost to storage damage", topic, n)
                line = _loss_line(topic, n, self._counts[topic], lost)
                if line not in self.report.errors:
                    self.report.errors.append(line)


def _seconds(ns: int) -> str:
    return f"{ns / 1e9:.3f}"


def _span(values: list[int], fmt=str) -> str:
    lo, hi = min(values), max(values)
    return fmt(lo) if lo == hi else f"{fmt(lo)}-{fmt(hi)}"


def _loss_line(topic: str, n: int, count: int, lost: list[Lost]) -> str:
    """'/points: 12 of 31 messages lost to storage damage (where, as far as the indexes say)'."""
    groups: dict[tuple[str, int | None], list[Lost]] = defaultdict(list)
    for x in lost:
        if x.topic == topic or x.topic is None:
            groups[(x.file, x.chunk if x.topic is not None else None)].append(x)
    parts = []
    for (file, chunk), items in groups.items():
        times = [x.log_ns for x in items if x.log_ns is not None]
        offsets = [x.offset for x in items if x.offset is not None]
        if items[0].topic is None:  # SQLite rows: the damage hid their topics
            rows = [x.row for x in items if x.row is not None]
            text = f"{file}: among {len(items)} rows of unknown topic lost to damaged pages"
            text += (f", row {rows[0]}" if len(rows) == 1 else f", rows {_span(rows)}" if rows else "")
        else:
            text = f"{file}: {len(items)}" + (f" in the chunk at byte {chunk}" if chunk is not None else "")
            text += (f", record at byte {offsets[0]}" if len(offsets) == 1 else
                     f", records at bytes {_span(offsets)}" if offsets else "")
        text += f", log times {_span(times, _seconds)} s" if times else ""
        parts.append(text)
    where = "; ".join(parts) if parts else "not located by any index that survived; see the damage reported above"
    return f"{topic}: {n} of {count} messages lost to storage damage ({where})"
