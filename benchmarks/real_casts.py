"""How the real footage's colour casts spread: frame by frame, clip by clip, and in a
checkpoint's cast table (``model.camera_cast: real``). Real frames and their label maps only.

    python benchmarks/real_casts.py --real runs/cpu_appearance/real_surrogate/frames \
        [--model checkpoints/cpu_small.pt] [--json docs/results/real_casts.json]

Every labelled frame's cast is fitted as the cast table's is (``train.appearance.class_frame_fit``:
the log of each class's mean linear light as the class's own colour plus the frame's cast, per
channel, mean 0 over frames). Frames are grouped by clip: a frame's clip is its source name less
a trailing ``_<frame number>`` (``<video stem>_<frame:04d>`` for decoded videos, image sequences
named alike). If the casts were artefacts of the fit (a frame that shows few classes, a close
view that reddens one organ), they would vary within a clip as much as between clips; a
camera's white balance and exposure, and a patient's tissue, hold for a whole clip. Reported:
the spread of the frames' casts, of each frame's deviation from its clip's median, of the
clips' medians, the share of the variance within clips, and the white balance (log red/blue
gain) of frames, clip medians and the checkpoint's table rows, with how many clips lie beyond
the table's extreme rows.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fail, machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidsim2real.domains.real import RealFrames  # noqa: E402
from vidsim2real.io.atomic import atomic_write_text  # noqa: E402
from vidsim2real.train.appearance import class_frame_fit  # noqa: E402


def clip_of(name: str) -> str:
    """The clip a frame's source name belongs to: the name less a trailing ``_<digits>``."""
    return re.sub(r"_\d+$", "", name)


def spread(casts: np.ndarray) -> dict:
    """Spread of casts [N, 3] (log gains r, g, b): exposure (the mean of the three) std, white
    balance (the rest) std as a vector norm, log red/blue gain quantiles and extremes."""
    e = casts.mean(1)
    w = casts - e[:, None]
    rb = casts[:, 0] - casts[:, 2]
    q = np.quantile(rb, [0.05, 0.5, 0.95])
    return {"n": int(len(casts)), "exposure_std": float(e.std()),
            "white_balance_std": float(np.sqrt(((w - w.mean(0)) ** 2).sum(1).mean())),
            "log_rb_q05": float(q[0]), "log_rb_median": float(q[1]), "log_rb_q95": float(q[2]),
            "log_rb_min": float(rb.min()), "log_rb_max": float(rb.max())}


def by_clip(casts: np.ndarray, clips: list[str]) -> dict:
    """Casts [N, 3] of frames of ``clips`` (one name per frame) split into the clips' medians and
    each frame's deviation from its clip's: {"clip_medians": [C, 3], "within": [N, 3],
    "within_share": the share of the casts' variance (about their mean) within clips}."""
    names = sorted(set(clips))
    at = np.array([names.index(c) for c in clips])
    med = np.stack([np.median(casts[at == k], 0) for k in range(len(names))])
    within = casts - med[at]
    total = ((casts - casts.mean(0)) ** 2).sum()
    return {"clip_medians": med, "within": within, "within_share": float((within ** 2).sum() / max(total, 1e-12))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", required=True, help="the labelled real frames (a folder, as training reads them)")
    ap.add_argument("--model", default=None, help="a checkpoint whose cast table to compare")
    ap.add_argument("--size", type=int, default=128, help="the frames' size as training crops them")
    ap.add_argument("--min-pixels", type=int, default=500, help="a class counts in a frame from this many pixels")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not Path(args.real).exists():
        fail(f"--real: {args.real}: not found")
    real = RealFrames([args.real], size=(args.size, args.size), labels=True, flip=False)
    frames, clips = [], []
    for i in range(len(real)):
        img, lbl = (real.frame(i), real.label(i)) if real.label_paths[i] is not None else (None, None)
        if img is None or lbl is None:
            continue
        lbl_t = torch.from_numpy(lbl.astype(np.int64))
        if not any(c > 0 and int((lbl_t == c).sum()) >= args.min_pixels for c in lbl_t.unique().tolist()):
            continue                            # the fit leaves such frames out: keep the names aligned
        frames.append((torch.from_numpy(np.ascontiguousarray(img)).float() / 255.0, lbl_t))
        clips.append(clip_of(real.source_name(i)))
    if len(set(clips)) < 2:
        fail(f"--real: {args.real}: labelled frames of at least two clips are needed, "
             f"found {len(frames)} frames of {len(set(clips))}")
    casts = class_frame_fit(frames, args.min_pixels)[1].numpy()
    split = by_clip(casts, clips)
    rows = {"frames": spread(casts), "clip medians": spread(split["clip_medians"]),
            "frame less its clip's median": spread(split["within"])}
    doc = {"machine": machine(), "real": str(args.real), "frames": len(frames), "clips": len(set(clips)),
           "within_clip_variance_share": split["within_share"],
           "channel_std": {"frames": casts.std(0).tolist(), "within clips": split["within"].std(0).tolist(),
                           "clip medians": split["clip_medians"].std(0).tolist()}}
    if args.model:
        from vidsim2real.translate.inference import load_model
        camera = getattr(load_model(args.model, "cpu").net, "camera", None)
        if camera is None or not camera.has_rows:
            fail(f"--model: {args.model}: has no camera cast table (model.camera_cast)")
        rows_t = camera.cast.detach().cpu().double().numpy()
        rows["cast table of the model"] = spread(rows_t)
        rb_t = rows_t[:, 0] - rows_t[:, 2]
        rb_c = split["clip_medians"][:, 0] - split["clip_medians"][:, 2]
        doc["model"] = args.model
        doc["clips_beyond_table"] = {"below": int((rb_c < rb_t.min()).sum()), "above": int((rb_c > rb_t.max()).sum())}
    doc["rows"] = rows
    keys = ["n", "exposure_std", "white_balance_std", "log_rb_q05", "log_rb_median", "log_rb_q95", "log_rb_min",
            "log_rb_max"]
    print(f"{len(frames)} labelled frames of {len(set(clips))} clips; variance within clips: "
          f"{split['within_share']:.2f} of the frames' casts ({machine()})\n")
    print(table(["casts"] + keys, [[k] + [f"{v[c]:.3g}" for c in keys] for k, v in rows.items()]))
    if "clips_beyond_table" in doc:
        b = doc["clips_beyond_table"]
        print(f"\nclips whose median log r/b lies beyond the table's rows: {b['below']} below, {b['above']} above")
    if args.json:
        atomic_write_text(args.json, json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
