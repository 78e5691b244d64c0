"""Everything `vidsim2real metrics` computes for one video, plus plots and the HTML report."""
from __future__ import annotations

import hashlib
import html
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .. import __version__
from ..io.atomic import atomic_write_text, claim_parts, file_stamp
from ..io.video import VideoFrames, read_sidecar
from .gt import SceneGT
from .c2st import FOLDS, VERSION, c2st, describe_power, power_of, split_real
from .realism import class_realism, class_stats, color_hist_distance, ms_ssim_lum, outline_auc, swd
from .temporal import pair_measures, texel_std, tof

KEYS = ["warp_error", "texel_std", "orb_consistent_ratio", "orb_consistent_count", "tof", "ms_ssim_lum_vs_sim",
        "outline_auc",
        "c2st_accuracy", "c2st_auc", "class_delta_e", "class_texture_log_ratio", "swd", "color_hist_distance"]
LOWER_IS_BETTER = {"warp_error": True, "texel_std": True, "orb_consistent_ratio": False,
                   "orb_consistent_count": False, "tof": True, "swd": True, "color_hist_distance": True,
                   "ms_ssim_lum_vs_sim": False, "outline_auc": False, "c2st_accuracy": True, "c2st_auc": True,
                   "class_delta_e": True,
                   "class_texture_log_ratio": True}


def open_video(path: str | Path, workdir: str | Path) -> tuple[VideoFrames, dict]:
    """A video written by this tool as a streamed frame sequence (the translated half of a
    side-by-side video) and its sidecar metadata."""
    path = Path(path)
    meta = read_sidecar(path) or {}
    return VideoFrames(path, workdir, right_half=bool(meta.get("side_by_side"))), meta


SET_FRAMES = 200      # frames (evenly spaced) a video contributes to SWD and colour histograms
C2ST_FRAMES = 64      # ... and to the classifier two-sample test
OUTLINE_FRAMES = 64   # ... and to the outline agreement (outline_auc)


def _spaced(n: int, limit: int) -> list[int]:
    """At most ``limit`` evenly spaced indices of ``n``."""
    return np.unique(np.linspace(0, n - 1, min(limit, n)).round().astype(int)).tolist()


class Spaced:
    """At most ``limit`` evenly spaced frames of a frame sequence (a tensor [T, H, W, 3],
    io.video.VideoFrames or SceneGT.sim_rgb), itself a sequence: ``[i]`` reads frame i of the
    subset when asked, so the set measures, which visit it a few frames at a time, never hold
    a long clip."""

    def __init__(self, frames, limit: int):
        self.frames, self.idx = frames, _spaced(len(frames), limit)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.frames[self.idx[i]]


COMPUTE_STEPS = 5         # measures of ``compute`` that report a step (the set distances a sixth)


def compute(frames, gt: SceneGT, real: torch.Tensor | None = None, on_step=None) -> dict:
    """All temporal and structure metrics of one video aligned with ``gt`` (docs/metrics.md),
    plus SWD and colour histograms against ``real`` [R, H, W, 3] when given.
    ``frames``: [T, H, W, 3] or any frame sequence (streamed: memory flat in T). ``on_step``:
    called after each measure (``COMPUTE_STEPS``, one more with ``real``)."""
    step = on_step or (lambda: None)
    out: dict = {}
    pairs = pair_measures(frames, gt)       # warp error and ORB share each pair's correspondence
    step()
    out.update({k: v for k, v in pairs.items() if k.startswith("warp_error")})
    out["texel_std"] = texel_std(frames, gt)
    step()
    out.update({k: v for k, v in pairs.items() if k.startswith("orb")})
    out["tof"] = tof(frames, gt.sim_rgb, gt.mask)
    step()
    out["ms_ssim_lum_vs_sim"] = ms_ssim_lum(frames, gt.sim_rgb)
    step()
    idx = _spaced(len(frames), OUTLINE_FRAMES)
    gt.ensure(idx)
    out["outline_auc"] = outline_auc([frames[i] for i in idx], [gt.labels(i) for i in idx])
    step()
    if real is not None:
        out.update(set_distances(frames, real))
        step()
    return out


def set_distances(frames, real: torch.Tensor) -> dict:
    """SWD and the colour histogram distance of a video against ``real`` [R, H, W, 3]: of at
    most SET_FRAMES evenly spaced frames of ``frames`` (any frame sequence, visited in chunks)."""
    sub = Spaced(frames, SET_FRAMES)
    return {**swd(sub, real), "color_hist_distance": color_hist_distance(sub, real)}


