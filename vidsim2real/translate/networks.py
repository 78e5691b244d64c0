"""Networks (our own implementations of published architectures). All images NCHW in [-1, 1].

* MUNIT (Huang et al. 2018) as adapted by Pfeiffer et al. (MICCAI 2019) and Rivoir et al.
  (ICCV 2021): per domain a content encoder (7x7 conv, ``n_down`` stride-2 4x4 convs doubling
  the width, ``n_res`` residual blocks, instance norm, reflect padding) and a decoder (residual
  blocks, nearest-neighbour upsampling + 5x5 conv with layer norm, 7x7 conv, tanh). The real
  domain's decoder takes an 8-d style code through AdaIN (params from an MLP); its style
  encoder maps a real image to a style. The sim domain has no style; its input is the sim RGB
  concatenated with the neural-texture features.
* Multi-scale LSGAN discriminator: 3 scales (avg-pool between), 4 stride-2 4x4 convs with leaky
  ReLU and no normalisation, then a 1x1 conv to one channel.
* Baselines: CycleGAN's ResNet-9 generator and 70x70 PatchGAN (Zhu et al. 2017); pix2pix's
  U-Net generator (Isola et al. 2017).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """Per-sample layer norm over (C, H, W) with per-channel affine (MUNIT's decoder norm)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        std, mean = torch.std_mean(x, dim=(1, 2, 3), keepdim=True)     # unbiased std, as MUNIT's
        return torch.addcmul(self.beta.view(1, -1, 1, 1), (x - mean) / (std + self.eps), self.gamma.view(1, -1, 1, 1))


class AdaIN(nn.Module):
    """Instance norm whose scale/shift come from a style MLP, set per forward by the decoder:
    ``scale`` = 1 + gamma and ``shift`` = beta, each [B, C, 1, 1]."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.scale: torch.Tensor | None = None
        self.shift: torch.Tensor | None = None

    def forward(self, x):
        if self.scale is None:
            raise RuntimeError("AdaIN params not set: call the decoder with a style")
        return torch.addcmul(self.shift, F.instance_norm(x, eps=self.eps), self.scale)


def _norm(kind: str, ch: int) -> nn.Module:
    return {"in": lambda: nn.InstanceNorm2d(ch, affine=False), "ln": lambda: LayerNorm2d(ch),
            "adain": lambda: AdaIN(ch), "bn": lambda: nn.BatchNorm2d(ch),
            "none": lambda: nn.Identity()}[kind]()


def _act(kind: str) -> nn.Module:
    return {"relu": lambda: nn.ReLU(inplace=True), "lrelu": lambda: nn.LeakyReLU(0.2, inplace=True),
            "tanh": nn.Tanh, "none": nn.Identity}[kind]()


class ConvBlock(nn.Sequential):
    """reflect-pad -> conv -> norm -> activation."""

    def __init__(self, cin, cout, k, stride=1, norm="in", act="relu", pad="reflect"):
        p = (k - 1) // 2 if stride == 1 else (k - stride + 1) // 2
        layers = []
        if p:
            layers.append(nn.ReflectionPad2d(p) if pad == "reflect" else nn.ZeroPad2d(p))
        layers += [nn.Conv2d(cin, cout, k, stride, bias=norm in ("none", "ln", "adain")), _norm(norm, cout), _act(act)]
        super().__init__(*layers)


class ResBlock(nn.Module):
    def __init__(self, dim: int, norm: str = "in"):
        super().__init__()
        self.body = nn.Sequential(ConvBlock(dim, dim, 3, norm=norm, act="relu"), ConvBlock(dim, dim, 3, norm=norm, act="none"))

    def forward(self, x):
        return x + self.body(x)


class ContentEncoder(nn.Module):
    """[B, Cin, H, W] -> content [B, dim * 2^n_down, H / 2^n_down, W / 2^n_down]."""

    def __init__(self, cin: int, dim: int = 64, n_down: int = 2, n_res: int = 4):
        super().__init__()
        layers = [ConvBlock(cin, dim, 7)]
        for _ in range(n_down):
            layers.append(ConvBlock(dim, dim * 2, 4, stride=2))
            dim *= 2
        layers += [ResBlock(dim, "in") for _ in range(n_res)]
        self.net = nn.Sequential(*layers)
        self.out_dim = dim

    def forward(self, x):
        return self.net(x)


class StyleEncoder(nn.Module):
    """[B, 3, H, W] -> style code [B, style_dim] (MUNIT: no normalisation, global pooling)."""

    def __init__(self, cin: int = 3, dim: int = 64, n_down: int = 4, style_dim: int = 8):
        super().__init__()
        layers = [ConvBlock(cin, dim, 7, norm="none")]
        for i in range(n_down):
            nd = dim * 2 if i < 2 else dim
            layers.append(ConvBlock(dim, nd, 4, stride=2, norm="none"))
            dim = nd
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, style_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).flatten(1)


class Decoder(nn.Module):
    """content [B, dim, h, w] -> image [B, cout, h * 2^n_up, w * 2^n_up] in [-1, 1].

    ``res_norm="adain"`` makes it style-conditioned: call with ``style`` [B, style_dim].
    ``residual``: the output is an unbounded correction to add to an image (see ``zero_last``).
    """

    def __init__(self, cout: int, dim: int, n_up: int = 2, n_res: int = 4, res_norm: str = "in",
                 style_dim: int = 8, mlp_dim: int = 256, residual: bool = False):
        super().__init__()
        self.res = nn.Sequential(*[ResBlock(dim, res_norm) for _ in range(n_res)])
        ups = []
        for _ in range(n_up):
            ups += [nn.Upsample(scale_factor=2, mode="nearest"), ConvBlock(dim, dim // 2, 5, norm="ln")]
            dim //= 2
        # residual: a correction added to an image (no tanh; its last conv starts at zero)
        ups.append(ConvBlock(dim, cout, 7, norm="none", act="none" if residual else "tanh"))
        self.up = nn.Sequential(*ups)
        self.residual = residual
        self.adain = [m for m in self.res.modules() if isinstance(m, AdaIN)]
        self.mlp = None
        if self.adain:
            n_params = sum(2 * m.channels for m in self.adain)
            self.mlp = nn.Sequential(nn.Linear(style_dim, mlp_dim), nn.ReLU(inplace=True), nn.Linear(mlp_dim, mlp_dim),
                                     nn.ReLU(inplace=True), nn.Linear(mlp_dim, n_params))

    def forward(self, content, style=None):
        if self.mlp is not None:
            if style is None:
                raise ValueError("this decoder needs a style code")
            params = self.mlp(style)
            scale = (params + 1.0)[..., None, None]          # views of one [B, P, 1, 1] tensor each
            shift = params[..., None, None]
            i = 0
            for m in self.adain:
                c = m.channels
                m.scale, m.shift = scale[:, i:i + c], shift[:, i + c:i + 2 * c]
                i += 2 * c
        return self.up(self.res(content))

    def zero_last(self) -> None:
        """Start a residual decoder at zero output (call after weight initialisation)."""
        last = [m for m in self.up.modules() if isinstance(m, nn.Conv2d)][-1]
        with torch.no_grad():
            last.weight.zero_()
            if last.bias is not None:
                last.bias.zero_()


class MultiScaleDiscriminator(nn.Module):
    """LSGAN discriminator at ``scales`` resolutions; returns a list of patch maps."""

    def __init__(self, cin: int, dim: int = 64, n_layers: int = 4, scales: int = 3):
        super().__init__()
        self.nets = nn.ModuleList()
        for _ in range(scales):
            d, layers = dim, [ConvBlock(cin, dim, 4, stride=2, norm="none", act="lrelu")]
            for _ in range(n_layers - 1):
                layers.append(ConvBlock(d, d * 2, 4, stride=2, norm="none", act="lrelu"))
                d *= 2
            layers.append(nn.Conv2d(d, 1, 1))
            self.nets.append(nn.Sequential(*layers))
        self.down = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x) -> list[torch.Tensor]:
        outs = []
        for i, net in enumerate(self.nets):
            outs.append(net(x))
            if i + 1 < len(self.nets):
                x = self.down(x)
        return outs


FIELD_KNOTS = 9          # the lens field's radial profile: knots at r = 0, sqrt(2)/8, ..., sqrt(2) (corner)


def radius2(H: int, W: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Squared distance from the image centre [H, W], 1 at the middle of the longer side's edge."""
    ys = torch.linspace(-1.0, 1.0, H, device=device, dtype=dtype) * (H / max(H, W))
    xs = torch.linspace(-1.0, 1.0, W, device=device, dtype=dtype) * (W / max(H, W))
    return ys[:, None] ** 2 + xs[None, :] ** 2


def field_gain(field: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Linear-light gain [H, W] of a radial profile ``field`` [K] (log gain at K knots evenly
    spaced from the centre, r = 0, to the corner, r = sqrt(2)), piecewise linear in r."""
    r = radius2(H, W, field.device, field.dtype).sqrt() / math.sqrt(2.0) * (len(field) - 1)
    i = r.floor().long().clamp(max=len(field) - 2)
    t = (r - i).clamp(max=1.0)
    return torch.exp(field[i] * (1 - t) + field[i + 1] * t)


GLOSS_CLASSES = 64        # class ids a model's surface gloss table holds


class SurfaceGloss(nn.Module):
    """Per-class specular strength k_s and shininess s a model renders its frames with instead
    of the scene's, and its diffuse exponent m (``table`` [GLOSS_CLASSES, 3]; k_s < 0: the
    scene's k_s and s; m <= 0: 1, Lambert's), fitted from the real frames at the start
    (``train.appearance.real_gloss``, ``model.gloss: real``; ``real_diffuse``,
    ``model.diffuse: real``) and applied to the light buffer wherever the model's frames are
    rendered (``shading.class_gloss``)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.full((GLOSS_CLASSES, 3), -1.0))
        self.active = False              # kept on the host: no device sync per frame

    def set(self, gloss: dict[int, tuple[float, float]], diffuse: dict[int, float] | None = None) -> None:
        """Set {class id: (k_s, s)} and {class id: m}; other classes keep the scene's."""
        with torch.no_grad():
            self.table.fill_(-1.0)
            for c, v in gloss.items():
                if 0 < int(c) < GLOSS_CLASSES:
                    self.table[int(c), :2] = torch.tensor([float(v[0]), float(v[1])])
            for c, m in (diffuse or {}).items():
                if 0 < int(c) < GLOSS_CLASSES:
                    self.table[int(c), 2] = float(m)
        self.active = self._any(self.table)

    def fitted(self) -> tuple[dict[int, tuple[float, float]], dict[int, float]]:
        """What ``set`` was given: ({class id: (k_s, s)}, {class id: m})."""
        t = self.table.detach().cpu()
        return ({c: (float(t[c, 0]), float(t[c, 1])) for c in range(GLOSS_CLASSES) if t[c, 0] >= 0},
                {c: float(t[c, 2]) for c in range(GLOSS_CLASSES) if t[c, 2] > 0})

    @staticmethod
    def _any(table: torch.Tensor) -> bool:
        return bool((table[:, 0] >= 0).any() or (table[:, 2] > 0).any())

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        t = state.get(prefix + "table", torch.full((GLOSS_CLASSES, 2), -1.0))   # absent: saved before it existed
        if t.shape[1] == 2:                                        # saved before the diffuse exponent
            t = torch.cat([t, torch.full((len(t), 1), -1.0, dtype=t.dtype)], 1)
        state[prefix + "table"] = t
        self.active = self._any(t)
        super()._load_from_state_dict(state, prefix, *args, **kwargs)


