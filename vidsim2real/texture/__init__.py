"""Neural textures on the mesh surface (triplanar or UV, multi-resolution) and per-scene sets."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..layout import nhwc_to_nchw
from .fused import sample_set
from .neural_texture import INITS, KINDS, NeuralTexture
from .uv import face_corner_uvs

__all__ = ["NeuralTexture", "TextureConfig", "TextureSet", "KINDS", "INITS", "sample_features", "texture_meta",
           "pixel_footprint", "detail_lod", "sample_lod", "bumped_normals"]

CELL_COLUMNS = 5      # a class's cells: size, border log-gain, layer gain, border width, dome height
RELIEF_COLUMNS = 2    # a class's relief: metres of height per unit of its layer's grey log-ratio, blur (levels)


@dataclass
class TextureConfig:
    """How a scene's textures are built (see NeuralTexture)."""

    kind: str = "triplanar"
    channels: int = 16
    resolution: int = 128
    levels: int = 4
    init: str = "noise"
    sharpness: float = 4.0
    albedo: bool = False          # channels 0-2 are an RGB albedo (the textured sim render), starting
                                  # as each object's colour
    albedo_init: str = "scene"    # albedo starts as: "scene" each object's colour; "real" the colour with
                                  # which its class renders with the colours of that class in the real
                                  # frames' label maps (train.appearance.real_class_albedo)
    detail: bool = False          # a 3-channel detail layer per object (one level, its own texel size)
                                  # multiplying the translated frame; drawn at the start from the real
                                  # frames' detail of the object's class (train.detail_init)
    detail_texel_size: float = 0.001   # metres per detail texel (from each object's median extent) ...
    detail_resolution: int = 320       # ... at most this many texels per side
    detail_strength: float = 1.0       # the drawn layer's contrast relative to the real frames' detail
    detail_match: bool = False         # at the start, scale each class's layer so its texture in the
                                       # rendered training views matches the real frames' (appearance.match_detail)
    detail_bands: bool = False         # with detail_match: two gains per class, one for the layer's fine part and one
                                       # for its broad part, so a line blurred by sampling gets its fineness back
                                       # rather than a wider dark band (appearance._match_detail_bands)
    detail_chroma: bool = False        # with detail_match: then one more gain per class on the layer's colour (its
                                       # log-ratios less their grey part), so the class's a*b* variation in the
                                       # rendered views matches the real frames' (appearance.match_chroma)
    detail_redraw: bool = False        # draw every layer afresh at the start, also where init_from has one
    detail_scale: str = "footprint"    # footprint: a real pixel spans the training views' pixel footprint of
                                       # its class; real: that footprint times a scale per class, chosen so the
                                       # views' texture over octaves is the real frames' (train.loop.start_detail)
    detail_matte: bool = False         # draw from real windows without specular highlights (a highlight is the
                                       # real surface's shape and light, not its pattern; detail_init.specular)
    albedo_with_detail: bool = False   # albedo_init real: refit the albedo with the drawn layer on (the
                                       # layer's mean-1 pattern still darkens mean L*; appearance.real_class_albedo)
    albedo_translated: bool = False    # albedo_init real: then correct it until the generator's own translations
                                       # of the training views have the real class colours (appearance.translated_class_albedo)
    albedo_statistic: str = "mean"     # what that correction matches per class: mean L*a*b*; median: the per-channel
                                       # median, the tissue's body colour, which a class's bright specular tail
                                       # (the real liver's white streaks, which the views lack) does not pull up;
                                       # relative: each class against the others in the same frames, with each
                                       # frame's common factor (distance, exposure) fitted out
                                       # (appearance.class_frame_fit), at the pooled means' overall level
    detail_sharpness: float = 4.0      # k of the layer's triplanar weights |n_a|^k: high k keeps one plane's
                                       # pattern where planes meet (blending two drawn patterns cross-hatches them)
    detail_lod: int = 3                # the layer is prefiltered like a mipmap: up to this many levels
                                       # (x2 each) chosen per pixel by its footprint; 0 = point-sampled
    detail_streams: str = "object"     # object: each object's layer quilted from its own random stream (seed and
                                       # name); shared: one stream for all in turn, as the shipped checkpoint was
    detail_aligned: bool = False       # quilt each class's real windows turned to run one way, along each plane's
                                       # longer side, without quarter turns: directed detail (the stomach's folds)
                                       # stays side by side instead of crossing (detail_init.across)
    detail_cells: bool = False         # with detail_match: per class, cell borders evaluated on the surface at any
                                       # resolution (texture/cells.py), their size and contrast and the layer's gain
                                       # fitted to the real frames' texture over octaves (appearance.match_cells)
    detail_cells_classes: list = field(default_factory=list)  # class names that may get cells (the tissues
                                       # known to be lobular); empty: every class. The octave fit sees how texture
                                       # spreads over scale, not its kind, and gives a vessel-bearing wall cells too
    detail_cells_width: str = "fit"    # the cells' border width: thin (walls 0.06 of a cell), wide (0.2: each cell's
                                       # rim darker, its middle bright) or fit (the one nearer the real octaves). The
                                       # octave fit sees the amount of texture per scale, not which width looks real
    detail_bumps: float | str = 0.0    # > 0: every cell of a class with cells is a dome this high (x its cell size)
                                       # that tilts the shading normal (cells.cell_slope): lobules bulge, each with
                                       # its highlight and shaded rim, as the real pancreas'; "fit": the height
                                       # fitted with the cells (appearance.match_cells). Frames are relit where
                                       # they are translated (translate_buffers), so training steps must be 0
    detail_relief: float = 0.0         # > 0: the layers of detail_relief_classes are also a height field of this
                                       # std (metres), high where they are light, which tilts the shading normal:
                                       # painted folds become folds the scope lights, each ridge with its glint
                                       # (TextureSet.add_relief). Relit where translated, so steps must be 0
    detail_relief_classes: list = field(default_factory=list)  # class names that get relief (e.g. the stomach)
    detail_relief_blur: float = 2.0    # the height is the layer prefiltered this many levels (x2 each) coarser than
                                       # where it is drawn: soft ridges, not a texel-sharp relief of every line
    detail_relief_paint: float = 1.0   # those classes' painted layer is scaled by this (the light now draws part of
                                       # what the real window's baked shading painted)
    detail_lod_bias: float = 0.0       # added to that level: < 0 samples sharper (a real vessel a pixel wide stays
                                       # one; at 0 a texel finer than the pixel is already half averaged away)
    texel_size: float = 0.0       # > 0: metres per finest texel, each object's resolution from its size
                                  # (median bounding-box extent), at most `resolution`; 0: `resolution` for all

    @property
    def sampled_channels(self) -> int:
        """Channels the translator receives: the features, then the detail layer's 3."""
        return self.channels + 3 * bool(self.detail)

    def detail_resolution_for(self, extent) -> int:
        """Detail-layer resolution of an object with bounding-box extents ``extent`` [3] (metres)."""
        r = int(np.ceil(float(np.median(extent)) / max(self.detail_texel_size, 1e-6)))
        return int(min(max(r, 8), self.detail_resolution))

    def resolution_for(self, extent) -> int:
        """Finest-level resolution of an object with rest-pose bounding-box extents ``extent`` [3]
        (metres): ``resolution``, or with ``texel_size`` the median extent in texels, rounded up to
        a multiple of 2^(levels-1), at least 2^levels, at most ``resolution``."""
        if self.texel_size <= 0:
            return self.resolution
        step = 2 ** (self.levels - 1)
        r = int(np.ceil(float(np.median(extent)) / self.texel_size / step) * step)
        return int(min(max(r, 2 * step), self.resolution))

    def to_dict(self) -> dict:
        return asdict(self)


