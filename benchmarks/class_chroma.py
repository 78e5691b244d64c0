"""How each class's colour varies across it on the held-out scenes: what ``model.grade: real``
fits, measured where no model trained.

For every class, the pooled within-frame fit of its band above 3 px (``train.appearance.
class_chroma_moments``: a* and b* regressed on L* inside the class away from its outline, each
frame less its own mean; ``translate.networks.chroma_fit``): the slopes of a* and b* on L* and
the residual std of a* and b*, for each model's realism set (its translations, four style
codes, H.264, as ``temporal_table.py`` scores them), the surrogate of other patients (floor),
the sim render and the real reference. ``dist`` is each set's distance to the reference: the
slope differences x 10 and the residual std ratios' |log| summed over a*, b* (what the grade
moves to zero on the training views). ``top L*`` / ``top a*, b*``: the brightest 2 % of
the band (its highlights; ``networks.curve_fit``'s last bin, what ``model.grade: curve`` moves
onto the real one): how far above the frame's mean they stand and their chroma there. Same held-out cache as the table (``--out``). Usage:
    python benchmarks/class_chroma.py --model NAME=CKPT [--model ...] [--out DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402
from temporal_table import ROOT, HeldOut, realism_set, shown  # noqa: E402

from vidsim2real.io.atomic import atomic_write_text  # noqa: E402
from vidsim2real.train.appearance import class_chroma_moments  # noqa: E402
from vidsim2real.translate.inference import check_scene, load_model  # noqa: E402
from vidsim2real.translate.networks import chroma_fit, curve_fit  # noqa: E402


def fits(sets: list[torch.Tensor], labels: list[torch.Tensor]) -> dict[int, tuple]:
    """{class: (slope a, slope b, residual std a, b, frames, top dL*, top da*, top db*)} of
    frame sets [T, H, W, 3] in [0, 1] with labels [T, H, W], pooled over all sets (top: the
    mean of the brightest 2 % of the band, each frame less its mean)."""
    acc: dict = {}
    samples: dict = {}
    for frames, lbl in zip(sets, labels):
        for c, (m, k) in class_chroma_moments(zip(frames, lbl), samples=samples).items():
            m0, k0 = acc.get(c, (0, 0))
            acc[c] = (m0 + m, k0 + k)
    return {c: (*chroma_fit(m), k, *curve_fit(torch.cat(samples[c]))[0][:, -1].tolist()) for c, (m, k) in acc.items()}


def distance(f: tuple, ref: tuple) -> float:
    """Slope differences x 10 plus |log| of the residual std ratios, over a* and b*."""
    return (10 * (abs(f[0] - ref[0]) + abs(f[1] - ref[1]))
            + sum(abs(math.log(max(f[i], 1e-6) / max(ref[i], 1e-6))) for i in (2, 3)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[], help="NAME=CKPT (repeatable)")
    ap.add_argument("--out", default=str(ROOT / "runs/eval"), help="the held-out cache (temporal_table.py's)")
    ap.add_argument("--patients", type=int, default=4)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    models = []
    for spec in a.model:
        if "=" not in spec or not Path(spec.split("=", 1)[1]).exists():
            print(f"error: --model {spec!r}: expected NAME=CKPT with an existing checkpoint", file=sys.stderr)
            return 2
        models.append(spec.split("=", 1))
    held = HeldOut(Path(a.out), patients=a.patients)
    labels = [torch.stack([gt.labels(t) for t in range(len(gt))]) for gt in held.gts]
    cols = {"real reference": fits(held.real, held.real_labels)}
    for name in ("surrogate (floor)", "sim render"):
        cols[name] = fits([held.refs[i][name][1] for i in range(len(held.gts))], labels)
    for name, ckpt in models:
        model = load_model(ckpt)
        sets = []
        for i, gt in enumerate(held.gts):
            check_scene(model, held.scenes[i])
            print(f"{name}: scene {i + 1}/{len(held.gts)}", file=sys.stderr, flush=True)
            with torch.no_grad():
                sets.append(realism_set(model, gt, None, held.styles))
        cols[name] = fits(sets, labels)
    ref = cols["real reference"]
    names = {c: n for s in held.scenes for c, n in s.class_names().items()}
    rows = []
    for c in sorted(ref):
        for col, per in cols.items():
            if c in per:
                f = per[c]
                rows.append([f"{c} {names.get(c, '')}", col, *(f"{v:+.3f}" for v in f[:2]), *(f"{v:.2f}" for v in f[2:4]),
                             f[4], "" if col == "real reference" else f"{distance(f, ref[c]):.2f}",
                             f"{f[5]:+.1f}", f"{f[6]:+.1f}, {f[7]:+.1f}"])
    print(f"Held-out scenes, class chroma across each class (band above 3 px; {machine()})\n")
    print(table(["class", "set", "a*/L* slope", "b*/L* slope", "resid. std a*", "resid. std b*", "frames", "dist", "top L*",
                 "top a*, b*"], rows))
    if a.json:
        atomic_write_text(Path(a.json), json.dumps({
            "machine": machine(), "models": {n: shown(c) for n, c in models},
            "classes": {str(c): {col: {**dict(zip(("slope_a", "slope_b", "resid_a", "resid_b", "frames", "top_L",
                                                 "top_a", "top_b"), per[c])),
                                       **({} if col == "real reference" else {"dist": distance(per[c], ref[c])})}
                                 for col, per in cols.items() if c in per} for c in sorted(ref)}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
