"""``flipper bench rl --rl-parts sum_tree`` measures tianshou from the peer venv (.venv-peers) in a subprocess: the
figures and where they come from land in the result and in the printed lines; a broken peer python is recorded as
an error, never a crash. tianshou is not in .venv: a tiny stand-in package plays it, run by this venv's python."""

import stat
import sys

import pytest

from flipper_control.bench import rl

FAKE_TIANSHOU = {
    "__init__.py": '__version__ = "0.0.fake"\n',
    "data.py": '''import numpy as np


class Batch(dict):
    def __init__(self, **kw):
        super().__init__(kw)


class PrioritizedReplayBuffer:
    def __init__(self, size, alpha, beta):
        self.size, self.w = size, []

    def add(self, batch):
        self.w.append(1.0)

    def sample(self, batch):
        assert len(self.w) == self.size  # filled to capacity before timing
        return None, np.random.randint(0, self.size, batch)

    def update_weight(self, idx, w):
        for i, x in zip(idx, w):
            self.w[i] = float(x)
''',
}


@pytest.fixture
def no_tianshou_here(monkeypatch):
    """tianshou not importable in this interpreter, whatever is installed: the peer path is taken."""
    monkeypatch.setitem(sys.modules, "tianshou", None)
    monkeypatch.setitem(sys.modules, "tianshou.data", None)


def _script(tmp_path, body: str):
    exe = tmp_path / "peer_python"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_peer_venv_figures_are_recorded_and_printed(tmp_path, monkeypatch, capsys, no_tianshou_here):
    pkg = tmp_path / "site" / "tianshou"
    pkg.mkdir(parents=True)
    for name, text in FAKE_TIANSHOU.items():
        (pkg / name).write_text(text)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))  # seen by the subprocess only
    monkeypatch.setenv(rl.PEER_PYTHON_ENV, sys.executable)
    r = rl.bench_sum_tree(capacities=(64, 128), rounds=20)
    for t, cap in zip(r["throughput"], (64, 128), strict=True):
        assert t["capacity"] == cap and "tianshou_error" not in t
        assert t["tianshou_batches_per_s"] > 0 and t["tianshou_version"] == "0.0.fake"
        assert t["tianshou_where"] == f"peer python {sys.executable} (${rl.PEER_PYTHON_ENV})"
    assert "tianshou" not in r  # no "not installed" / "failed" note
    rl.print_bench_rl({"cpu": "x", "torch": "y", "sum_tree": r})
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if " slots: ours " in line]
    assert len(rows) == 2 and all("   tianshou " in line for line in rows)
    assert "tianshou 0.0.fake's PrioritizedReplayBuffer, measured peer python" in out


def test_the_default_peer_is_the_repo_venv_peers(monkeypatch):
    monkeypatch.delenv(rl.PEER_PYTHON_ENV, raising=False)
    python, where = rl.peer_python()
    assert where == "peer venv .venv-peers"
    assert python is None or python.parts[-3:] == (".venv-peers", "bin", "python")


@pytest.mark.parametrize("body, expected", [
    ('echo "Traceback: boom" >&2; exit 3', "exited with code 3: Traceback: boom"),
    ('echo "not json"', "unreadable answer"),
    ('echo "{}"', "unreadable answer (KeyError"),
])
def test_a_broken_peer_python_is_recorded_not_raised(tmp_path, monkeypatch, capsys, no_tianshou_here, body, expected):
    monkeypatch.setenv(rl.PEER_PYTHON_ENV, str(_script(tmp_path, body)))
    r = rl.bench_sum_tree(capacities=(64,), rounds=5)
    t = r["throughput"][0]
    assert t["tianshou_batches_per_s"] is None and expected in t["tianshou_error"]
    assert r["tianshou"].startswith("failed: peer python ") and expected in r["tianshou"]
    assert t["ours_batches_per_s"] > 0 and r["chi_square"]["p_value"] >= 0  # the rest of the part still measured
    rl.print_bench_rl({"cpu": "x", "torch": "y", "sum_tree": r})
    assert "tianshou: failed: " in capsys.readouterr().out


def test_a_missing_or_hanging_peer_python_is_recorded(tmp_path, monkeypatch, no_tianshou_here):
    monkeypatch.setenv(rl.PEER_PYTHON_ENV, str(tmp_path / "nowhere" / "python"))
    assert "does not exist (make bench-peers" in rl.bench_sum_tree(capacities=(64,), rounds=5)["tianshou"]
    python, where = rl.peer_python()
    hang = _script(tmp_path, "exec sleep 5")
    assert "no answer within 0.2 s" in rl._tianshou_in_peer(hang, where, 64, 32, 5, seed=0, timeout_s=0.2)["tianshou_error"]


def test_without_tianshou_or_peer_venv_the_note_says_make_bench_peers(monkeypatch, no_tianshou_here):
    monkeypatch.setattr(rl, "peer_python", lambda: (None, "peer venv .venv-peers"))
    r = rl.bench_sum_tree(capacities=(64,), rounds=5)
    assert r["throughput"][0]["tianshou_batches_per_s"] is None
    assert r["tianshou"].startswith("not installed: run `make bench-peers`")
