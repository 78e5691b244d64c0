"""The training loop: data, model, textures, optimizers, logging, checkpoints, resume, signals."""
from __future__ import annotations

import math
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..domains.real import RealFrames
from ..errors import UserError, info
from ..io.atomic import atomic_write_text
from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..layout import to_unit
from ..scene import load_scene
from ..texture import TextureSet, texture_meta
from ..translate.config import model_exposure
from ..translate.model import build_translator
from .checkpoint import trainer_payload
from .config import TrainConfig, resolve
from .data import SceneBank, ViewPairSampler, prepare_real, prepare_scenes
from .distributed import Dist
from .trainer import GANTrainer, make_trainer


class TrainingStopped(UserError):
    """A run stopped on a non-finite loss; the last good checkpoint is kept."""

    exit_code = 3


@dataclass
class TrainResult:
    """How a run ended: step reached, its files, whether a signal stopped it early, how many
    ranks ran it and whether this process is rank 0 (the one that reports)."""

    step: int
    last: Path
    model: Path
    stopped: bool
    ranks: int
    is_main: bool = True
    reason: str = "done"          # done | signal | time (max_minutes reached)


def pick_train_device(cfg: TrainConfig, d: Dist | None = None) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("CUDA requested but no GPU is available", field="device")
        return torch.device("cuda", d.local_rank if d else 0)
    return torch.device("cpu")


def _np_state() -> dict:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def _rng_state(trainer: GANTrainer, sampler: ViewPairSampler, real) -> dict:
    return {"torch": torch.get_rng_state(), "style": trainer.style_gen.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _np_state(), "python": list(random.getstate()[1]),
            "sampler": sampler.state(), "real": real.state(),
            "pool_r": trainer.pool_r.state(), "pool_s": trainer.pool_s.state()}


