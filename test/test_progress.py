"""Progress output (flipper_control.progress): bars only on a terminal, one summary line per finished step always."""

from __future__ import annotations

import io
import re

import pytest
from tiny_loop import tiny_loop

from flipper_control.learning.loop import LoopConfig, run_loop
from flipper_control.progress import Step, on_terminal


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_forced_mode(monkeypatch):
    monkeypatch.delenv("FLIPPER_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")


def test_off_a_terminal_a_step_prints_only_its_summary_line():
    out = io.StringIO()
    with Step("planning", 4, "world", stream=out, prefix="[x] ") as step:
        for _ in range(4):
            step.advance(info="busy")
        step.write("a result line")
        line = step.finish("4/4 found")
    assert re.fullmatch(r"\[x\] planning: 4/4 found \(\d+ s\)", line)
    assert out.getvalue() == f"a result line\n{line}\n"


def test_on_a_terminal_the_bar_updates_in_place_and_the_summary_stays():
    out = FakeTerminal()
    with Step("planning", 4, "world", stream=out) as step:
        for done in range(1, 5):
            step(done, 4)  # the executors' callback form
        step.finish("done")
    text = out.getvalue()
    assert "\r" in text and "planning" in text and "4/4" in text  # tqdm redraws the line with carriage returns
    assert text.rstrip("\n").splitlines()[-1].endswith("planning: done (0 s)")


def test_a_step_left_by_an_exception_prints_no_summary():
    out = FakeTerminal()
    with pytest.raises(KeyError), Step("x", 2, stream=out):
        raise KeyError("boom")
    assert "x:" not in out.getvalue().split("\r")[-1]


def test_the_environment_can_force_either_mode(monkeypatch):
    assert on_terminal(FakeTerminal()) and not on_terminal(io.StringIO())
    monkeypatch.setenv("FLIPPER_PROGRESS", "lines")
    assert not on_terminal(FakeTerminal())
    monkeypatch.setenv("FLIPPER_PROGRESS", "bar")
    assert on_terminal(io.StringIO())
    monkeypatch.setenv("FLIPPER_PROGRESS", "")
    monkeypatch.setenv("TERM", "dumb")
    assert not on_terminal(FakeTerminal())


LOOP = tiny_loop(iterations=1, candidates=2)


def test_the_loop_prints_one_line_per_finished_step_and_bars_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    run_loop(LoopConfig.from_dict(LOOP), tmp_path / "lines")
    lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith("[loop] ") for line in lines), lines
    steps = [line for line in lines if re.search(r"\(\d+ s\)$", line)]
    # baseline, planning, training, one selection per candidate, evaluation: no per-world counters
    assert [s.rsplit(": ", 1)[0] for s in steps] == [
        "[loop] baseline heuristic", "[loop] iter 1: planning unguided coarse", "[loop] iter 1: training 2 candidates",
        "[loop] iter 1: selecting, candidate 100", "[loop] iter 1: selecting, candidate 101", "[loop] iter 1: evaluating"]
    assert "\r" not in "\n".join(lines)

    monkeypatch.setenv("FLIPPER_PROGRESS", "bar")
    run_loop(LoopConfig.from_dict(LOOP), tmp_path / "bars")
    err = capsys.readouterr().err
    assert "\r" in err  # bars were drawn and redrawn
    summaries = [line.split("\r")[-1] for line in err.splitlines() if re.search(r"\(\d+ s\)$", line)]
    assert [s.rsplit(": ", 1)[0] for s in summaries] == [s.rsplit(": ", 1)[0] for s in steps]
