"""The package layering holds: ``sim`` <- ``perception`` <- ``planning`` <- ``flipper_control``, nothing imports upward.

Every import of every module counts, also those inside functions (a lazy import is still a dependency).
Inside ``flipper_control`` the rooms are layered too: the policy side (the package's own modules) <- the
trainer (``learning``) <- benchmarks (``bench``) <- the command line (``cli``). The exceptions are named in
``ALLOWED_UPWARD``, all in two modules: the reality proxy runs perception's DEM builder and point map on purpose,
and its config holds the builder's settings (see ``sim/reality_proxy.py`` and ``sim/reality_config.py``).
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["sim", "perception", "planning", "flipper_control"]
ROOMS = ["policy side", "learning", "rl", "bench", "cli"]  # rooms of flipper_control, lowest first
ALLOWED_UPWARD = {("sim/reality_proxy.py", "perception.dem_builder"), ("sim/reality_proxy.py", "perception.point_map"),
                  ("sim/reality_config.py", "perception.dem_builder")}


def _imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (relative imports are resolved against its package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ((base,) if base else ()))
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module` imports pkg.module
    return names


def _modules() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py"))


def _room(module: str) -> str:
    """The room of a flipper_control module name (``flipper_control.learning.loop`` -> ``learning``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ROOMS else "policy side"


def _violations() -> list[tuple[str, str]]:
    found = []
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        own = LAYERS.index(rel.split("/")[0])
        for name in _imports(path):
            top = name.split(".")[0]
            if top in LAYERS and LAYERS.index(top) > own:
                found.append((rel, name))
            elif top == "flipper_control" and own == LAYERS.index("flipper_control"):
                here = _room(".".join(path.relative_to(ROOT).with_suffix("").parts))
                if ROOMS.index(_room(name)) > ROOMS.index(here):
                    found.append((rel, name))
    return found


def test_every_package_is_scanned():
    mods = {p.relative_to(ROOT).as_posix() for p in _modules()}
    assert {"sim/reality_proxy.py", "perception/dem_builder.py", "planning/rrt.py", "flipper_control/learning/loop.py",
            "flipper_control/cli/__init__.py", "flipper_control/bench/plan.py"} <= mods
    assert _imports(ROOT / "sim" / "reality_proxy.py") >= {"perception.dem_builder"}


def _allowed(path: str, name: str) -> tuple[str, str] | None:
    """The ``ALLOWED_UPWARD`` entry that covers this import (the module or a name in it), if any."""
    return next(((p, m) for p, m in ALLOWED_UPWARD if p == path and (name == m or name.startswith(m + "."))), None)


def test_no_module_imports_a_layer_or_room_above_its_own():
    found = _violations()
    bad = sorted({(p, n) for p, n in found if _allowed(p, n) is None})
    assert not bad, "upward imports: " + ", ".join(f"{p} -> {n}" for p, n in bad)
    # each exception is still needed; if one goes away, so should its entry here
    assert {_allowed(p, n) for p, n in found} == ALLOWED_UPWARD


@pytest.mark.parametrize(("source", "module", "upward"), [
    ("from planning.rrt import plan\n", "sim/x.py", True),
    ("def f():\n    import flipper_control.policy\n", "perception/x.py", True),
    ("from sim import world\n", "planning/x.py", False),
    ("from flipper_control.cli import main\n", "flipper_control/learning/x.py", True),
    ("from flipper_control.learning import loop\n", "flipper_control/bench/x.py", False),
    ("from . import tasks\n", "flipper_control/learning/x.py", False),
    ("from .learning import loop\n", "flipper_control/policy_x.py", True),
])
def test_the_scan_sees_lazy_relative_and_room_imports(tmp_path, monkeypatch, source, module, upward):
    """The checker itself: a planted upward import is found, a downward one is not."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
    path = tmp_path / module
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    assert bool(_violations()) is upward
