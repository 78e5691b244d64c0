"""Load a trained model and translate rendered frames (what translate/export/metrics use)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..layout import from_network, nhwc_to_nchw, to_network
from ..render import FrameBuffers, Renderer
from ..scene.scene import Scene
from ..texture import TextureConfig
from ..train.checkpoint import load_checkpoint
from ..train.config import resolve
from .model import Translator


@dataclass
class LoadedModel:
    """A checkpoint ready for inference: networks, texture sets per anatomy, training config."""

    path: Path
    net: Translator
    textures: dict
    config: object
    metas: dict
    step: int

    @property
    def uses_features(self) -> bool:
        return self.net.feat_channels > 0


def load_model(path: str | Path, device="cpu") -> LoadedModel:
    """Load a vidsim2real checkpoint (full or slim) for inference."""
    from ..train.loop import textures_from_state
    path = Path(path)
    p = load_checkpoint(path, map_location="cpu")
    for key in ("config", "model", "textures", "texture_config"):
        if key not in p:
            raise UserError(f"checkpoint lacks '{key}'", file=path)
    cfg = resolve(None, [], base=p["config"])
    tcfg = TextureConfig(**p["texture_config"])
    net = Translator(cfg.model, tcfg.channels, seed=0)
    net.load_weights(p["model"], source=path)
    net.eval().to(device)
    textures = {a: textures_from_state(tcfg, st, a).to(device) for a, st in p["textures"].items()}
    return LoadedModel(path, net, textures, cfg, p.get("texture_meta", {}), int(p.get("step", 0)))


def check_scene(model: LoadedModel, scene: Scene) -> None:
    """Refuse scenes this model cannot translate faithfully (missing textures, other classes)."""
    if not model.uses_features:
        return
    if scene.anatomy not in model.textures:
        have = ", ".join(sorted(model.textures)) or "none"
        raise UserError(f"the checkpoint has no neural textures for anatomy '{scene.anatomy}' (it has: {have}); "
                        f"run 'vidsim2real fit-textures {model.path} {scene.path}' first", file=scene.path,
                        field="anatomy")
    meta = model.metas.get(scene.anatomy, {})
    classes = meta.get("classes", {})
    for i, o in enumerate(scene.objects):
        if o.name not in model.textures[scene.anatomy].textures:
            raise UserError(f"object '{o.name}' has no neural texture in the checkpoint (anatomy "
                            f"'{scene.anatomy}' has: {', '.join(meta.get('objects', []))})", file=scene.path,
                            field=f"objects[{i}].name")
        if classes and classes.get(o.name) not in (None, o.class_name):
            raise UserError(f"object '{o.name}' is class '{o.class_name}' here but '{classes[o.name]}' in the "
                            f"checkpoint", file=scene.path, field=f"objects[{i}].class_name")


def make_style(model: LoadedModel, spec: str | None, device, size=(256, 256)) -> torch.Tensor:
    """A style code [1, style_dim] for a whole video: 'random' (seed 0), an integer seed, or a
    path to a real image whose style is encoded."""
    d = model.net.style_dim
    if spec is None or spec == "random":
        spec = "0"
    if spec.lstrip("-").isdigit():
        g = torch.Generator().manual_seed(int(spec))
        return torch.randn(1, d, generator=g).to(device)
    path = Path(spec)
    if not path.exists():
        raise UserError("style must be 'random', an integer seed or an image file; file not found", file=path,
                        field="--style")
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError("cannot read style image", file=path, field="--style")
    img = cv2.resize(img[..., ::-1], size, interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div(255).mul(2).sub(1)
    return model.net.encode_style(x.to(device))


@torch.no_grad()
def translate_buffers(model: LoadedModel, renderer: Renderer, buf: FrameBuffers, style: torch.Tensor) -> torch.Tensor:
    """Translated frames [B, H, W, 3] in [0, 1] of rendered frame buffers (sim_rgb required)."""
    sim = to_network(buf.sim_rgb)
    feats = None
    if model.uses_features:
        feats = nhwc_to_nchw(model.textures[renderer.scene.anatomy].sample(buf, renderer.scene))
    dev = sim.device
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" and model.config.amp == "bf16" \
        else torch.autocast("cpu", enabled=False)
    with ctx:
        out = model.net.translate(sim, feats, style.expand(sim.shape[0], -1))
    return from_network(out)
