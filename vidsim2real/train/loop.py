"""The training loop: data, model, textures, optimizers, logging, checkpoints, resume, signals."""
from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..io.atomic import atomic_write_text
from ..layout import to_unit
from ..texture import TextureConfig, TextureSet
from ..translate.model import GANTrainer, Translator
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import SceneBank, ViewPairSampler, prepare_real, prepare_scenes
from .distributed import Dist


class TrainingStopped(UserError):
    """A run stopped on a non-finite loss; the last good checkpoint is kept."""

    exit_code = 3


def pick_train_device(cfg: TrainConfig, d: Dist | None = None) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("CUDA requested but no GPU is available", field="device")
        return torch.device("cuda", d.local_rank if d else 0)
    return torch.device("cpu")


def texture_config(cfg: TrainConfig) -> TextureConfig:
    return cfg.texture


def texture_meta(scenes) -> dict:
    """What a texture set was built for: its objects and their classes (checked when translating)."""
    scenes = scenes if isinstance(scenes, list) else [scenes]
    objects, classes = [], {}
    for s in scenes:
        for o in s.objects:
            if o.name not in classes:
                objects.append(o.name)
                classes[o.name] = o.class_name
    return {"scenes": [str(s.path) for s in scenes], "objects": objects, "classes": classes}


def textures_from_state(cfg_tex: TextureConfig, state: dict, anatomy: str) -> TextureSet:
    """Rebuild a TextureSet from its state dict alone (no meshes needed)."""
    from ..texture import NeuralTexture
    names = sorted({k.split(".")[1] for k in state if k.startswith("textures.")})
    textures = {}
    for n in names:
        levels = [state[f"textures.{n}.levels.{i}"] for i in range(cfg_tex.levels)]
        kind = "uv" if f"textures.{n}.corner_uv" in state else "triplanar"
        kw = {"bbox": torch.stack([state[f"textures.{n}.lo"], state[f"textures.{n}.hi"]])} if kind == "triplanar" \
            else {"corner_uv": state[f"textures.{n}.corner_uv"]}
        tex = NeuralTexture(kind, levels[0].shape[1], levels[0].shape[2], len(levels), init="zeros",
                            sharpness=cfg_tex.sharpness, **kw)
        textures[n] = tex
    ts = TextureSet(cfg_tex, textures, anatomy)
    ts.load_state_dict(state)
    return ts


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


def slim_textures(textures: dict) -> dict:
    """Texture state dicts per anatomy with the texel pyramids stored as float16 (they load back
    into float32 parameters; the round trip changes texels by < 1e-3 relative), halving the
    size of shipped checkpoints."""
    return {a: {k: (v.detach().cpu().half() if ".levels." in k else v.detach().cpu()) for k, v in st.items()}
            for a, st in textures.items()}


def checkpoint_payload(trainer: GANTrainer, cfg: TrainConfig, metas: dict, rng: list | None, slim: bool = False) -> dict:
    """Everything needed to translate and fit textures (slim: deploy networks, float16 texels)
    or to resume exactly (full)."""
    textures = {a: t.state_dict() for a, t in trainer.textures.items()}
    payload = {"step": trainer.step, "config": cfg.to_dict(),
               "model": trainer.net.deploy_state_dict() if slim else trainer.net.state_dict(),
               "textures": slim_textures(textures) if slim else textures,
               "texture_meta": metas, "texture_config": texture_config(cfg).to_dict()}
    if not slim:
        payload.update({"opt_g": trainer.opt_g.state_dict(), "opt_d": trainer.opt_d.state_dict(),
                        "sched": [s.state_dict() for s in trainer.sched], "rng": rng})
    return payload


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