def realism(frames, gt: SceneGT, real: torch.Tensor, real_labels: torch.Tensor | None = None,
            names: dict | None = None, c2st_steps: int = 3000, c2st_seeds: int = 3, device="cpu", on_run=None) -> dict:
    """The classifier two-sample test of the video against ``real`` [R, H, W, 3] (at most
    C2ST_FRAMES evenly spaced frames of the video; ``c2st_steps``: most training steps of a
    run, ``c2st_seeds``: classifier seeds) and, when the real frames have class labels
    [R, H, W], the per-class colour and texture measures (``metrics.realism``)."""
    idx = _spaced(len(frames), C2ST_FRAMES)
    sub = torch.stack([frames[i] for i in idx]).float()
    out = c2st(sub, real, max_steps=c2st_steps, seeds=c2st_seeds, device=device, on_run=on_run)
    if real_labels is not None:
        gt.ensure(idx)
        labels = torch.stack([gt.labels(i) for i in idx])
        out.update(class_realism(class_stats(sub, labels), class_stats(real, real_labels), names))
    return out


def c2st_power(gt: SceneGT, real: torch.Tensor, c2st_steps: int = 3000, c2st_seeds: int = 3, device="cpu",
               on_run=None) -> dict:
    """The power of the two-sample test on this video's scene and real set: the same test on
    the sim render of the same frames (it must be told apart) and on two halves of the real
    set (they must not be); see ``c2st.power``. Of the accuracy, and under "auc" of the same
    runs' AUC. ``on_run``: called after each classifier run."""
    idx = _spaced(len(gt), C2ST_FRAMES)
    sim = gt.sim_rgb[idx].float()
    kw = {"max_steps": c2st_steps, "seeds": c2st_seeds, "device": device, "on_run": on_run}
    return power_of(c2st(sim, real, **kw), c2st(*split_real(real), **kw))


def load_real_frames(path: str | Path, size: tuple[int, int], limit: int = 200) -> torch.Tensor:
    """Up to ``limit`` real frames (images and/or videos under ``path``, evenly spaced in file
    order, so frames of one source stay together) resized to ``size``: [N, H, W, 3] in [0, 1]."""
    return load_real_set(path, size, limit)[0]


