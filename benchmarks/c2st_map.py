"""Where the powered C2ST sees that a model's translations are not real: the classifier of the
test's first run (``metrics.c2st.evidence_maps``: trained on the held-out translations and the
real reference exactly as ``temporal_table.py``'s C2ST trains it) drawn as a map over frames of
its test block — red where it sees "not real", blue where it sees "real", black where it is
unsure — for the model's frames and the real reference's, scene by scene. A diagnostic for
choosing what to work on next (docs/results.md, "Quilted detail"), not a score. Usage:
    python benchmarks/c2st_map.py --model CKPT --png docs/c2st_map.png [--out DIR] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from temporal_table import HeldOut, realism_set  # noqa: E402

from vidsim2real.metrics.c2st import _blocks, evidence_maps  # noqa: E402
from vidsim2real.translate.inference import check_scene, load_model  # noqa: E402

SCALE = 4.0      # |logit| drawn at full colour


def heat(m: torch.Tensor) -> torch.Tensor:
    """Logit maps [N, H, W] -> RGB [N, H, W, 3]: red told apart (< 0), blue real-looking (> 0)."""
    return torch.stack([(-m / SCALE).clamp(0, 1), torch.zeros_like(m), (m / SCALE).clamp(0, 1)], -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a checkpoint")
    ap.add_argument("--png", required=True, help="the figure to write")
    ap.add_argument("--out", default=str(ROOT / "out/temporal_table"), help="the held-out cache (temporal_table.py's)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    held = HeldOut(Path(args.out))
    model = load_model(args.model, held.device)
    sets = []
    for scene, gt in zip(held.scenes, held.gts):
        check_scene(model, scene)
        sets.append(realism_set(model, gt))
    # two frames of every clip's test block (block 0 of 4), ours and the real reference's
    pick = [(i, j) for i, c in enumerate(sets) for j in (0, len(_blocks(len(c), 4)[0]) // 2)]
    real_pick = [(i, j) for i, c in enumerate(held.real) for j in (0, len(_blocks(len(c), 4)[0]) // 2)]
    show = torch.stack([sets[i][j] for i, j in pick] + [held.real[i][j] for i, j in real_pick]).float()
    out = evidence_maps(sets, held.real, show, device=held.device)
    n = len(pick)
    maps = heat(out["maps"])
    rows = [show[:n], maps[:n], show[n:], maps[n:]]
    img = torch.cat([torch.cat(list(r), 1) for r in rows], 0).clamp(0, 1)
    args_png = Path(args.png)
    args_png.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image
    tmp = args_png.with_suffix(".tmp.png")
    Image.fromarray((img.numpy() * 255 + 0.5).astype(np.uint8)).save(tmp)
    tmp.replace(args_png)
    mean = [float(m.mean()) for m in out["maps"]]
    print(f"wrote {args_png}: rows model | its map | real reference | its map; classifier crop accuracy on its "
          f"test block {out['crop_accuracy']:.3f}; mean logit model frames "
          f"{np.mean(mean[:n]):+.2f}, real frames {np.mean(mean[n:]):+.2f} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