class TextureSet(nn.Module):
    """One NeuralTexture per object of an anatomy, keyed by object name.

    Scenes that share an ``anatomy`` (the same meshes, other camera paths) share one set.
    """

    def __init__(self, config: TextureConfig, textures: dict[str, NeuralTexture], anatomy: str = "",
                 detail: dict[str, NeuralTexture] | None = None):
        super().__init__()
        self.config = config
        self.anatomy = anatomy
        self.textures = nn.ModuleDict(textures)
        self.detail = nn.ModuleDict(detail or {})      # texture.detail: 3-channel detail layer per object
        # per class id: the scale its detail layer was drawn at (texture.detail_scale: real; empty: 1)
        self.register_buffer("detail_scales", torch.ones(0))
        # per class id: cell size (metres), border log-gain, layer gain, border width (cell units),
        # dome height (cell units; texture.detail_bumps) (texture.detail_cells; a zero gain: none)
        self.register_buffer("detail_cells", torch.zeros(0, CELL_COLUMNS))
        # per class id: metres of height per unit of its detail layer's grey log-ratio, blur (levels)
        # (texture.detail_relief; a zero height: none)
        self.register_buffer("detail_relief", torch.zeros(0, RELIEF_COLUMNS))

    def class_detail_scale(self, class_id: int) -> float:
        """The scale class ``class_id``'s detail layer is drawn at (1 where none was fitted)."""
        return float(self.detail_scales[class_id]) if class_id < len(self.detail_scales) else 1.0

    def set_detail_scale(self, scales: dict[int, float]) -> None:
        """Keep {class id: scale} (``train.loop.start_detail``); other classes keep theirs."""
        n = max([len(self.detail_scales)] + [c + 1 for c in scales])
        new = torch.ones(n)
        new[:len(self.detail_scales)] = self.detail_scales.cpu()
        for c, v in scales.items():
            new[c] = float(v)
        self.detail_scales = new.to(self.detail_scales.device)

    def class_cells(self) -> dict[int, tuple[float, float, float, float, float]]:
        """{class id: (cell size in metres, border log-gain, layer gain, border width in cell
        units, dome height in cell units)} of the classes with cell borders (``texture.detail_cells``; ``train.appearance.match_cells``)."""
        if not len(self.detail_cells):      # (by shape: a set without cells never copies from a GPU)
            return {}
        return self.cells_in({"detail_cells": self.detail_cells.cpu()})

    @staticmethod
    def cells_in(state: dict) -> dict[int, tuple[float, float, float, float, float]]:
        """``class_cells`` of a saved set's state dict ({} where it has none)."""
        rows = _cell_rows(state.get("detail_cells", torch.zeros(0, CELL_COLUMNS)))
        return {c: tuple(float(v) for v in row) for c, row in enumerate(rows) if row[1] > 0}

    def set_cells(self, cells: dict[int, tuple]) -> None:
        """Keep {class id: (cell size m, border log-gain, layer gain[, border width in cell units;
        default ``cells.WIDTH``[, dome height in cell units; default 0]])}; other classes keep theirs
        (a gain of 0 removes a class's cells)."""
        n = max([len(self.detail_cells)] + [c + 1 for c in cells])
        new = torch.zeros(n, CELL_COLUMNS)
        new[:len(self.detail_cells)] = self.detail_cells.cpu()
        for c, v in cells.items():
            new[c] = _cell_rows(torch.tensor([[float(x) for x in v]]))[0]
        self.detail_cells = new.to(self.detail_cells.device)

    def class_relief(self) -> dict[int, tuple[float, float]]:
        """{class id: (metres of height per unit of the layer's grey log-ratio, blur in levels)} of
        the classes whose detail layer is also a height field (``texture.detail_relief``)."""
        return self.relief_in({"detail_relief": self.detail_relief.cpu()}) if len(self.detail_relief) else {}

    @staticmethod
    def relief_in(state: dict) -> dict[int, tuple[float, float]]:
        """``class_relief`` of a saved set's state dict ({} where it has none)."""
        rows = state.get("detail_relief", torch.zeros(0, RELIEF_COLUMNS))
        return {c: (float(row[0]), float(row[1])) for c, row in enumerate(rows) if row[0] > 0}

    def set_relief(self, relief: dict[int, tuple]) -> None:
        """Keep {class id: (metres of height per unit of grey log-ratio, blur in levels)}; other
        classes keep theirs (a height of 0 removes a class's relief)."""
        n = max([len(self.detail_relief)] + [c + 1 for c in relief])
        new = torch.zeros(n, RELIEF_COLUMNS)
        new[:len(self.detail_relief)] = self.detail_relief.cpu()
        for c, (height, blur) in relief.items():
            if height < 0 or not 0 <= blur <= 8:
                raise ValueError(f"relief of class {c}: height {height} must be >= 0, blur {blur} in [0, 8]")
            new[c] = torch.tensor([float(height), float(blur)])
        self.detail_relief = new.to(self.detail_relief.device)

    @torch.no_grad()
    def add_relief(self, scenes: list, class_names: list[str], relief: float, blur: float = 2.0,
                   paint: float = 1.0) -> dict[str, float]:
        """Make the detail layers of the classes ``class_names`` (named as in ``scenes``, scenes of
        this set's anatomy) a height field of std ``relief`` metres over their texels' grey
        log-ratio, prefiltered ``blur`` levels coarser than drawn (``texture.detail_relief``), and
        scale their painted layer by ``paint``. The height is the layer as drawn: per unit of
        the scaled grey it is relief / (std x paint). Returns {class name: metres per unit}
        (classes without a layer here are left out)."""
        if not (relief >= 0 and 0 < paint <= 1 and 0 <= blur <= 8):
            raise ValueError(f"relief {relief} must be >= 0, paint {paint} in (0, 1], blur {blur} in [0, 8]")
        objects = {o.name: (o.class_name, o.class_id) for sc in scenes for o in sc.objects}
        out = {}
        for name in class_names:
            layers = [t for n, t in self.detail.items() if objects.get(n, ("",))[0] == name]
            if not layers:
                continue
            grey = torch.cat([t.levels[0].mean(1).flatten() for t in layers])
            if not float(grey.std()) > 0:         # a flat layer (or one texel) has no relief to give
                continue
            per_unit = relief / (float(grey.std()) * paint)
            for t in layers:
                t.levels[0].mul_(paint)
            cid = next(c for n, c in objects.values() if n == name)
            self.set_relief({cid: (per_unit, blur)})
            out[name] = per_unit
        return out

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        # sets saved before the scale (the cells, the relief) existed have none; a fitted one has its own length
        if prefix + "detail_cells" in state:
            state[prefix + "detail_cells"] = _cell_rows(state[prefix + "detail_cells"])
        for key, empty in (("detail_scales", torch.ones(0)), ("detail_cells", torch.zeros(0, CELL_COLUMNS)),
                           ("detail_relief", torch.zeros(0, RELIEF_COLUMNS))):
            if prefix + key in state:
                setattr(self, key, torch.zeros_like(state[prefix + key]).to(getattr(self, key).device))
            else:
                state[prefix + key] = empty
        super()._load_from_state_dict(state, prefix, *args, **kwargs)

    @classmethod
    def for_scene(cls, scene, config: TextureConfig, seed: int = 0) -> "TextureSet":
        """Textures for every object of ``scene`` (bbox / UVs from its rest-pose meshes)."""
        return cls.for_scenes([scene], config, seed)

    @classmethod
    def for_scenes(cls, scenes: list, config: TextureConfig, seed: int = 0) -> "TextureSet":
        """One set for scenes sharing an anatomy: the union of their objects (by name). An object
        name must mean the same mesh in every scene of the anatomy."""
        gen = torch.Generator().manual_seed(int(seed))
        textures, source, detail = {}, {}, {}
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
                albedo = torch.as_tensor(o.color, dtype=torch.float32) * 2 - 1 if config.albedo else None
                v = o.mesh.vertices
                res = config.resolution_for(v.max(0) - v.min(0))
                textures[o.name] = NeuralTexture(config.kind, config.channels, res, config.levels,
                                                 init=config.init, color=color, sharpness=config.sharpness,
                                                 generator=gen, albedo=albedo, **kwargs)
                if config.detail:       # starts at zero: no detail until it is drawn or learned
                    detail[o.name] = NeuralTexture(config.kind, 3, config.detail_resolution_for(v.max(0) - v.min(0)),
                                                   1, init="zeros", sharpness=config.detail_sharpness, **kwargs)
        return cls(config, textures, scenes[0].anatomy, detail)

    @classmethod
    def from_state(cls, config: TextureConfig, state: dict, anatomy: str) -> "TextureSet":
        """Rebuild a set from its state dict alone (a checkpoint's; no meshes needed)."""
        def rebuilt(group: str, n_levels: int, sharpness: float) -> dict[str, NeuralTexture]:
            out = {}
            for n in sorted({k.split(".")[1] for k in state if k.startswith(group + ".")}):
                levels = [state[f"{group}.{n}.levels.{i}"] for i in range(n_levels)]
                if f"{group}.{n}.corner_uv" in state:
                    kind, kw = "uv", {"corner_uv": state[f"{group}.{n}.corner_uv"]}
                else:
                    kind, kw = "triplanar", {"bbox": torch.stack([state[f"{group}.{n}.lo"], state[f"{group}.{n}.hi"]])}
                out[n] = NeuralTexture(kind, levels[0].shape[1], levels[0].shape[2], len(levels), init="zeros",
                                       sharpness=sharpness, **kw)
            return out

        ts = cls(config, rebuilt("textures", config.levels, config.sharpness), anatomy,
                 rebuilt("detail", 1, config.detail_sharpness) if config.detail else None)
        try:
            ts.load_state_dict(state)
        except RuntimeError as exc:        # e.g. a detail config whose checkpoint lacks the layer
            raise UserError(f"texture set '{anatomy}' does not match its texture config: {str(exc)[:160]}") from None
        return ts

    @torch.no_grad()
    def set_albedo(self, colours: dict, scenes: list, only: list[str] | None = None) -> list[str]:
        """Flat albedo per object (of ``only``, or all) from ``colours`` {class id: [3] sRGB in
        [0, 1]} (coarsest level; the finer albedo levels are zeroed); returns the objects changed."""
        done = []
        classes = {o.name: o.class_id for sc in scenes for o in sc.objects}
        for name, t in self.textures.items():
            c = classes.get(name)
            if c in colours and (only is None or name in only):
                for lvl in t.levels:
                    lvl[:, :3] = 0.0
                t.levels[-1][:, :3] = (torch.as_tensor(colours[c], dtype=torch.float32) * 2 - 1)[None, :, None, None]
                done.append(name)
        return done

    def covers(self, scene) -> list[str]:
        """Object names of ``scene`` that this set has no texture for."""
        return [o.name for o in scene.objects if o.name not in self.textures]

    def sample(self, buf, scene, backend: str = "auto") -> torch.Tensor:
        """Neural features of rendered frames. buf: render.FrameBuffers of ``scene`` -> [B, H, W, C]
        (zeros on background; with ``config.detail`` the detail layer's 3 channels last). One
        fused kernel call per object and layer (``fused.sample_set``); backend "torch" uses the
        grid_sample reference."""
        missing = self.covers(scene)
        if missing:
            raise UserError(f"the texture set '{self.anatomy}' has no texture for object(s) {', '.join(missing)}",
                            file=scene.path, field="objects")
        B, H, W = buf.object_ids.shape
        obj = buf.object_ids.reshape(-1)
        textures = [self.textures[o.name] for o in scene.objects]
        # on the CPU skipping absent objects is free; on a GPU finding them would sync the host
        present = None if obj.is_cuda else set(torch.unique(obj).tolist())
        args = (obj, buf.rest_positions.reshape(-1, 3), buf.rest_normals.reshape(-1, 3),
                buf.fragments.pix_to_face.reshape(-1), buf.fragments.bary.reshape(-1, 3), scene.face_offsets)
        out = sample_set(textures, *args, present=present, backend=backend)
        if self.config.detail:
            layers = [self.detail[o.name] for o in scene.objects]
            cells = self.class_cells()
            foot = pixel_footprint(buf.rest_positions, buf.object_ids).reshape(-1) \
                if self.config.detail_lod > 0 or cells else None
            if self.config.detail_lod > 0:
                lod = detail_lod(buf, [t.texel_size() for t in layers], self.config.detail_lod,
                                 self.config.detail_lod_bias, foot=foot)
                layer = sample_lod(layers, lod, self.config.detail_lod, args, present, backend)
            else:
                layer = sample_set(layers, *args, present=present, backend=backend)
            if cells:
                layer = layer - self._cells(scene, obj, args[1], foot, cells).to(layer.dtype)[:, None]
            out = torch.cat([out, layer], 1)
        return out.view(B, H, W, -1)

    def _cells(self, scene, obj: torch.Tensor, pos: torch.Tensor, foot: torch.Tensor, cells: dict) -> torch.Tensor:
        """The cell borders' log-ratio [N] (zero mean, positive on borders; subtracted from the
        detail layer's 3 channels) at points of objects ``obj`` [N] (-1: background), rest-pose ``pos`` [N, 3], pixel footprint
        ``foot`` [N] metres, for the classes in ``cells`` (``class_cells``)."""
        from .cells import cell_pattern, object_seed
        rows = [cells.get(o.class_id, (0.0, 0.0, 1.0, 1.0, 0.0)) for o in scene.objects]
        size = torch.tensor([1.0] + [r[0] for r in rows], device=pos.device)[obj + 1]
        gain = torch.tensor([0.0] + [r[1] for r in rows], device=pos.device)[obj + 1]
        width = torch.tensor([1.0] + [r[3] for r in rows], device=pos.device)[obj + 1]
        seed = torch.tensor([0] + [object_seed(o.name) for o in scene.objects], device=pos.device)[obj + 1]
        out = torch.zeros(len(obj), device=pos.device)
        idx = torch.nonzero(gain > 0).squeeze(1)        # (the pattern's hash table syncs a GPU's host anyway)
        if len(idx):
            out[idx] = gain[idx] * cell_pattern(pos[idx], foot[idx], size[idx], seed[idx], width[idx])
        return out

    def has_bumps(self) -> bool:
        """Whether any class's cells are domes (``texture.detail_bumps``) or its layer is a relief
        (``texture.detail_relief``): then frames are relit with ``bump_normals``."""
        return any(row[4] > 0 for row in self.class_cells().values()) or bool(self.class_relief())

    def bump_normals(self, buf, scene, cells: dict | None = None) -> torch.Tensor:
        """The shading normals [B, H, W, 3] of ``buf`` (a render of ``scene``) with the domes of
        the classes whose cells have a height (``cells.cell_slope``) and the relief of the
        classes that have one (``relief_slope``), through ``bumped_normals``; the G-buffer's
        normals elsewhere. ``cells``: these rows ({class id: ``class_cells`` row}) instead of
        the set's."""
        from .cells import cell_slope, object_seed
        cells = self.class_cells() if cells is None else cells
        obj = buf.object_ids.reshape(-1)
        rows = [cells.get(o.class_id, (1.0, 0.0, 1.0, 1.0, 0.0)) for o in scene.objects]
        pick = lambda col, bg: torch.tensor([bg] + [r[col] for r in rows], device=obj.device)[obj + 1]  # noqa: E731
        size, height = pick(0, 1.0), pick(4, 0.0)
        seed = torch.tensor([0] + [object_seed(o.name) for o in scene.objects], device=obj.device)[obj + 1]
        slope = torch.zeros(len(obj), 3, device=obj.device)
        idx = torch.nonzero((height > 0) & (pick(1, 0.0) > 0)).squeeze(1)
        foot = None
        if len(idx):
            foot = pixel_footprint(buf.rest_positions, buf.object_ids).reshape(-1)
            pos = buf.rest_positions.reshape(-1, 3)
            slope[idx] = cell_slope(pos[idx], foot[idx], size[idx], seed[idx], height[idx])
        if self.class_relief():
            slope = slope + self.relief_slope(buf, scene, foot)
        return bumped_normals(buf.positions, buf.rest_positions, buf.normals, buf.object_ids,
                              slope.view(buf.normals.shape).to(buf.normals.dtype))

    def relief_slope(self, buf, scene, foot: torch.Tensor | None = None) -> torch.Tensor:
        """The rest-pose gradient [N, 3] (N = B * H * W; metres of height per metre) of the
        relief of the classes that have one (``class_relief``): height = metres per unit x the
        grey (channel mean) of the object's detail layer, sampled ``blur`` levels coarser than the
        pixel's own level (``detail_lod``) and differentiated by central differences one such
        prefiltered texel apart along each rest axis. A coarser level both softens the ridges and
        fades the relief where a pixel covers them, as the layer itself fades. ``foot``: the
        pixel footprint [N] where already computed. Zero elsewhere."""
        relief = self.class_relief()
        obj = buf.object_ids.reshape(-1)
        rows = [relief.get(o.class_id, (0.0, 0.0)) for o in scene.objects]
        per_unit = torch.tensor([0.0] + [r[0] for r in rows], device=obj.device)[obj + 1]
        blur = torch.tensor([0.0] + [r[1] for r in rows], device=obj.device)[obj + 1]
        out = torch.zeros(len(obj), 3, device=obj.device)
        idx = torch.nonzero(per_unit > 0).squeeze(1)
        if not len(idx) or not self.config.detail:
            return out
        layers = [self.detail[o.name] for o in scene.objects]
        levels = max(self.config.detail_lod, int(np.ceil(float(blur.max()))))
        lod = (detail_lod(buf, [t.texel_size() for t in layers], levels, 0.0, foot=foot)[idx] + blur[idx]).clamp(max=levels)
        sizes = torch.tensor([0.0] + [t.texel_size() for t in layers], device=obj.device)[obj[idx] + 1]
        step = (sizes * torch.exp2(lod)).clamp(min=1e-6)                 # one prefiltered texel, metres
        pos = buf.rest_positions.reshape(-1, 3)[idx]
        rest = (buf.rest_normals.reshape(-1, 3)[idx], buf.fragments.pix_to_face.reshape(-1)[idx],
                buf.fragments.bary.reshape(-1, 3)[idx], scene.face_offsets)
        present = None if obj.is_cuda else set(torch.unique(obj[idx]).tolist())
        grad = torch.zeros(len(idx), 3, device=obj.device)
        for axis in range(3):
            d = torch.zeros_like(pos)
            d[:, axis] = step
            grey = [sample_lod(layers, lod, levels, (obj[idx], p, *rest), present, "auto").mean(1)
                    for p in (pos + d, pos - d)]
            grad[:, axis] = (grey[0] - grey[1]) / (2 * step)
        out[idx] = (per_unit[idx, None] * grad).to(out.dtype)
        return out