def build(cfg: TrainConfig, d: Dist, device: torch.device, run_dir: Path):
    """Scenes, data, textures, networks and trainer of a run (shared by train and fit-textures)."""
    from ..domains.real import RealFrames
    if d.is_main:
        scene_paths = prepare_scenes(cfg, run_dir)
        real_paths = prepare_real(cfg, run_dir, device)
    d.barrier()
    if not d.is_main:
        scene_paths = prepare_scenes(cfg, run_dir)
        real_paths = prepare_real(cfg, run_dir, device)
    render_size = cfg.data.render_size or cfg.size
    bank = SceneBank(scene_paths, render_size, device, cfg.backend)
    # real frames at the render scale (shorter side = render size), then crops of the training size
    real = RealFrames(real_paths, size=tuple(cfg.size), resize=min(render_size), stride=cfg.data.real.stride,
                      circular_mask=cfg.data.real.circular_mask, seed=cfg.seed * 1000 + d.rank)
    sampler = ViewPairSampler(bank, cfg.data.max_offset, seed=cfg.seed * 1000 + d.rank, crop=tuple(cfg.size))
    return bank, real, sampler


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) training as configured; returns the final checkpoint path."""
    from tqdm import tqdm
    d = Dist.from_env("cuda" if (cfg.device != "cpu" and torch.cuda.is_available()) else "cpu")
    device = pick_train_device(cfg, d)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.pt"
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume and last.exists():
            raise UserError("run folder already has a checkpoint; pass --resume or choose another run_dir",
                            file=run_dir, field="run_dir")
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    d.barrier()
    seed_everything(cfg.seed)
    bank, real, sampler = build(cfg, d, device, run_dir)

    tcfg = texture_config(cfg)
    metas, textures = {}, {}
    use_features = cfg.model.type == "munit" and cfg.model.features
    if use_features:
        for anatomy, scenes in bank.anatomies().items():
            textures[anatomy] = TextureSet.for_scenes(scenes, tcfg, seed=cfg.seed).to(device)
            metas[anatomy] = texture_meta(scenes)
    translator = Translator(cfg.model, tcfg.channels, seed=cfg.seed).to(device)
    trainer = GANTrainer(cfg, translator, textures, device, reduce_grads=d.all_reduce_grads)
    d.broadcast_parameters(trainer)

    if resume:
        if not last.exists():
            raise UserError("nothing to resume: no checkpoints/last.pt", file=run_dir, field="--resume")
        p = load_checkpoint(last, map_location=device)
        # more steps and other logging are fine; anything else would not be the same run
        changed = [k for k in cfg.to_dict() if k not in ("steps", "log") and p["config"].get(k) != cfg.to_dict()[k]]
        if changed:
            raise UserError(f"config differs from the checkpoint's in: {', '.join(changed)}", file=last,
                            field="--resume")
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
            raise UserError(f"checkpoint was written by {len(rng)} processes, this run has {d.world}",
                            file=last, field="--resume")
        _restore_rng(rng[d.rank], trainer, sampler, real, device)

    writer = None
    if d.is_main and cfg.log.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(run_dir / "tensorboard"))

    def save(path: Path) -> None:
        rng = d.gather(_rng_state(trainer, sampler, real))
        if d.is_main:
            save_checkpoint(path, checkpoint_payload(trainer, cfg, metas, rng))

    paired = cfg.model.type == "pix2pix"
    pbar = tqdm(total=cfg.steps, initial=trainer.step, desc="train", unit="step", disable=not (progress and d.is_main),
                dynamic_ncols=True)
    t0 = time.perf_counter()
    stopped = False
    with _StopFlag() as flag:
        while trainer.step < cfg.steps:
            batch = sampler.batch(cfg.batch, real, paired=paired)
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
                if writer:
                    for k, v in losses.items():
                        writer.add_scalar(f"loss/{k}", v, step)
                    writer.add_scalar("speed/steps_per_s", step / max(time.perf_counter() - t0, 1e-9), step)
            if writer and (step % cfg.log.images_every == 0 or step == 1):
                writer.add_image("sim|features|translated|real", _image_grid(trainer.last_images()), step)
            if step % cfg.log.checkpoint_every == 0:
                save(last)
            # all ranks must agree on stopping; rank 0's signal decides
            if d.gather(flag.stop)[0] if d.enabled else flag.stop:
                stopped = True
                break
    pbar.close()
    save(last)
    if d.enabled and not d.check_in_sync(trainer):
        raise RuntimeError("ranks diverged: parameters differ across processes")
    if d.is_main:
        save_checkpoint(run_dir / "model.pt", checkpoint_payload(trainer, cfg, metas, None, slim=True))
        if writer:
            writer.close()
        msg = "interrupted: saved" if stopped else "done:"
        print(f"{msg} step {trainer.step}, checkpoint {last}, model {run_dir / 'model.pt'}"
              + (f", {d.world} ranks in sync" if d.enabled else ""))
    d.close()
    return run_dir / "model.pt"