def _restore_rng(state: dict, trainer: GANTrainer, sampler: ViewPairSampler, real, device) -> None:
    torch.set_rng_state(state["torch"])
    trainer.style_gen.set_state(state["style"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate((3, tuple(state["python"]), None))
    sampler.load_state(state["sampler"])
    real.load_state(state["real"])
    trainer.pool_r.load_state(state["pool_r"], device)
    trainer.pool_s.load_state(state["pool_s"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


class _StopFlag:
    """SIGINT/SIGTERM: finish the current step, save, exit. A second SIGINT interrupts at once."""

    def __init__(self):
        self.stop = False
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop = True

    def __exit__(self, *exc):
        for sig, h in self.previous.items():
            signal.signal(sig, h)


def _image_grid(images: dict) -> torch.Tensor:
    """sim | features | translated | real, one row per item: [3, H * B, W * 4] in [0, 1]."""
    cols = []
    for key in ("sim", "features", "translated", "real"):
        x = images.get(key)
        if x is None:
            continue
        x = x.float()
        if key == "features":
            x = x[:, :3]
            lo = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
            hi = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
            x = (x - lo) / (hi - lo + 1e-8)
        else:
            x = to_unit(x)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        cols.append(x.clamp(0, 1).cpu())
    rows = torch.cat(cols, 3)                 # [B, 3, H, 4W]
    return torch.cat(list(rows), 1)           # [3, B*H, 4W]


def real_crops(cfg: TrainConfig) -> int:
    """Labelled real crops per item a step needs: ``loss.detail_crops`` for the detail loss,
    one for a class-conditional discriminator, none otherwise (real frames without labels)."""
    if cfg.loss.detail > 0:
        return cfg.loss.detail_crops
    return 1 if cfg.model.dis_classes > 0 else 0


def build(cfg: TrainConfig, d: Dist, device: torch.device, run_dir: Path, progress: bool = True,
          check_ids: bool = True, labels: bool = False):
    """Scenes, renderers and data of a run (shared by train and fit-textures): (bank, real
    frames, view-pair sampler). Rank 0 prepares generated scenes and surrogate sets first.
    ``check_ids``: real label maps may only hold the scenes' class ids (fit-textures fits one
    scene against a real set of many classes, so it does not check)."""
    if d.is_main:
        scene_paths = prepare_scenes(cfg, run_dir)
        real_paths = prepare_real(cfg, run_dir, device, progress)
    d.barrier()
    if not d.is_main:
        scene_paths = prepare_scenes(cfg, run_dir)
        real_paths = prepare_real(cfg, run_dir, device, progress)
    render_size = cfg.data.render_size or cfg.size
    bank = SceneBank(scene_paths, render_size, device, cfg.backend, check=cfg.data.check_paths,
                     exposure=model_exposure(cfg.model.exposure, cfg.model.exposure_level))
    # real frames at the render scale (shorter side = render size), then crops of the training size
    labelled = (real_crops(cfg) > 0 or labels or cfg.texture.albedo_init == "real" or cfg.texture.detail
                or (cfg.model.exposure == "protect" and not cfg.model.exposure_level)
                or cfg.model.camera_field != "none"
                or "real" in (cfg.model.camera_noise, cfg.model.camera_blur, cfg.model.camera_black, cfg.model.camera_cast)
                or cfg.model.grade != "none")
    known = sorted({c for s in bank.scenes for c in s.class_names()})
    real = RealFrames(real_paths, size=tuple(cfg.size), resize=min(render_size), stride=cfg.data.real.stride,
                      circular_mask=cfg.data.real.circular_mask, seed=cfg.seed * 1000 + d.rank,
                      labels=labelled, known_ids=known if check_ids else None)
    if real_crops(cfg) and d.is_main and real.labelled < len(real):
        info(f"{len(real) - real.labelled} of {len(real)} real frames have no label map (labels/<frame name>.png "
             "beside them): " + ("the detail loss compares them as whole frames" if real.labelled == 0 else
                                 "they count as unlabelled pixels"))
    sampler = ViewPairSampler(bank, cfg.data.max_offset, seed=cfg.seed * 1000 + d.rank, crop=tuple(cfg.size))
    return bank, real, sampler


def build_trainer(cfg: TrainConfig, bank: SceneBank, device: torch.device, reduce_grads=None):
    """The run's translator, one texture set per anatomy (when the method uses features) and
    trainer; returns (trainer, texture metadata per anatomy)."""
    translator = build_translator(cfg.model, cfg.texture.sampled_channels, seed=cfg.seed, albedo=cfg.texture.albedo,
                                  detail=cfg.texture.detail)
    metas, textures = {}, {}
    if translator.uses_features:
        for anatomy, scenes in bank.anatomies().items():
            textures[anatomy] = TextureSet.for_scenes(scenes, cfg.texture, seed=cfg.seed).to(device)
            metas[anatomy] = texture_meta(scenes)
    trainer = make_trainer(cfg, translator.to(device), textures, device, reduce_grads=reduce_grads)
    return trainer, metas


@torch.no_grad()
def start_appearance(cfg: TrainConfig, bank: SceneBank, real: RealFrames, trainer: GANTrainer,
                     started: dict | None, report: bool = True) -> None:
    """What a fresh run (or one started ``init_from`` a checkpoint: ``started``, its
    ``warm_start`` counts) takes from the labelled real frames before its first step: the
    class albedo (``texture.albedo_init: real``, when no texture came from the checkpoint), the
    detail layers the checkpoint did not have (``texture.detail``; all of them with
    ``texture.detail_redraw``) and their contrast per
    class (``texture.detail_match``)."""
    from ..shading import linear_to_srgb
    from ..translate.networks import NOISE_FLOOR, noise_std
    from .appearance import (match_chroma, match_detail, real_black, real_blur, real_class_albedo, real_diffuse,
                             real_field, real_gloss, real_noise, translated_class_albedo)
    textures = dict(trainer.textures.items())
    fit_albedo = cfg.texture.albedo_init == "real" and not (started and started["textures"])
    white = cfg.model.specular == "white"           # the specular term added after colour and layer

    def apply(colours: dict) -> None:
        for anatomy, scenes in bank.anatomies().items():
            textures[anatomy].set_albedo(colours, scenes)

    def albedo(with_layer: bool = False, field: torch.Tensor | None = None) -> dict:
        colours = real_class_albedo(bank, real, seed=cfg.seed, textures=textures if with_layer else None, field=field,
                                    white=white)
        apply(colours)
        if report:
            on = [n for n, v in (("the detail layer", with_layer), ("the lens field", field is not None)) if v]
            info(f"albedo from the real frames' class colours{' with ' + ' and '.join(on) + ' on' if on else ''}: "
                 + (", ".join(f"class {c} ({', '.join(f'{v:.2f}' for v in col)})" for c, col in sorted(colours.items()))
                    or "no class in both the scenes and the label maps; scene colours kept"))
        return colours

    colours = albedo() if fit_albedo else {}
    camera = getattr(trainer.net, "camera", None)
    noise = (0.0, NOISE_FLOOR)          # (sigma, read-noise share) the start's fits see
    if cfg.model.camera_noise == "real" and camera is not None and real.labelled:
        got = real_noise(real)
        if got is not None:
            camera.set_noise(*got)
            noise = (float(camera.noise_sigma.detach()), float(camera.noise_floor))
        if report:
            dark, white_ = (float(noise_std(torch.tensor(y), *noise)) * 255 for y in (0.0, 1.0))
            info("sensor noise from the real frames' grain: " + (
                f"sigma {noise[0]:.4f}, read-noise share {noise[1]:.2f} (std {dark:.2f} grey levels in the dark, "
                f"{white_:.2f} at white)" if got is not None else
                "no region holds enough blocks off the black clip; the learned level is kept"))
    blur = 0.0
    fit_blur = cfg.model.camera_blur == "real" and camera is not None and real.labelled

    def fit_lens_blur(matched: bool) -> float:
        got = real_blur(bank, real, textures, cfg.texture.albedo, noise=noise, white=white)
        camera.set_blur(got["lens"], got["edge"])
        if report:
            info(f"lens and edge blur from the real frames' sharpness{' (detail matched)' if matched else ''}: "
                 f"sigma {got['lens']:.2f} px and {got['edge']:.2f} px on edges (fine / mid band energy inside "
                 f"classes and at their boundaries: real frames {got['real'][0]:.3f} / {got['real'][1]:.3f}, "
                 f"unblurred views {got['views'][0]:.3f} / {got['views'][1]:.3f})")
        return got["lens"]

    if cfg.texture.detail:
        # layers a starting checkpoint had are kept (unless redrawn); the others are drawn
        kept = set(started["detail"]) if started and not cfg.texture.detail_redraw else set()
        todo = [n for t in textures.values() for n in t.detail if n not in kept]
        if todo:
            fit_scale = {"albedo": cfg.texture.albedo, "noise": noise, "blur": 0.0, "white": white} \
                if cfg.texture.detail_scale == "real" and real.labelled else None
            start_detail(bank, real, textures, cfg.seed, report, only=todo, fit_scale=fit_scale)
        if fit_blur:
            blur = fit_lens_blur(False)
        if cfg.texture.detail_match and real.labelled:
            gains = match_detail(bank, real, textures, cfg.texture.albedo, noise=noise, blur=blur, white=white,
                                 bands=cfg.texture.detail_bands)
            if report:
                what = "broad / fine contrast" if cfg.texture.detail_bands else "contrast"
                info(f"detail layer {what} matched to the real frames' per class: " + (", ".join(
                    f"class {c} " + (f"x{g[0]:.2f} / x{g[1]:.2f}" if isinstance(g, tuple) else f"x{g:.2f}")
                    for c, g in sorted(gains.items())) or "unchanged"))
            if cfg.texture.detail_chroma:
                chroma = match_chroma(bank, real, textures, cfg.texture.albedo, noise=noise, blur=blur, white=white)
                if report:
                    info("detail layer colour matched to the real frames' a*b* variation per class: " + (", ".join(
                        f"class {c} x{g:.2f}" for c, g in sorted(chroma.items())) or "unchanged"))
            if cfg.texture.detail_cells and todo:
                fit_cells(bank, real, textures, cfg.texture.albedo, todo, noise, blur, white, report,
                          cfg.texture.detail_cells_classes, cfg.texture.detail_bumps, cfg.texture.detail_cells_width)
            if cfg.texture.detail_relief and todo:
                add_relief(bank, textures, cfg, report)
            if fit_blur:           # the matched layers' share of the fine band moved: fit once more
                blur = fit_lens_blur(True)
    elif fit_blur:
        blur = fit_lens_blur(False)
    field = None
    if cfg.model.camera_field != "none" and camera is not None and real.labelled:
        field = real_field(bank, real, textures, cfg.texture.albedo, detail=cfg.texture.detail, white=white,
                           within_frame=cfg.model.camera_field == "real_frame")
        camera.set_field(field.to(camera.field.device))
        if report:
            info("lens field from the real frames (log gain, centre to corner): "
                 + " ".join(f"{v:+.2f}" for v in field.tolist()))
    if cfg.model.camera_black == "real" and camera is not None:
        black = real_black(real, camera.gain) if real.labelled else None
        if black is not None:
            camera.set_black(black.to(camera.black.device))
        if report:
            info("black levels from the real frames' background (label 0): " + (
                "pedestal (sRGB, mean of r, g, b) " + " / ".join(
                    f"{float(linear_to_srgb(black[int(q * (len(black) - 1))]).mean()) * 255:.1f}" for q in (0, 0.5, 1))
                + " of 255 (least / median / most)"
                if black is not None else "too few labelled real frames show background; none"))
    if cfg.model.diffuse == "real" and real.labelled:
        diffuse, dist = real_diffuse(bank, real, textures if cfg.texture.detail else None, field, white, seed=cfg.seed)
        trainer.net.gloss.set({}, diffuse)
        use_gloss(bank, trainer.net)
        if report:
            info("diffuse exponent per class from the real frames' colours (sliced L*a*b* distance, Lambert's -> "
                 "fitted): " + ", ".join(f"class {c} " + (f"m {diffuse[c]:g}" if c in diffuse else "Lambert's")
                                         + f" ({a:.2f} -> {b:.2f})" for c, (a, b) in sorted(dist.items())))
    if cfg.model.gloss == "real" and real.labelled:
        gloss, dist = real_gloss(bank, real, textures if cfg.texture.detail else None, field, white, seed=cfg.seed)
        trainer.net.gloss.set(gloss, trainer.net.gloss.fitted()[1])
        use_gloss(bank, trainer.net)
        if report:
            info("specular gloss per class from the real frames' colours (sliced L*a*b* distance, the scene's -> "
                 "fitted): " + ", ".join(f"class {c} " + (f"k_s {gloss[c][0]:g} s {gloss[c][1]:g}" if c in gloss else
                                                            "the scene's") + f" ({a:.2f} -> {b:.2f})"
                                         for c, (a, b) in sorted(dist.items())))
    with_layer = cfg.texture.detail and cfg.texture.albedo_with_detail
    if fit_albedo and real.labelled and (with_layer or field is not None):
        # the colour each class has as the translator starts: with its layer and the lens field on
        # (matching the layer's contrast again would move gains already at their limit past it;
        # the rest stay within 2 %)
        colours = albedo(with_layer, field)
    if cfg.model.camera_cast == "real" and camera is not None:
        fit_cast(cfg, trainer, textures, bank, real, report)
    if cfg.model.exposure == "protect" and not cfg.model.exposure_level:
        if real.labelled:
            fit_protect(cfg, trainer, textures, bank, real, report)
        elif report:
            info("model.exposure: protect has no level and no real frame has a label map to fit it from: exposure 1")
    if fit_albedo and real.labelled and cfg.texture.albedo_translated and colours:
        colours, de = translated_class_albedo(bank, real, colours, _view_translator(cfg, trainer, textures), apply,
                                              statistic=cfg.texture.albedo_statistic)
        if report:
            info("albedo corrected until the translated training views have the real frames' class colours "
                 f"({cfg.texture.albedo_statistic}): class ΔE " + " -> ".join(f"{v:.1f}" for v in de) + "; "
                 + ", ".join(f"class {c} ({', '.join(f'{v:.2f}' for v in col)})" for c, col in sorted(colours.items())))
    if cfg.model.grade in ("real", "curve"):
        fit_grade(cfg, trainer, textures, bank, real, report)


def fit_cells(bank: SceneBank, real: RealFrames, textures: dict, albedo: bool, only: list[str] | None,
              noise: tuple[float, float], blur: float, white: bool, report: bool, names: list[str] = (),
              bumps: float = 0.0, width: str = "fit") -> None:
    """``texture.detail_cells``: fit each class's cell borders and layer gain (``appearance.match_cells``)
    for the objects ``only`` and the classes ``names`` (``texture.detail_cells_classes``; empty: all),
    with borders of ``width`` (``texture.detail_cells_width``: thin, wide, or fit: either),
    with domes ``bumps`` x the cell size high (``texture.detail_bumps``; "fit": the height from
    ``BUMP_HEIGHTS`` that fits best, 0 included), and say what each class got."""
    from ..texture.cells import BORDER_WIDTHS
    from .appearance import BUMP_HEIGHTS, match_cells
    known = {n: c for sc in bank.scenes for c, n in sc.class_names().items() if c > 0}
    missing = [n for n in names if n not in known]
    if missing:
        raise UserError(f"no training scene has class {missing[0]!r} (classes: {', '.join(sorted(known))})",
                        field="texture.detail_cells_classes")
    got = match_cells(bank, real, textures, albedo, only=only, noise=noise, blur=blur, white=white,
                      classes={known[n] for n in names} or None,
                      heights=BUMP_HEIGHTS if bumps == "fit" else (float(bumps),),
                      widths=tuple(BORDER_WIDTHS.values()) if width == "fit" else (BORDER_WIDTHS[width],))
    if report:
        info("cell borders from the real frames' texture over octaves (octave distance before -> after): " + (", ".join(
            f"class {c} " + (f"{1000 * s:.2f} mm cells, border x{math.exp(-g):.2f} of {w:g} cell wide, layer x{m:g}"
                             + (f", domes {h:g} of a cell high" if h > 0 else "") if g > 0 else "none")
            + f" ({d0:.2f} -> {d1:.2f})" for c, (s, g, m, w, h, d0, d1) in sorted(got.items())) or "no class measured"))


def add_relief(bank: SceneBank, textures: dict, cfg: TrainConfig, report: bool) -> None:
    """``texture.detail_relief``: the layers of ``texture.detail_relief_classes`` become a height
    field too (``TextureSet.add_relief``; every anatomy of the bank), and say what each got."""
    names = cfg.texture.detail_relief_classes
    known = {n for sc in bank.scenes for c, n in sc.class_names().items() if c > 0}
    missing = [n for n in names if n not in known]
    if missing:
        raise UserError(f"no training scene has class {missing[0]!r} (classes: {', '.join(sorted(known))})",
                        field="texture.detail_relief_classes")
    got = {}
    for anatomy, tset in textures.items():
        scenes = [sc for sc in bank.scenes if sc.anatomy == anatomy]
        got.update(tset.add_relief(scenes, names, cfg.texture.detail_relief, cfg.texture.detail_relief_blur,
                                   cfg.texture.detail_relief_paint))
    if report:
        info(f"relief of {1000 * cfg.texture.detail_relief:g} mm (std) from the detail layer of "
             + (", ".join(f"{n} ({1000 * v:.2f} mm per unit)" for n, v in sorted(got.items())) or "no class")
             + f", painted layer x{cfg.texture.detail_relief_paint:g}")


def fit_protect(cfg: TrainConfig, trainer: GANTrainer, textures: dict, bank: SceneBank, real: RealFrames,
                report: bool) -> None:
    """``model.exposure: protect`` without a level: the level from the labelled real frames
    (``train.appearance.real_protect``), set in the model, its config (so checkpoints keep it)
    and the training scenes' renderers."""
    from .appearance import real_protect

    def set_level(level: float) -> None:
        trainer.net.exposure_level = level
    level, tried = real_protect(bank, real, _view_translator(cfg, trainer, textures), set_level)
    cfg.model.exposure_level = level
    bank.set_exposure(model_exposure(cfg.model.exposure, level))
    if report:
        info("highlight protection from how often the real frames clip (per-frame share of pixels near the clip, "
             "1-Wasserstein to the real frames' at each level): " + ", ".join(
                 f"{'none' if k == 0 else f'{k:.3g}'} {v:.4f}" for k, v in tried.items())
             + f"; {'level ' + format(level, '.3g') if level else 'none (exposure 1)'}")


def fit_cast(cfg: TrainConfig, trainer: GANTrainer, textures: dict, bank: SceneBank, real: RealFrames,
             report: bool) -> None:
    """``model.camera_cast: real``: the camera's colour cast table from the labelled real frames
    (``train.appearance.real_cast``), less the spread the model's own translations of the
    training views already have (translated before the table is set)."""
    from .appearance import frame_casts, real_cast
    from .detail_init import spread_views
    got = None
    if real.labelled:
        translate = _view_translator(cfg, trainer, textures)
        ours = frame_casts((translate(r, sc, buf, k)[0].float().cpu(), buf.labels[0].cpu())
                           for k, (r, sc, buf) in enumerate(spread_views(bank, 48)))
        got = real_cast(real, ours, seed=cfg.seed)
    camera = trainer.net.camera
    if got is not None:
        camera.set_cast(got[0].to(camera.cast.device))
    if report:
        if got is None:
            info("colour casts from the real frames' class colours: too few labelled real frames show a class; none")
            return
        s = got[1]
        fmt = lambda v: "-" if v is None else f"{v[0]:.2f} / {v[1]:.2f}"
        info(f"colour casts from the real frames' class colours ({s['frames']} frames): log-gain spread, exposure / "
             f"white balance, real {fmt(s['std_real'])}, the views' own {fmt(s['std_views'])}, the table's "
             f"{fmt(s['std_rows'])} (one row per video)")


GRADE_VIEWS = 96      # training views the class grade compares with the real frames


def fit_grade(cfg: TrainConfig, trainer: GANTrainer, textures: dict, bank: SceneBank, real: RealFrames,
              report: bool = True) -> dict:
    """``model.grade: real`` (or ``curve``): each class's chroma across it (and with ``curve``
    its brightness too; ``networks.ClassGrade``) from the labelled real frames against the
    model's own translations of ``GRADE_VIEWS`` training views, made without a grade; set in
    the model. Returns the rows set ({} without label maps)."""
    from .appearance import real_grade
    from .detail_init import spread_views
    grade = trainer.net.grade
    grade.set({})
    if not real.labelled:
        if report:
            info(f"model.grade: {cfg.model.grade}, but no real frame has a label map to fit it from: no grade")
        return {}
    translate = _view_translator(cfg, trainer, textures)
    rows, fits, curves, levels = real_grade(
        real, ((translate(r, sc, buf, k)[0].float().cpu(), buf.labels[0].cpu())
               for k, (r, sc, buf) in enumerate(spread_views(bank, GRADE_VIEWS))),
        curve=cfg.model.grade == "curve", level=cfg.model.grade_level)
    grade.set(rows, curves, levels)
    if report:
        info("class grade from the real frames' chroma across each class (slope of a* / b* on L* in the band above "
             "3 px, real vs ours; residual chroma gain a* / b*; frames real / ours): " + (", ".join(
                 f"class {c} {t[0]:+.2f} / {t[1]:+.2f} vs {o[0]:+.2f} / {o[1]:+.2f}; "
                 + (f"x{rows[c][4]:.2f} / x{rows[c][5]:.2f}" if c in rows else "too few frames, none")
                 + (f"; brightest 2 % {curves[c][3, -1]:+.1f} vs {curves[c][0, -1]:+.1f} L*" if c in curves else "")
                 + f" ({kw} / {kg})" for c, (t, o, kw, kg) in sorted(fits.items()))
                 or "no class in both the views and the label maps; none"))
        if levels:
            info("class level from the real frames' mean colour across frames (a* / b* at the darkest and brightest "
                 "of our frames' mean L*, real vs ours): " + ", ".join(
                     f"class {c} L* {v[8]:.0f}: {v[4] + v[5] * v[8]:+.1f} / {v[6] + v[7] * v[8]:+.1f} vs "
                     f"{v[0] + v[1] * v[8]:+.1f} / {v[2] + v[3] * v[8]:+.1f}, L* {v[9]:.0f}: "
                     f"{v[4] + v[5] * v[9]:+.1f} / {v[6] + v[7] * v[9]:+.1f} vs {v[0] + v[1] * v[9]:+.1f} / "
                     f"{v[2] + v[3] * v[9]:+.1f}" for c, v in sorted(levels.items())))
    return rows


def use_gloss(bank: SceneBank, net) -> None:
    """Render the bank's views with the model's own per-class gloss (``model.gloss: real``),
    where it has one, as every translation of it is rendered (``translate_buffers``)."""
    gloss = getattr(net, "gloss", None)
    bank.set_gloss(gloss.table if gloss is not None and gloss.active else None)


def _view_translator(cfg: TrainConfig, trainer: GANTrainer, textures: dict):
    """translate(renderer, scene, buf, k) -> [1, H, W, 3] sRGB: a training view as the
    generator translates it now, by the inference path (``translate_buffers``: style seed k,
    sensor noise on), so the correction sees exactly what a user's video would."""
    from ..translate.inference import LoadedModel, make_style, translate_buffers
    model = LoadedModel(Path(cfg.run_dir), trainer.net, textures, {"amp": cfg.amp}, {}, 0)

    def run(renderer, scene, buf, k: int) -> torch.Tensor:
        return translate_buffers(model, renderer, buf, make_style(model, str(k), buf.sim_rgb.device), noise_seed=k)
    return run


SCALES = (0.35, 0.5, 0.71, 1.0)     # detail scale candidates: the footprint and half octaves finer
SCALE_TIE = 1.1                     # a finer scale is taken only if its octave distance is this much lower


def choose_scale(tried: dict[int, list[tuple[float, float]]]) -> dict[int, float]:
    """{class id: [(octave distance, scale) for every scale of ``SCALES``]} -> {class id: the
    largest scale within ``SCALE_TIE`` of the least distance}: where scales tie (a pattern the
    octaves cannot place) the footprint stands. Classes not measured at every scale are left out."""
    return {c: max(k for d, k in v if d <= SCALE_TIE * min(v)[0]) for c, v in tried.items() if len(v) == len(SCALES)}


def start_detail(bank: SceneBank, real: RealFrames, textures: dict, seed: int = 0, report: bool = True,
                 only: list[str] | None = None, fit_scale: dict | None = None) -> list[str]:
    """Draw the detail layer (``texture.detail``) of every texture set (or of the objects
    ``only``) from the real frames' class detail (``detail_init``); objects of classes no label
    map shows keep a zero layer. A real pixel spans the training views' pixel footprint of its
    class times the set's ``detail_scale`` of that class (1 where none was fitted).

    ``fit_scale`` ({"albedo", "noise", "blur"}: how the views are rendered; None: no fit,
    ``texture.detail_scale: real``): each class's scale is chosen among ``SCALES`` as the one
    whose layer, with its contrast matched (``appearance.match_detail``), gives the rendered
    training views the real frames' texture at every octave (``appearance.octave_distance``;
    the largest within ``SCALE_TIE`` of the best), and kept in the sets. Windows come from the
    frames that show a class largest — closer than the views — and texels and prefiltering
    widen a pattern further, so the footprint alone draws a class too coarse, never too fine.
    Returns the objects drawn."""
    from .appearance import match_detail, octave_distance, real_octaves, view_octaves
    from .detail_init import class_footprints, init_detail, real_detail_patches
    matte = any(t.config.detail_matte for t in textures.values())
    patches = real_detail_patches(real, seed=seed, matte=matte) if real.labelled else {}
    foot = class_footprints(bank) if patches else {}

    def draw(scale) -> list[str]:
        done = []
        for anatomy, scenes in bank.anatomies().items():
            if anatomy in textures:
                done += init_detail(textures[anatomy], scenes, patches,
                                    {c: f * scale(textures[anatomy], c) for c, f in foot.items()}, seed=seed,
                                    only=only, strength=textures[anatomy].config.detail_strength,
                                    streams=textures[anatomy].config.detail_streams,
                                    aligned=textures[anatomy].config.detail_aligned)
        return done

    done = draw(lambda t, c: t.class_detail_scale(c))
    if fit_scale is not None and done:
        want = real_octaves(real)
        tried: dict[int, list] = {}
        for k in SCALES:
            draw(lambda t, c: k)
            match_detail(bank, real, textures, fit_scale["albedo"], noise=fit_scale["noise"],
                         blur=fit_scale["blur"], only=only, white=fit_scale.get("white", False))
            got = octave_distance(view_octaves(bank, textures, fit_scale["albedo"], noise=fit_scale["noise"],
                                               blur=fit_scale["blur"], only=only,
                                               white=fit_scale.get("white", False)), want)
            for c, d in got.items():
                tried.setdefault(c, []).append((d, k))
        best = choose_scale(tried)
        for t in textures.values():
            t.set_detail_scale(best)
        done = draw(lambda t, c: t.class_detail_scale(c))        # match_detail runs after, as without the fit
        if report:
            info("detail scale per class from the real frames' texture over octaves (mean |log| energy ratio "
                 "per scale tried " + "/".join(f"{k:g}" for k in SCALES) + "): " + (", ".join(
                     f"class {c} x{best[c]:g} ({' '.join(f'{d:.2f}' for d, _ in tried[c])})" for c in sorted(best))
                     or "no class is seen large enough in both the views and the real frames; footprint kept"))
    if report:
        scaled = {c: f * max((t.class_detail_scale(c) for t in textures.values()), default=1.0) for c, f in foot.items()}
        info(f"detail layer drawn from the real frames' class detail for {len(done)} object(s)"
             + ("" if patches else ": " + ("no labelled real frame" if not real.labelled else
                                           "no label region is large enough for a detail window")
                + ", so it starts at zero (no detail)")
             + (" (pixel footprint " + ", ".join(f"class {c}: {1000 * v:.2f} mm" for c, v in sorted(scaled.items()))
                + ")" if foot else ""))
    return done


def warm_start(trainer: GANTrainer, path: str | Path) -> dict:
    """Start a run from another run's weights (``init_from``, fine-tuning): every network tensor
    whose name and shape match is copied (float16 slim checkpoints included), and every texture
    of the same object, layout, channel count and albedo flag (``NeuralTexture.load_levels``: a finer pyramid
    gets the old levels and zero detail levels, so textures can be refined); the rest keeps its
    fresh initialisation; detail layers (``texture.detail``) of the same shape are copied, others
    are left to be drawn. Optimizers start fresh. Returns counts {"weights": loaded, "fresh": not
    in the checkpoint, "textures": objects loaded, "detail": objects whose detail layer was
    loaded}; a
    checkpoint that matches nothing is a UserError (it is another architecture)."""
    if not Path(path).is_file():       # checked when used: resuming such a run needs no file
        raise UserError("no such checkpoint", file=path, field="init_from")
    p = load_checkpoint(path)
    own = trainer.net.state_dict()
    got = {k: v for k, v in p["model"].items() if k in own and own[k].shape == v.shape}
    if not got:
        raise UserError("no network weight matches this run's model (another architecture?)", file=path,
                        field="init_from")
    trainer.net.load_state_dict({k: v.to(own[k].dtype) for k, v in got.items()}, strict=False)
    n_tex, resampled = 0, 0
    # channels that mean an albedo in one and features in the other are not the same texture
    same_kind = bool(p.get("texture_config", {}).get("albedo", False)) == \
        bool(next(iter(trainer.textures.values())).config.albedo if trainer.textures else False)
    for anatomy, tex in trainer.textures.items():
        st = p["textures"].get(anatomy, {}) if same_kind else {}
        for name, t in tex.textures.items():
            levels = [st[k] for k in sorted((k for k in st if k.startswith(f"textures.{name}.levels.")),
                                            key=lambda k: int(k.rsplit(".", 1)[1]))]
            if not levels or levels[0].shape[:2] != t.levels[0].shape[:2] \
                    or (f"textures.{name}.corner_uv" in st) != (t.kind == "uv"):
                continue                       # another layout or channel count: starts fresh
            resampled += t.load_levels(levels) == "resampled"
            n_tex += 1
    loaded = []
    for anatomy, tex in trainer.textures.items():
        st = p["textures"].get(anatomy, {})
        for name, t in tex.detail.items():
            key = f"detail.{name}.levels.0"
            if key in st and tuple(st[key].shape) == tuple(t.levels[0].shape):
                t.levels[0].data.copy_(st[key].to(t.levels[0].dtype))
                loaded.append(name)
        if loaded and "detail_scales" in st:       # the scale the kept layers were drawn at
            tex.set_detail_scale(dict(enumerate(st["detail_scales"].tolist())))
        if loaded:                                 # and the cells and relief beside them (their layer gain is in them)
            tex.set_cells(TextureSet.cells_in(st))
            tex.set_relief(TextureSet.relief_in(st))
    n_detail = len(loaded)
    counts = {"weights": len(got), "fresh": len(own) - len(got), "textures": n_tex, "detail": loaded}
    info(f"started from {path}: {counts['weights']} weight tensors ({counts['fresh']} fresh), "
         f"textures of {n_tex} object(s)" + (f" ({resampled} resampled to this run's resolution)" if resampled else "")
         + (f", detail layers of {n_detail}" if n_detail else ""))
    return counts


def _resume(cfg: TrainConfig, last: Path, trainer: GANTrainer, sampler, real, d: Dist, device) -> None:
    """Load the full checkpoint ``last`` into the trainer, its optimizers and every RNG."""
    if not last.exists():
        raise UserError("nothing to resume: no checkpoints/last.pt", file=last.parent.parent, field="resume")
    p = load_checkpoint(last, map_location=device)
    # more steps and other logging are fine; anything else would not be the same run
    old = resolve(None, [], base=p["config"]).to_dict()       # keys added since then take their defaults
    fitted = float(old["model"].get("exposure_level", 0.0))
    if cfg.model.exposure == "protect" and not cfg.model.exposure_level and fitted:
        cfg.model.exposure_level = fitted      # the level the run's start fitted (model.exposure: protect)
        trainer.net.exposure_level = fitted
        sampler.bank.set_exposure(model_exposure(cfg.model.exposure, fitted))
    now = cfg.to_dict()
    changed = [k for k in now if k not in ("steps", "log", "max_minutes") and old.get(k) != now[k]]
    if changed:
        raise UserError(f"config differs from the checkpoint's in: {', '.join(changed)}", file=last, field="resume")
    trainer.net.load_state_dict(p["model"])
    for a, st in p["textures"].items():
        trainer.textures[a].load_state_dict(st)
    trainer.opt_g.load_state_dict(p["opt_g"])
    trainer.opt_d.load_state_dict(p["opt_d"])
    for s, st in zip(trainer.sched, p["sched"]):
        s.load_state_dict(st)
    trainer.step = int(p["step"])
    rng = p["rng"]
    if len(rng) != d.world:
        raise UserError(f"checkpoint was written by {len(rng)} processes, this run has {d.world}", file=last,
                        field="resume")
    _restore_rng(rng[d.rank], trainer, sampler, real, device)


class _Logger:
    """TensorBoard scalars and image grids on rank 0 (nothing when disabled)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, enabled: bool):
        self.cfg = cfg
        self.writer = None
        if enabled and cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        self.t0 = time.perf_counter()
        self.start_step = None

    def step(self, step: int, losses: dict, trainer: GANTrainer) -> None:
        if self.writer is None:
            return
        if self.start_step is None:
            self.start_step = step - 1
        log = self.cfg.log
        if step % log.every == 0 or step == self.cfg.steps:
            for k, v in losses.items():
                self.writer.add_scalar(f"loss/{k}", v, step)
            rate = (step - self.start_step) / max(time.perf_counter() - self.t0, 1e-9)
            self.writer.add_scalar("speed/steps_per_s", rate, step)
        if step % log.images_every == 0 or step == 1:
            self.writer.add_image("sim|features|translated|real", _image_grid(trainer.last_images()), step)

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def preflight(cfg: TrainConfig, resume: bool, last: Path) -> None:
    """Every check that needs no rendering, before any work starts (a typo costs seconds, not
    the minutes of writing random scenes and a surrogate set): the checkpoint to resume or to
    start from, the scene files, the real-frame paths. Raises UserError naming the field."""
    if resume and not last.exists():
        raise UserError("nothing to resume: no checkpoints/last.pt", file=last.parent.parent, field="resume")
    if not resume and last.exists():
        raise UserError("run folder already has a checkpoint: resume the run or choose another run_dir",
                        file=last.parent.parent, field="resume")
    if not resume and cfg.init_from:
        if not Path(cfg.init_from).is_file():
            raise UserError("no such checkpoint", file=cfg.init_from, field="init_from")
        load_checkpoint(cfg.init_from)           # refuses a corrupt or foreign file now
    ids = set()
    for i, s in enumerate(cfg.data.scenes):
        if not Path(s).is_file():
            raise UserError("not found", file=s, field=f"data.scenes[{i}]")
        ids |= set(load_scene(s).class_names())  # a bad scene field is reported before any rendering
    for i, p in enumerate(cfg.data.real.paths):
        if not Path(p).exists():
            raise UserError("not found", file=p, field=f"data.real.paths[{i}]")
    if real_crops(cfg) and cfg.data.real.paths:
        # label maps of another size, or with ids no scene has: refused before anything is written
        # (random scenes are drawn later, so with them only their size is checked here)
        RealFrames(cfg.data.real.paths, size=tuple(cfg.size), stride=cfg.data.real.stride, labels=True,
                   circular_mask=cfg.data.real.circular_mask,
                   known_ids=None if cfg.data.random_scenes.count else ids)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Run (or resume) training as configured; returns how it ended (``model`` is the slim
    checkpoint for translate/export/fit-textures, ``last`` the full one for resuming)."""
    d = Dist.from_env("cuda" if (cfg.device != "cpu" and torch.cuda.is_available()) else "cpu")
    device = pick_train_device(cfg, d)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    run_dir = Path(cfg.run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if d.is_main:
        preflight(cfg, resume, last)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    d.barrier()
    seed_everything(cfg.seed)
    bank, real, sampler = build(cfg, d, device, run_dir, progress)
    trainer, metas = build_trainer(cfg, bank, device, reduce_grads=d.all_reduce_grads)
    d.broadcast_parameters(trainer)
    if resume:
        _resume(cfg, last, trainer, sampler, real, d, device)
    elif cfg.init_from:
        started = warm_start(trainer, cfg.init_from)
        d.broadcast_parameters(trainer)
    if not resume and trainer.textures:
        start_appearance(cfg, bank, real, trainer, started if cfg.init_from else None, d.is_main)
        d.broadcast_parameters(trainer)
    use_gloss(bank, trainer.net)

    def save(path: Path) -> None:
        rng = d.gather(_rng_state(trainer, sampler, real))
        if d.is_main:
            save_checkpoint(path, trainer_payload(trainer, cfg, metas, rng))

    def snapshot(minutes: float) -> None:
        if d.is_main:
            save_checkpoint(run_dir / "snapshots" / f"model_{minutes:05.1f}min.pt",
                            trainer_payload(trainer, cfg, metas, None, slim=True))

    reason = _loop(cfg, trainer, sampler, real, d, run_dir, last, save, progress, snapshot)
    save(last)
    if d.enabled and not d.check_in_sync(trainer):
        raise RuntimeError("ranks diverged: parameters differ across processes")
    if d.is_main:
        save_checkpoint(run_dir / "model.pt", trainer_payload(trainer, cfg, metas, None, slim=True))
    d.close()
    return TrainResult(trainer.step, last, run_dir / "model.pt", reason != "done", d.world, d.is_main, reason)


def _loop(cfg: TrainConfig, trainer: GANTrainer, sampler, real, d: Dist, run_dir: Path, last: Path, save,
          progress: bool, snapshot) -> str:
    """Steps until cfg.steps ("done"), cfg.max_minutes ("time") or a signal ("signal");
    checkpoints every log.checkpoint_every, slim snapshots every log.snapshot_minutes."""
    from tqdm import tqdm
    logger = _Logger(cfg, run_dir, d.is_main)
    pbar = tqdm(total=cfg.steps, initial=trainer.step, desc="train", unit="step",
                disable=not (progress and d.is_main), dynamic_ncols=True)
    reason = "done"
    t0 = time.monotonic()
    deadline = t0 + cfg.max_minutes * 60 if cfg.max_minutes > 0 else None
    every = cfg.log.snapshot_minutes * 60
    next_snap = t0 + every if every > 0 else None
    with _StopFlag() as flag:
        while trainer.step < cfg.steps:
            batch = sampler.batch(cfg.batch, real, paired=trainer.net.paired, real_crops=real_crops(cfg)) \
                if trainer.net.renders else sampler.real_batch(cfg.batch, real)
            try:
                losses = trainer.training_step(batch)
            except FloatingPointError as exc:
                pbar.close()
                keep = f"; last good checkpoint kept: {last}" if last.exists() else "; no checkpoint was written yet"
                raise TrainingStopped(f"training stopped: {exc}{keep}", file=run_dir, field="loss") from None
            step = trainer.step
            pbar.update(1)
            if step % cfg.log.every == 0 or step == cfg.steps:
                pbar.set_postfix({k: f"{v:.3f}" for k, v in losses.items() if k in ("total_g", "total_d", "view")})
            logger.step(step, losses, trainer)
            if step % cfg.log.checkpoint_every == 0:
                save(last)
            if next_snap is not None and time.monotonic() >= next_snap:
                snapshot((next_snap - t0) / 60)
                next_snap += every
            timeout = deadline is not None and time.monotonic() >= deadline
            # all ranks must agree on stopping; rank 0's signal (or clock) decides
            stop = (flag.stop, timeout)
            stop = d.gather(stop)[0] if d.enabled else stop
            if stop[0] or stop[1]:
                reason = "signal" if stop[0] else "time"
                break
    pbar.close()
    logger.close()
    return reason
