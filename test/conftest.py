"""Shared fixtures: a noise-free simulator, the built-in worlds, a YAML world writer, one torch thread, one tiny loop run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sim.mujoco_sim import MujocoSimulator, SimNoise
from sim.world_sets import load_set


@pytest.fixture(scope="session")
def builtin_worlds():
    """Every built-in world keyed by ``set/name`` (e.g. ``test/stairs_up``, ``proxy/staircase``)."""
    return {f"{set_name}/{w.name}": w for set_name in ("test", "proxy") for w in load_set(set_name)}


@pytest.fixture(scope="module")
def quiet_sim():
    """One MuJoCo simulator without noise, shared by a module; every test calls ``reset`` itself."""
    return MujocoSimulator(noise=SimNoise(enabled=False))


@pytest.fixture
def one_torch_thread():
    """One torch thread while a test runs: tiny tensors run fastest on one thread (thread hand-offs cost 20x the
    arithmetic on a 2-core machine), and training results depend on the thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def write_world(tmp_path: Path):
    """Write a world mapping (or raw text) to a YAML file under ``tmp_path`` and return its path."""

    def write(content, name: str = "world.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def base_run(tmp_path_factory):
    """(out folder, returned report, entries passed to on_iteration) of one tiny 2-iteration serial loop, shared by
    the loop's report and resume tests (test_loop.py, test_loop_resume.py), which only read it or work on copies."""
    from loop_run import tiny_config

    from flipper_control.learning.loop import run_loop

    out = tmp_path_factory.mktemp("loop") / "base"
    entries: list[dict] = []
    report = run_loop(tiny_config(), out, on_iteration=entries.append)
    return out, report, entries
