"""Build-on-first-use of the C++/CUDA rasterizer extension (torch.utils.cpp_extension), cached.

The fast path and its pure-torch fallback are chosen here, in one place, with one warning.
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import torch

CSRC = Path(__file__).parent / "csrc"
BACKENDS = ("auto", "torch", "cpu", "cuda")     # rasterizer implementations ("auto": fastest that works)
_lock = threading.Lock()
_cache: dict[bool, object] = {}
_failed: dict[bool, str] = {}
_warned = False


def _cuda_buildable() -> bool:
    if not torch.cuda.is_available() or torch.version.cuda is None:
        return False
    from torch.utils.cpp_extension import CUDA_HOME
    return CUDA_HOME is not None


def load_extension(cuda: bool = False):
    """The compiled module (with CUDA kernels when ``cuda``); raises RuntimeError on failure."""
    with _lock:
        if cuda in _cache:
            return _cache[cuda]
        if cuda in _failed:
            raise RuntimeError(_failed[cuda])
        from torch.utils.cpp_extension import load

        sources = [str(CSRC / "bind.cpp"), str(CSRC / "rasterize_cpu.cpp")]
        cflags = ["-O3", "-ffp-contract=off", "-fno-fast-math"]
        kwargs = {}
        if cuda:
            sources.append(str(CSRC / "rasterize_cuda.cu"))
            cflags.append("-DWITH_CUDA")
            kwargs["extra_cuda_cflags"] = ["-O3", "-fmad=false", "-DWITH_CUDA", "-lineinfo"]
        name = "vidsim2real_raster_cuda" if cuda else "vidsim2real_raster_cpu"
        _clear_stale_lock(name)
        try:
            mod = load(name=name, sources=sources, extra_cflags=cflags, extra_include_paths=[str(CSRC)],
                       verbose=os.environ.get("VIDSIM2REAL_VERBOSE_BUILD") == "1", **kwargs)
        except Exception as exc:  # compiler missing, headers missing, ...
            msg = f"could not build the {'CUDA' if cuda else 'C++'} rasterizer: {type(exc).__name__}: {str(exc)[-400:]}"
            _failed[cuda] = msg
            raise RuntimeError(msg) from None
        _cache[cuda] = mod
        return mod


STALE_LOCK_SECONDS = 900


def _clear_stale_lock(name: str) -> None:
    """torch.utils.cpp_extension waits forever on the lock file of a build that was killed
    (e.g. Ctrl-C during the first compile). A lock older than any real build is removed."""
    import time
    try:
        from torch.utils.cpp_extension import _get_build_directory
        lock = Path(_get_build_directory(name, verbose=False)) / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            lock.unlink()
            warnings.warn(f"removed a stale build lock left by an interrupted compile: {lock}", RuntimeWarning)
    except (ImportError, OSError):
        pass


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map "auto" to the fastest working backend for ``device``; validate explicit choices.

    auto -> "cuda" on GPU tensors, "cpu" (C++) on CPU tensors, and "torch" with one warning
    when the extension cannot be built. Explicit "cpu"/"cuda" raise if unavailable.
    """
    global _warned
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return "torch"
    if backend == "cuda" and device.type != "cuda":
        raise ValueError("backend 'cuda' needs CUDA tensors")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError("backend 'cpu' needs CPU tensors")
    want_cuda = device.type == "cuda"
    if os.environ.get("VIDSIM2REAL_NO_EXTENSION") == "1" and backend == "auto":
        return "torch"
    try:
        if want_cuda and not _cuda_buildable():
            raise RuntimeError("CUDA toolkit (CUDA_HOME) not found")
        load_extension(cuda=want_cuda)
        return "cuda" if want_cuda else "cpu"
    except RuntimeError as exc:
        if backend != "auto":
            raise
        if not _warned:
            warnings.warn(f"{exc}; falling back to the (slower) torch reference rasterizer", RuntimeWarning)
            _warned = True
        return "torch"
