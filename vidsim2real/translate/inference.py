"""Load a trained model and translate rendered frames (what translate, export and metrics use).

A checkpoint's payload (written by ``train/checkpoint.py``) holds at least ``config`` (the
training config as a dict; its ``model`` section rebuilds the networks), ``model`` (full or
slim state dict), ``textures`` (anatomy -> TextureSet state dict), ``texture_config``,
``texture_meta`` and ``step``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..io.checkpoint import load_checkpoint
from ..layout import from_network, nhwc_to_nchw, to_network, uint8_to_network
from ..render import FrameBuffers, Renderer
from ..scene.scene import Scene
from ..strict_yaml import read_dataclass
from ..texture import TextureConfig, TextureSet
from .config import ModelConfig, model_exposure
from .model import Translator, build_translator


@dataclass
class LoadedModel:
    """A checkpoint ready for inference: networks, texture sets per anatomy, the training
    config (as stored), texture metadata, training step."""

    path: Path
    net: Translator
    textures: dict
    config: dict
    metas: dict
    step: int

    @property
    def uses_features(self) -> bool:
        return self.net.uses_features

    @property
    def bf16(self) -> bool:
        """Trained with bf16 autocast (inference on CUDA uses it too)."""
        return self.config.get("amp", "none") == "bf16"


def load_model(path: str | Path, device="cpu") -> LoadedModel:
    """Load a vidsim2real checkpoint (full or slim) for inference."""
    path = Path(path)
    p = load_checkpoint(path, map_location="cpu")
    for key in ("config", "model", "textures", "texture_config"):
        if key not in p:
            raise UserError(f"checkpoint lacks '{key}'", file=path)
    if not isinstance(p["config"], dict):
        raise UserError("checkpoint config is not a mapping", file=path)
    mcfg = read_dataclass(ModelConfig, p["config"].get("model", {}), str(path), "config.model")
    tcfg = read_dataclass(TextureConfig, p["texture_config"], str(path), "texture_config")
    net = build_translator(mcfg, tcfg.sampled_channels, seed=0, albedo=tcfg.albedo, detail=tcfg.detail)
    net.load_weights(p["model"], source=path)
    net.eval().to(device)
    textures = {a: TextureSet.from_state(tcfg, st, a).to(device) for a, st in p["textures"].items()}
    return LoadedModel(path, net, textures, p["config"], p.get("texture_meta", {}), int(p.get("step", 0)))


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


def style_choice(spec: str | None) -> dict:
    """What a ``--style`` value means, recorded in sidecars so a video can be reproduced:
    'random' draws a fresh seed (from the OS) -> {"style": "random", "seed": S}; an integer is
    that seed -> {"style": "S", "seed": S}; anything else is a real image whose style is
    encoded -> {"style": absolute path, "seed": None}."""
    import secrets
    spec = "random" if spec is None else str(spec)
    if spec == "random":
        return {"style": "random", "seed": secrets.randbelow(2 ** 31)}
    if spec.lstrip("-").isdigit():
        return {"style": spec, "seed": int(spec)}
    return {"style": str(Path(spec).resolve()), "seed": None}


def make_style(model: LoadedModel, spec: str | dict | None, device, size=(256, 256)) -> torch.Tensor:
    """A style code [1, style_dim] for a whole video from ``style_choice(spec)`` (or the spec
    itself): a seed's N(0, I) draw, or the style encoded from a real image."""
    choice = spec if isinstance(spec, dict) else style_choice(spec)
    d = model.net.style_dim
    if choice["seed"] is not None:
        g = torch.Generator().manual_seed(int(choice["seed"]))
        return torch.randn(1, d, generator=g).to(device)
    path = Path(choice["style"])
    if not path.exists():
        raise UserError("style must be 'random', an integer seed or an image file; file not found", file=path,
                        field="style")
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError("cannot read style image", file=path, field="style")
    img = cv2.resize(img[..., ::-1], size, interpolation=cv2.INTER_AREA)
    return model.net.encode_style(uint8_to_network(np.ascontiguousarray(img)).to(device))


def sensor_noise(frames: list[int], shape: tuple[int, int], seed: int, device) -> torch.Tensor:
    """Standard-normal sensor noise [B, 3, H, W] of scene frames ``frames``: a fixed stream
    per (seed, frame), so a video re-translated with the same style seed is identical and
    every frame has its own noise, as a sensor's."""
    H, W = shape
    return torch.stack([torch.randn(3, H, W, generator=torch.Generator().manual_seed(int(seed) * 1_000_003 + int(f)))
                        for f in frames]).to(device)


GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def video_row(seed: int) -> int:
    """The black level and colour cast row (``CameraModel.add_noise``) of a video translated with
    noise seed ``seed``: one per seed, so a clip keeps its black level and cast. The rows are ordered by level and
    picked along the golden-ratio sequence (frac(0.5 + seed x 0.618...)), so any run of
    consecutive seeds samples the footage's spread evenly: seeds 0..3 take the median, a low,
    a high and a lower-middle level, and no two of seeds 0 to 21 share a row."""
    from .networks import BLACK_ROWS
    return int((0.5 + int(seed) * GOLDEN) % 1.0 * BLACK_ROWS)


@torch.no_grad()
def translate_buffers(model: LoadedModel, renderer: Renderer, buf: FrameBuffers, style: torch.Tensor,
                      noise_seed: int = 0) -> torch.Tensor:
    """Translated frames [B, H, W, 3] in [0, 1] of rendered frame buffers (sim_rgb and light
    required: ``Renderer.render``). Models with a camera model add sensor noise from
    ``sensor_noise(buf.frames, ..., noise_seed)`` and, with black level or colour cast tables,
    the black level and cast of row ``video_row(noise_seed)``. The model sees the frames at its own exposure
    (``model.exposure``; ``Renderer.at_exposure``), whatever the scene's is, and with its own
    specular gloss and diffuse exponent per class where it has them (``model.gloss: real``,
    ``model.diffuse: real``)."""
    exposure = model_exposure(model.net.exposure, model.net.exposure_level)
    sim_rgb, light = renderer.at_exposure(buf, exposure)
    gloss = getattr(model.net, "gloss", None)
    tset = model.textures.get(renderer.scene.anatomy) if model.uses_features else None
    if tset is not None and tset.has_bumps():      # domed cells tilt the shading normals: relight
        buf = replace(buf, normals=tset.bump_normals(buf, renderer.scene))
        light = renderer.light(buf, exposure, gloss.table if gloss is not None and gloss.active else None)
        sim_rgb = renderer.under(buf, light)
    elif gloss is not None and gloss.active:       # the model's own highlights and shading per class
        light = renderer.light(buf, exposure, gloss.table)
    sim = to_network(sim_rgb)
    feats = None
    if model.uses_features:
        feats = nhwc_to_nchw(model.textures[renderer.scene.anatomy].sample(buf, renderer.scene,
                                                                           backend=renderer.backend))
    light = None if light is None else nhwc_to_nchw(light)
    edges = buf.edges if model.net.camera is not None and model.net.camera.blurs_edges else None
    dev = sim.device
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" and model.bf16 \
        else torch.autocast("cpu", enabled=False)
    with ctx:
        out = model.net.translate(sim, feats, style.expand(sim.shape[0], -1), light, edges)
        if model.net.camera is not None:
            video = torch.full((sim.shape[0],), video_row(noise_seed), dtype=torch.long)
            out = model.net.add_noise(out, sensor_noise(buf.frames, sim.shape[-2:], noise_seed, dev), video)
        out = model.net.graded(out, buf.labels)
    return from_network(out)