NOISE_MAX = 0.03          # the sensor noise level's upper bound (sigma = NOISE_MAX sigmoid(p))
BLACK_ROWS = 32           # rows of a camera's black level and colour cast tables: the real footage's spread of them


NOISE_FLOOR = 0.4         # the read-noise share of the sensor noise where none was fitted


def noise_std(y: torch.Tensor, sigma, floor=NOISE_FLOOR) -> torch.Tensor:
    """Sensor noise std at brightness y in [0, 1] (any shape) for noise level ``sigma``: photon
    noise over a read-noise floor, sigma (floor + (1 - floor) sqrt(y)) (``floor``: a float or a
    tensor that broadcasts)."""
    return sigma * (floor + (1.0 - floor) * (y + 1e-6).sqrt())


def lens_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x [B, C, H, W] through a Gaussian point spread of std ``sigma`` pixels (reflect border;
    the kernel reaches 3 sigma); sigma <= 0: x unchanged."""
    if sigma <= 0:
        return x
    import kornia
    k = 2 * max(1, math.ceil(3.0 * sigma)) + 1
    return kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")


GRADE_SIGMA = 3.0         # the class grade's band: what varies over more than this many pixels of the rendered frame


def class_coarse(lab: torch.Tensor, mask: torch.Tensor, sigma: float = GRADE_SIGMA) -> torch.Tensor:
    """The coarse band of a class region: lab [B, 3, H, W] (any channels) blurred by a Gaussian
    of std ``sigma`` px inside ``mask`` [B, H, W] bool, normalised by the blurred mask (so the
    other classes beside it never leak in) -> [B, 3, H, W], meaningful inside the mask only."""
    m = mask[:, None].to(lab.dtype)
    return lens_blur(lab * m, sigma) / lens_blur(m, sigma).clamp(min=1e-3)


def grade_region(mask: torch.Tensor, sigma: float = GRADE_SIGMA) -> torch.Tensor:
    """Where a class's coarse band is its own: mask [B, H, W] bool less 2 ``sigma`` px along its
    outline (where the outline's darkening and blur, and the label map's misalignment on real
    frames, would count as shading), or the whole mask in frames where nothing is left."""
    k = 2 * int(round(2 * sigma)) + 1
    inner = (-F.max_pool2d(-mask[:, None].float(), k, 1, k // 2))[:, 0] > 0.5
    return torch.where(inner.flatten(1).any(1)[:, None, None], inner, mask)


def coarse_centred(lab: torch.Tensor, mask: torch.Tensor, sigma: float = GRADE_SIGMA) -> list[torch.Tensor]:
    """A class's coarse band (``class_coarse``) over its ``grade_region``, per frame that shows
    it, less the frame's mean there: lab [B, 3, H, W] CIE L*a*b*, mask [B, H, W] bool -> a list
    of [3, n] float64 (dL, da, db), so frames pool without their mean colour (which the cast and
    albedo fits own) counting."""
    low = class_coarse(lab, mask, sigma)
    region = grade_region(mask, sigma)
    out = []
    for b in range(len(lab)):
        m = region[b]
        if m.any():
            v = low[b][:, m].double()
            out.append(v - v.mean(1, keepdim=True))
    return out


def coarse_chroma_moments(lab: torch.Tensor, mask: torch.Tensor, sigma: float = GRADE_SIGMA,
                          centred: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Within-frame second moments of a class's coarse band: lab [B, 3, H, W] CIE L*a*b*, mask
    [B, H, W] bool (or their ``coarse_centred`` already made) -> [6] float64: (n, sum dL^2,
    sum dL da, sum dL db, sum da^2, sum db^2)."""
    out = torch.zeros(6, dtype=torch.float64)
    for d in coarse_centred(lab, mask, sigma) if centred is None else centred:
        out += torch.stack([torch.tensor(float(d.shape[1]), dtype=torch.float64), (d[0] * d[0]).sum(),
                            (d[0] * d[1]).sum(), (d[0] * d[2]).sum(), (d[1] * d[1]).sum(), (d[2] * d[2]).sum()])
    return out


