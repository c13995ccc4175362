"""Leftovers of killed recordings: finding and removing the hidden folders ``BagRecorder`` writes into.

A recording killed outright (SIGKILL, a power cut) leaves its hidden ``.NAME.XXXX.partial`` folder behind.
Each such folder holds a marker naming its writer (pid, host, boot, process start), so that
``partial_bags``/``stale_partials`` can tell a leftover (writer gone) from a recording still running, the next
recorder into the same folder warns about leftovers, and ``remove_stale_partials`` removes only leftovers.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["PARTIAL_SUFFIX", "WRITER_MARKER", "PartialBag", "partial_bags", "remove_stale_partials", "stale_partials",
           "writer_record"]

PARTIAL_SUFFIX = ".partial"
WRITER_MARKER = ".flipper-writer.json"  # inside a .partial folder: who is writing it


def _boot_id() -> str | None:
    """This boot of this machine (Linux): a pid recorded before a reboot says nothing about processes after it."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (Linux: field 22 of /proc/PID/stat, clock ticks since boot); None where unknown.
    Tells a reused pid from the writer that had it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def writer_record() -> dict[str, Any]:
    """The marker of a recording's folder: who writes it (read back by ``_writer_state``)."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "boot_id": _boot_id(), "process_start": _process_start(pid),
            "started": time.time()}


# A recorder creates its .partial folder, then writes the marker into it: for that moment a parallel recorder (the
# loop records several runs at once) sees a folder without a marker; it is not taken for a leftover this young.
MARKER_GRACE_S = 60.0


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _writer_state(info: dict[str, Any] | None) -> str:
    """'live' (the writer runs), 'stale' (it is gone), 'unknown' (no readable marker, or another host's writer)."""
    if not isinstance(info, dict) or info.get("host") != socket.gethostname():
        return "unknown"
    pid = info.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return "unknown"
    boot = _boot_id()
    if info.get("boot_id") and boot and info["boot_id"] != boot:
        return "stale"  # the machine rebooted since: nothing of that boot runs
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return "stale"
    except PermissionError:
        pass  # it exists, run by another user
    start, now = info.get("process_start"), _process_start(pid)
    if start and now and start != now:
        return "stale"  # the pid was reused by another process
    return "live"


class PartialBag(NamedTuple):
    """A hidden ``.NAME.XXXX.partial`` folder of a recording: the bag it was to become (``target``, a sibling
    path), its writer's marker (None where missing or unreadable) and ``state``: 'live', 'stale' or 'unknown'."""

    path: Path
    target: Path
    writer: dict[str, Any] | None
    state: str

    def describe(self) -> str:
        w = self.writer or {}
        who = (f"pid {w.get('pid')} on {w.get('host')}" if w else "no writer marker")
        return f"{self.path} ({self.state}: {who}; was to become {self.target.name})"


def partial_bags(parent: str | Path) -> list[PartialBag]:
    """Every ``.NAME.XXXX.partial`` folder directly in ``parent`` (none when ``parent`` is missing), by name."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    out = []
    for p in sorted(parent.iterdir()):
        name = p.name
        if not (name.startswith(".") and name.endswith(PARTIAL_SUFFIX)) or p.is_symlink() or not p.is_dir():
            continue
        stem = name[1:-len(PARTIAL_SUFFIX)]  # NAME.XXXX: mkdtemp's random part follows the last dot
        target = parent / (stem.rsplit(".", 1)[0] if "." in stem else stem)
        try:
            info = json.loads((p / WRITER_MARKER).read_text())
        except (OSError, ValueError):
            info = None
        state = _writer_state(info)
        if info is None and _age_s(p) < MARKER_GRACE_S:  # a recorder between creating its folder and its marker
            state = "live"
        out.append(PartialBag(p, target, info if isinstance(info, dict) else None, state))
    return out


def stale_partials(parent: str | Path) -> list[Path]:
    """The ``.partial`` folders in ``parent`` whose writer is known to be gone (this host, its pid no longer
    running, or a reboot since): leftovers of killed recordings, safe to remove. A folder whose writer runs, or
    cannot be told (no marker, another host), is not listed."""
    return [pb.path for pb in partial_bags(parent) if pb.state == "stale"]


def remove_stale_partials(parent: str | Path, unknown_older_than: float | None = None) -> list[Path]:
    """Remove the ``stale_partials`` of ``parent`` (each checked again just before); with ``unknown_older_than``
    (seconds) also the folders of unknown writer (no marker, another host) that nothing was written to for that
    long and that hold nothing but a recording (a bag folder of their target's name and the marker). A live
    recording's folder is never removed. Returns the removed folders."""
    removed = []
    for pb in partial_bags(parent):
        if pb.state == "unknown" and unknown_older_than is not None:
            contents = list(pb.path.iterdir())
            if not all(c.name in (pb.target.name, WRITER_MARKER) for c in contents):
                continue  # not one of ours: leave it
            newest = max([pb.path.stat().st_mtime] + [f.stat().st_mtime for f in pb.path.rglob("*")])
            if time.time() - newest < unknown_older_than:
                continue
        elif pb.state != "stale" or _writer_state(pb.writer) != "stale":
            continue
        shutil.rmtree(pb.path)
        removed.append(pb.path)
    return removed
