"""The headline results: temporal consistency and realism on held-out scenes.

On scenes no model was trained on (liver_edge_breathing and random scenes 50000, 50001; 48
frames at 256²) every column is scored with the same measures:

* temporal: warp error, texel std, ORB consistency, tOF (on the frames as rendered);
* structure kept: MS-SSIM of the brightness against the sim render;
* realism, against real-domain frames *of the same scenes*: the surrogate rendered for four
  other patients (16 frames each spanning the clip, one contiguous block per patient; eight
  patients of 8 frames with --patients 8): the classifier two-sample
  test (C2ST accuracy, 0.5 = indistinguishable; one test over the three scenes, each trained
  until it stops learning, 4 folds x --c2st-seeds seeds; metrics/c2st.py), per-class L*a*b*
  colour distance and texture ratio, SWD and colour histograms. Every set passes through the same H.264 encoding, and
  like is compared with like: translations in four style codes (one per block of 12 frames),
  the surrogate floor as four other patients, the sim render as is (eight of each with
  --patients 8: the style code also picks a clip's black level, model.camera_black).

Columns: the models given (``--model NAME=CKPT``, repeatable), the sim render (ceiling) and the
surrogate of other patients (floor). The two reference columns are the C2ST's power check: when
it tells the sim render apart less than 0.93 of the time or the floor more than 0.62, every
C2ST cell reads "underpowered". Their C2ST figures are cached in --out (same data, same test),
and so is every model column's result (``model_results.json``), keyed by the checkpoint's bytes,
the code that scores it (every .py of the package and this script), the test's settings and
the torch thread count (the classifier is not bit-equal across thread counts): re-running with
the shipped checkpoint beside a new one scores only the new one. --fresh recomputes.

The clips' draws move the C2ST (docs/results.md, "At eight patients"), so every model column is
scored on two draws by default (``--style-offset 0 4`` at four patients: style codes 0-3 and
4-7; ``0 8`` at eight), each draw cached on its own, and pooled (``pool_draws``): the figures
are the draws' means with each draw's value beside them, the C2ST's runs are draws x seeds x
folds and the run-by-run difference pairs draw, seed and fold. ``--style-offset 0`` scores one
draw. ``--pool A.json B.json`` pools the --json files of earlier runs (one per draw) without
scoring anything.
Usage: python benchmarks/temporal_table.py [--model NAME=CKPT ...] [--frames 48] [--size 256]
       [--out DIR] [--json FILE] [--markdown FILE] [--c2st-seeds 3] [--threads N] [--patients 4|8] [--fresh]
       [--style-offset K [K ...]] [--pool JSON [JSON ...]]
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fail, machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidsim2real.domains.surrogate import SurrogateRenderer  # noqa: E402
from vidsim2real.io.atomic import atomic_write_text  # noqa: E402
from vidsim2real.io.video import VideoWriter, read_video  # noqa: E402
from vidsim2real.metrics.gt import SceneGT  # noqa: E402
from vidsim2real.metrics.c2st import VERSION as C2ST_VERSION, c2st, describe_power, paired, power_of  # noqa: E402
from vidsim2real.layout import nhwc_to_nchw, nchw_to_nhwc, to_signed, to_unit  # noqa: E402
from vidsim2real.metrics.realism import (class_realism, class_stats, class_stats_json, ms_ssim_lum,  # noqa: E402
                                         outline_auc, pooled_class_realism)
from vidsim2real.metrics.report import compute, set_distances  # noqa: E402
from vidsim2real.scene import load_scene  # noqa: E402
from vidsim2real.scene.random_scene import write_random_scenes  # noqa: E402
from vidsim2real.translate.inference import check_scene, load_model, make_style, translate_buffers, video_row  # noqa: E402

HELD_OUT_SEEDS = (50000, 50001)     # training uses random scenes 0..N and surrogate scenes >= 100000
# The real reference and the floor are --patients other patients (the first ones of these): four
# by default, as every published table used; eight so that one draw of per-clip properties (a
# black level, a grading) cannot decide the test. Translations take as many style codes.
REAL_PATIENTS = (11, 12, 13, 14, 15, 16, 17, 18)    # the real reference of the same scenes
FLOOR_PATIENTS = (7, 8, 9, 10, 19, 20, 21, 22)      # the surrogate floor (patient 7 for the temporal measures)
PATIENT_CHOICES = (4, 8)
REAL_FRAMES = 64                    # real reference frames per scene, split evenly over the patients
STYLES = ("0", "1", "2", "3")       # translations at the default four patients: one style code per block
KEYS = [("warp_error", "↓"), ("texel_std", "↓"), ("orb_consistent_ratio", "↑"), ("tof", "↓"),
        ("ms_ssim_lum_vs_sim", "↑"), ("ms_ssim_lum_vs_sim_black", "↑"), ("outline_auc", "↑"), ("c2st_accuracy", "↓"), ("class_delta_e", "↓"),
        ("class_texture_log_ratio", "↓"), ("class_octave_distance", "↓"), ("swd", "↓"), ("color_hist_distance", "↓")]


def h264_available() -> bool:
    """Whether imageio-ffmpeg (the H.264 encoder) is installed."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def encode(frames: torch.Tensor, fps: float = 25.0) -> torch.Tensor:
    """Frames [T, H, W, 3] in [0, 1] through H.264 (yuv420p, quality 8) and back. Where
    imageio-ffmpeg is not installed (a GPU machine whose wheels must fit beside the repository),
    frames pass unchanged: then for every column and the real reference alike, and the GPU
    table says so."""
    if not h264_available():
        return frames
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mp4"
        with VideoWriter(path, fps, (frames.shape[2], frames.shape[1]), sidecar=False) as vw:
            vw.write(frames)
        return torch.from_numpy(read_video(path)).float() / 255.0