def chroma_fit(moments: torch.Tensor) -> tuple[float, float, float, float]:
    """(slope of a* on L*, slope of b* on L*, residual std of a*, of b*) of a class's coarse
    band from its pooled ``coarse_chroma_moments`` [6]."""
    n, ll, la, lb, aa, bb = moments.tolist()
    sa, sb = la / max(ll, 1e-9), lb / max(ll, 1e-9)
    ra = math.sqrt(max(aa - sa * la, 0.0) / max(n, 1.0))
    rb = math.sqrt(max(bb - sb * lb, 0.0) / max(n, 1.0))
    return sa, sb, ra, rb


GRADE_BINS = (0.0, 0.02, 0.08, 0.2, 0.4, 0.6, 0.8, 0.92, 0.98, 1.0)   # ``grade: curve``: probability bins of L*
GRADE_KNOTS = len(GRADE_BINS) - 1


def coarse_samples(lab: torch.Tensor, mask: torch.Tensor, sigma: float = GRADE_SIGMA, most: int = 2048,
                   gen: torch.Generator | None = None, centred: list[torch.Tensor] | None = None) -> torch.Tensor:
    """A class's coarse band as samples: lab [B, 3, H, W] CIE L*a*b*, mask [B, H, W] bool (or
    their ``coarse_centred`` already made) -> [N, 3] float32 (dL, da, db) of up to ``most``
    random pixels per frame, each less the frame's mean (``coarse_centred``)."""
    out = []
    for v in coarse_centred(lab, mask, sigma) if centred is None else centred:
        if v.shape[1] > most:
            v = v[:, torch.randperm(v.shape[1], generator=gen)[:most]]
        out.append(v.t().float())
    return torch.cat(out) if out else torch.zeros(0, 3)


