"""Atomic output writing: a reader never sees a half-written file, a killed run loses nothing written, a
read-only file is never replaced, and ``check_writable`` finds an unwritable target before the work starts.

Lives in ``sim`` (the lowest layer) so that every package -- simulator exports, checkpoints, reports --
shares one implementation.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class OutputError(ValueError):
    """An output path that cannot be written: the message names the path and what is wrong with it."""


def _read_only(path: Path) -> bool:
    """An existing file its owner marked read-only (no write bit for the owner), or one this user may not write.
    The mode bit counts even for root, whom ``os.access`` always lets write: a ``chmod 444`` is a user's intent."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (mode & stat.S_IWUSR) or not os.access(path, os.W_OK)


def check_writable(path: str | Path, what: str = "output") -> Path:
    """Raise ``OutputError`` unless ``path`` can be written by ``write_bytes_atomic``: it is not a folder, not a
    read-only file, and its folder exists (or can be created) and takes new files. Call it before long work, so
    that a run does not end in an unwritable target. Creates nothing that stays."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder, not a file")
    if _read_only(path):
        raise OutputError(f"{what} {path}: refusing to replace a read-only file (mode {stat.S_IMODE(path.stat().st_mode):04o}); "
                          "make it writable or choose another path")
    folder = path.parent
    while not folder.exists():  # the writer creates missing folders: the nearest existing one must take them
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{what} {path}: {folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot write in {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, and an atomic rename.

    A new file gets the permissions a plain ``open(path, "w")`` would give (mkstemp's are private); a replaced
    file keeps its mode. A read-only file is not replaced (``OutputError``).
    """
    path = Path(path)
    if _read_only(path):
        check_writable(path)  # raises with the message that names the file and its mode
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """UTF-8 text, written atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """JSON (indented, trailing newline), written atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")
