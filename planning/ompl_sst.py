"""Constructing OMPL's control planner SST where the ``ompl==2.0.1`` Python bindings cannot.

The official ``ompl==2.0.1`` wheels bind ``ompl.control.SST`` without a constructor (KPIECE1 has one).
``plan_ompl`` first tries ``oc.SST(si)``; when that raises, it constructs the C++ planner from the
wheel's own ``libompl.so`` (exported ``ompl::control::SST::SST(const SpaceInformationPtr&)``) into a
nanobind instance made with ``SST.__new__``, after checking the instance layout it relies on; the
space-information pointer handed over is the owning ``shared_ptr`` held by a throw-away KPIECE1, so
the planner keeps the space information alive as usual. ``meta["construction"]`` records which
way was used. If the checks fail, ``OmplUnavailable`` says why; no memory is touched in that case.

This module is the only place that touches OMPL objects' memory; everything it relies on is checked
first, and a failed check is an ``OmplUnavailable`` error, never a guess.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
from typing import Any

__all__ = ["OmplUnavailable", "construct_sst", "ompl_version"]


class OmplUnavailable(RuntimeError):
    """OMPL (or the requested planner) cannot be used in this environment."""


def ompl_version() -> str:
    """The installed ompl package version, or "unknown"."""
    try:
        return importlib.metadata.version("ompl")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# nanobind instance header (nb_inst): PyObject_HEAD, int32 offset to the C++ object, uint32 flags
_NB_HEAD = object.__basicsize__
_NB_STATE_MASK, _NB_READY, _NB_DIRECT, _NB_INTERNAL, _NB_DESTRUCT = 3, 2, 4, 8, 16
_SST_CTOR = "_ZN4ompl7control3SSTC1ERKSt10shared_ptrINS0_16SpaceInformationEE"  # SST(const SpaceInformationPtr&)


def _nb_header(obj) -> tuple[ctypes.c_int32, ctypes.c_uint32]:
    return ctypes.c_int32.from_address(id(obj) + _NB_HEAD), ctypes.c_uint32.from_address(id(obj) + _NB_HEAD + 4)


def _nb_cpp_address(obj, expect_ready: bool = True) -> int:
    """Address of the C++ object stored inline in a nanobind instance created from Python."""
    offset, flags = _nb_header(obj)
    want = _NB_READY if expect_ready else 0
    inline = flags.value & _NB_DIRECT and flags.value & _NB_INTERNAL
    if (flags.value & _NB_STATE_MASK) != want or not inline or not (_NB_HEAD + 8 <= offset.value < type(obj).__basicsize__):
        raise OmplUnavailable(f"unexpected nanobind instance layout of {type(obj).__name__} (offset {offset.value}, "
                              f"flags {flags.value:#x}); cannot construct SST with ompl {ompl_version()}")
    return id(obj) + offset.value


def construct_sst(oc, si) -> tuple[Any, str]:
    """``oc.SST(si)``, or, where the bindings lack that constructor (2.0.1), the C++ constructor called
    into a nanobind instance (see the module docstring). Every check runs before anything is written."""
    try:
        return oc.SST(si), "binding"
    except TypeError:
        pass
    import ompl

    lib_path = os.path.join(os.path.dirname(ompl.__file__), "libompl.so")
    try:  # RTLD_NOLOAD: the copy the bindings already use, never a second one
        lib = ctypes.CDLL(lib_path, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
        ctor = getattr(lib, _SST_CTOR)
    except (OSError, AttributeError) as exc:
        raise OmplUnavailable(f"SST: no Python constructor in ompl {ompl_version()} and no usable {lib_path} ({exc})") from exc
    ctor.restype, ctor.argtypes = None, [ctypes.c_void_p, ctypes.c_void_p]
    si_address = _nb_cpp_address(si)
    # A KPIECE1 built through the bindings holds an owning shared_ptr to si as Planner::si_, the first
    # member after the vtable pointer; SST copies it, so si's reference count stays right.
    helper = oc.KPIECE1(si)
    shared_ptr = _nb_cpp_address(helper) + ctypes.sizeof(ctypes.c_void_p)
    if ctypes.c_void_p.from_address(shared_ptr).value != si_address:
        raise OmplUnavailable(f"SST: unexpected ompl::base::Planner layout in ompl {ompl_version()}")
    planner = oc.SST.__new__(oc.SST)
    target = _nb_cpp_address(planner, expect_ready=False)
    ctor(target, shared_ptr)
    _, flags = _nb_header(planner)
    flags.value |= _NB_READY | _NB_DESTRUCT  # constructed; nanobind runs ~SST when the instance is collected
    del helper
    if planner.getName() != "SST":
        raise OmplUnavailable("SST: the constructed planner does not answer as SST")
    return planner, "abi-shim"
