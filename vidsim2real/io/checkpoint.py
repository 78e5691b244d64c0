"""The one checkpoint file format (writer and reader).

A checkpoint is a ``torch.save`` of plain containers, tensors, numbers and strings only, so it
loads with ``torch.load(weights_only=True)`` (no arbitrary pickles). It carries a SHA-256
digest of its content: a modified or truncated file is refused with a clear error. Writes are
atomic (temporary file + rename). A tensor may be stored quantized (``quantized``): int8 with a
power-of-two scale per leading-two-dims slice, a quarter of float32; the reader turns it back into a
float32 tensor, so what reads a payload never sees the packing.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .atomic import atomic_path

FORMAT = "vidsim2real-checkpoint"
VERSION = 1
Q8 = "int8"           # a {"int8": q, "scale": s} mapping in a payload is a quantized tensor


def _feed(h, obj: Any) -> None:
    """Canonical hash of nested dict/list/tensor/scalar content."""
    if isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=str):
            h.update(repr(k).encode())
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    else:
        h.update(f"{type(obj).__name__}:{obj!r}".encode())


def quantized(t: torch.Tensor) -> dict:
    """A float tensor [A, B, ...] stored as int8 with one scale per [A, B] slice: the power of
    two that maps the slice's largest magnitude into 64..127, so the round trip is within
    half a step (<= 0.8 % of the slice's largest value) and storing a loaded tensor again
    gives the same bytes (fit-textures keeps the other anatomies' texels bit-identical). Used
    for texel pyramids [planes, channels, H, W] of slim checkpoints."""
    t = t.detach().cpu().float()
    dims = tuple(range(2, t.ndim))
    amax = t.abs().amax(dim=dims, keepdim=True) if dims else t.abs().max()
    scale = torch.exp2(torch.ceil(torch.log2(amax.clamp(min=1e-30) / 127.0)))
    return {Q8: (t / scale).round().clamp(-127, 127).to(torch.int8), "scale": scale}


def _unpacked(obj: Any) -> Any:
    """``obj`` with every ``quantized`` mapping replaced by its float32 tensor."""
    if isinstance(obj, dict):
        if set(obj) == {Q8, "scale"} and isinstance(obj[Q8], torch.Tensor):
            return obj[Q8].float() * obj["scale"]
        return {k: _unpacked(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpacked(v) for v in obj]
    return obj


def digest(payload: dict) -> str:
    h = hashlib.sha256()
    _feed(h, payload)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` (plain data + tensors) with format header and content digest, atomically."""
    doc = {"format": FORMAT, "version": VERSION, "payload": payload, "digest": digest(payload)}
    buf = io.BytesIO()
    torch.save(doc, buf)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load and verify a checkpoint; returns its payload. Bad files raise UserError (one line)."""
    path = Path(path)
    if not path.exists():
        raise UserError("checkpoint not found", file=path)
    if path.is_dir():
        raise UserError("is a directory, expected a checkpoint file", file=path)
    try:
        with open(path, "rb") as f:
            intact_zip = zipfile.is_zipfile(f)     # torch.save writes a zip archive
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror or exc}", file=path) from None
    if not intact_zip:
        raise UserError("not a vidsim2real checkpoint, or corrupt (truncated?)", file=path)
    try:
        doc = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        if "Unsupported global" in str(exc) or "weights_only" in str(exc) and "GLOBAL" in str(exc):
            raise UserError("refused: it contains objects outside the safe format of checkpoints (pickled code)",
                            file=path) from None
        raise UserError("not a vidsim2real checkpoint, or corrupt (truncated?)", file=path) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError("not a vidsim2real checkpoint (format header missing)", file=path)
    if doc.get("version") != VERSION:
        raise UserError(f"checkpoint format version {doc.get('version')} is not supported (expected {VERSION})",
                        file=path)
    payload = doc.get("payload")
    if not isinstance(payload, dict) or doc.get("digest") != digest(payload):
        raise UserError("checkpoint content does not match its digest: the file was modified or is corrupt",
                        file=path)
    return _unpacked(payload)
