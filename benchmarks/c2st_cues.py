"""What the powered C2ST sees: how far class colour alone moves it, on the held-out scenes.

The realism measure (temporal_table.py's C2ST, classifier trained to convergence) tells the sim
render from the real domain 0.98 of the time and the translations about as often. This asks why,
by editing one thing at a time and scoring the edited set with the same test (same cache, same
real reference, H.264 like every set):

* ``sim render, class colours of the reference (per scene)``: every class of every held-out scene
  moved in L*a*b* so that its mean colour over the scene equals the real reference's
  (``metrics.realism.recoloured``: ``class_delta_e`` becomes ~0, shading and edges untouched);
* ``... (pooled over scenes)``: one offset per class for all scenes (the reference's class means
  over the three scenes), so what is left is how the real domain's colour and exposure vary
  from scene to scene;
* ``sim render x detail layer of MODEL, class colours per scene``: the same with the model's
  detail layer multiplied in (``translate.model.detailed``), as the translation applies it;
* ``MODEL`` and ``MODEL, class colours per scene``: each checkpoint's translations (four style
  codes, as the table) as they are and recoloured;
* with ``--train-run DIR``: ``sim render, class offsets learned from training data``: one offset
  per class = the mean colour of the run's labelled real frames minus that of its training
  scenes' sim renders (what could be learned without the reference);
* with ``--swap 1,2,...`` (class ids; ``3+5``: both at once): ``MODEL, class C from the floor``: each
  model's set with the pixels of one class taken from the surrogate of other patients (the floor column: the same
  frames in the same blocks, after H.264), i.e. with that class made as real as the floor and
  the rest as it is, and the paired difference to ``MODEL`` (``c2st.paired``, run by run): which
  class, made right, would move the test; ``--swap-parts low,high,mean,shape`` (default ``all``)
  takes only one part of that class from the floor (``metrics.realism.with_class_from``: its
  band above or below ``--swap-sigma`` px, its mean colour per frame, or the band above less that
  mean; ``rim`` / ``inside``: all of it within 2 ``--swap-sigma`` px of its outline / farther in),
  to say what about the class to fix;
* with ``--views grey,coarse,fine``: the sim render, the floor and every model once more with
  the classifier seeing one cue alone (``metrics.c2st.view_of``: no colour; no finest band;
  only the finest band). A view has power when the sim render is told apart in it and the
  floor is not; a set told apart in every powered view has several independent tells, and
  fixing one of them cannot move the full test.

The recoloured rows use the reference itself: they are diagnostics (how much the measure rests on
colour), not methods. Each row's C2ST is cached in ``--out`` (``c2st_cues.json``; model rows keyed by the checkpoint's
digest, every row by the torch thread count too: ``HeldOut.c2st_key``), so an interrupted run resumes, and ``--rows`` scores a subset (names containing any of
its comma-separated words, e.g. ``--rows "per scene"``, and none of those written -WORD; give
a list that starts with one as ``--rows=-WORD``). Usage:
    python benchmarks/c2st_cues.py --model NAME=CKPT [--train-run runs/cpu_detail_layer]
        [--rows WORDS] [--views grey,coarse,fine] [--swap 1,2,3+5]
        [--swap-parts all,low,high,mean,shape,rim,inside] [--swap-sigma 3] [--c2st-seeds 3] [--out DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402
from temporal_table import (ROOT, PATIENT_CHOICES, HeldOut, _blocks, auc_cell, encode, paired_cell,  # noqa: E402
                            shown, translate)

from vidsim2real.io.atomic import atomic_write_text  # noqa: E402
from vidsim2real.layout import from_network, nhwc_to_nchw, to_network  # noqa: E402
from vidsim2real.metrics.c2st import VIEWS, paired, power, power_of  # noqa: E402
from vidsim2real.metrics.realism import (SWAP_PARTS, class_means_lab, class_stats, merge_class_stats,  # noqa: E402
                                         recoloured, with_class_from)
from vidsim2real.translate.inference import load_model  # noqa: E402
from vidsim2real.translate.model import detailed  # noqa: E402


def _labels(gt) -> torch.Tensor:
    return torch.stack([gt.labels(t) for t in range(len(gt))]).cpu()


def sim_with_detail(model, gt) -> torch.Tensor:
    """The sim render of a held-out scene [T, H, W, 3] with ``model``'s detail layer multiplied
    in as the translation applies it to its output."""
    out = []
    with torch.no_grad():
        for i in range(0, len(gt), 8):
            buf = gt.renderer.render(gt.frames[i:i + 8])
            feats = nhwc_to_nchw(model.textures[gt.scene.anatomy].sample(buf, gt.scene))
            out.append(from_network(detailed(to_network(buf.sim_rgb), feats[:, -3:])).cpu())
    return torch.cat(out)


def training_offsets(run: Path, views: int = 4, frames: int = 128) -> dict[int, torch.Tensor]:
    """Per class: mean L*a*b* of the run's labelled real frames (``run/real_surrogate``) minus
    that of its training scenes' sim renders (``run/scenes/*.yaml``, ``views`` frames each)."""
    from vidsim2real.domains.real import RealFrames
    from vidsim2real.render import Renderer
    from vidsim2real.scene import load_scene
    real = RealFrames([run / "real_surrogate"], size=(256, 256), resize=256, labels=True)
    acc_r: dict = {}
    idx = [i for i in range(len(real)) if real.label_paths[i] is not None]
    for i in idx[::max(1, len(idx) // frames)][:frames]:
        img = torch.from_numpy(np.ascontiguousarray(real.frame(i))).float()[None] / 255.0
        acc_r = merge_class_stats(acc_r, class_stats(img, torch.from_numpy(real.label(i).astype(np.int64))[None]))
    acc_s: dict = {}
    for p in sorted((run / "scenes").glob("*.yaml")):
        sc = load_scene(p)
        r = Renderer(sc, size=(256, 256))
        with torch.no_grad():
            buf = r.render([int(sc.frames * (k + 0.5) / views) for k in range(views)])
        acc_s = merge_class_stats(acc_s, class_stats(buf.sim_rgb.cpu(), buf.labels.cpu()))
    mr, ms = class_means_lab(acc_r), class_means_lab(acc_s)
    return {c: mr[c] - ms[c] for c in mr if c in ms}


def shifted_by(frames: torch.Tensor, labels: torch.Tensor, offsets: dict) -> torch.Tensor:
    """frames recoloured by fixed per-class L*a*b* offsets (``recoloured`` to mean + offset)."""
    means = class_means_lab(class_stats(frames, labels))
    return recoloured(frames, labels, {c: means[c] + offsets[c] for c in means if c in offsets})


def swap_row(model: str, c: tuple[int, ...], part: str, sigma: float) -> str:
    """The row name of model ``model`` with (``part`` of) the classes ``c`` from the floor."""
    what = {"all": "", "low": f" above {sigma:g} px", "high": f" below {sigma:g} px", "mean": " mean colour",
            "shape": f" above {sigma:g} px less its mean", "rim": f" within {2 * sigma:g} px of its outline",
            "inside": f" farther than {2 * sigma:g} px in"}[part]
    return f"{model}, class {'+'.join(str(i) for i in c)}{what} from the floor"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=[], metavar="NAME=CKPT")
    ap.add_argument("--train-run", default=None, help="a run directory (scenes/, real_surrogate/) for the "
                                                      "learned-offsets row")
    ap.add_argument("--rows", default=None, help="score only rows whose name contains one of these "
                                                 "comma-separated words (and none of those given as -WORD)")
    ap.add_argument("--views", default="", help="also score the sim render, the floor and the models with the "
                                                 f"classifier seeing one cue alone: comma-separated of {', '.join(VIEWS[1:])}")
    ap.add_argument("--swap", default="", help="also score each model with one class's pixels from the floor "
                                                "column: comma-separated class ids, or ids joined by + for "
                                                "several classes at once (3,5,3+5)")
    ap.add_argument("--swap-parts", default="all", help="which part of the class comes from the floor in the "
                    f"--swap rows: comma-separated of {', '.join(SWAP_PARTS)} (metrics.realism.with_class_from)")
    ap.add_argument("--swap-sigma", type=float, default=3.0, help="px: where the low and high parts meet")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", default=str(ROOT / "out/temporal_table"), help="the held-out cache (temporal_table.py's)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--c2st-seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--patients", type=int, default=4, choices=PATIENT_CHOICES,
                    help="other patients in the real reference and the floor (temporal_table.py's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    views = [v.strip() for v in args.views.split(",") if v.strip()]
    bad = [v for v in views if v not in VIEWS[1:]]
    if bad:
        raise SystemExit(f"--views: unknown view(s) {', '.join(bad)} (choose from {', '.join(VIEWS[1:])})")
    try:
        swap = [tuple(int(c) for c in g.split("+")) for g in args.swap.split(",") if g.strip()]
    except ValueError:
        raise SystemExit(f"--swap: class ids are integers (joined by + for a group), got '{args.swap}'") from None
    parts = [p.strip() for p in args.swap_parts.split(",") if p.strip()]
    if not parts or any(p not in SWAP_PARTS for p in parts):
        raise SystemExit(f"--swap-parts: choose from {', '.join(SWAP_PARTS)}, got '{args.swap_parts}'")
    if not args.swap_sigma > 0:
        raise SystemExit(f"--swap-sigma: must be > 0 px, got {args.swap_sigma}")
    t0 = time.perf_counter()
    held = HeldOut(Path(args.out), args.frames, args.size, patients=args.patients)
    labels = [_labels(gt) for gt in held.gts]
    ref_stats = [class_stats(held.real[i], held.real_labels[i]) for i in range(len(held.gts))]
    per_scene = [class_means_lab(s) for s in ref_stats]
    pooled_stats: dict = {}
    for s in ref_stats:
        pooled_stats = merge_class_stats(pooled_stats, s)
    pooled = class_means_lab(pooled_stats)
    sims = [held.refs[i]["sim render"][0] for i in range(len(held.gts))]
    words = [w.strip() for w in args.rows.split(",")] if args.rows else None
    models = dict(m.split("=", 1) for m in args.model)
    cache_path = Path(args.out) / "c2st_cues.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    base = held.c2st_key(args.c2st_seeds)
    results = {"sim render": held.reference_c2st("sim render", args.c2st_seeds),
               "surrogate (floor)": held.reference_c2st("surrogate (floor)", args.c2st_seeds)}
    by_view: dict = {}                          # set -> view -> result (--views)
    for v in views:
        for ref in ("sim render", "surrogate (floor)"):
            by_view.setdefault(ref, {"full": results[ref]})[v] = held.reference_c2st(ref, args.c2st_seeds, v)

    def row(name: str, key: str, make, view: str = "full") -> None:
        """Score one row (``make()`` -> its sets, one per scene), or take it from the cache."""
        label = name if view == "full" else f"{name} [{view}]"
        if words is not None:
            want = [w for w in words if not w.startswith("-")]
            if any(w[1:] in label for w in words if w.startswith("-")) or (want and not any(w in label for w in want)):
                return
        key = f"{label}|{key}|{base}"
        if "c2st_auc" not in cache.get(key, {}):       # (rows cached before the runs' AUC were kept: again)
            t = time.perf_counter()
            cache[key] = held.c2st_all(make(), args.c2st_seeds, view)
            atomic_write_text(cache_path, json.dumps(cache, indent=1))     # an interrupt keeps the old rows
            print(f"{label}: {cache[key]['c2st_accuracy']:.3f} ± {cache[key]['c2st_std']:.3f}, AUC "
                  f"{cache[key]['c2st_auc']:.3f} ({time.perf_counter() - t:.0f} s)", flush=True)
        if view == "full":
            results[name] = cache[key]
        if views and name in models:
            by_view.setdefault(name, {})[view] = cache[key]

    row("sim render, class colours of the reference (per scene)", "",
        lambda: [encode(recoloured(s, lab, t)) for s, lab, t in zip(sims, labels, per_scene)])
    row("sim render, class colours of the reference (pooled over scenes)", "",
        lambda: [encode(recoloured(s, lab, pooled)) for s, lab in zip(sims, labels)])
    if args.train_run:
        def learned() -> list:
            off = training_offsets(Path(args.train_run))
            return [encode(shifted_by(s, lab, off)) for s, lab in zip(sims, labels)]
        row("sim render, class offsets learned from training data", str(Path(args.train_run).resolve()), learned)
    detail_done = False
    for name, ckpt in models.items():
        digest = hashlib.sha256(Path(ckpt).read_bytes()).hexdigest()[:16]
        model = load_model(ckpt, held.device)
        trs: list = []

        def translated() -> list:
            if not trs:
                trs.extend(torch.cat([translate(model, gt, b, s) for b, s in
                                      zip(_blocks(list(range(len(gt))), len(held.styles)), held.styles)]) for gt in held.gts)
            return trs
        if model.net.detail and not detail_done:
            detail_done = True
            row(f"sim render x detail layer of {name}, class colours per scene", digest,
                lambda: [encode(recoloured(sim_with_detail(model, gt), lab, t))
                         for gt, lab, t in zip(held.gts, labels, per_scene)])
        row(name, digest, lambda: [encode(x) for x in translated()])
        row(f"{name}, class colours per scene", digest,
            lambda: [encode(recoloured(x, lab, t)) for x, lab, t in zip(translated(), labels, per_scene)])
        for v in views:
            row(name, digest, lambda: [encode(x) for x in translated()], v)
        for c in swap:
            for part in parts:
                row(swap_row(name, c, part, args.swap_sigma), digest,
                    lambda c=c, part=part: [with_class_from(encode(x), lab, held.refs[i]["surrogate (floor)"][1], c,
                                                            part, args.swap_sigma)
                                            for i, (x, lab) in enumerate(zip(translated(), labels))])
    pw = power_of(results["sim render"], results["surrogate (floor)"])
    if not pw["powered"]:
        raise SystemExit(f"the C2ST is underpowered on this cache ({pw}); its verdicts here would mean nothing")
    rows = [[name, f"{r['c2st_accuracy']:.3f} ± {r['c2st_std']:.3f}", auc_cell(r, pw)] for name, r in results.items()]
    print(table(["set (held-out scenes, H.264)", "C2ST accuracy", "C2ST AUC"], rows))
    swapped, swapped_auc, cells = {}, {}, []
    auc_powered = bool(pw["auc"] and pw["auc"]["powered"])
    for name in models:
        for c in swap:
            for part in parts:
                key = swap_row(name, c, part, args.swap_sigma)
                if key in results and name in results:
                    swapped[key] = paired(results[key], results[name])
                    swapped_auc[key] = paired(results[key], results[name], "c2st_run_auc")
                    cells.append([key, paired_cell(results[key], results[name], True),
                                  paired_cell(results[key], results[name], auc_powered, "c2st_run_auc")])
    if cells:
        print(table(["class from the floor", "accuracy − model (run by run)", "AUC − model (run by run)"], cells))
    view_power = {v: power(by_view["sim render"][v]["c2st_accuracy"], by_view["surrogate (floor)"][v]["c2st_accuracy"])
                  for v in views}
    if views:
        cols = ["full"] + views
        cells = [[name] + [f"{r[v]['c2st_accuracy']:.3f} ± {r[v]['c2st_std']:.3f}" if v in r else "–" for v in cols]
                 for name, r in by_view.items()]
        cells.append(["view has power"] + ["yes"] + ["yes" if view_power[v]["powered"] else "no" for v in views])
        print(table(["what the classifier sees"] + cols, cells))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps({
                                               "machine": machine(), "frames": args.frames, "size": args.size,
                                               "c2st_seeds": args.c2st_seeds, "patients": args.patients,
                                               "models": {k: shown(v) for k, v in models.items()}, "results": results,
                                               "c2st_power": pw, "by_view": by_view, "view_power": view_power,
                                               "swapped_paired": swapped, "swapped_paired_auc": swapped_auc,
                                               "swap_sigma": args.swap_sigma,
                                               "seconds": time.perf_counter() - t0}, indent=1))


if __name__ == "__main__":
    main()
