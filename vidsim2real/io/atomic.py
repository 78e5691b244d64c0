"""Atomic file writes: write to a temporary file in the same folder, then rename.

A crash or Ctrl-C never leaves a half-written file under the final name. And the parts
folder of a resumable job (``claim_parts``): kept for the same job, cleared for another.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    ``suffix`` (default: the final name's suffix) keeps writers that pick a format from the
    extension (ffmpeg, imageio) happy.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=(suffix if suffix is not None else path.suffix),
                                   dir=path.parent)
    except OSError as exc:             # unwritable place: report the file the user asked for
        raise _named(exc, path) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)     # mkstemp creates 0600; finished files get normal permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename in (tmp, str(tmp)):
            raise _named(exc, path) from None     # e.g. disk full while writing the temporary file
        raise


def check_writable(folder: str | os.PathLike) -> None:
    """Raise the OSError that writing into ``folder`` would raise, before any work is done: a
    temporary file is created and removed there (or, when the folder does not exist yet, in its
    nearest existing ancestor, where it would be created). Nothing is left behind."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise _named(exc, folder) from None


def _named(exc: OSError, path: Path) -> OSError:
    """The same OS error, naming the final path instead of a temporary file."""
    return type(exc)(exc.errno, exc.strerror, str(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def file_stamp(path: str | os.PathLike) -> list:
    """[size, time written in ns] of a file: what tells a resumed job's input from a changed one."""
    st = Path(path).stat()
    return [st.st_size, st.st_mtime_ns]


def claim_parts(folder: str | os.PathLike, job: dict) -> bool:
    """Make ``folder`` the parts folder of ``job`` (a JSON-able dict of what must match for a
    resume): True when its ``job.json`` records the same job (its parts are kept); otherwise
    the folder is cleared, created and stamped with ``job``, and False."""
    folder = Path(folder)
    try:
        old = json.loads((folder / "job.json").read_text())
    except (OSError, ValueError):
        old = None
    if old == json.loads(json.dumps(job, default=str)):
        return True
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    atomic_write_text(folder / "job.json", json.dumps(job, indent=1, default=str))
    return False