def _surrogate(scene, frames: list[int], size: int, patient: int, device="cpu") -> torch.Tensor:
    sr = SurrogateRenderer(scene, size=(size, size), device=device, patient_seed=patient, video_seed=patient)
    with torch.no_grad():
        return torch.cat([sr.render(frames[i:i + 8])[0].cpu() for i in range(0, len(frames), 8)])


def _blocks(frames: list[int], n: int) -> list[list[int]]:
    edges = np.linspace(0, len(frames), n + 1).round().astype(int)
    return [frames[edges[i]:edges[i + 1]] for i in range(n)]


class HeldOut:
    """The held-out scenes with their ground truth, real reference and the two reference
    columns (sim render, surrogate floor), computed once and cached as uint8 in ``out``."""

    def __init__(self, out: Path, frames: int = 48, size: int = 256, device="cpu", only: list | None = None,
                 patients: int = 4, style_offset: int = 0):
        if patients not in PATIENT_CHOICES:
            raise ValueError(f"patients: {patients} is not one of {PATIENT_CHOICES}")
        self.out, self.size, self.device = Path(out), size, torch.device(device)
        self.patients = patients
        self._draw(style_offset)
        real_p, floor_p = REAL_PATIENTS[:patients], FLOOR_PATIENTS[:patients]
        self.out.mkdir(parents=True, exist_ok=True)
        paths = [ROOT / "scenes/liver_edge_breathing.yaml"]
        paths += [self.out / "scenes" / f"random_{s:05d}.yaml" for s in HELD_OUT_SEEDS]
        if not all(p.exists() for p in paths[1:]):
            write_random_scenes(HELD_OUT_SEEDS[0], self.out / "scenes", len(HELD_OUT_SEEDS), frames=frames)
        if only is not None:          # a subset of the scenes (e.g. one per worker process)
            paths = [paths[i] for i in only]
        self.scenes = [load_scene(p) for p in paths]
        self.frames = [list(range(min(frames, s.frames))) for s in self.scenes]
        self.gts = [SceneGT(s, f, (size, size), device=device) for s, f in zip(self.scenes, self.frames)]
        self.real, self.real_labels, self.refs = [], [], []
        for scene, fr, gt in zip(self.scenes, self.frames, self.gts):
            cache = self.out / f"{scene.name}_{len(fr)}_{size}{self._tag}.npz"
            if not cache.exists():
                k = REAL_FRAMES // patients          # each patient's frames span the whole clip
                sub = fr[::max(1, len(fr) // k)][:k]
                real = torch.cat([encode(_surrogate(scene, sub, size, p, device)) for p in real_p])
                floor_t = _surrogate(scene, fr, size, floor_p[0], device)
                floor_c = torch.cat([encode(_surrogate(scene, b, size, p, device))
                                     for b, p in zip(_blocks(fr, patients), floor_p)])
                np.savez_compressed(cache, sub=np.array(sub), real=_u8(real), floor_t=_u8(floor_t),
                                    floor_c=_u8(floor_c), sim_c=_u8(encode(gt.sim_rgb.all())))
            z = np.load(cache)
            idx = [fr.index(int(t)) for t in z["sub"]]
            self.real.append(_f(z["real"]))
            self.real_labels.append(torch.cat([torch.stack([gt.labels(i) for i in idx])] * patients))
            self.refs.append({"sim render": (gt.sim_rgb.all(), _f(z["sim_c"])),
                              "surrogate (floor)": (_f(z["floor_t"]), _f(z["floor_c"]))})

    def _draw(self, style_offset: int) -> None:
        """One style code per block (a clip's style vector and its cast, black level and noise
        row): ``style_offset`` .. ``style_offset`` + patients - 1."""
        if style_offset < 0:
            raise ValueError(f"style_offset: {style_offset} is negative")
        self.style_offset = style_offset
        self.styles = tuple(str(style_offset + i) for i in range(self.patients))

    def at_offset(self, style_offset: int) -> "HeldOut":
        """The same held-out data whose model columns draw other clips: style codes
        ``style_offset`` .. ``style_offset`` + patients - 1 (a shallow copy: the scenes, ground
        truth and references are shared)."""
        other = copy.copy(self)
        other._draw(style_offset)
        return other

    @property
    def _tag(self) -> str:
        """What tells this reference's cached files and C2ST keys from the default four patients'."""
        return "" if self.patients == 4 else f"_p{self.patients}"

    def score(self, i: int, temporal: torch.Tensor, realism: torch.Tensor) -> dict:
        """The per-scene measures of one column on scene i: ``temporal`` [T, H, W, 3] (one style,
        as rendered), ``realism`` [T, H, W, 3] (the set the realism measures see, encoded).
        The C2ST is one test over all scenes (``c2st_all``)."""
        gt = self.gts[i]
        # SWD and colour histograms on the realism set, as the class measures and the C2ST: every
        # clip of the column against every patient of the reference, both H.264-encoded (one
        # clip's cast against four patients would make them one draw's figure)
        out = {**compute(temporal, gt), **set_distances(realism, self.real[i])}
        labels = torch.stack([gt.labels(t) for t in range(len(gt))])
        names = {c: n for c, n in self.scenes[i].class_names().items()}
        video, real = class_stats(realism, labels), class_stats(self.real[i], self.real_labels[i])
        out.update({k: v for k, v in class_realism(video, real, names).items()})
        # kept (JSON-safe, by class name) so that the per-class figures pool the scenes' pixels
        out["class_stats"] = {"video": class_stats_json(video, names), "real": class_stats_json(real, names)}
        return out

    def c2st_all(self, realism: list[torch.Tensor], seeds: int, view: str = "full") -> dict:
        """C2ST of one column's realism sets (one per scene) against the real reference of
        every scene, as one test (``view``: what the classifier sees, ``c2st.view_of``)."""
        return c2st(realism, self.real, seeds=seeds, device=self.device, view=view)

    def c2st_key(self, seeds: int) -> str:
        """What every cached C2ST result depends on besides the set scored: the test's version and
        seeds, the scenes, frames, size, the reference (``_tag``) and the torch thread count (the
        classifier's training is seeded but not bit-equal across thread counts, so results of two
        counts are two draws and must not be paired)."""
        return (f"v{C2ST_VERSION}|{seeds}|{'|'.join(s.name for s in self.scenes)}|{len(self.gts[0])}|{self.size}"
                f"|{self._tag or 'p4'}|t{torch.get_num_threads()}")

    def reference_c2st(self, name: str, seeds: int, view: str = "full") -> dict:
        """The C2ST of a reference column, cached in ``out`` (``c2st_key``)."""
        key = f"{name}|{HeldOut.c2st_key(self, seeds)}" + ("" if view == "full" else f"|{view}")
        cache = self.out / "c2st_references.json"
        known = json.loads(cache.read_text()) if cache.exists() else {}
        if "c2st_auc" not in known.get(key, {}):      # cached before the test kept its runs' AUC
            known[key] = self.c2st_all([self.refs[i][name][1] for i in range(len(self.gts))], seeds, view)
            atomic_write_text(cache, json.dumps(known, indent=1))
        return known[key]


def _u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)


def _f(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).float() / 255.0


def translate(model, gt: SceneGT, frames: list[int], style: str) -> torch.Tensor:
    """Frames (indices into gt) translated with one style seed: [len, H, W, 3] (on the CPU)."""
    out = []
    s = make_style(model, style, gt.renderer.device)
    with torch.no_grad():
        for i in range(0, len(frames), 8):
            buf = gt.renderer.render([gt.frames[j] for j in frames[i:i + 8]])
            out.append(translate_buffers(model, gt.renderer, buf, s, noise_seed=int(style)).cpu())
    return torch.cat(out)


def score_model(held: HeldOut, ckpt, seeds: int = 3) -> dict:
    """A checkpoint's measures: per-scene ones averaged over the held-out scenes (NaN-aware),
    the C2ST over all of them (``seeds`` 0: no C2ST, for the cheap points of a curve)."""
    model = load_model(ckpt, held.device)
    per, sets = [], []
    t0 = time.perf_counter()
    for i, gt in enumerate(held.gts):
        # a column takes minutes per scene: say where it is, so a long table shows it moves
        print(f"{shown(ckpt)}: scene {i + 1}/{len(held.gts)} ({held.scenes[i].name}), "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        check_scene(model, held.scenes[i])
        temporal = translate(model, gt, list(range(len(gt))), held.styles[0])
        real_set = realism_set(model, gt, temporal, held.styles)
        per.append(held.score(i, temporal, real_set))
        sim = sim_with_black(model, gt.sim_rgb.all(), held.styles[0])
        per[-1]["ms_ssim_lum_vs_sim_black"] = (per[-1]["ms_ssim_lum_vs_sim"] if sim is None  # no black level
                                               else ms_ssim_lum(temporal, sim))
        sets.append(real_set)
    if seeds > 0:
        print(f"{shown(ckpt)}: C2ST over {seeds} seeds, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return {**mean_over_scenes(per), **(held.c2st_all(sets, seeds) if seeds > 0 else {})}


def _digest(paths, named: bool = False) -> str:
    h = hashlib.sha256()
    for p in paths:
        if named:                         # code: a file moved or renamed is other code
            h.update(str(Path(p).relative_to(ROOT)).encode())
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def result_key(held: HeldOut, ckpt, seeds: int) -> str:
    """What a model column's result depends on: the checkpoint's bytes (not its path), the
    scoring code (every .py of the package and this script), the test's version and settings,
    the scenes, the reference, the torch thread count and the clips' style codes (when not the
    default ones: the reference columns do not depend on them)."""
    code = sorted((ROOT / "vidsim2real").rglob("*.py")) + [Path(__file__).resolve()]
    offset = getattr(held, "style_offset", 0)
    return "|".join([_digest([ckpt]), _digest(code, named=True), HeldOut.c2st_key(held, seeds)]
                    + ([f"styles{offset}"] if offset else []))


def shown(path) -> str:
    """A path as a results file names it: relative to the repository inside it, else "…/" and
    its folder and name only (a run folder, the held-out cache), so no machine's layout is
    recorded and no outside file passes for one of the repository's."""
    p = Path(path).resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return f"…/{p.parent.name}/{p.name}"


def score_model_cached(held: HeldOut, ckpt, seeds: int = 3, fresh: bool = False) -> dict:
    """``score_model``, its result kept in ``held.out``/model_results.json under
    ``result_key``: the same checkpoint scored again by the same code reads it back."""
    cache = held.out / "model_results.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    key = result_key(held, ckpt, seeds)
    if not fresh and key in known:
        print(f"{ckpt}: scored before by this code and test ({cache.name}); --fresh recomputes", file=sys.stderr)
        return known[key]
    result = score_model(held, ckpt, seeds)
    # re-read: another table may have added rows while this one scored
    known = {**(json.loads(cache.read_text()) if cache.exists() else {}), key: result}
    atomic_write_text(cache, json.dumps(known))     # an interrupted run leaves the old cache whole
    return result


@torch.no_grad()
def sim_with_black(model, sim: torch.Tensor, style: str) -> torch.Tensor | None:
    """The sim render [T, H, W, 3] with the black level (and colour cast) that the model's
    translations with this style seed get (``model.camera_black``, ``model.camera_cast``: row
    ``video_row(style)``, by the camera model itself, no sensor noise). MS-SSIM
    against it asks whether structure was kept, apart from the lifted blacks: SSIM's brightness
    term reads a pedestal on the sim's empty (0) background as lost structure. None for a model
    without either (the sim render is the reference then)."""
    camera = getattr(model.net, "camera", None)
    if camera is None or not camera.has_rows:
        return None
    x = to_signed(nhwc_to_nchw(sim))
    row = torch.full((len(x),), video_row(int(style)), dtype=torch.long)
    return nchw_to_nhwc(to_unit(camera.add_noise(x, torch.zeros_like(x), row))).clamp(0, 1)


def realism_set(model, gt: SceneGT, temporal: torch.Tensor | None = None, styles=STYLES) -> torch.Tensor:
    """The frames a model's realism is judged on: its translations of every frame, in
    len(styles) contiguous blocks each with its own style seed (one per patient of the
    reference), H.264-encoded like the reference: [T, H, W, 3]. ``temporal``: the
    translations with styles[0], if already made."""
    parts = []
    for b, s in zip(_blocks(list(range(len(gt))), len(styles)), styles):
        parts.append(temporal[b] if s == styles[0] and temporal is not None else translate(model, gt, b, s))
    return encode(torch.cat(parts))


def mean_over_scenes(per: list[dict]) -> dict:
    """The per-scene measures averaged over the scenes (NaN-aware), and ``per_class``: each
    class's colour distance, texture ratio and octave distance over the pixels of all scenes
    pooled (``metrics.realism.pooled_class_realism``)."""
    keys = [k for k, v in per[0].items() if isinstance(v, float)]
    out = {k: float(np.nanmean([p[k] for p in per])) for k in keys}
    out["per_class"] = pooled_class_realism([(p["class_stats"]["video"], p["class_stats"]["real"]) for p in per])["per_class"]
    return out


def pool_draws(draws: list[dict]) -> dict:
    """One model column over several draws of its clips: ``draws`` are ``score_model`` results
    of one checkpoint against the same reference, each with other style codes (so other clips'
    style vectors, casts, black levels and noise). Every float measure becomes its mean over the
    draws, ``per_class`` the classes' means; the C2ST's runs of all draws are stacked
    ([draws x seeds][folds], so ``metrics.c2st.paired`` pairs draw, seed and fold of two models
    drawn with the same codes), and accuracy and AUC are their mean ± std over all those runs,
    so the spread the clips' draws give is inside the stated one. "draws" keeps each draw's own
    result; "c2st_draw_std" / "c2st_draw_auc_std": the std of the draws' means. One draw is
    returned as it is."""
    if len(draws) == 1:
        return draws[0]
    out: dict = {}
    for k, v in draws[0].items():
        vals = [d.get(k) for d in draws]
        if isinstance(v, bool) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
            continue
        out[k] = sum(vals) if isinstance(v, int) else float(np.nanmean(vals))
    classes = {c: None for d in draws for c in d.get("per_class", {})}
    out["per_class"] = {c: {f: float(np.nanmean([d["per_class"][c][f] for d in draws if c in d.get("per_class", {})]))
                            for f in next(d["per_class"][c] for d in draws if c in d.get("per_class", {}))}
                        for c in classes}
    for runs, mean, std, draw_std in (("c2st_run_accuracy", "c2st_accuracy", "c2st_std", "c2st_draw_std"),
                                      ("c2st_run_auc", "c2st_auc", "c2st_auc_std", "c2st_draw_auc_std")):
        got = [np.asarray(d.get(runs, []), dtype=float) for d in draws]
        if any(g.size == 0 or g.ndim != 2 or g.shape[1] != got[0].shape[1] for g in got):
            continue                          # a draw without runs: no pooled runs (its means stay)
        stacked = np.concatenate(got)
        out.update({runs: stacked.tolist(), mean: float(stacked.mean()), std: float(stacked.std()),
                    draw_std: float(np.std([g.mean() for g in got]))})
    out["draws"] = draws
    return out


def check_offsets(offsets: list[int], patients: int) -> str | None:
    """Why these style offsets cannot be pooled as separate draws at ``patients`` codes each
    (negative, or two drawing a code in common), or None."""
    if any(k < 0 for k in offsets):
        return f"must be >= 0, got {' '.join(map(str, offsets))}"
    seen: dict[int, int] = {}
    for k in offsets:
        for c in range(k, k + patients):
            if c in seen:
                return (f"offsets {seen[c]} and {k} both draw style code {c} (with {patients} patients "
                        f"offsets must be {patients} or more apart)")
            seen[c] = k
    return None


def reference_columns(held: HeldOut, seeds: int) -> dict:
    """The sim render (ceiling) and the surrogate of other patients (floor), with their C2ST."""
    out = {}
    for ref in ("sim render", "surrogate (floor)"):
        out[ref] = {**mean_over_scenes([held.score(i, *held.refs[i][ref]) for i in range(len(held.gts))]),
                    **held.reference_c2st(ref, seeds)}
    return out


def structure_controls(held: HeldOut, shift: int = 12) -> dict:
    """Two columns whose structure is wrong, so the structure measures show their power: the sim
    render ``shift`` frames later (the camera has moved on, so have the outlines) and the sim
    render of the next held-out scene, each scored against this scene's sim render and class
    outlines (``ms_ssim_lum_vs_sim``, ``outline_auc``), averaged over scenes. A structure
    measure must score both below the floor, which has this scene's structure and the real
    domain's detail."""
    sims = [gt.sim_rgb.all() for gt in held.gts]
    n, out = len(sims), {}
    for name, moved in ((f"sim, {shift} frames later (control)", lambda i: sims[i].roll(-shift, 0)),
                        ("sim, another scene (control)", lambda i: sims[(i + 1) % n])):
        per = []
        for i, gt in enumerate(held.gts):
            x = moved(i)[:len(gt)]
            per.append({"ms_ssim_lum_vs_sim": ms_ssim_lum(x, sims[i]),
                        "outline_auc": outline_auc(x, [gt.labels(t) for t in range(len(gt))])})
        out[name] = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
    return out


def paired_cell(result: dict, base: dict, powered: bool, key: str = "c2st_run_accuracy") -> str:
    """A table cell: ``result``'s C2ST minus ``base``'s, run by run (``metrics.c2st.paired``;
    ``key``: the runs' accuracies or AUCs), with its spread and the folds where it is lower;
    "—" for the base itself or a result without runs (reference figures cached before runs
    were kept)."""
    if not powered:
        return "underpowered"
    if result is base:
        return "—"
    try:
        d = paired(result, base, key)
        # pooled draws: each draw's own difference too (the same codes in both columns)
        per = [paired(a, b, key)["difference"] for a, b in zip(result.get("draws", []), base.get("draws", []))]
    except ValueError:
        return "—"
    draws = f"; draws {' / '.join(f'{v:+.3f}' for v in per)}" if len(per) > 1 else ""
    return f"{d['difference']:+.3f} ± {d['std']:.3f} ({d['folds_lower']}/{d['folds']} folds lower{draws})"


def c2st_cell(result: dict, powered: bool) -> str:
    """A C2ST table cell: mean ± spread over folds x seeds, or "underpowered"."""
    if not powered:
        return "underpowered"
    return f"{result['c2st_accuracy']:.3f} ± {result['c2st_std']:.3f}" + _draws(result, "c2st_accuracy", ".3f", " ({})")


def _draws(result: dict, key: str, fmt: str, wrap: str) -> str:
    """A pooled result's draws' own values of ``key``, "a / b" formatted into ``wrap``; "" for one draw."""
    got = [d.get(key) for d in result.get("draws", [])]
    if len(got) < 2 or any(not isinstance(v, (int, float)) for v in got):
        return ""
    return wrap.format("draws " + " / ".join(format(v, fmt) for v in got))


def auc_cell(result: dict, pw: dict) -> str:
    """The same runs as an ROC AUC (threshold-free): mean ± std, each fold's mean over the
    seeds (a fold far below 0.5 is a held-out patient whose real frames the classifiers rank
    below the video's — a difference the other way, which lowers the mean without the two
    being alike), and how many runs called every test frame the same (accuracy exactly 0.5
    whatever the ranking); "—" for results cached without it. ``pw``: ``power_of``'s verdict
    (its "auc" part decides)."""
    if "c2st_auc" not in result or pw.get("auc") is None:
        return "—"
    if not pw["auc"]["powered"]:
        return "underpowered"
    runs = np.asarray(result.get("c2st_run_auc", []), dtype=float)
    folds = f"folds {' / '.join(f'{v:.2f}' for v in runs.mean(0))}; " if runs.ndim == 2 and runs.size else ""
    return (f"{result['c2st_auc']:.3f} ± {result['c2st_auc_std']:.3f} "
            f"({_draws(result, 'c2st_auc', '.3f', '{}; ')}{folds}"
            f"{result['c2st_one_sided_runs']}/{result['c2st_runs']} runs one-sided)")


# the shipped checkpoints, in table order (a missing file is left out)
DEFAULT_COLUMNS = [("per-frame baseline", "baseline_cpu_small.pt"), ("CycleGAN", "cyclegan_cpu_small.pt"),
                   ("neural textures (ours)", "cpu_small.pt"), ("DCGAN (noise, no sim)", "dcgan_cpu_small.pt")]


def report(doc: dict) -> str:
    """The table of a results document (what --json writes) as markdown: one column per model,
    then the references (the C2ST's power check) and the structure controls."""
    results = doc["results"]
    seeds = doc.get("c2st_seeds") or len(results["sim render"].get("c2st_run_accuracy", [])) or "?"
    pw = power_of(results["sim render"], results["surrogate (floor)"])
    names = list(results)
    rows = [[f"`{k}` {arrow}"] + ["—" if k not in results[c] else c2st_cell(results[c], pw["powered"])
                                  if k == "c2st_accuracy" else f"{results[c][k]:.4g}" + _draws(results[c], k, ".4g", " ({})")
                                  for c in names] for k, arrow in KEYS]
    first = names[0]
    at = next(i for i, (k, _) in enumerate(KEYS) if k == "c2st_accuracy")
    rows.insert(at + 1, [f"C2ST − {first}, run by run"] + [paired_cell(results[c], results[first], pw["powered"])
                                                          for c in names])
    rows.insert(at + 2, ["C2ST as ROC AUC ↓ (same runs)"] + [auc_cell(results[c], pw) for c in names])
    rows.insert(at + 3, [f"C2ST AUC − {first}, run by run"]
                + [paired_cell(results[c], results[first], bool(pw["auc"] and pw["auc"]["powered"]), "c2st_run_auc")
                   for c in names])
    draws = doc.get("draws", 1)
    pooled = (f" Model columns pooled over {draws} draws of their clips (style codes {', '.join(doc['style_codes'])}): "
              f"each figure is the draws' mean with each draw's value beside it, and the C2ST's runs are "
              f"{draws} draws x {seeds} seeds x 4 folds." if draws > 1 else "")
    return (f"Held-out scenes ({', '.join(Path(s).stem for s in doc['scenes'])}), {doc['frames']} frames at {doc['size']}², "
            f"{doc.get('patients') or 4} other patients as the real reference, "
            f"mean over scenes ({doc['machine']}; {doc['seconds']:.0f} s). C2ST over all scenes, mean ± std "
            f"over 4 folds x {seeds} seeds; {describe_power(pw)} (real vs real: the floor).{pooled}\n\n"
            + table(["metric"] + names, rows))


REFERENCE_COLUMNS = ("sim render", "surrogate (floor)")


def pool_files(paths: list) -> dict:
    """Results documents of this script (--json; one per draw, e.g. --style-offset 0 and 4)
    pooled into one (``pool_draws`` per model column present in all of them). They must share
    the scenes, frames, size, reference patients and C2ST seeds, and their reference columns'
    C2ST runs must be identical (the same reference scored by the same test), and their style
    codes must differ; otherwise ValueError naming the file and the field."""
    docs = []
    for path in paths:
        try:
            docs.append(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
        for field in ("columns", "results"):
            if not isinstance(docs[-1].get(field), dict):
                raise ValueError(f"{path}: {field}: missing (not a temporal_table.py --json file)")
        for ref in REFERENCE_COLUMNS:
            if ref not in docs[-1]["results"]:
                raise ValueError(f"{path}: results: no '{ref}' column")
    first = docs[0]
    default = lambda d: [str(i) for i in range(d.get("patients") or 4)]     # files written before codes were kept
    codes: dict[str, str] = {}
    for path, d in zip(paths, docs):
        for field in ("scenes", "frames", "size", "patients", "c2st_seeds"):
            if d.get(field) != first.get(field):
                raise ValueError(f"{path}: {field} {d.get(field)!r} is not {paths[0]}'s {first.get(field)!r}")
        for ref in REFERENCE_COLUMNS:
            for runs in ("c2st_run_accuracy", "c2st_run_auc"):
                if d["results"][ref].get(runs) != first["results"][ref].get(runs):
                    raise ValueError(f"{path}: results.{ref}.{runs} differs from {paths[0]}'s: "
                                     "not the same reference scored by the same test")
        for c in d.get("style_codes") or default(d):
            if c in codes:
                raise ValueError(f"{path}: style_codes: code {c} is drawn in {codes[c]} too (the same clips twice)")
            codes[c] = str(path)
    models = [n for n in first["columns"] if all(n in d["columns"] for d in docs)]
    left = sorted({n for d in docs for n in d["columns"]} - set(models))
    if not models:
        raise ValueError(f"{paths[0]}: columns: no model column is in every file")
    if left:
        print(f"columns not in every file, left out: {', '.join(left)}", file=sys.stderr)
    results = {n: pool_draws([d["results"][n] for d in docs]) for n in models}
    results.update({k: v for k, v in first["results"].items() if k not in first["columns"]})
    return {**{k: first.get(k) for k in ("machine", "frames", "size", "patients", "scenes", "c2st_seeds")},
            "style_codes": list(codes), "draws": len(docs), "pooled_from": [shown(p) for p in paths],
            "columns": {n: first["columns"][n] for n in models}, "results": results,
            "c2st_power": power_of(results["sim render"], results["surrogate (floor)"]),
            "seconds": float(sum(d.get("seconds", 0.0) for d in docs))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=None, metavar="NAME=CKPT",
                    help="a column (default: the shipped checkpoints)")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", default=str(ROOT / "out/temporal_table"))
    ap.add_argument("--json", default=None, help="also write the table as JSON here")
    ap.add_argument("--markdown", default=None, help="also write the table as markdown here")
    ap.add_argument("--c2st-seeds", type=int, default=3, help="classifier seeds of the C2ST")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--patients", type=int, default=4, choices=PATIENT_CHOICES,
                    help="other patients in the real reference and the floor (and style codes per model)")
    ap.add_argument("--fresh", action="store_true", help="score every model again (not from model_results.json)")
    ap.add_argument("--style-offset", type=int, nargs="+", default=None, metavar="OFFSET",
                    help="the models' clips use style codes OFFSET .. OFFSET + patients - 1; several offsets are "
                         "several draws of the same models, pooled (each draw scored and cached on its own; "
                         "default: two draws, 0 and --patients)")
    ap.add_argument("--pool", nargs="+", default=None, metavar="JSON",
                    help="score nothing: pool the --json files of earlier runs (one per draw) into one table")
    args = ap.parse_args()
    if args.style_offset is None:           # decisions are made on two draws of the clips at least
        args.style_offset = [0, args.patients]
    why = check_offsets(args.style_offset, args.patients)
    if why:
        fail(f"--style-offset: {why}")
    if args.pool:
        missing = [p for p in args.pool if not Path(p).is_file()]
        if missing:
            fail(f"--pool: {missing[0]}: no such file")
        try:
            doc = pool_files(args.pool)
        except ValueError as e:
            fail(f"--pool: {e}")
    else:
        doc = score_table(args)
    md = report(doc)
    print(md)
    if args.json:
        atomic_write_text(args.json, json.dumps(doc, indent=1))
    if args.markdown:
        atomic_write_text(args.markdown, md + "\n")


def score_table(args) -> dict:
    """Every column of the table scored (``main``'s arguments): its results document."""
    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.model or [f"{name}={ROOT / 'checkpoints' / f}" for name, f in DEFAULT_COLUMNS
                            if (ROOT / "checkpoints" / f).exists()]
    columns = dict(m.split("=", 1) for m in models)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    held = HeldOut(Path(args.out), args.frames, args.size, patients=args.patients, style_offset=args.style_offset[0])
    draws = [held.at_offset(k) for k in args.style_offset]
    results = {name: pool_draws([score_model_cached(h, ckpt, args.c2st_seeds, args.fresh) for h in draws])
               for name, ckpt in columns.items()}
    results.update(reference_columns(held, args.c2st_seeds))
    results.update(structure_controls(held))
    return {"machine": machine(), "frames": args.frames, "size": args.size, "patients": args.patients,
            "c2st_seeds": args.c2st_seeds, "style_codes": [c for h in draws for c in h.styles], "draws": len(draws),
            "columns": {k: shown(v) for k, v in columns.items()},
            "scenes": [shown(s.path) for s in held.scenes], "results": results,
            "c2st_power": power_of(results["sim render"], results["surrogate (floor)"]),
            "seconds": time.perf_counter() - t0}


if __name__ == "__main__":
    main()
