"""Shared helpers for the benchmark scripts: timing, table printing and bad input."""
from __future__ import annotations

import sys
import time

import torch


def timeit(fn, repeat: int = 5, warmup: int = 1, sync=None) -> float:
    """Median wall time of ``fn()`` in seconds (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def table(headers: list[str], rows: list[list]) -> str:
    """A GitHub-markdown table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "| " + " | ".join("-" * w for w in widths) + " |"] + [line(r) for r in cells[1:]])


def machine() -> str:
    import os
    import platform
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {dev}"


def fail(message: str) -> None:
    """Bad input to a benchmark script: one line on stderr, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
