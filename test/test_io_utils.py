"""Output files (sim.io_utils and the CLI's --json handling): atomic, never replacing a read-only file, checked
before the work, and a finished result is never lost when its target fails at the end."""

from __future__ import annotations

import json
import os
import stat

import pytest

from flipper_control.cli import main
from flipper_control.cli.common import save_json
from sim.io_utils import OutputError, check_writable, write_json_atomic


def test_a_replaced_file_keeps_its_mode_and_a_read_only_one_is_refused(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})
    os.chmod(path, 0o640)
    write_json_atomic(path, {"a": 2})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and json.loads(path.read_text()) == {"a": 2}
    os.chmod(path, 0o444)
    with pytest.raises(OutputError, match=r"r\.json: refusing to replace a read-only file \(mode 0444\)"):
        write_json_atomic(path, {"a": 3})
    assert json.loads(path.read_text()) == {"a": 2} and stat.S_IMODE(path.stat().st_mode) == 0o444


@pytest.mark.parametrize("case", ["folder", "read-only", "parent-is-file", "missing-parents"])
def test_check_writable_names_what_is_wrong(tmp_path, case):
    path = tmp_path / "out.json"
    if case == "folder":
        path.mkdir()
        with pytest.raises(OutputError, match="is a folder"):
            check_writable(path, "--json")
    elif case == "read-only":
        path.write_text("{}")
        path.chmod(0o444)
        with pytest.raises(OutputError, match="--json .*out.json: refusing to replace a read-only file"):
            check_writable(path, "--json")
    elif case == "parent-is-file":
        (tmp_path / "f").write_text("x")
        with pytest.raises(OutputError, match=r"f is a file, not a folder"):
            check_writable(tmp_path / "f" / "out.json")
    else:  # folders that do not exist yet are created by the writer: fine, and the check creates nothing
        check_writable(tmp_path / "a" / "b" / "out.json")
        assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_refuses_a_read_only_json_target_before_the_run(tmp_path, capsys):
    target = tmp_path / "result.json"
    target.write_text('{"earlier": true}\n')
    target.chmod(0o444)
    assert main(["sim", "--world", "flat", "--runs", "1", "--json", str(target)]) == 2
    captured = capsys.readouterr()
    assert "refusing to replace a read-only file" in captured.err and str(target) in captured.err
    assert "run 0" not in captured.out  # nothing ran
    assert json.loads(target.read_text()) == {"earlier": True}


def test_cli_refuses_an_unwritable_out_folder_before_the_run(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file where the loop's folder should go")
    assert main(["loop", "--config", "configs/demo.yaml", "--out", str(tmp_path / "taken" / "run")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_result_whose_target_fails_at_the_end_is_saved_elsewhere_and_said(tmp_path, capsys, monkeypatch):
    """The target's folder was fine at the start and is a file by the end of the run (a real fault, no mock)."""
    target = tmp_path / "sub" / "result.json"
    check_writable(target, "--json")
    (tmp_path / "sub").write_text("replaced during the run")
    monkeypatch.chdir(tmp_path)
    assert save_json(str(target), {"score": 7.5}) == 1
    err = capsys.readouterr().err
    saved = [p for p in tmp_path.iterdir() if p.name.startswith("result-unsaved-")]
    assert len(saved) == 1 and saved[0].suffix == ".json"
    assert f"could not write --json {target} (" in err and f"the results are in {saved[0]}" in err
    assert json.loads(saved[0].read_text()) == {"score": 7.5}


def test_save_json_without_a_target_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert save_json(None, {"a": 1}) == 0 and not list(tmp_path.iterdir())


def test_a_disk_full_during_a_checkpoint_write_ends_with_one_line_and_no_half_written_file(tmp_path):
    """A size-limited process (RLIMIT_FSIZE: every write past 64 KiB fails with EFBIG, like a full disk) trains a
    policy whose checkpoint (about 800 KiB) cannot be written anywhere: one error line, exit 1, no temp files."""
    import resource
    import subprocess
    import sys

    from planning.dataset import Trajectory, TrajectoryDataset

    rng = __import__("numpy").random.default_rng(0)
    n = 40
    data = TrajectoryDataset([Trajectory(rng.normal(0, 0.05, (n, 20, 5)).astype("float32"),
                                         rng.uniform(-0.3, 0.3, (n, 6)).astype("float32"),
                                         rng.uniform(-0.3, 0.3, (n, 4)).astype("float32"), success=True,
                                         meta={"world": f"w{i}"}) for i in range(3)])
    data.save(tmp_path / "data.safetensors")
    out = tmp_path / "ckpt" / "policy"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    argv = ["train-policy", "--data", str(tmp_path / "data.safetensors"), "--out", str(out), "--seeds", "1", "--epochs", "1"]
    proc = subprocess.run([sys.executable, "-m", "flipper_control.cli", *argv], cwd=tmp_path, preexec_fn=limit,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"flipper: error: could not write checkpoint {out} (File too large)")
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file() and p.name != "data.safetensors"]
    assert leftovers == [], leftovers  # the atomic writer removed its temp files; nothing half-written stays
