"""The compiled kernels (rasterizer, fused texture sampling): built on first use with
torch.utils.cpp_extension and cached once per install.

The build folder is keyed by a hash of the kernel sources and compiler flags, the torch
version and the Python interpreter, so two checkouts or virtual environments on one machine
never overwrite each other's build (each builds once), and a changed source rebuilds. While
compiling, one line says so. The fast path and its pure-torch fallback are chosen here, in one
place, with one warning.

Environment: VIDSIM2REAL_EXT_DIR (build root, default ~/.cache/vidsim2real/ext),
VIDSIM2REAL_NO_EXTENSION=1 (always use the torch references), VIDSIM2REAL_VERBOSE_BUILD=1.
"""
from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

import torch

from ..errors import note

CSRC = Path(__file__).parent / "csrc"
BACKENDS = ("auto", "torch", "cpu", "cuda")     # kernel implementations ("auto": fastest that works)
CPU_SOURCES = ["bind.cpp", "rasterize_cpu.cpp", "texture_cpu.cpp"]
CUDA_SOURCES = ["rasterize_cuda.cu", "texture_cuda.cu"]
CFLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math"]
CUDA_CFLAGS = ["-O3", "-fmad=false", "-DWITH_CUDA", "-lineinfo"]
STALE_LOCK_SECONDS = 900

_lock = threading.Lock()
_cache: dict[bool, object] = {}
_failed: dict[bool, str] = {}
_warned = False


def build_key(cuda: bool) -> str:
    """What a build depends on: every kernel source and header, the flags, the torch version
    (and its CUDA), the interpreter and its ABI. Equal keys can share one build."""
    h = hashlib.sha256()
    for p in sorted(CSRC.iterdir()):
        if p.suffix in (".h", ".cpp", ".cu") and (cuda or p.suffix != ".cu"):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    h.update(repr((cuda, CFLAGS, CUDA_CFLAGS if cuda else None, torch.__version__, torch.version.cuda,
                   sys.version, sys.executable, sys.abiflags if hasattr(sys, "abiflags") else "")).encode())
    return h.hexdigest()[:16]


def build_root() -> Path:
    return Path(os.environ.get("VIDSIM2REAL_EXT_DIR", Path.home() / ".cache" / "vidsim2real" / "ext"))


def build_dir(cuda: bool) -> tuple[str, Path]:
    """(module name, build folder) of this install's build."""
    name = f"vidsim2real_ops_{'cuda' if cuda else 'cpu'}_{build_key(cuda)}"
    return name, build_root() / name


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
        name, folder = build_dir(cuda)
        sources = [str(CSRC / s) for s in CPU_SOURCES + (CUDA_SOURCES if cuda else [])]
        kwargs = {"extra_cuda_cflags": CUDA_CFLAGS} if cuda else {}
        folder.mkdir(parents=True, exist_ok=True)
        _clear_stale_lock(folder)
        fresh = not any(folder.glob(f"{name}*.so"))
        if fresh:
            note(f"compiling the {'CUDA' if cuda else 'C++'} kernels, first use only (~1 min) into {folder}")
        t0 = time.perf_counter()
        # torch waits on another build's lock without a bound: watch it while we wait, so a
        # build killed meanwhile (its process gone) releases us, and then build ourselves
        stop, cleared = threading.Event(), threading.Event()
        watch = threading.Thread(target=_watch_lock, args=(folder, stop, cleared), daemon=True)
        watch.start()
        try:
            for attempt in (0, 1):
                try:
                    if not (folder / "lock").exists():
                        _write_owner(folder)
                    mod = load(name=name, sources=sources, extra_cflags=CFLAGS + (["-DWITH_CUDA"] if cuda else []),
                               extra_include_paths=[str(CSRC)], build_directory=str(folder),
                               verbose=os.environ.get("VIDSIM2REAL_VERBOSE_BUILD") == "1", **kwargs)
                    break
                except Exception as exc:  # compiler missing, headers missing, ...
                    if attempt == 0 and cleared.is_set():       # the build we waited for died: ours now
                        cleared.clear()
                        continue
                    msg = f"could not build the {'CUDA' if cuda else 'C++'} kernels: {type(exc).__name__}: {str(exc)[-400:]}"
                    _failed[cuda] = msg
                    raise RuntimeError(msg) from None
        finally:
            stop.set()
        if fresh:
            note(f"compiled in {time.perf_counter() - t0:.0f} s")
        _cache[cuda] = mod
        return mod


def _write_owner(folder: Path) -> None:
    """Record which process is about to take the build lock (host and pid), so that a waiter
    can tell a live build from one that was killed."""
    try:
        (folder / "owner").write_text(f"{socket.gethostname()} {os.getpid()}")
    except OSError:
        pass


def _owner_alive(folder: Path) -> bool | None:
    """Whether the process recorded by ``_write_owner`` for the current lock still runs; None
    when that cannot be told (no record, one older than the lock by more than a build's start,
    another host, or the record is this process's own)."""
    try:
        owner = folder / "owner"
        host, pid = owner.read_text().split()
        pid = int(pid)
        if not -2.0 <= (folder / "lock").stat().st_mtime - owner.stat().st_mtime <= 60.0:
            return None
    except (OSError, ValueError):
        return None
    if host != socket.gethostname() or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _clear_stale_lock(folder: Path) -> bool:
    """torch.utils.cpp_extension waits forever on the lock file of a build that was killed
    (e.g. Ctrl-C during the first compile). The lock is removed when the process that took it
    is gone, or, where that cannot be told, when it is older than any real build. Returns
    whether it was removed."""
    lock = folder / "lock"
    try:
        if not lock.exists():
            return False
        alive = _owner_alive(folder)
        if alive is False or (alive is None and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS):
            lock.unlink()
            warnings.warn(f"removed a stale build lock left by an interrupted compile: {lock}", RuntimeWarning)
            return True
    except OSError:
        pass
    return False


def _watch_lock(folder: Path, stop: threading.Event, cleared: threading.Event, every: float = 2.0) -> None:
    """Until ``stop``: clear a stale lock (``_clear_stale_lock``) every ``every`` seconds and set
    ``cleared`` when one was."""
    while not stop.wait(every):
        if _clear_stale_lock(folder):
            cleared.set()


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
            warnings.warn(f"{exc}; falling back to the (slower) torch reference implementations", RuntimeWarning)
            _warned = True
        return "torch"
