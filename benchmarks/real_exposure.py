"""Does the real domain look auto-exposed? What ``model.exposure`` is chosen on, from a run's
training data only (unpaired): the spread over frames of the foreground's mean log luminance in
the labelled real frames, against the training scenes' sim renders at their auto exposure and
at a fixed exposure 1. An auto-exposed camera squeezes that spread (every frame is metered to
mid-grey); a fixed one keeps the light's falloff with distance.

    python benchmarks/real_exposure.py --run runs/cpu_appearance [--json OUT.json]

(the run folder holds ``scenes/*.yaml`` and ``real_surrogate/``, as ``vidsim2real train``
writes them).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402

from vidsim2real.domains.real import RealFrames  # noqa: E402
from vidsim2real.render import Renderer  # noqa: E402
from vidsim2real.scene import load_scene  # noqa: E402
from vidsim2real.scene.scene import Exposure  # noqa: E402
from vidsim2real.shading import srgb_to_linear  # noqa: E402

LUMA = torch.tensor([0.2126, 0.7152, 0.0722])


def foreground_log_luminance(srgb: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean log linear luminance of the labelled pixels of one frame [H, W, 3] in [0, 1]."""
    y = srgb_to_linear(srgb.float()) @ LUMA
    return float(torch.log(y[labels > 0].mean().clamp(min=1e-6)))


def spread(values: list[float]) -> dict:
    v = np.asarray(values)
    return {"n": len(v), "std": float(v.std()), "p10": float(np.percentile(v, 10)),
            "p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="a run folder with scenes/ and real_surrogate/")
    ap.add_argument("--views", type=int, default=8, help="frames per training scene")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    run = Path(args.run)
    scenes = sorted((run / "scenes").glob("*.yaml"))
    if not scenes or not (run / "real_surrogate").is_dir():
        raise SystemExit(f"{run}: expected scenes/*.yaml and real_surrogate/ (a training run's folder)")
    real = RealFrames([run / "real_surrogate"], size=(args.size, args.size), resize=args.size, labels=True)
    rows = {"real frames": []}
    for i in range(len(real)):
        if real.label_paths[i] is not None:
            rows["real frames"].append(foreground_log_luminance(
                torch.from_numpy(np.ascontiguousarray(real.frame(i))) / 255.0,
                torch.from_numpy(real.label(i).astype(np.int64))))
    for name, exposure in (("sim render, auto exposure", None), ("sim render, exposure 1", Exposure("fixed", 1.0))):
        rows[name] = []
        for p in scenes:
            sc = load_scene(p)
            r = Renderer(sc, size=(args.size, args.size), exposure=exposure)
            with torch.no_grad():
                buf = r.render([int(sc.frames * (k + 0.5) / args.views) for k in range(args.views)])
            rows[name] += [foreground_log_luminance(buf.sim_rgb[k].cpu(), buf.labels[k].cpu())
                           for k in range(len(buf.frames))]
    stats = {k: spread(v) for k, v in rows.items()}
    if min(s["n"] for s in stats.values()) < 10:
        raise SystemExit(f"too few frames to compare spreads: {({k: s['n'] for k, s in stats.items()})}")
    print(table(["set", "frames", "std of mean log luminance", "10 / 50 / 90 %"],
                [[k, s["n"], f"{s['std']:.2f}", f"{s['p10']:.2f} / {s['p50']:.2f} / {s['p90']:.2f}"]
                 for k, s in stats.items()]))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "run": str(run), "results": stats}, indent=1))


if __name__ == "__main__":
    main()
