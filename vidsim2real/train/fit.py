"""fit-textures: neural textures for a new scene with the trained translator frozen."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..domains.real import DEFAULT_REAL
from ..errors import UserError, info
from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..scene import check_camera_path, load_scene
from ..strict_yaml import read_dataclass
from ..texture import TextureConfig, TextureSet, texture_meta
from ..translate.model import build_translator
from .checkpoint import build_payload
from .config import resolve
from .appearance import layer_gains, match_chroma, match_detail, real_class_albedo
from .distributed import Dist
from .loop import build, pick_train_device, real_crops, seed_everything, start_detail, use_gloss
from .trainer import make_trainer


@dataclass
class FitResult:
    """What fit-textures wrote: the checkpoint, the anatomy fitted, the steps taken."""

    path: Path
    anatomy: str
    steps: int


def fit_config(payload: dict, scene_path: str | Path, steps: int, real, device: str, overrides: list):
    """The training run's config turned into a fitting run: this scene only, no random scenes,
    no view-loss warm-up, ``steps`` steps, the given real frames (else the bundled real-domain
    set, so nothing has to be rendered first)."""
    cfg = resolve(None, [], base=payload["config"])
    cfg.init_from = ""                    # how the run started is not this fit's business
    cfg.data.scenes = [str(Path(scene_path).resolve())]
    cfg.data.random_scenes.count = 0
    cfg.device, cfg.steps = device, steps
    cfg.loss.view_warmup = 0
    # the checkpoint's domes and relief travel in its class rows (adopted below); this run fits
    # neither, so texture.detail_bumps / detail_relief (which ask steps to be 0) have nothing to do here
    cfg.texture.detail_bumps = 0.0
    cfg.texture.detail_relief = 0.0
    cfg.data.real.paths = [str(Path(r).resolve()) for r in real] if real else [str(DEFAULT_REAL)]
    cfg.data.real.surrogate_scenes = 0
    return resolve(None, overrides or [], base=cfg.to_dict())      # the user's overrides win


def fit_textures(ckpt: str | Path, scene_path: str | Path, out: str | Path, steps: int = 500, real=None,
                 device: str = "auto", overrides: list | None = None, progress: bool = True) -> FitResult:
    """Train only the textures of ``scene_path``'s anatomy (GAN + view losses, networks frozen);
    write a slim checkpoint with all previous texture sets plus the new one to ``out``."""
    from tqdm import tqdm
    for r in real or []:               # before any work: errors name the user's option
        if not Path(r).exists():
            raise UserError("not found", file=r, field="real")
    scene = load_scene(scene_path)
    p = load_checkpoint(ckpt)
    if not real:
        info(f"fitting against the bundled real-domain set {DEFAULT_REAL} (give real frames for your own)")
    cfg = fit_config(p, scene_path, steps, real, device, overrides)
    check_camera_path(scene)
    d = Dist()
    dev = pick_train_device(cfg, d)
    seed_everything(cfg.seed)
    run_dir = Path(out).with_suffix("")
    run_dir.mkdir(parents=True, exist_ok=True)
    bank, real_frames, sampler = build(cfg, d, dev, run_dir, progress, check_ids=False, labels=True)
    tcfg = read_dataclass(TextureConfig, p["texture_config"], str(ckpt), "texture_config")
    net = build_translator(cfg.model, tcfg.sampled_channels, albedo=tcfg.albedo, detail=tcfg.detail)
    if not net.uses_features:
        raise UserError("this checkpoint's model has no neural textures to fit", file=ckpt)
    net.load_weights(p["model"], source=ckpt)
    net.to(dev)
    use_gloss(bank, net)
    if scene.anatomy in p["textures"]:       # refine the existing set, adding objects it lacks
        tex = TextureSet.from_state(tcfg, p["textures"][scene.anatomy], scene.anatomy)
        missing = tex.covers(scene)
        if missing:
            fresh = TextureSet.for_scene(scene, tcfg, seed=cfg.seed)
            for name in missing:
                tex.textures[name] = fresh.textures[name]
                if name in fresh.detail:
                    tex.detail[name] = fresh.detail[name]
    else:
        tex = TextureSet.for_scene(scene, tcfg, seed=cfg.seed)
        missing = [o.name for o in scene.objects]
        for st in p["textures"].values():       # cell borders and relief belong to a class, not an anatomy
            tex.set_cells(TextureSet.cells_in(st))
            tex.set_relief(TextureSet.relief_in(st))
    adopted = adopt_by_class(tex, scene, missing, p, tcfg)
    if adopted:
        info("starting from the checkpoint's textures of the same class: "
             + ", ".join(f"{o} <- {src}" for o, src in adopted.items()))
    plain = []
    if real_frames.labelled:       # which classes the real frames show is known only from label maps
        plain = [o for o in scene.objects if o.name in missing and o.name not in adopted
                 and o.class_id not in real_frames.class_ids]
        plain_fallback(tex, [o.name for o in plain], p, scene)
    if plain:
        info("no real frame shows class(es) " + ", ".join(sorted({f"{o.class_name} ({o.class_id})" for o in plain}))
             + ": " + ", ".join(o.name for o in plain) + " keep a plain texture (the translator's average tissue, "
             "not fitted), so they look like their scene colour translated")
    fresh = [o for o in missing if o not in adopted and o not in {p_.name for p_ in plain}]
    if tcfg.albedo and tcfg.albedo_init == "real" and fresh and real_frames.labelled:
        # new objects of classes the real frames show start with their class's real albedo, as
        # seen through the model's lens field (if it has one)
        cam = getattr(net, "camera", None)
        field = cam.field.detach().cpu() if cam is not None and cam.field.any() else None
        colours = real_class_albedo(bank, real_frames, seed=cfg.seed, field=field)
        tex.set_albedo(colours, [scene], only=fresh)
    if tcfg.detail:         # new objects draw their detail from the real frames of their class
        drawn = [o for o in missing if o not in {p_.name for p_ in plain}]
        start_detail(bank, real_frames, {scene.anatomy: tex}, cfg.seed, progress, only=drawn)
        if tcfg.detail_match and drawn and real_frames.labelled:
            match_detail(bank, real_frames, {scene.anatomy: tex}, tcfg.albedo, only=drawn, bands=tcfg.detail_bands)
            if tcfg.detail_chroma:
                match_chroma(bank, real_frames, {scene.anatomy: tex}, tcfg.albedo, only=drawn)
            layer_gains(bank, {scene.anatomy: tex}, only=drawn)     # the layer's share beside its cells
    tex = tex.to(dev)
    trainer = make_trainer(cfg, net, {scene.anatomy: tex}, dev, fit_textures=True)
    for _ in tqdm(range(steps), desc=f"fit-textures {scene.name}", unit="step", disable=not progress):
        try:
            trainer.training_step(sampler.batch(cfg.batch, real_frames, real_crops=real_crops(cfg)))
        except FloatingPointError as exc:
            raise UserError(f"fitting stopped: {exc}", file=scene_path) from None
    textures = dict(p["textures"])
    textures[scene.anatomy] = tex.state_dict()
    save_checkpoint(out, build_payload(step=p["step"], config=p["config"], model_state=net.deploy_state_dict(),
                                       textures=textures, texture_meta=_merged_meta(p, scene),
                                       texture_config=p["texture_config"], slim=True,
                                       fitted={scene.anatomy: {"steps": steps, "from": str(ckpt)}}))
    return FitResult(Path(out), scene.anatomy, steps)


def adopt_by_class(tex: TextureSet, scene, names: list[str], payload: dict, tcfg: TextureConfig) -> dict[str, str]:
    """Start the new objects ``names`` of ``tex`` from a texture of the same class in the
    checkpoint (an object of the same name first), resampled to their resolution, instead of
    noise: the frozen translator already maps those features to that tissue, so fitting refines
    rather than starts over. Objects of classes the checkpoint never saw keep their fresh
    texels. Returns {object: "anatomy/object"} of what was adopted."""
    want = {o.name: o.class_name for o in scene.objects if o.name in names}
    donors: dict[str, list] = {}                  # class -> [(anatomy, object)], same names first
    for anatomy, meta in payload.get("texture_meta", {}).items():
        if anatomy not in payload["textures"]:
            continue
        for obj, cls in meta.get("classes", {}).items():
            donors.setdefault(cls, []).append((anatomy, obj))
    sets: dict[str, TextureSet] = {}
    adopted = {}
    for name, cls in want.items():
        cands = sorted(donors.get(cls, []), key=lambda d: d[1] != name)
        for anatomy, obj in cands:
            if anatomy not in sets:
                sets[anatomy] = TextureSet.from_state(tcfg, payload["textures"][anatomy], anatomy)
            src, dst = dict(sets[anatomy].textures.items()).get(obj), tex.textures[name]
            if src is None or (src.kind, src.channels, src.num_levels) != (dst.kind, dst.channels, dst.num_levels):
                continue
            with torch.no_grad():
                for a, b in zip(src.levels, dst.levels):
                    b.copy_(a if a.shape == b.shape else
                            F.interpolate(a.float(), size=b.shape[-2:], mode="bilinear", align_corners=False,
                                          antialias=a.shape[-1] > b.shape[-1]))
            adopted[name] = f"{anatomy}/{obj}"
            break
    return adopted


def plain_fallback(tex: TextureSet, names: list[str], payload: dict, scene=None) -> None:
    """The documented fallback for objects whose class the real frames never show (nothing to
    learn their detail from) and the checkpoint has no texture of: a flat texture holding the
    mean feature of every texture in the checkpoint (the translator's average tissue), frozen.
    It has no pattern to draw stripes from; the colour comes from the object's scene colour in
    the sim render (with albedo textures, the albedo channels hold that colour: the mean of the
    other classes' albedos would be nobody's colour)."""
    if not names:
        return
    sums = []
    for anatomy, st in payload["textures"].items():
        for key in st:
            if key.startswith("textures.") and ".levels." in key:
                sums.append(st[key].float().mean(dim=(0, 2, 3)))       # each level's mean feature [C]
    levels_per = max(1, sum(k.startswith("textures.") and k.endswith(".levels.0")
                            for st in payload["textures"].values() for k in st))
    mean = torch.stack(sums).sum(0) / levels_per if sums else None
    with torch.no_grad():
        for name in names:
            t = tex.textures[name]
            for lvl in [*t.levels, *(tex.detail[name].levels if name in tex.detail else [])]:
                lvl.zero_()
                lvl.requires_grad_(False)
            if mean is not None and mean.numel() == t.channels:
                t.levels[-1][:] = mean.to(t.levels[-1].dtype)[None, :, None, None]
        if tex.config.albedo and scene is not None:
            for o in scene.objects:
                if o.name in names:
                    tex.set_albedo({o.class_id: o.color}, [scene], only=[o.name])


def _merged_meta(payload: dict, scene) -> dict:
    """The checkpoint's texture metadata with the fitted anatomy's entry updated; objects of the
    set this scene does not show are kept."""
    metas = dict(payload.get("texture_meta", {}))
    new = texture_meta(scene)
    if scene.anatomy in metas:
        old = metas[scene.anatomy]
        new["objects"] = old.get("objects", []) + [o for o in new["objects"] if o not in old.get("objects", [])]
        new["classes"] = {**old.get("classes", {}), **new["classes"]}
    metas[scene.anatomy] = new
    return metas
