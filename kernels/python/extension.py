"""Finding or building the CUDA extension of ``alum::adv_project``, and saying why not.

Order: a library built ahead of time by setup.py (``ALUM_BUILD_CUDA_KERNELS=1 pip
install ...``) next to this file; else a just-in-time build with
``torch.utils.cpp_extension.load`` (ninja, cached under ``TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``, so only the first process pays the build, about a minute).
Every way this can fail is a reason string, never an exception: the caller falls back to
the PyTorch reference (the reference is the fallback everywhere the compiled kernel is
absent).

Environment:
    ALUM_KERNELS_DISABLE=1   never load the extension (the reference runs everywhere).
    ALUM_KERNELS_JIT=0       use only an ahead-of-time build, never compile at run time.
    ALUM_KERNELS_VERBOSE=1   print the compiler's output of a just-in-time build.
"""
from __future__ import annotations

import glob
import os
import shutil
import threading
from dataclasses import dataclass
from typing import List, Optional

import torch

from . import adv_project_op  # noqa: F401  (defines the schema before the library loads)

HERE = os.path.dirname(os.path.abspath(__file__))


def _csrc_dir() -> str:
    """The CUDA sources: ``csrc/`` beside this file once installed (setup.py ships
    kernels/csrc/ as alum.kernels.csrc), else the repository's kernels/csrc/, the
    sibling of kernels/python/ where this file lives in the source tree."""
    installed = os.path.join(HERE, "csrc")
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "csrc")


CSRC = _csrc_dir()
SOURCES = [os.path.join(CSRC, "adv_project_kernel.cu"),
           os.path.join(CSRC, "adv_project_binding.cpp")]
HEADERS = [os.path.join(CSRC, "adv_project_kernel.cuh")]
JIT_NAME = "alum_adv_project_cuda"
AOT_GLOB = "_adv_project_cuda*.so"
NVCC_FLAGS = ["-O3", "-lineinfo"]  # no fast-math: IEEE division, as torch; torch adds -std


@dataclass(frozen=True)
class ExtensionState:
    """Whether the CUDA kernel of alum::adv_project is registered, and why (not)."""

    loaded: bool
    reason: str
    library: Optional[str] = None


_LOCK = threading.Lock()
_STATE: Optional[ExtensionState] = None


def _env_flag(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() not in ("0", "false", "no", "off", "")


def nvcc_path() -> Optional[str]:
    """The nvcc that a JIT build would use (CUDA_HOME's, else the one on PATH)."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def prebuilt_libraries() -> List[str]:
    return sorted(glob.glob(os.path.join(HERE, AOT_GLOB)))


def why_not_loadable() -> Optional[str]:
    """The reason the extension cannot be used on this machine, or None if it may be."""
    if _env_flag("ALUM_KERNELS_DISABLE", "0"):
        return "disabled by ALUM_KERNELS_DISABLE=1"
    if torch.version.cuda is None:
        return (f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None); "
                f"CUDA extensions need a CUDA build of torch")
    if not torch.cuda.is_available():
        return "no CUDA device is visible (torch.cuda.is_available() is False)"
    if not prebuilt_libraries():
        if not _env_flag("ALUM_KERNELS_JIT", "1"):
            return "no ahead-of-time build next to alum/kernels and ALUM_KERNELS_JIT=0"
        if nvcc_path() is None:
            return "no ahead-of-time build and no nvcc for a just-in-time build (set CUDA_HOME)"
        missing = [p for p in SOURCES + HEADERS if not os.path.isfile(p)]
        if missing:
            return f"CUDA sources missing from the installation: {missing}"
    return None


def _load() -> ExtensionState:
    reason = why_not_loadable()
    if reason is not None:
        return ExtensionState(False, reason)
    prebuilt = prebuilt_libraries()
    if prebuilt:
        try:
            torch.ops.load_library(prebuilt[0])
            return ExtensionState(True, f"ahead-of-time build {prebuilt[0]}", prebuilt[0])
        except Exception as exc:  # a stale build for another torch: try JIT next
            if not _env_flag("ALUM_KERNELS_JIT", "1"):
                return ExtensionState(False, f"loading {prebuilt[0]} failed: {exc}")
    try:
        from torch.utils import cpp_extension
        library = cpp_extension.load(
            name=JIT_NAME, sources=SOURCES, extra_include_paths=[CSRC],
            extra_cuda_cflags=NVCC_FLAGS, is_python_module=False,
            verbose=_env_flag("ALUM_KERNELS_VERBOSE", "0"))
        path = library if isinstance(library, str) else getattr(library, "__file__", JIT_NAME)
        return ExtensionState(True, "just-in-time build (torch.utils.cpp_extension, cached)",
                              str(path))
    except Exception as exc:  # compiler errors, missing ninja, ABI mismatch ...
        first = str(exc).strip().splitlines()
        return ExtensionState(False, f"the just-in-time build failed: "
                                     f"{first[-1] if first else type(exc).__name__}")


def extension_state(build: bool = True) -> ExtensionState:
    """The extension's state; loads (and if needed builds) it on the first call.

    With ``build=False`` nothing is compiled or loaded: the answer says what would happen.
    """
    global _STATE
    if _STATE is not None:
        return _STATE
    if not build:
        reason = why_not_loadable()
        return ExtensionState(False, reason or "not loaded yet (would load or build on first use)")
    with _LOCK:
        if _STATE is None:
            _STATE = _load()
    return _STATE


@torch.compiler.assume_constant_result
def extension_loaded() -> bool:
    """Whether the CUDA kernel is registered (a constant to torch.compile)."""
    return extension_state().loaded


def reset_extension_state() -> None:
    """Forget the cached state (tests); an already loaded library stays loaded."""
    global _STATE
    _STATE = None