def load_real_set(path: str | Path, size: tuple[int, int], limit: int = 200):
    """``load_real_frames`` plus their class labels [N, H, W] when the set has them (a
    ``labels`` folder beside or inside the frames: ``labels/<image stem>.png``, or
    ``labels/<video stem>_<frame:04d>.png`` for frames of videos), else None."""
    import cv2

    from ..domains.real import RealFrames
    ds = RealFrames([path], size=size, resize=min(size), flip=False, labels=True)
    idx = _spaced(len(ds), limit)
    frames, labels = [], []
    for i in idx:
        img = ds.frame(int(i))
        if img is None:
            continue
        frames.append(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
        lab = ds.label(int(i))
        labels.append(None if lab is None else cv2.resize(lab, size, interpolation=cv2.INTER_NEAREST))
    if not frames:
        raise UserError("no readable real frames", file=path, field="real")
    labs = torch.from_numpy(np.stack(labels)).long() if all(x is not None for x in labels) else None
    return torch.from_numpy(np.stack(frames)).float() / 255.0, labs


class Stages:
    """The finished stages of a metrics job (the test's power, each video's measures and its
    two-sample test), each a JSON file written atomically in ``OUT/metrics.parts/``, so an
    interrupted job resumes where it stopped: rerunning the same command loads them instead of
    measuring again (the measures are seeded: the report is the same as an uninterrupted run's).
    A job with other inputs (``key``) starts over (``io.atomic.claim_parts``); ``done``
    removes the folder."""

    def __init__(self, out: str | Path, key: dict):
        self.dir = Path(out) / "metrics.parts"
        claim_parts(self.dir, {**key, "tool": __version__})
        self.finished = sorted(p.stem for p in self.dir.glob("*.json") if p.name != "job.json")

    def get_or(self, name: str, make):
        """The stage's stored result, else ``make()`` stored first."""
        path = self.dir / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text())
        value = make()
        atomic_write_text(path, json.dumps(value, default=float))
        return value

    def done(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if t is not None:
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def evaluate_video(video: str | Path, out: str | Path, scene_path: str | Path | None = None,
                   frames: range | None = None, real: str | Path | None = None, references=(),
                   device="cpu", c2st_steps: int = 3000, c2st_seeds: int = 3, progress: bool = True) -> dict:
    """Every metric of ``video`` (and of each reference video of the same frames) against the
    ground truth of its scene and, with ``real`` (a folder of real frames), the realism
    measures; writes metrics.json, PNG plots and index.html to ``out``; returns the results
    per video name. The scene and frame range default to the video's sidecar. ``c2st_steps``,
    ``c2st_seeds``: the two-sample test's most training steps per run and classifier seeds
    (``metrics.c2st``); its power (sim render, real vs real) is measured once and reported with
    every video ("c2st_power"; "c2st_powered": False marks an underpowered figure). Streams
    the videos from disk: memory does not grow with clip length. ``progress``: a bar on stderr
    (a step per classifier run and per measure of each video, the stage beside it).
    Resumable: finished stages wait in ``out/metrics.parts/`` (``Stages``) until the report is
    written, so rerunning an interrupted job skips them."""
    import tempfile

    from tqdm import tqdm

    from ..scene import load_scene
    video = Path(video)
    with tempfile.TemporaryDirectory() as tmp:
        clip, meta = open_video(video, tmp)
        scene_path = scene_path or meta.get("scene")
        if not scene_path:
            raise UserError("no scene given and the video has no sidecar naming one", file=video, field="scene")
        scene = load_scene(scene_path)
        T, (H, W) = len(clip), clip.shape[:2]
        if frames is None:
            frames = range(*meta["frames"]) if meta.get("frames") else range(0, T)
        if len(frames) != T:
            raise UserError(f"video has {T} frames but the frame range {frames.start}:{frames.stop} has "
                            f"{len(frames)}", file=video, field="frames")
        if frames.stop > scene.frames:
            raise UserError(f"frames {frames.start}:{frames.stop} outside the scene's 0:{scene.frames}", file=video,
                            field="frames")
        if T < 2:
            raise UserError("needs at least 2 frames", file=video)
        gt = SceneGT(scene, frames, (W, H), device=device)
        real_frames, real_labels = load_real_set(real, (W, H)) if real else (None, None)
        names = scene.class_names()
        clips, paths = {video.stem: clip}, {video.stem: str(video)}
        for i, ref in enumerate(references):
            (Path(tmp) / str(i)).mkdir()
            rc, _ = open_video(ref, Path(tmp) / str(i))
            if (len(rc), rc.shape) != (T, clip.shape):
                raise UserError(f"reference has {len(rc)} frames of {rc.shape}, the video {T} of {clip.shape}",
                                file=ref, field="reference")
            name = Path(ref).stem if Path(ref).stem not in clips else f"{Path(ref).stem}_{len(clips)}"
            clips[name], paths[name] = rc, str(ref)
        results = {}
        key = {"videos": {str(Path(p).resolve()): file_stamp(p) for p in paths.values()},
               "scene": [str(Path(scene_path).resolve()), file_stamp(scene_path)],
               "frames": [frames.start, frames.stop], "size": [W, H], "real": _digest(real_frames, real_labels)
               if real_frames is not None else None, "c2st": [VERSION, c2st_steps, c2st_seeds], "device": str(device)}
        parts = Stages(out, key)
        runs = c2st_seeds * FOLDS
        tests = 0 if real_frames is None else 2 + len(clips)       # power: sim render, real halves
        measures = COMPUTE_STEPS + (real_frames is not None)
        bar = tqdm(total=len(clips) * measures + tests * runs, desc=f"metrics {video.stem}", unit="step",
                   disable=not progress)
        if parts.finished:
            bar.write(f"resuming: {len(parts.finished)} finished stage(s) in {parts.dir}", file=sys.stderr)

        def stage(name: str, text: str, steps: int, make):
            if name in parts.finished:
                bar.update(steps)
            bar.set_postfix_str(text, refresh=True)
            return parts.get_or(name, make)
        if real_frames is not None:
            pw = stage("power", "two-sample test's power (sim render; real vs real)", 2 * runs,
                       lambda: c2st_power(gt, real_frames, c2st_steps, c2st_seeds, device, on_run=bar.update))
        for i, (name, c) in enumerate(clips.items()):
            results[name] = stage(f"{i}.measures", f"{name}: temporal and structure measures", measures,
                                  lambda: compute(c, gt, real_frames, on_step=bar.update))
            if real_frames is not None:
                results[name].update(stage(f"{i}.c2st", f"{name}: two-sample test", runs,
                                           lambda: realism(c, gt, real_frames, real_labels, names, c2st_steps,
                                                           c2st_seeds, device, on_run=bar.update)))
                results[name].update(c2st_power=pw, c2st_powered=pw["powered"],
                                     c2st_auc_powered=pw["auc"]["powered"])
        bar.total = bar.n         # a test with fewer frames than folds runs no classifier
        bar.close()
        write_report(Path(out), results, paths, {"scene": str(scene_path), "frames": [frames.start, frames.stop],
                                                 "size": [W, H], "real": None if real is None else str(real)})
        parts.done()
    return results


def plots(results: dict, out_dir: Path) -> list[str]:
    """PNG plots of the per-offset metrics of every video; returns their file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = []
    for key, label in (("warp_error_by_offset", "warping error (lower is better)"),
                       ("orb_consistent_ratio_by_offset", "ORB consistent match ratio (higher is better)")):
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
        for name, r in results.items():
            d = r.get(key, {})
            if d:
                ks = sorted(d, key=int)
                ax.plot([int(k) for k in ks], [d[k] for k in ks], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("frame offset k")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fname = f"{key}.png"
        fig.savefig(out_dir / fname)
        plt.close(fig)
        names.append(fname)
    return names


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) and np.isfinite(v) else "–"


def format_value(result: dict, key: str) -> str:
    """A metric of one video as shown in reports: the C2ST figures (accuracy, AUC) of an
    underpowered test read "underpowered" instead of a number."""
    # a C2ST figure: (its std over the runs, whether the test has power for it)
    c2st_keys = {"c2st_accuracy": ("c2st_std", "c2st_powered"), "c2st_auc": ("c2st_auc_std", "c2st_auc_powered")}
    std, powered = c2st_keys.get(key, (None, None))
    if powered and result.get(powered) is False:
        return "underpowered"
    v = result.get(key)
    if std and isinstance(v, float) and np.isfinite(v) and std in result:
        return f"{v:.3f} ± {result[std]:.3f}"
    return _fmt(v)


def html_report(results: dict, videos: dict, plot_files: list[str], meta: dict) -> str:
    """One self-contained (offline) HTML page: videos side by side, the metrics table, plots."""
    rows = []
    for key in KEYS:
        cells = "".join(f"<td>{html.escape(format_value(r, key))}</td>" for r in results.values())
        arrow = "↓" if LOWER_IS_BETTER[key] else "↑"
        rows.append(f"<tr><th>{key} {arrow}</th>{cells}</tr>")
    head = "".join(f"<th>{html.escape(n)}</th>" for n in results)
    vids = "".join(f'<figure><video src="{html.escape(v)}" controls loop muted autoplay width="320"></video>'
                   f"<figcaption>{html.escape(n)}</figcaption></figure>" for n, v in videos.items())
    imgs = "".join(f'<img src="{html.escape(p)}" width="480">' for p in plot_files)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>vidsim2real metrics</title>
<style>body{{font-family:sans-serif;margin:2em}}figure{{display:inline-block;margin:4px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head>
<body><h1>vidsim2real metrics</h1><p>scene: {html.escape(str(meta.get('scene')))}, frames {meta.get('frames')},
size {meta.get('size')}</p><div>{vids}</div>
<table><tr><th></th>{head}</tr>{''.join(rows)}</table><div>{imgs}</div>
{_power_line(results)}<p>Definitions: docs/metrics.md.</p></body></html>"""


def _power_line(results: dict) -> str:
    pw = next((r.get("c2st_power") for r in results.values() if r.get("c2st_power")), None)
    return f"<p>{html.escape(describe_power(pw))}.</p>" if pw else ""


def write_report(out_dir: Path, results: dict, video_paths: dict, meta: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "videos").mkdir(exist_ok=True)
    rel = {}
    for name, p in video_paths.items():
        dst = out_dir / "videos" / f"{name}{Path(p).suffix}"
        if Path(p).resolve() != dst.resolve():
            shutil.copyfile(p, dst)
        rel[name] = f"videos/{dst.name}"
    files = plots(results, out_dir)
    first = next(iter(results))
    doc = {**{k: results[first].get(k) for k in results[first]}, "video": str(video_paths[first]),
           "references": {n: r for n, r in results.items() if n != first}, "meta": meta}
    atomic_write_text(out_dir / "metrics.json", json.dumps(doc, indent=2, default=float))
    atomic_write_text(out_dir / "index.html", html_report(results, rel, files, meta))
