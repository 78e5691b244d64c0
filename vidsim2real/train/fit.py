"""fit-textures: neural textures for a new scene with the trained translator frozen."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..scene import check_camera_path, load_scene
from ..texture import TextureConfig, TextureSet
from ..translate.model import GANTrainer
from .checkpoint import load_checkpoint, save_checkpoint
from .config import resolve
from .distributed import Dist
from .loop import build, pick_train_device, seed_everything, slim_textures, texture_meta, textures_from_state


def fit_textures(ckpt: str | Path, scene_path: str | Path, out: str | Path, steps: int = 500, real=None,
                 device: str = "auto", overrides: list | None = None, progress: bool = True) -> Path:
    """Train only the textures of ``scene_path``'s anatomy (GAN + view losses, networks frozen);
    write a slim checkpoint with all previous texture sets plus the new one to ``out``."""
    from tqdm import tqdm

    from ..translate.model import Translator
    p = load_checkpoint(ckpt)
    base = dict(p["config"])
    base["data"] = dict(base["data"], scenes=[str(Path(scene_path).resolve())],
                      random_scenes=dict(base["data"]["random_scenes"], count=0))
    if real:
        base["data"]["real"] = dict(base["data"]["real"], paths=[str(Path(r).resolve()) for r in real],
                                    surrogate_scenes=0)
    base["device"] = device
    base["steps"] = steps
    base["loss"] = dict(base["loss"], view_warmup=0)
    cfg = resolve(None, overrides or [], base=base)
    if cfg.model.type != "munit" or not cfg.model.features:
        raise UserError("this checkpoint's model has no neural textures to fit", file=ckpt)
    scene = load_scene(scene_path)
    check_camera_path(scene)
    d = Dist()
    dev = pick_train_device(cfg, d)
    seed_everything(cfg.seed)
    run_dir = Path(out).with_suffix("")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.data.real.paths and cfg.data.real.surrogate_scenes:
        # the training run's surrogate set, if it is still there
        orig = Path(p["config"]["run_dir"]) / "real_surrogate" / "frames"
        if orig.exists():
            cfg.data.real.paths = [str(orig)]
            cfg.data.real.surrogate_scenes = 0
    bank, real_frames, sampler = build(cfg, d, dev, run_dir)
    tcfg = TextureConfig(**p["texture_config"])
    net = Translator(cfg.model, tcfg.channels).to(dev)
    net.load_weights(p["model"], source=ckpt)
    if scene.anatomy in p["textures"]:       # refine the existing set, adding objects it lacks
        tex = textures_from_state(tcfg, p["textures"][scene.anatomy], scene.anatomy).to(dev)
        missing = tex.covers(scene)
        if missing:
            fresh = TextureSet.for_scene(scene, tcfg, seed=cfg.seed).to(dev)
            for name in missing:
                tex.textures[name] = fresh.textures[name]
    else:
        tex = TextureSet.for_scene(scene, tcfg, seed=cfg.seed).to(dev)
    trainer = GANTrainer(cfg, net, {scene.anatomy: tex}, dev, freeze_networks=True)
    for _ in tqdm(range(steps), desc=f"fit-textures {scene.name}", unit="step", disable=not progress):
        batch = sampler.batch(cfg.batch, real_frames)
        try:
            trainer.training_step(batch)
        except FloatingPointError as exc:
            raise UserError(f"fitting stopped: {exc}", file=scene_path) from None
    textures = {a: st for a, st in p["textures"].items()}
    textures[scene.anatomy] = {k: v.detach().cpu() for k, v in tex.state_dict().items()}
    metas = dict(p.get("texture_meta", {}))
    new_meta = texture_meta(scene)
    if scene.anatomy in metas:                # keep objects of the set this scene does not show
        old = metas[scene.anatomy]
        new_meta["objects"] = old.get("objects", []) + [o for o in new_meta["objects"] if o not in old.get("objects", [])]
        new_meta["classes"] = {**old.get("classes", {}), **new_meta["classes"]}
    metas[scene.anatomy] = new_meta
    payload = {"step": p["step"], "config": p["config"], "model": net.deploy_state_dict(),
               "textures": slim_textures(textures), "texture_meta": metas, "texture_config": p["texture_config"],
               "fitted": {scene.anatomy: {"steps": steps, "from": str(ckpt)}}}
    save_checkpoint(out, payload)
    print(f"wrote {out} (textures for anatomy '{scene.anatomy}', {steps} steps)")
    return Path(out)
