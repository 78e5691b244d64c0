"""Neural textures on the mesh surface (triplanar or UV, multi-resolution) and per-scene sets."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..layout import nhwc_to_nchw
from .neural_texture import INITS, KINDS, NeuralTexture
from .uv import face_corner_uvs

__all__ = ["NeuralTexture", "TextureConfig", "TextureSet", "KINDS", "INITS", "sample_features", "texture_meta"]


@dataclass
class TextureConfig:
    """How a scene's textures are built (see NeuralTexture)."""

    kind: str = "triplanar"
    channels: int = 16
    resolution: int = 128
    levels: int = 4
    init: str = "noise"
    sharpness: float = 4.0

    def to_dict(self) -> dict:
        return asdict(self)


class TextureSet(nn.Module):
    """One NeuralTexture per object of an anatomy, keyed by object name.

    Scenes that share an ``anatomy`` (the same meshes, other camera paths) share one set.
    """

    def __init__(self, config: TextureConfig, textures: dict[str, NeuralTexture], anatomy: str = ""):
        super().__init__()
        self.config = config
        self.anatomy = anatomy
        self.textures = nn.ModuleDict(textures)

    @classmethod
    def for_scene(cls, scene, config: TextureConfig, seed: int = 0) -> "TextureSet":
        """Textures for every object of ``scene`` (bbox / UVs from its rest-pose meshes)."""
        return cls.for_scenes([scene], config, seed)

    @classmethod
    def for_scenes(cls, scenes: list, config: TextureConfig, seed: int = 0) -> "TextureSet":
        """One set for scenes sharing an anatomy: the union of their objects (by name). An object
        name must mean the same mesh in every scene of the anatomy."""
        gen = torch.Generator().manual_seed(int(seed))
        textures, source = {}, {}
        for scene in scenes:
            for o in scene.objects:
                if o.name in source:
                    if source[o.name][0] != o.mesh.digest:
                        raise UserError(f"object '{o.name}' has another mesh than in {source[o.name][1]} "
                                        f"(same anatomy '{scene.anatomy}')", file=scene.path, field="objects")
                    continue
                source[o.name] = (o.mesh.digest, scene.path)
                kwargs = {}
                if config.kind == "triplanar":
                    v = o.mesh.vertices
                    kwargs["bbox"] = torch.tensor(np.stack([v.min(0), v.max(0)]), dtype=torch.float32)
                else:
                    kwargs["corner_uv"] = torch.as_tensor(face_corner_uvs(o.mesh.vertices, o.mesh.faces, name=o.name,
                                                                          digest=o.mesh.digest, uv=o.mesh.uv))
                color = torch.as_tensor(o.color, dtype=torch.float32) * 2 - 1 if config.init == "color" else None
                textures[o.name] = NeuralTexture(config.kind, config.channels, config.resolution, config.levels,
                                                 init=config.init, color=color, sharpness=config.sharpness,
                                                 generator=gen, **kwargs)
        return cls(config, textures, scenes[0].anatomy)

    @classmethod
    def from_state(cls, config: TextureConfig, state: dict, anatomy: str) -> "TextureSet":
        """Rebuild a set from its state dict alone (a checkpoint's; no meshes needed)."""
        names = sorted({k.split(".")[1] for k in state if k.startswith("textures.")})
        textures = {}
        for n in names:
            levels = [state[f"textures.{n}.levels.{i}"] for i in range(config.levels)]
            if f"textures.{n}.corner_uv" in state:
                kind, kw = "uv", {"corner_uv": state[f"textures.{n}.corner_uv"]}
            else:
                kind, kw = "triplanar", {"bbox": torch.stack([state[f"textures.{n}.lo"], state[f"textures.{n}.hi"]])}
            textures[n] = NeuralTexture(kind, levels[0].shape[1], levels[0].shape[2], len(levels), init="zeros",
                                        sharpness=config.sharpness, **kw)
        ts = cls(config, textures, anatomy)
        ts.load_state_dict(state)
        return ts

    def covers(self, scene) -> list[str]:
        """Object names of ``scene`` that this set has no texture for."""
        return [o.name for o in scene.objects if o.name not in self.textures]

    def sample(self, buf, scene) -> torch.Tensor:
        """Neural features of rendered frames. buf: render.FrameBuffers of ``scene`` -> [B, H, W, C]."""
        missing = self.covers(scene)
        if missing:
            raise UserError(f"the texture set '{self.anatomy}' has no texture for object(s) {', '.join(missing)}",
                            file=scene.path, field="objects")
        B, H, W = buf.object_ids.shape
        obj = buf.object_ids.reshape(-1)
        ref = next(iter(self.textures.values())).levels[0]
        out = torch.zeros(B * H * W, self.config.channels, dtype=ref.dtype, device=ref.device)
        pos = buf.rest_positions.reshape(-1, 3)
        nrm = buf.rest_normals.reshape(-1, 3)
        for i, o in enumerate(scene.objects):
            idx = torch.nonzero(obj == i).squeeze(1)
            if len(idx) == 0:
                continue
            tex = self.textures[o.name]
            if tex.kind == "triplanar":
                vals = tex.sample(pos[idx], nrm[idx])
            else:
                faces = buf.fragments.pix_to_face.reshape(-1)[idx] - int(scene.face_offsets[i])
                vals = tex.sample(faces=faces, bary=buf.fragments.bary.reshape(-1, 3)[idx])
            out = out.index_put((idx,), vals.to(out.dtype))
        return out.view(B, H, W, -1)


def texture_meta(scenes) -> dict:
    """What a texture set was built for: its scenes, objects and their classes (a checkpoint
    keeps this to refuse scenes it has no textures for)."""
    scenes = scenes if isinstance(scenes, list) else [scenes]
    objects, classes = [], {}
    for s in scenes:
        for o in s.objects:
            if o.name not in classes:
                objects.append(o.name)
                classes[o.name] = o.class_name
    return {"scenes": [str(s.path) for s in scenes], "objects": objects, "classes": classes}


def sample_features(textures: dict, bufs: list, scenes: list) -> torch.Tensor:
    """Neural features [B, C, H, W] (NCHW, network side) of per-item G-buffers (each
    render.FrameBuffers of one frame) with each item's scene's texture set (``textures``:
    anatomy -> TextureSet). Differentiable w.r.t. the texels."""
    feats = []
    for buf, scene in zip(bufs, scenes):
        if scene.anatomy not in textures:
            raise UserError(f"no neural textures for anatomy '{scene.anatomy}'", file=scene.path, field="anatomy")
        feats.append(textures[scene.anatomy].sample(buf, scene))
    return nhwc_to_nchw(torch.cat(feats))