def _cell_rows(rows: torch.Tensor) -> torch.Tensor:
    """Cell rows [C, 3 to 5] -> [C, CELL_COLUMNS]: rows saved before the border width was fitted
    have the thin border every set had then (``cells.WIDTH``), rows saved before domes none."""
    from .cells import WIDTH
    pad = torch.tensor([WIDTH, 0.0])[rows.shape[-1] - 3:].to(rows)
    return torch.cat([rows, pad.expand(*rows.shape[:-1], len(pad))], -1)


def _screen_steps(x: torch.Tensor, object_ids: torch.Tensor, dim: int) -> torch.Tensor:
    """x [B, H, W, C] -> its change [B, H, W, C] to the next pixel along ``dim`` (1: down, 2:
    across), to the previous pixel where the next is another object, 0 where neither is the
    same object."""
    d = x.diff(dim=dim)
    same = (object_ids.diff(dim=dim) == 0)[..., None]
    d = torch.where(same, d, torch.zeros_like(d))
    z = torch.zeros_like(d.narrow(dim, 0, 1))
    fwd, bwd = torch.cat([d, z], dim), torch.cat([z, d], dim)
    return torch.where(torch.cat([same, z[..., :1].bool()], dim), fwd, bwd)


def bumped_normals(positions: torch.Tensor, rest_positions: torch.Tensor, normals: torch.Tensor,
                   object_ids: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """Shading normals tilted by a height field given as its rest-pose gradient: positions,
    rest_positions, normals [B, H, W, 3] (world, rest, world facing the camera), object_ids
    [B, H, W], slope [B, H, W, 3] (metres of height per rest-pose metre) -> [B, H, W, 3] unit.
    The height's change to the next pixel across and down is the slope along the rest-pose
    steps (exact under any deformation: the height is attached to the rest surface); the world
    surface gradient then follows from those two changes and the world steps (Mikkelsen 2010,
    "Bump mapping unparametrized surfaces on the GPU"). Where a step is missing (single-pixel
    objects, silhouettes seen edge-on) or the slope is 0 the normal is left as it is."""
    dpx, dpy = _screen_steps(positions, object_ids, 2), _screen_steps(positions, object_ids, 1)
    dhx = (slope * _screen_steps(rest_positions, object_ids, 2)).sum(-1, keepdim=True)
    dhy = (slope * _screen_steps(rest_positions, object_ids, 1)).sum(-1, keepdim=True)
    r1, r2 = torch.cross(dpy, normals, dim=-1), torch.cross(normals, dpx, dim=-1)
    det = (dpx * r1).sum(-1, keepdim=True)
    # an edge-on pixel (tiny det against its steps) would blow the gradient up: no tilt there
    ok = det.abs() > 1e-3 * dpx.norm(dim=-1, keepdim=True) * dpy.norm(dim=-1, keepdim=True)
    grad = torch.where(ok, (dhx * r1 + dhy * r2) / torch.where(ok, det, torch.ones_like(det)), torch.zeros_like(det))
    tilted = torch.nn.functional.normalize(normals - grad, dim=-1)
    return torch.where((grad != 0).any(-1, keepdim=True), tilted, normals)     # untouched where flat


def pixel_footprint(rest_positions: torch.Tensor, object_ids: torch.Tensor) -> torch.Tensor:
    """How much rest-pose surface one pixel covers, [B, H, W] metres: the longer of the steps to
    the next pixel across and down (to the previous one where the next is another object; 0
    where neither is the same object). rest_positions [B, H, W, 3], object_ids [B, H, W]."""
    return torch.maximum(*(_screen_steps(rest_positions, object_ids, d).norm(dim=-1) for d in (1, 2)))


def detail_lod(buf, texel_sizes: list, levels: int, bias: float = 0.0, foot: torch.Tensor | None = None) -> torch.Tensor:
    """Per pixel, the prefiltered level of the detail layer to sample: log2 of the pixel's
    footprint (``pixel_footprint``, or ``foot`` [N] where already computed) over its object's
    texel size, plus ``bias``, in [0, levels] -> [N] (B * H * W; 0 on background and for objects
    without a known texel size)."""
    if foot is None:
        foot = pixel_footprint(buf.rest_positions, buf.object_ids).reshape(-1)
    obj = buf.object_ids.reshape(-1)
    sizes = torch.tensor([0.0, *texel_sizes], dtype=foot.dtype, device=foot.device)[obj + 1]
    lod = torch.log2(foot.clamp(min=1e-9) / sizes.clamp(min=1e-9))
    if bias:
        lod = lod + bias
    return torch.where((sizes > 0) & (foot > 0), lod, torch.zeros_like(lod)).clamp(0, levels)


def sample_lod(layers: list, lod: torch.Tensor, levels: int, args: tuple, present, backend: str) -> torch.Tensor:
    """``sample_set`` of ``layers`` (one-level NeuralTextures) blended per point between the two
    prefiltered levels around ``lod`` [N] in [0, ``levels``] (linear in the level, as trilinear
    mipmapping): a minified pattern averages out instead of aliasing into speckle that crawls as
    the camera moves. ``args``: sample_set's point arguments (obj_ids, pos, nrm, faces, bary,
    face_offsets). -> [N, C]."""
    if lod.is_cuda:         # every level at every point: finding the points of a level would sync the host
        out = 0.0
        for k in range(levels + 1):
            w = (1.0 - (lod - k).abs()).clamp(min=0.0)
            mips = [t.mip(k) if k else t for t in layers]
            out = out + w[:, None].to(lod.dtype) * sample_set(mips, *args, present=present, backend=backend)
        return out
    # on the CPU each level is sampled only at the points that use it (at most two per point)
    obj, rest = args[0], args[1:5]
    out = torch.zeros(lod.shape[0], layers[0].channels, dtype=layers[0].levels[0].dtype, device=lod.device)
    for k in range(levels + 1):
        w = (1.0 - (lod - k).abs()).clamp(min=0.0)
        idx = torch.nonzero((w > 0) & (obj >= 0)).squeeze(1)
        if len(idx) == 0:
            continue
        mips = [t.mip(k) if k else t for t in layers]
        got = sample_set(mips, obj[idx], *(a[idx] for a in rest), args[5], present=present, backend=backend)
        out = out.index_add(0, idx, w[idx, None].to(got.dtype) * got)
    return out


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


def sample_features(textures: dict, groups: list) -> torch.Tensor:
    """Neural features [B, C, H, W] (NCHW, network side) of a batch whose views were rendered
    in groups (each with ``items``: batch indices, ``buf``: render.FrameBuffers of those
    items, ``scene``: a scene of the group's anatomy), with each anatomy's texture set
    (``textures``: anatomy -> TextureSet). Differentiable w.r.t. the texels."""
    feats, order = [], []
    for g in groups:
        scene = g.scene
        if scene.anatomy not in textures:
            raise UserError(f"no neural textures for anatomy '{scene.anatomy}'", file=scene.path, field="anatomy")
        feats.append(textures[scene.anatomy].sample(g.buf, scene))
        order += list(g.items)
    out = torch.cat(feats)
    if order != list(range(len(order))):
        inv = torch.empty(len(order), dtype=torch.long)
        inv[torch.as_tensor(order)] = torch.arange(len(order))
        out = out[inv.to(out.device)]
    return nhwc_to_nchw(out)
