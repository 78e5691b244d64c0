"""The translators: one small class per method, networks and forward passes only.

Symbols (Pfeiffer et al. 2019 / Rivoir et al. 2021, MUNIT notation):
  x_s  = sim RGB (+) neural features of a view      x_r = a real frame
  E_s^c, G_s: sim content encoder / decoder          E_r^c, E_r^s, G_r: real content, style enc., decoder
  s ~ N(0, I): a style code, fixed per video

What a method is (does it sample neural textures, does it need paired targets, which
sub-networks a deployed model keeps) is decided here, once, by its class; ``build_translator``
resolves the class from the config. The training steps live in ``train/trainer.py``.
"""
from __future__ import annotations

import abc
import math
from typing import ClassVar

import torch
from torch import nn

from ..errors import UserError
from ..layout import to_signed, to_unit
from ..shading import linear_to_srgb, srgb_to_linear
from .config import ModelConfig
from .networks import (CameraModel, ClassGrade, ContentEncoder, DCGANDiscriminator, DCGANGenerator, Decoder,
                       DetailDiscriminator, MultiScaleDiscriminator, PatchDiscriminator, ResnetGenerator, StyleEncoder,
                       SurfaceGloss, UNetGenerator, init_weights)


class Translator(nn.Module, abc.ABC):
    """Base class. ``translate(sim, features, style)`` maps sim RGB [B, 3, H, W] (+ neural
    features [B, C, H, W]) in [-1, 1] to a realistic frame [B, 3, H, W] in [-1, 1].

    Class attributes describe the method: ``kind`` (its config name), ``paired`` (trains on
    sim/real pairs), ``pools_fakes`` (discriminators see a history of fakes), ``deploy_modules``
    (what a slim checkpoint keeps: the sim->real path, the style encoder and the real-domain
    discriminator that fit-textures trains against).
    """

    kind: ClassVar[str] = ""
    paired: ClassVar[bool] = False
    pools_fakes: ClassVar[bool] = True
    renders: ClassVar[bool] = True      # training needs rendered views (False: real frames only)
    deploy_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, m: ModelConfig, feat_channels: int):
        super().__init__()
        self.feat_channels = feat_channels
        self.style_dim = m.style_dim
        self.albedo = False        # the first 3 feature channels are an albedo to shade (see textured)
        self.camera: CameraModel | None = None      # learned camera effects (one-way model)
        self.exposure = m.exposure     # the exposure its frames are rendered at (config.model_exposure)
        self.exposure_level = m.exposure_level   # with "protect": the highlight level (0: exposure 1)

    @property
    def uses_features(self) -> bool:
        """Whether the generator reads neural-texture features (and textures are trained)."""
        return self.feat_channels > 0

    def discriminators(self) -> list[nn.Module]:
        return [getattr(self, n) for n in ("dis_r", "dis_s") if hasattr(self, n)]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [p for d in self.discriminators() for p in d.parameters()]

    def generator_parameters(self) -> list[nn.Parameter]:
        dis = {id(p) for p in self.discriminator_parameters()}
        return [p for p in self.parameters() if id(p) not in dis]

    def deploy_state_dict(self) -> dict[str, torch.Tensor]:
        """state_dict() restricted to ``deploy_modules`` (what translate and fit-textures need)."""
        keep = tuple(n + "." for n in self.deploy_modules)
        return {k: v.detach().cpu() for k, v in self.state_dict().items() if k.startswith(keep)}

    def load_weights(self, state: dict[str, torch.Tensor], source=None) -> None:
        """Load a full or a slim (deploy) state dict: only modules outside ``deploy_modules`` may
        be absent. Any other mismatch is a UserError naming ``source`` (the checkpoint file)."""
        own = set(self.state_dict())
        keep = tuple(n + "." for n in self.deploy_modules)
        # a model saved before the camera's lens field or blur or the surface gloss existed has none
        later = tuple("camera." + b for b in CameraModel.added_buffers) + (
            "gloss.table", "grade.table", "grade.curve", "grade.level")
        missing = [k for k in own - set(state) if k.startswith(keep) and k not in later]
        unexpected = sorted(set(state) - own)
        try:
            if missing or unexpected:
                raise RuntimeError(f"missing {sorted(missing)[:3]}, unexpected {unexpected[:3]}")
            self.load_state_dict(state, strict=False)      # shape mismatches still raise
        except RuntimeError as exc:
            raise UserError(f"model weights do not match the architecture in its config: {str(exc)[:200]}",
                            file=source) from None

    def sim_input(self, sim: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """x_s: sim RGB [B, 3, H, W] (+ features [B, C, H, W] when the model uses them)."""
        if self.uses_features:
            if features is None:
                raise ValueError("this model needs neural features")
            return torch.cat([sim, features.to(sim.dtype)], 1)
        return sim

    @torch.no_grad()
    def encode_style(self, real: torch.Tensor) -> torch.Tensor:
        """Style code [B, style_dim] of real frames [B, 3, H, W] in [-1, 1] (zeros without a
        style encoder)."""
        return torch.zeros(real.shape[0], self.style_dim, device=real.device)

    @abc.abstractmethod
    def translate(self, sim: torch.Tensor, features: torch.Tensor | None = None,
                  style: torch.Tensor | None = None, light: torch.Tensor | None = None,
                  edges: torch.Tensor | None = None) -> torch.Tensor:
        """x_{s->r}: sim [B, 3, H, W], features [B, C, H, W] or None, style [B, style_dim] or None,
        light [B, 2, H, W] (render.FrameBuffers.light, NCHW; models with albedo textures),
        edges [B, H, W] bool (render.FrameBuffers.edges; models with a camera model soften
        them) -> [B, 3, H, W], all images in [-1, 1]. Without sensor noise (``add_noise``)."""

    def graded(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """A finished frame (``add_noise``'s output) [B, 3, H, W] in [-1, 1] with each class's
        colour varying across it as the real frames' does (``networks.ClassGrade``; labels
        [B, H, W] class ids); unchanged for models without a fitted grade."""
        grade = getattr(self, "grade", None)
        return x if grade is None else grade(x, labels)

    def add_noise(self, x: torch.Tensor, eps: torch.Tensor, video: torch.Tensor | None = None) -> torch.Tensor:
        """Sensor noise on a translated frame (models with a camera model; else unchanged).
        eps: [B, 3, H, W] standard normal (fresh per frame, as a sensor's); video: [B] int64,
        each frame's video (picks its black level, ``CameraModel.add_noise``) or None."""
        return x if self.camera is None else self.camera.add_noise(x, eps, video)


class MunitTranslator(Translator):
    """MUNIT + neural textures (Rivoir et al. 2021); ``features: false`` is the per-frame baseline."""

    kind = "munit"
    pools_fakes = False
    deploy_modules = ("enc_s", "dec_r", "sty_r", "dis_r")

    def __init__(self, m: ModelConfig, feat_channels: int):
        super().__init__(m, feat_channels if m.features else 0)
        cs = 3 + self.feat_channels
        self.enc_s = ContentEncoder(cs, m.dim, m.n_down, m.n_res)
        cdim = self.enc_s.out_dim
        self.dec_s = Decoder(cs, cdim, m.n_down, m.n_res, "in")
        self.enc_r = ContentEncoder(3, m.dim, m.n_down, m.n_res)
        self.sty_r = StyleEncoder(3, m.dim, 4, m.style_dim)
        self.dec_r = Decoder(3, cdim, m.n_down, m.n_res, "adain", m.style_dim, m.mlp_dim)
        self.dis_r = MultiScaleDiscriminator(3, m.dis_dim, m.dis_layers, m.dis_scales)
        self.dis_s = MultiScaleDiscriminator(cs, m.dis_dim, m.dis_layers, m.dis_scales)

    @torch.no_grad()
    def encode_style(self, real: torch.Tensor) -> torch.Tensor:
        return self.sty_r(real)

    def translate(self, sim, features=None, style=None, light=None, edges=None):
        if style is None:
            style = torch.zeros(sim.shape[0], self.style_dim, device=sim.device)
        return self.dec_r(self.enc_s(self.sim_input(sim, features)), style.to(sim.dtype))


class CycleGANTranslator(Translator):
    """CycleGAN (Zhu et al. 2017): ResNet-9 generators both ways, 70x70 PatchGANs."""

    kind = "cyclegan"
    deploy_modules = ("g_s2r", "dis_r")

    def __init__(self, m: ModelConfig, feat_channels: int):
        super().__init__(m, 0)
        self.g_s2r = ResnetGenerator(3, 3, m.dim, 9)
        self.g_r2s = ResnetGenerator(3, 3, m.dim, 9)
        self.dis_r = PatchDiscriminator(3, m.dis_dim)
        self.dis_s = PatchDiscriminator(3, m.dis_dim)

    def translate(self, sim, features=None, style=None, light=None, edges=None):
        return self.g_s2r(sim)


class Pix2PixTranslator(Translator):
    """pix2pix (Isola et al. 2017) on sim/surrogate pairs: U-Net + conditional PatchGAN."""

    kind = "pix2pix"
    paired = True
    deploy_modules = ("g_s2r", "dis_r")

    def __init__(self, m: ModelConfig, feat_channels: int):
        super().__init__(m, 0)
        self.g_s2r = UNetGenerator(3, 3, m.dim, n_down=6)
        self.dis_r = PatchDiscriminator(6, m.dis_dim)       # conditional: sees (sim, real)

    def translate(self, sim, features=None, style=None, light=None, edges=None):
        return self.g_s2r(sim)


def textured(albedo: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """The sim render with a textured albedo: albedo [B, 3, H, W] in [-1, 1] (sRGB), light
    [B, 2, H, W] (diffuse factor, specular; exposure included) -> [B, 3, H, W] in [-1, 1].
    With the objects' flat colours as albedo this is exactly the sim render."""
    a = srgb_to_linear(to_unit(albedo).clamp(0.0, 1.0))
    return to_signed(linear_to_srgb(a * light[:, :1] + light[:, 1:]))


def detailed(image: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
    """A frame with surface detail: image [B, 3, H, W] in [-1, 1] (sRGB), detail [B, 3, H, W]
    a log-ratio in linear RGB (0 = unchanged, as on the background, whose features are zero)
    -> [B, 3, H, W] in [-1, 1]. Multiplying linear light is what an albedo pattern does under
    any illumination, so the generator's shading is kept and only modulated."""
    return _linear_out(srgb_to_linear(to_unit(image).clamp(0.0, 1.0)), detail)


def _linear_out(lin: torch.Tensor, detail: torch.Tensor | None, specular: torch.Tensor | None = None) -> torch.Tensor:
    """Linear RGB [B, 3, H, W] (x exp(detail), the log-ratio clamped to +-3; + specular
    [B, 1, H, W], white light) -> sRGB in [-1, 1]."""
    if detail is not None:
        lin = lin * detail.clamp(-3.0, 3.0).exp()
    if specular is not None:
        lin = lin + specular
    return to_signed(linear_to_srgb(lin.clamp(0.0, 1.0)))


def recoloured_linear(image: torch.Tensor, coef: torch.Tensor, sigma: float,
                      detail: torch.Tensor | None = None, specular: torch.Tensor | None = None) -> torch.Tensor:
    """A local colour transform that keeps shading and edges: image [B, 3, H, W] in [-1, 1]
    (sRGB), coef [B, 9, H, W] (a 3x3 matrix per pixel, row-major, as an offset from the
    identity), smoothed by a Gaussian of std ``sigma`` pixels and applied to the image's linear
    RGB; detail [B, 3, H, W] or None: a log-ratio that then multiplies it (``detailed``);
    specular [B, 1, H, W] or None: linear white light added last -> [B, 3, H, W] in [-1, 1]. A smooth matrix cannot draw edges or shading of its own, yet maps
    the sim's flat class colours (distinct directions in RGB) each to its own colour, so class
    boundaries stay sharp (the local affine colour models of Gharbi et al. 2017, without the
    bilateral grid)."""
    import kornia
    k = 2 * int(math.ceil(3.0 * sigma)) + 1
    coef = kornia.filters.gaussian_blur2d(coef, (k, k), (sigma, sigma), border_type="replicate")
    B, _, H, W = coef.shape
    lin = srgb_to_linear(to_unit(image).clamp(0.0, 1.0))
    return _linear_out(lin + torch.einsum("bijhw,bjhw->bihw", coef.view(B, 3, 3, H, W), lin), detail, specular)


class OneWayTranslator(Translator):
    """One-sided sim->real translation: MUNIT's sim content encoder and style-conditioned real
    decoder, trained without a real->sim generator (no cycle): adversarial + brightness
    structure (MS-SSIM) + style reconstruction + view consistency (``train.trainer.OneWayTrainer``),
    about a third of MUNIT's compute per step.

    Options (config): ``texture.albedo``: the first 3 texture channels are an RGB albedo, the
    generator sees the sim render shaded with it (``textured``) instead of the flat one, so
    tissue detail lives on the surface (view-consistent by construction); ``texture.detail``:
    the last 3 feature channels are the texture set's detail layer, which the generator does not
    see: a log-ratio in linear RGB that multiplies its output (``detailed``), so surface detail
    (vessels, folds, lobules) is drawn from the texture itself and cannot flicker;
    ``model.residual``:
    the generator outputs a correction added to that image (starting as the identity);
    ``model.recolour``: the generator outputs a smooth 3x3 colour matrix per pixel applied to
    that image's linear RGB (``recoloured_linear``, starting as the identity): it changes colour
    and exposure only, the shading and edges stay the base image's; ``model.specular: white``
    (with albedo and recolour): the colour matrix and the detail layer act on the diffuse light
    only and the specular term is added after them, white, as a reflection off the wet surface
    keeps the light's colour (otherwise they tint and pattern the highlights too);
    ``model.camera``: learned vignetting and sensor noise (``networks.CameraModel``).
    """

    kind = "oneway"
    pools_fakes = False
    deploy_modules = ("enc_s", "dec_r", "sty_r", "dis_r", "camera", "gloss", "grade")

    def __init__(self, m: ModelConfig, feat_channels: int, albedo: bool = False, detail: bool = False):
        super().__init__(m, feat_channels if m.features else 0)
        self.albedo = bool(albedo and self.uses_features)
        self.detail = bool(detail and self.uses_features)
        # albedo channels become the base image; detail channels multiply the output
        cs = 3 + self.feat_channels - (3 if self.albedo else 0) - (3 if self.detail else 0)
        self.enc_s = ContentEncoder(cs, m.dim, m.n_down, m.n_res)
        # recolour: 9 channels, a colour matrix per pixel (unbounded, starting at zero like a residual)
        self.dec_r = Decoder(9 if m.recolour else 3, self.enc_s.out_dim, m.n_down, m.n_res, "adain", m.style_dim,
                             m.mlp_dim, residual=m.residual or m.recolour)
        self.sty_r = StyleEncoder(3, m.dim, 4, m.style_dim)
        self.dis_r = MultiScaleDiscriminator(3, m.dis_dim, m.dis_layers, m.dis_scales)
        self.camera = CameraModel() if m.camera else None
        self.residual = m.residual
        self.recolour = m.recolour
        self.recolour_sigma = float(m.recolour_sigma)
        self.white_specular = bool(m.specular == "white" and self.albedo and m.recolour)
        self.gloss = SurfaceGloss()      # per-class highlights (model.gloss: real); inactive: the scene's
        self.grade = ClassGrade()        # per-class colour across the organ (model.grade: real); inactive: none
        if m.dis_detail:          # training only: slim checkpoints leave it out
            self.dis_d = DetailDiscriminator(2 * m.dis_dim, m.dis_classes)

    def discriminators(self) -> list[nn.Module]:
        return [d for d in (self.dis_r, getattr(self, "dis_d", None)) if d is not None]

    @torch.no_grad()
    def encode_style(self, real: torch.Tensor) -> torch.Tensor:
        return self.sty_r(real)

    def base_and_input(self, sim, features, light):
        """The image the generator starts from ([B, 3, H, W]: the textured render, or the sim
        render) and its input x_s (base + non-albedo feature channels)."""
        if self.albedo:
            if features is None or light is None:
                raise ValueError("this model needs neural features and the light buffer")
            base = textured(features[:, :3].to(sim.dtype), light.to(sim.dtype))
            return base, torch.cat([base, features[:, 3:self.feat_channels - 3 * self.detail].to(sim.dtype)], 1)
        if self.detail:
            return sim, self.sim_input(sim, features)[:, :-3]
        return sim, self.sim_input(sim, features)

    def translate(self, sim, features=None, style=None, light=None, edges=None):
        if style is None:
            style = torch.zeros(sim.shape[0], self.style_dim, device=sim.device)
        base, x_s = self.base_and_input(sim, features, light)
        out = self.dec_r(self.enc_s(x_s), style.to(sim.dtype))
        detail = features[:, -3:].to(out.dtype) if self.detail else None
        if self.recolour and self.white_specular:
            light = light.to(sim.dtype)
            diffuse = textured(features[:, :3].to(sim.dtype), light * light.new_tensor([1.0, 0.0])[:, None, None])
            out = recoloured_linear(diffuse, out, self.recolour_sigma, detail, light[:, 1:])
        elif self.recolour:
            out = recoloured_linear(base, out, self.recolour_sigma, detail)
        else:
            if self.residual:
                out = base + out
            if detail is not None:
                out = detailed(out, detail)
        return self.camera(out, edges) if self.camera is not None else out


class DCGANTranslator(Translator):
    """The unconditional baseline (DCGAN, Radford et al. 2016): noise -> a real-domain frame.
    It never sees the sim render: ``translate`` ignores ``sim`` (only its size is used) and
    maps the style code z ~ N(0, I) [B, style_dim] to a 128^2 frame, resized to the sim's size.
    A video with one style is one still image; it shows what synthesis without labels or
    structure gives, and why the product translates instead."""

    kind = "dcgan"
    pools_fakes = False
    renders = False                     # trains on real frames alone: no views are rendered
    deploy_modules = ("gen",)

    def __init__(self, m: ModelConfig, feat_channels: int):
        super().__init__(m, 0)
        self.gen = DCGANGenerator(m.style_dim, m.dim)
        self.dis_r = DCGANDiscriminator(m.dis_dim)

    def translate(self, sim, features=None, style=None, light=None, edges=None):
        if style is None:
            style = torch.zeros(sim.shape[0], self.style_dim, device=sim.device)
        out = self.gen(style.to(sim.dtype))
        if out.shape[-2:] != sim.shape[-2:]:
            out = torch.nn.functional.interpolate(out, size=sim.shape[-2:], mode="bilinear", align_corners=False)
        return out


MODELS: dict[str, type[Translator]] = {c.kind: c for c in (MunitTranslator, CycleGANTranslator, Pix2PixTranslator,
                                                           OneWayTranslator, DCGANTranslator)}


def translator_class(m: ModelConfig) -> type[Translator]:
    """The class of the configured method (``m.type`` is validated against ``MODELS``)."""
    return MODELS[m.type]


def build_translator(m: ModelConfig, feat_channels: int, seed: int = 0, albedo: bool = False,
                     detail: bool = False) -> Translator:
    """The configured translator with its networks initialised N(0, 0.02) from ``seed``
    (``albedo``, ``detail``: the texture config's flags; only the one-way model uses them)."""
    cls = translator_class(m)
    net = (cls(m, feat_channels, albedo=albedo, detail=detail) if cls is OneWayTranslator
           else cls(m, feat_channels))
    init_weights(net, 0.02, torch.Generator().manual_seed(int(seed)))
    if getattr(net, "residual", False) or getattr(net, "recolour", False):
        net.dec_r.zero_last()
    return net