def curve_fit(samples: torch.Tensor, bins: tuple = GRADE_BINS) -> tuple[torch.Tensor, tuple[float, float]]:
    """The grade's curve of a class from its pooled ``coarse_samples`` [N, 3]: [3, K] the mean
    (dL, da, db) of each probability bin of dL (K = len(bins) - 1: the darkest 2 % ... the
    brightest 2 %), and the residual std of a*, b* about the piecewise-linear curve through them."""
    order = samples[:, 0].argsort()
    s = samples[order].double()
    edges = [int(round(p * len(s))) for p in bins]
    knots = torch.stack([s[a:max(b, a + 1)].mean(0) for a, b in zip(edges[:-1], edges[1:])], 1)
    ab = torch.stack([_interp(s[:, 0], knots[0], knots[k], extend=False) for k in (1, 2)], 1)
    resid = (s[:, 1:] - ab).pow(2).mean(0).sqrt()
    return knots.float(), (float(resid[0]), float(resid[1]))


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor, extend: bool) -> torch.Tensor:
    """The piecewise-linear function through knots (xp [K] increasing, fp [K]) at x (any shape);
    beyond the end knots continued along the end segments (``extend``) or held constant."""
    k = len(xp)
    i = torch.searchsorted(xp.contiguous(), x.contiguous()).clamp(1, k - 1)
    x0, x1, y0, y1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    w = (x - x0) / (x1 - x0).clamp(min=1e-6)
    if not extend:
        w = w.clamp(0.0, 1.0)
    return y0 + w * (y1 - y0)


LEVEL_COLUMNS = 10    # ClassGrade.level: ours (a0, a1, b0, b1), the real (a0, a1, b0, b1), our L* range


def level_fit(ours: torch.Tensor, real: torch.Tensor) -> tuple:
    """One class's ``ClassGrade.level`` row from its mean L*a*b* per frame, ours [N, 3] and the
    real frames' [M, 3]: least-squares lines of a* and b* on L* across frames on each side,
    then the L* range of ours (its 2nd to 98th percentile: the shift is not extrapolated)."""
    def lines(x):
        x = x.double()
        A = torch.stack([torch.ones_like(x[:, 0]), x[:, 0]], 1)
        coef = torch.linalg.lstsq(A, x[:, 1:]).solution        # [2, 2]: (intercept, slope) per channel
        return [float(coef[0, 0]), float(coef[1, 0]), float(coef[0, 1]), float(coef[1, 1])]
    lo, hi = torch.quantile(ours[:, 0].double(), torch.tensor([0.02, 0.98], dtype=torch.float64)).tolist()
    return (*lines(ours), *lines(real), lo, hi)


def level_shift(row: tuple, mean_l: torch.Tensor) -> torch.Tensor:
    """The chroma step of a level row at a region's mean L* [B, 1, 1, 1] (held within the
    row's range): [B, 3, 1, 1] (0, real a*(L) - ours a*(L), real b*(L) - ours b*(L))."""
    oa0, oa1, ob0, ob1, ra0, ra1, rb0, rb1, lo, hi = row
    m = mean_l.clamp(lo, hi)
    return torch.cat([torch.zeros_like(m), (ra0 - oa0) + (ra1 - oa1) * m, (rb0 - ob0) + (rb1 - ob1) * m], 1)


