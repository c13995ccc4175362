"""Damaged bags: junk inside an MCAP chunk (which rosbags' reader stops at without an error), a damaged MCAP chunk
header, a damaged SQLite page. Whatever the damage costs must be counted per topic, located, and shown by
``ingest``/``replay`` and their commands; what lies after the damage must still be read."""

from __future__ import annotations

import random
import re
import shutil
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest

from flipper_control.cli import main
from flipper_control.controllers import make_controller
from flipper_control.learning.bags import ingest, record_proxy_run, replay
from perception.bag_reader import BagReader
from perception.bag_writer import BagRecorder
from sim.world import world_from_dict

# a 0.8 m course with a 0.1 m step: about 30 control steps (3 simulated s) per recording
SHORT = world_from_dict({"name": "short_step", "length": 0.8, "time_limit": 3.0,
                         "terrain": [{"type": "step", "position": [0.5, 0.0], "height": 0.1, "width": 2.0}]})
LOST = "lost to storage damage"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One short proxy run recorded in each storage."""
    root = tmp_path_factory.mktemp("bags")
    return {storage: record_proxy_run(SHORT, make_controller("heuristic"), root / storage, storage, seed=1)["bag"]
            for storage in ("mcap", "sqlite3")}


def _copy(bag: str | Path, dst: Path) -> tuple[Path, Path]:
    shutil.copytree(bag, dst)
    (f,) = [p for p in dst.iterdir() if p.suffix in (".mcap", ".db3")]
    return dst, f


def _overwrite(f: Path, offset: int, junk: bytes) -> None:
    data = bytearray(f.read_bytes())
    data[offset:offset + len(junk)] = junk
    f.write_bytes(bytes(data))


def _junk(n: int = 4096) -> bytes:
    junk = bytearray(random.Random(0).randbytes(n))
    # no MCAP opcode, and a length below 2**63 (as half of all junk has): rosbags skips the "record" by that length,
    # lands past the chunk's end and ends the chunk quietly
    junk[0], junk[8] = 0xA7, junk[8] & 0x7F
    return bytes(junk)


def _index_read(bag: Path, topics: list[str] | None = None) -> tuple[dict[str, int], list, object]:
    with BagReader(bag) as reader:
        counts = reader.counts
        msgs = list(reader.messages(topics))
    return counts, msgs, reader.report


def _points_record(f: Path, log_ns: int) -> int:
    """File offset of the MCAP message record of the cloud logged at ``log_ns``: the largest record whose log
    and publish times (equal in rosbags' writer) are ``log_ns`` -- /tf, /imu/data and /joint_states share the time."""
    data = f.read_bytes()
    pattern, found, start = struct.pack("<QQ", log_ns, log_ns), [], 0
    while (i := data.find(pattern, start)) >= 0:
        head = i - 15  # opcode u8, length u64, channel u16, sequence u32, then the two times
        if data[head] == 0x05:
            found.append((struct.unpack_from("<Q", data, head + 1)[0], head))
        start = i + 1
    assert found, "no message record at that log time"
    return max(found)[1]


def _assert_every_topic_accounted(report, counts: dict[str, int]) -> None:
    """read + skipped (deserialisation, damage) == what the index promised, topic by topic."""
    for topic, n in counts.items():
        assert report.read[topic] + sum(c[topic] for c in report.skipped.values()) == n, topic


# ------------------------------------------------------------------------------------------ MCAP
def test_junk_inside_an_mcap_chunk_is_reported_per_topic_and_what_follows_is_read(recorded, tmp_path):
    counts, intact, _ = _index_read(Path(recorded["mcap"]))
    clouds = [m.log_ns for m in intact if m.topic == "/points"]
    victim = clouds[len(clouds) // 2]
    bag, f = _copy(recorded["mcap"], tmp_path / "bag")
    at = _points_record(f, victim)
    _overwrite(f, at, _junk())

    _, msgs, rep = _index_read(bag)
    # rosbags' own pass stopped at the junk without an error; the reader noticed by the index's counts
    assert rep.salvaged and "the indexed read ended early without an error" in rep.errors[0]
    _assert_every_topic_accounted(rep, counts)
    lost = rep.skipped[LOST]
    assert lost["/points"] >= 1 and rep.read["/points"] + lost["/points"] == counts["/points"] == len(clouds)
    got = {m.log_ns for m in msgs if m.topic == "/points"}
    assert victim not in got
    assert clouds[-1] in got and len(got) >= len(clouds) - 3  # the clouds after the damage were read record by record
    line = next(e for e in rep.errors if e.startswith("/points: "))
    assert line.startswith(f"/points: {lost['/points']} of {counts['/points']} messages lost to storage damage ({f.name}: ")
    assert f"record at byte {at}" in line or f"records at bytes {at}-" in line  # where: the file and byte offset
    assert f"{victim / 1e9:.3f}" in line  # and the log time of the lost cloud
    assert any(e.startswith(f"{f.name}: chunk at byte ") and f"damaged from byte {at} to byte " in e for e in rep.errors)


def test_ingest_and_replay_of_a_damaged_mcap_say_what_was_lost(recorded, tmp_path, capsys):
    counts, intact, _ = _index_read(Path(recorded["mcap"]))
    clouds = [m.log_ns for m in intact if m.topic == "/points"]
    bag, f = _copy(recorded["mcap"], tmp_path / "bag")
    _overwrite(f, _points_record(f, clouds[len(clouds) // 2]), _junk())

    out = ingest([bag], tmp_path / "data")
    rep = out["bags"][0]
    n_lost = rep["skipped"][LOST]["/points"]
    assert n_lost >= 1 and n_lost + rep["read"]["/points"] == counts["/points"]
    assert any(e.startswith(f"/points: {n_lost} of {counts['/points']} messages lost") for e in rep["errors"])
    assert rep["samples"] >= counts["/flipper_controller/commands"] - 4  # not half the run, as before

    assert main(["ingest", str(bag), "--out", str(tmp_path / "data2")]) == 0
    printed = capsys.readouterr().out
    assert "DAMAGED: " in printed and f"/points: {n_lost} of {counts['/points']} messages lost" in printed

    assert main(["replay", str(bag), "--out", str(tmp_path / "replayed")]) == 0
    printed = capsys.readouterr().out
    assert "input damaged: " in printed and f"/points: {n_lost} of {counts['/points']} messages lost" in printed
    out = replay(bag, tmp_path / "replayed2")
    assert out["read"]["skipped"][LOST]["/points"] == n_lost
    assert out["messages"]["/elevation_map"] == counts["/points"] - n_lost  # a DEM for every cloud that was read


def test_a_damaged_chunk_header_is_passed_by_the_summary_and_later_chunks_are_read(tmp_path):
    bag = tmp_path / "bag"
    with BagRecorder(bag, "mcap") as rec:  # 3.6 MB of clouds: chunks of just over 1 MiB
        for k in range(30):
            rec.points(0.1 * k, np.random.default_rng(k).normal(size=(10_000, 3)))
            rec.flipper_commands(0.1 * k, [0.0, 0.0, 0.0, float(k)])
    (f,) = bag.glob("*.mcap")
    data, pos, chunks = f.read_bytes(), 8, []
    while data[pos] != 0x02:  # the top-level records up to the footer
        if data[pos] == 0x06:
            chunks.append(pos)
        pos += 9 + struct.unpack_from("<Q", data, pos + 1)[0]
    assert len(chunks) >= 3
    _overwrite(f, chunks[1], b"\xff" * 40)  # opcode, length and times of the second chunk's header

    counts, msgs, rep = _index_read(bag, ["/flipper_controller/commands"])
    assert rep.salvaged and any(f"the header of the chunk at byte {chunks[1]} is damaged" in e for e in rep.errors)
    assert [int(m.msg.data[3]) for m in msgs] == list(range(30))  # the header held no message: nothing lost
    assert LOST not in rep.skipped
    _assert_every_topic_accounted(rep, {"/flipper_controller/commands": counts["/flipper_controller/commands"]})


# ------------------------------------------------------------------------------------------ SQLite
def test_a_damaged_sqlite_page_is_reported_per_topic_with_rows_and_times(recorded, tmp_path, capsys):
    counts, intact, _ = _index_read(Path(recorded["sqlite3"]))
    bag, f = _copy(recorded["sqlite3"], tmp_path / "bag")
    con = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
    page = con.execute("PRAGMA page_size").fetchone()[0]
    row_id, victim, blob = con.execute("SELECT m.id, m.timestamp, m.data FROM messages m JOIN topics t ON t.id = m.topic_id "
                                       "WHERE t.name = '/points' ORDER BY m.id LIMIT 1 OFFSET 15").fetchone()
    con.close()
    at = f.read_bytes().find(blob[:256])  # the leaf page holding the start of a cloud's row
    assert at > 0
    _overwrite(f, at - at % page, random.Random(1).randbytes(page))

    _, msgs, rep = _index_read(bag)
    assert rep.salvaged
    _assert_every_topic_accounted(rep, counts)
    lost = rep.skipped[LOST]
    assert lost["/points"] >= 1 and victim not in {m.log_ns for m in msgs if m.topic == "/points"}
    line = next(e for e in rep.errors if e.startswith("/points: "))
    assert line.startswith(f"/points: {lost['/points']} of {counts['/points']} messages lost to storage damage ({f.name}: ")
    where = re.search(r"rows of unknown topic lost to damaged pages, rows? (\d+)(?:-(\d+))?, log times ([\d.]+)(?:-([\d.]+))? s",
                      line)
    assert where, line  # which rows, and when (the damage hides their topics)
    rows = [int(x) for x in where.groups()[:2] if x]
    times = [float(x) for x in where.groups()[2:] if x]
    assert rows[0] <= row_id <= rows[-1] and times[0] - 1e-3 <= victim / 1e9 <= times[-1] + 1e-3
    assert max(m.log_ns for m in msgs) == max(m.log_ns for m in intact)  # the rows after the damaged page were read

    assert main(["ingest", str(bag), "--out", str(tmp_path / "data")]) == 0
    printed = capsys.readouterr().out
    assert "DAMAGED: " in printed and f"/points: {lost['/points']} of {counts['/points']} messages lost" in printed
