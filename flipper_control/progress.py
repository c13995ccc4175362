"""Progress of long work, shown the way users expect it: on a terminal a bar that updates in place while a
step runs, then one summary line when it ends; where output is not a terminal (CI, a log file, a pipe) only
the summary line of each finished step, and no bars.

Every long command (loop, demo, plan, eval, train-policy, bench, ingest, record) reports through ``Step``,
so they all follow that one rule. The bar is tqdm's (pinned in requirements.txt): it redraws in place,
estimates the time left and adapts to the terminal width, which is more than a hand-written bar should
carry. Cores never print; they take a plain callback (``progress(done, total)``), and the command that
runs them turns it into a ``Step``.

``FLIPPER_PROGRESS=lines`` forces the summary lines only, even on a terminal (``bar`` forces bars, e.g. to
try them under a pager); anything else, or unset, decides by whether stderr is a terminal.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from tqdm import tqdm

__all__ = ["Step", "on_terminal"]


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether progress bars belong on ``stream`` (default stderr): a terminal that can redraw a line, unless
    ``FLIPPER_PROGRESS`` says otherwise."""
    forced = os.environ.get("FLIPPER_PROGRESS", "").strip().lower()
    if forced in ("lines", "bar"):
        return forced == "bar"
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty()) and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Step:
    """One long step of ``total`` units (tasks, worlds, epochs, simulated seconds).

    ``advance``/``update`` move the bar (on a terminal; elsewhere they only count), ``write`` prints a line
    above the bar, ``finish(summary)`` removes the bar and prints ``"<prefix><label>: <summary> (<s> s)"``.
    Called as ``step(done, total)`` it is the callback that executors and cores take. Used as a context
    manager, a step left by an exception closes its bar without a summary line.
    """

    def __init__(self, label: str, total: float | None = None, unit: str = "task", stream: TextIO | None = None,
                 prefix: str = "", bar: bool | None = None):
        self.label, self.prefix = label, prefix
        self.stream = sys.stderr if stream is None else stream
        self.t0 = time.perf_counter()
        self.done: float = 0
        self.total = total
        self._bar = None
        if on_terminal(self.stream) if bar is None else bar:
            self._bar = tqdm(total=total, desc=f"{prefix}{label}", unit=unit, file=self.stream, leave=False,
                             dynamic_ncols=True, mininterval=0.2)

    @property
    def elapsed(self) -> float:
        """Wall seconds since the step began."""
        return time.perf_counter() - self.t0

    def update(self, done: float, total: float | None = None, info: str | None = None) -> None:
        """Set the position to ``done`` of ``total`` (kept if None); ``info`` is shown beside the bar."""
        self.done = done
        if total is not None:
            self.total = total
        if self._bar is not None:
            if total is not None and self._bar.total != total:
                self._bar.total = total
            self._bar.n = done
            if info is not None:
                self._bar.set_postfix_str(info, refresh=False)
            self._bar.refresh()

    def advance(self, n: float = 1, info: str | None = None) -> None:
        """Move ``n`` units forward."""
        self.update(self.done + n, None, info)

    def __call__(self, done: int, total: int) -> None:
        """The ``progress(done, total)`` callback of executors and cores."""
        self.update(done, total)

    def write(self, line: str, stream: TextIO | None = None) -> None:
        """Print ``line`` to ``stream`` (default: the step's) above the bar, which is redrawn below it; a result
        line for stdout can go there while the bar stays on stderr."""
        stream = self.stream if stream is None else stream
        if self._bar is not None:
            self._bar.write(line, file=stream)
        else:
            print(line, file=stream, flush=True)

    def close(self) -> None:
        """Remove the bar without a summary line (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def finish(self, summary: str = "") -> str:
        """Remove the bar and print the step's one summary line; returns the line."""
        self.close()
        text = f"{self.prefix}{self.label}: {summary} ({self.elapsed:.0f} s)" if summary else \
            f"{self.prefix}{self.label} ({self.elapsed:.0f} s)"
        print(text, file=self.stream, flush=True)
        return text

    def __enter__(self) -> Step:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