class ClassGrade(nn.Module):
    """How each class's colour varies across it, as in the real frames: per class id a row
    (s_a, s_b: the slopes of a* and b* on L* of the model's own frames' coarse band; t_a, t_b:
    the real frames'; g_a, g_b: the residual chroma's gain) in ``table`` [GLOSS_CLASSES, 6],
    fitted at the start (``train.appearance.real_grade``, ``model.grade: real``). A frame's
    coarse band (``class_coarse``) inside a class becomes, per chroma channel,
    mean + t dL + g (c - mean - s dL) with dL = L* less its mean over the region in that frame:
    the frame's mean colour per class stays, the finer band (detail, grain) is untouched, and
    the chroma follows the brightness across the organ (and varies apart from it) as the real
    frames' does. Rows with g <= 0 leave their class as it is.

    ``model.grade: curve`` adds per class ``curve`` [GLOSS_CLASSES, 6, GRADE_KNOTS]: the
    ``curve_fit`` knots (dL, da, db) of the model's frames, then of the real frames'. There the
    coarse L* goes through the tone curve that maps the one's bins onto the other's (so the
    brightest 2 % of the organ, its highlights, are as much above its mean as the real ones),
    and the chroma follows the real curve instead of a line: mean + c_real(dL') + g (c - mean -
    c_ours(dL)). The frame's mean L*a*b* per class stays there too.

    ``model.grade_level`` adds per class ``level`` [GLOSS_CLASSES, 10]: lines of a class's mean
    a* and b* in a frame on its mean L* across frames (``level_fit``: ours a0, a1, b0, b1, then
    the real ones, then the L* range of our frames). The region's mean chroma then moves by
    real(L) - ours(L) at its mean L* (held within that range): how far a class's colour follows
    its brightness from frame to frame (distance, light), as the real frames' does."""

    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.zeros(GLOSS_CLASSES, 6))
        self.register_buffer("curve", torch.zeros(GLOSS_CLASSES, 6, GRADE_KNOTS))
        self.register_buffer("level", torch.zeros(GLOSS_CLASSES, LEVEL_COLUMNS))
        self._rows: dict[int, tuple] = {}     # the active rows, kept on the host: no device sync per frame
        self._curved: set[int] = set()
        self._levels: dict[int, tuple] = {}

    def set(self, rows: dict[int, tuple], curves: dict[int, torch.Tensor] | None = None,
            levels: dict[int, tuple] | None = None) -> None:
        """Set {class id: (s_a, s_b, t_a, t_b, g_a, g_b)}, for ``grade: curve`` {class id: curve
        [6, GRADE_KNOTS]} (ours, then the real knots) and for ``grade_level`` {class id: level row
        [LEVEL_COLUMNS]} (``level_fit``); other classes are left as they are."""
        with torch.no_grad():
            self.table.zero_()
            self.curve.zero_()
            self.level.zero_()
            for c, v in rows.items():
                if 0 < int(c) < GLOSS_CLASSES:
                    self.table[int(c)] = torch.tensor([float(x) for x in v])
            for c, v in (curves or {}).items():
                if 0 < int(c) < GLOSS_CLASSES:
                    self.curve[int(c)] = v.to(self.curve)
            for c, v in (levels or {}).items():
                if 0 < int(c) < GLOSS_CLASSES:
                    self.level[int(c)] = torch.tensor([float(x) for x in v])
        self._rows, self._curved, self._levels = self._active(self.table, self.curve, self.level)

    @property
    def active(self) -> bool:
        return bool(self._rows)

    def fitted(self) -> dict[int, tuple]:
        """What ``set`` was given: {class id: (s_a, s_b, t_a, t_b, g_a, g_b)}."""
        return dict(self._rows)

    @property
    def curved(self) -> set[int]:
        """The class ids graded by a curve (``grade: curve``) rather than a line."""
        return set(self._curved)

    @property
    def levelled(self) -> dict[int, tuple]:
        """The level rows of the classes whose mean colour follows the real frames' across
        frames (``grade_level``)."""
        return dict(self._levels)

    @staticmethod
    def _active(table: torch.Tensor, curve: torch.Tensor, level: torch.Tensor
                ) -> tuple[dict[int, tuple], set[int], dict[int, tuple]]:
        t = table.detach().cpu()
        rows = {c: tuple(t[c].tolist()) for c in range(len(t)) if (t[c, 4:] > 0).any()}
        knots = curve.detach().cpu()[:, 0]
        lv = level.detach().cpu()
        levels = {c: tuple(lv[c].tolist()) for c in rows if lv[c, 9] > lv[c, 8]}     # an L* range: fitted
        return rows, {c for c in rows if bool((knots[c, 1:] > knots[c, :-1]).all())}, levels

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        # absent: saved before the grade (or its curve, or its level) existed
        t = state.get(prefix + "table", torch.zeros(GLOSS_CLASSES, 6))
        cv = state.get(prefix + "curve", torch.zeros(GLOSS_CLASSES, 6, GRADE_KNOTS))
        lv = state.get(prefix + "level", torch.zeros(GLOSS_CLASSES, LEVEL_COLUMNS))
        state[prefix + "table"], state[prefix + "curve"], state[prefix + "level"] = t, cv, lv
        self._rows, self._curved, self._levels = self._active(t, cv, lv)
        super()._load_from_state_dict(state, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """x [B, 3, H, W] in [-1, 1] (sRGB), labels [B, H, W] class ids -> [B, 3, H, W];
        unchanged without labels or an active row, and outside the graded classes' pixels."""
        if not self.active or labels is None:
            return x
        rows = self._rows
        present = [c for c in labels.unique().tolist() if c in rows]
        if not present:
            return x
        with torch.autocast(x.device.type, enabled=False):     # L* differences of a few units: float32
            return self._graded(x, labels, rows, present)

    def _graded(self, x: torch.Tensor, labels: torch.Tensor, rows: dict, present: list) -> torch.Tensor:
        import kornia
        lab = kornia.color.rgb_to_lab(((x.float() + 1.0) * 0.5).clamp(0.0, 1.0))
        delta = torch.zeros_like(lab)
        for c in present:
            s_a, s_b, t_a, t_b, g_a, g_b = rows[c]
            m = labels == c
            low = class_coarse(lab, m)
            mf = m[:, None].to(lab.dtype)
            area = mf.sum((2, 3), keepdim=True).clamp(min=1.0)
            # centred on the whole region's mean, so the frame's mean L*a*b* per class stays (the
            # fit's slopes do not depend on where frames are centred)
            mean = (low * mf).sum((2, 3), keepdim=True) / area
            d = low - mean
            dl = d[:, :1]
            if c in self._curved:
                cv = self.curve[c].float()
                dl2 = _interp(dl, cv[0], cv[3], extend=True)
                ch = [_interp(dl2, cv[3], cv[4 + k], extend=False) + g * (d[:, 1 + k:2 + k] - _interp(
                    dl, cv[0], cv[1 + k], extend=False)) - d[:, 1 + k:2 + k] for k, g in ((0, g_a), (1, g_b))]
                step = torch.cat([dl2 - dl, *ch], 1)
                step = step - (step * mf).sum((2, 3), keepdim=True) / area     # the frame's mean stays
            else:
                da = (t_a - s_a) * dl + (g_a - 1.0) * (d[:, 1:2] - s_a * dl)
                db = (t_b - s_b) * dl + (g_b - 1.0) * (d[:, 2:3] - s_b * dl)
                step = torch.cat([torch.zeros_like(dl), da, db], 1)
            if c in self._levels:
                step = step + level_shift(self._levels[c], mean[:, :1])
            delta = delta + step * mf
        out = kornia.color.lab_to_rgb(lab + delta).clamp(0.0, 1.0) * 2.0 - 1.0
        graded = torch.isin(labels, torch.tensor(present, device=labels.device))[:, None]
        return torch.where(graded, out.to(x.dtype), x)


def soften_edges(x: torch.Tensor, edges: torch.Tensor | None, sigma: float) -> torch.Tensor:
    """x [B, C, H, W] with the pixels of ``edges`` [B, H, W] (bool; None: none) replaced by
    their Gaussian blur of std ``sigma`` pixels (``lens_blur``)."""
    if edges is None or sigma <= 0:
        return x
    e = edges[:, None].to(x.dtype)
    return x + e * (lens_blur(x, sigma) - x)


class CameraModel(nn.Module):
    """Learned camera effects on a translated frame [B, 3, H, W] in [-1, 1]: the lens field
    (``field``: a radial gain in linear light, fitted from the real frames at the start,
    ``train.appearance.real_field``; zeros = none), radial vignetting ``y (1 - v r^2)`` (r =
    distance from the centre, 1 at the middle of an edge), the lens blur (``blur``: a Gaussian
    point spread of that std in pixels of the rendered frame), the edge blur (``edge_blur``: a
    Gaussian of that std on the pixels of geometric edges, where the caller passes them, as a
    camera's pixel integrates the two surfaces a rasterizer's sample point sees one of; both
    fitted from the real frames' sharpness, ``train.appearance.real_blur``; 0 = none) and,
    where ``add_noise`` is called,
    signal-dependent sensor noise ``sigma (f + (1 - f) sqrt(y)) eps`` with eps ~ N(0, 1) per pixel
    and channel (f: the read-noise share ``noise_floor``, 0.4 unless fitted from the real frames,
    ``train.appearance.real_noise``). v = 0.8 sigmoid(q) and sigma = 0.03 sigmoid(p) start near zero (q = p = -4) and
    are learned adversarially like any weight. With a black level table (``black`` [BLACK_ROWS,
    3], fitted from the real frames' background, ``train.appearance.real_black``; zeros = none)
    ``add_noise`` first lifts each frame by its video's row: a linear-light pedestal (r, g, b)
    under the lens's gain, as a camera's flare and black offset do. With a colour cast table
    (``cast`` [BLACK_ROWS, 3], log gains in linear light fitted from the real frames' class
    colours, ``train.appearance.real_cast``; zeros = none) it first multiplies the frame's linear
    light by its video's row: the white balance and exposure a clip was shot with. One row per
    video: a clip keeps its black level and cast while the real footage's clips differ in theirs."""

    added_buffers = ("field", "blur", "black", "noise_floor", "cast")   # absent from models saved before them: the old look

    def __init__(self):
        super().__init__()
        self.vignette_logit = nn.Parameter(torch.full((1,), -4.0))
        self.noise_logit = nn.Parameter(torch.full((1,), -4.0))
        self.register_buffer("field", torch.zeros(FIELD_KNOTS))
        self.register_buffer("blur", torch.zeros(2))      # (lens, edge) std in pixels
        self.register_buffer("black", torch.zeros(BLACK_ROWS, 3))
        self.register_buffer("noise_floor", torch.full((1,), NOISE_FLOOR))
        self.register_buffer("cast", torch.zeros(BLACK_ROWS, 3))
        self._has_field = False          # kept on the host: no device sync per frame
        self._blur = (0.0, 0.0)          # the same for the blurs
        self._has_black = False
        self._has_cast = False

    def set_field(self, field: torch.Tensor) -> None:
        """Set the lens field's profile ``field`` [FIELD_KNOTS] (log gain; zeros: none)."""
        with torch.no_grad():
            self.field.copy_(field)
        self._has_field = bool(field.abs().max() > 0)

    def set_blur(self, lens: float, edge: float = 0.0) -> None:
        """Set the lens blur's and the edge blur's std in pixels (0: none)."""
        with torch.no_grad():
            self.blur.copy_(torch.tensor([max(float(lens), 0.0), max(float(edge), 0.0)]))
        self._blur = tuple(self.blur.tolist())

    def set_black(self, table: torch.Tensor) -> None:
        """Set the black level table [BLACK_ROWS, 3]: per row a linear-light pedestal (r, g, b);
        zeros: none."""
        with torch.no_grad():
            self.black.copy_(table.clamp(min=0.0))
        self._has_black = bool(self.black.max() > 0)

    def set_cast(self, table: torch.Tensor) -> None:
        """Set the colour cast table [BLACK_ROWS, 3]: per row a log gain per channel (r, g, b) on
        linear light; zeros: none."""
        with torch.no_grad():
            self.cast.copy_(table)
        self._has_cast = bool(self.cast.abs().max() > 0)

    @property
    def has_black(self) -> bool:
        """Whether a black level table is set (``add_noise`` uses its ``video`` rows)."""
        return self._has_black

    @property
    def has_rows(self) -> bool:
        """Whether a black level or colour cast table is set: ``add_noise`` then uses each
        frame's ``video`` row."""
        return self._has_black or self._has_cast

    def gain(self, H: int, W: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """The lens's linear-light gain [H, W]: the lens field times the vignetting."""
        g = 1.0 - 0.8 * torch.sigmoid(self.vignette_logit).to(device, dtype) * radius2(H, W, device, dtype)
        return g * field_gain(self.field.to(device, dtype), H, W) if self._has_field else g

    @property
    def blurs_edges(self) -> bool:
        """Whether ``forward`` uses the edges it is given (an edge blur is set)."""
        return self._blur[1] > 0

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        # models saved before the lens field or blur existed have none: zeros, exactly the old frames
        state.setdefault(prefix + "field", torch.zeros(FIELD_KNOTS))
        state.setdefault(prefix + "blur", torch.zeros(2))
        state.setdefault(prefix + "black", torch.zeros(BLACK_ROWS, 3))
        state.setdefault(prefix + "noise_floor", torch.full((1,), NOISE_FLOOR))
        state.setdefault(prefix + "cast", torch.zeros(BLACK_ROWS, 3))
        self._has_field = bool(state[prefix + "field"].abs().max() > 0)
        self._blur = tuple(state[prefix + "blur"].tolist())
        self._has_black = bool(state[prefix + "black"].max() > 0)
        self._has_cast = bool(state[prefix + "cast"].abs().max() > 0)
        super()._load_from_state_dict(state, prefix, *args, **kwargs)

    @property
    def noise_sigma(self) -> torch.Tensor:
        return NOISE_MAX * torch.sigmoid(self.noise_logit)

    def set_noise(self, sigma: float, floor: float | None = None) -> None:
        """Start the sensor noise at level ``sigma`` (in (0, NOISE_MAX); kept just inside) and,
        given, set its read-noise share ``floor`` (in [0, 1])."""
        q = min(max(float(sigma) / NOISE_MAX, 1e-4), 0.999)
        with torch.no_grad():
            self.noise_logit.fill_(math.log(q / (1.0 - q)))
            if floor is not None:
                self.noise_floor.fill_(min(max(float(floor), 0.0), 1.0))

    def forward(self, x: torch.Tensor, edges: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, 3, H, W] in [-1, 1]; edges [B, H, W] bool (``render.edge_mask``) or None (no
        edge blur) -> [B, 3, H, W]."""
        H, W = x.shape[-2:]
        gain = 1.0 - 0.8 * torch.sigmoid(self.vignette_logit).to(x.dtype) * radius2(H, W, x.device, x.dtype)
        if not self._has_field:
            y = (x + 1.0) * gain - 1.0                    # in [0, 1]: y * gain
        else:
            from ..shading import linear_to_srgb, srgb_to_linear
            y = linear_to_srgb(srgb_to_linear(((x + 1.0) * 0.5).clamp(min=0.0)) * field_gain(self.field, H, W).to(x.dtype))
            y = y * gain * 2.0 - 1.0
        return soften_edges(lens_blur(y, self._blur[0]), edges, self._blur[1])

    def add_noise(self, x: torch.Tensor, eps: torch.Tensor, video: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, 3, H, W] in [-1, 1] plus sensor noise driven by eps (same shape, N(0, 1));
        video [B] int64 (each frame's video: its row of the colour cast and black level tables,
        modulo BLACK_ROWS) or None: neither (as without tables)."""
        y = ((x + 1.0) * 0.5).clamp(min=0.0)
        sigma, floor = self.noise_sigma.to(x.dtype), self.noise_floor.to(x.device, x.dtype)
        if video is None or not self.has_rows:
            return x + 2.0 * noise_std(y, sigma, floor) * eps.to(x.dtype)
        from ..shading import linear_to_srgb, srgb_to_linear
        v = video.to(self.black.device) % BLACK_ROWS
        lin = srgb_to_linear(y)
        if self._has_cast:             # the clip's white balance and exposure, before its flare
            lin = lin * torch.exp(self.cast[v]).to(x.device, x.dtype)[:, :, None, None]
        if self._has_black:
            lin = lin + self.black[v].to(x.device, x.dtype)[:, :, None, None] * self.gain(*x.shape[-2:], x.device, x.dtype)
        y = linear_to_srgb(lin.clamp(max=1.0))
        return (y + noise_std(y, sigma, floor) * eps.to(x.dtype)) * 2.0 - 1.0


# -- baselines ----------------------------------------------------------------------------

class ResnetGenerator(nn.Module):
    """CycleGAN's generator: c7s1-64, d128, d256, n x R256, u128, u64, c7s1-out (IN, reflect)."""

    def __init__(self, cin: int, cout: int, dim: int = 64, n_blocks: int = 9):
        super().__init__()
        layers = [ConvBlock(cin, dim, 7), ConvBlock(dim, dim * 2, 3, stride=2, pad="zero"),
                  ConvBlock(dim * 2, dim * 4, 3, stride=2, pad="zero")]
        layers += [ResBlock(dim * 4, "in") for _ in range(n_blocks)]
        layers += [nn.ConvTranspose2d(dim * 4, dim * 2, 3, 2, 1, output_padding=1, bias=False),
                   nn.InstanceNorm2d(dim * 2), nn.ReLU(True),
                   nn.ConvTranspose2d(dim * 2, dim, 3, 2, 1, output_padding=1, bias=False),
                   nn.InstanceNorm2d(dim), nn.ReLU(True), ConvBlock(dim, cout, 7, norm="none", act="tanh")]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN: C64-C128-C256-C512 (4x4; stride 2, 2, 2, 1), then a 1-channel 4x4 conv."""

    def __init__(self, cin: int, dim: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(cin, dim, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        d = dim
        for i in range(1, n_layers + 1):
            nd = dim * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(d, nd, 4, stride, 1, bias=False), nn.InstanceNorm2d(nd), nn.LeakyReLU(0.2, True)]
            d = nd
        layers.append(nn.Conv2d(d, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x) -> list[torch.Tensor]:
        return [self.net(x)]


def high_pass(x: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """x minus its Gaussian blur (``sigma`` px, reflect border): the fine detail of an image
    [B, C, H, W] without its colour and smooth shading."""
    half = int(2 * sigma)
    t = torch.arange(-half, half + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = (g / g.sum()).repeat(x.shape[1], 1)
    y = F.pad(x, (half,) * 4, mode="reflect")
    y = F.conv2d(y, g[:, None, None, :], groups=x.shape[1])
    y = F.conv2d(y, g[:, None, :, None], groups=x.shape[1])
    return x - y


class DetailDiscriminator(nn.Module):
    """A patch discriminator on the high-frequency band at full resolution (``high_pass``, x4
    so its amplitude is about that of an image): it can only judge tissue detail (vessels,
    grain, folds), never colour or shading. Two stride-2 4x4 convs and two 3x3 convs with leaky
    ReLU (receptive field 22 px). ``classes`` > 0: class-conditional, the class map enters as
    one-hot channels (ids >= classes and -1 = unknown give all zeros), so real and translated
    detail are compared class by class (OASIS-style conditioning, Schoenfeld et al. 2021)."""

    def __init__(self, dim: int = 32, classes: int = 0):
        super().__init__()
        self.classes = classes
        self.net = nn.Sequential(
            nn.Conv2d(3 + classes, dim, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(dim, 2 * dim, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * dim, 2 * dim, 3, 1, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * dim, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """x [B, 3, H, W] in [-1, 1], labels [B, H, W] class ids (class-conditional only) ->
        [scores [B, 1, H/4, W/4]]."""
        h = 4.0 * high_pass(x)
        if self.classes:
            if labels is None:
                raise ValueError("a class-conditional discriminator needs class maps")
            lab = labels.long()
            onehot = F.one_hot(lab.clamp(0, self.classes), self.classes + 1)[..., :self.classes]
            onehot = onehot * (lab >= 0)[..., None]
            h = torch.cat([h, onehot.permute(0, 3, 1, 2).to(h.dtype)], 1)
        return [self.net(h)]


class DCGANGenerator(nn.Module):
    """DCGAN's generator (Radford et al. 2016): z [B, nz] -> 4x4 by a transposed conv, then
    5 stride-2 4x4 transposed convs with batch norm and ReLU up to [B, 3, 128, 128], tanh."""

    SIZE = 128

    def __init__(self, nz: int, dim: int = 32):
        super().__init__()
        ch = [dim * 8, dim * 8, dim * 4, dim * 2, dim]
        layers = [nn.ConvTranspose2d(nz, ch[0], 4, 1, 0, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU(True)]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch[-1], 3, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """DCGAN's discriminator: 5 stride-2 4x4 convs (batch norm after all but the first, leaky
    ReLU 0.2) from 128^2 to 4x4, then a 4x4 conv to one logit per image."""

    def __init__(self, dim: int = 32):
        super().__init__()
        ch = [dim, dim * 2, dim * 4, dim * 8, dim * 8]
        layers = [nn.Conv2d(3, ch[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ch[-1], 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-2:] != (DCGANGenerator.SIZE, DCGANGenerator.SIZE):
            x = F.interpolate(x, size=(DCGANGenerator.SIZE,) * 2, mode="bilinear", align_corners=False)
        return [self.net(x).flatten(1)]


class UNetGenerator(nn.Module):
    """pix2pix U-Net: ``n_down`` stride-2 convs to 1x1... (fewer for small images), skip connections."""

    def __init__(self, cin: int, cout: int, dim: int = 64, n_down: int = 7):
        super().__init__()
        chans = [min(dim * 2 ** i, dim * 8) for i in range(n_down)]
        self.downs = nn.ModuleList()
        prev = cin
        for i, c in enumerate(chans):
            layers = [] if i == 0 else [nn.LeakyReLU(0.2, True)]
            layers.append(nn.Conv2d(prev, c, 4, 2, 1, bias=i == 0 or i == n_down - 1))
            if 0 < i < n_down - 1:
                layers.append(nn.InstanceNorm2d(c))
            self.downs.append(nn.Sequential(*layers))
            prev = c
        self.ups = nn.ModuleList()
        for i in reversed(range(n_down)):
            cin_up = chans[i] if i == n_down - 1 else chans[i] * 2
            c_out = cout if i == 0 else chans[i - 1]
            layers = [nn.ReLU(True), nn.ConvTranspose2d(cin_up, c_out, 4, 2, 1, bias=i == 0)]
            if i > 0:
                layers.append(nn.InstanceNorm2d(c_out))
                if i >= n_down - 3 and i < n_down - 1:
                    layers.append(nn.Dropout(0.5))
            else:
                layers.append(nn.Tanh())
            self.ups.append(nn.Sequential(*layers))

    def forward(self, x):
        skips = []
        for d in self.downs:
            x = d(x)
            skips.append(x)
        skips.pop()
        for u in self.ups:
            x = u(x)
            if skips:
                x = torch.cat([x, skips.pop()], 1)
        return x


def init_weights(module: nn.Module, gain: float = 0.02, generator: torch.Generator | None = None) -> None:
    """Gaussian N(0, gain) for convs and linears (pix2pix/CycleGAN/MUNIT 'gaussian' init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            with torch.no_grad():
                m.weight.normal_(0.0, gain, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
