"""What a run's start takes from the labelled real frames' class statistics: each class's
albedo (``real_class_albedo``) and the contrast of each class's detail layer
(``match_detail``), both fitted on the training views against the real frames' pixels of the
same class (unpaired: distributions, never a real frame matched to a view). Also the image
statistics they and ``metrics.realism`` share (L*a*b*, texture energy, interiors)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..layout import nchw_to_nhwc, nhwc_to_nchw, to_unit
from ..shading import linear_to_srgb, lit, srgb_to_linear


def lab(frames: torch.Tensor) -> torch.Tensor:
    """[..., H, W, 3] sRGB in [0, 1] -> CIE L*a*b* [..., H, W, 3] (kornia)."""
    import kornia
    x = frames.float().clamp(0, 1)
    flat = x.reshape(-1, *x.shape[-3:])
    return nchw_to_nhwc(kornia.color.rgb_to_lab(nhwc_to_nchw(flat))).reshape(x.shape)


def local_std(lum: torch.Tensor, k: int = 7) -> torch.Tensor:
    """Standard deviation of L* in k x k windows: [N, H, W] -> [N, H, W]."""
    x = lum[:, None]
    mean = F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="reflect"), k, 1)
    sq = F.avg_pool2d(F.pad(x * x, (k // 2,) * 4, mode="reflect"), k, 1)
    return (sq - mean * mean).clamp(min=0).sqrt()[:, 0]


def texture_energy(lum: torch.Tensor) -> torch.Tensor:
    """Surface texture of L* [N, H, W] -> [N, H, W]: the local std of its high-pass part.
    Subtracting a Gaussian blur (sigma 2 px) removes smooth shading, which a flat sim render
    has plenty of, so what is left is tissue detail: vessels, grain, folds."""
    import kornia
    x = lum[:, None]
    return local_std((x - kornia.filters.gaussian_blur2d(x, (13, 13), (2.0, 2.0), border_type="reflect"))[:, 0])


def interior(mask: torch.Tensor, k: int = 9) -> torch.Tensor:
    """[N, H, W] bool -> pixels whose k x k neighbourhood is all inside the mask, so texture
    windows never straddle an object's outline (an edge is not texture)."""
    return (-F.max_pool2d(-mask[:, None].float(), k, 1, k // 2))[:, 0] > 0.5


def _labelled(real, frames: int):
    """Up to ``frames`` labelled real frames spread over the set: (sRGB [H, W, 3] in [0, 1],
    labels [H, W] int64)."""
    idx = [i for i in range(len(real)) if real.label_paths[i] is not None]
    for i in idx[::max(1, len(idx) // frames)][:frames]:
        img, lbl = real.frame(i), real.label(i)
        if img is not None and lbl is not None:
            yield (torch.from_numpy(np.ascontiguousarray(img)).float() / 255.0,
                   torch.from_numpy(lbl.astype(np.int64)))


def _draw(rows: list, n: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.cat(rows)
    return x[torch.randint(len(x), (n,), generator=gen)]


def real_class_albedo(bank, real, views: int = 48, frames: int = 128, samples: int = 8192, steps: int = 200,
                      seed: int = 0) -> dict[int, list[float]]:
    """Per class id: the albedo (sRGB [3] in [0, 1]) with which the class's pixels in the
    training views (``bank``, at the exposure the model sees), shaded by their scope light
    (``shading.lit``), take the colours of the class's pixels in the labelled real frames.

    Fitted on ``samples`` pixels of each side per class by matching the sorted L*a*b* values of
    every channel (a 1-D Wasserstein-2 distance per channel, so the spread of light over the
    views counts, not just its mean), starting from the moment ratio (E[real] - E[specular]) /
    E[diffuse] in linear RGB; all classes in one batch; linear albedo kept in [0.005, 1].
    Classes absent from either side are left out."""
    from .detail_init import spread_views
    gen = torch.Generator().manual_seed(int(seed))
    real_px: dict[int, list] = {}
    for img, lbl in _labelled(real, frames):
        for c in lbl.unique().tolist():
            if c > 0:
                real_px.setdefault(c, []).append(img[lbl == c])
    light: dict[int, list] = {}
    with torch.no_grad():
        for _, _, buf in spread_views(bank, views):
            lbl, li = buf.labels[0].cpu(), buf.light[0].cpu().float()
            for c in lbl.unique().tolist():
                if c > 0:
                    light.setdefault(c, []).append(li[lbl == c])
    classes = sorted(set(real_px) & set(light))
    if not classes:
        return {}
    want_srgb = torch.stack([_draw(real_px[c], samples, gen) for c in classes])        # [K, N, 3]
    li = torch.stack([_draw(light[c], samples, gen) for c in classes])                 # [K, N, 2]
    want = torch.sort(lab(want_srgb[:, :, None, :]), 1)[0]
    start = (srgb_to_linear(want_srgb).mean(1) - li[..., 1:].mean(1)) / li[..., :1].mean(1).clamp(min=1e-3)
    log_a = torch.nn.Parameter(start.clamp(0.005, 1.0).log())                         # [K, 3]
    opt = torch.optim.Adam([log_a], lr=0.05)
    for _ in range(steps):
        with torch.enable_grad():      # callers may run under no_grad
            got = linear_to_srgb(lit(log_a.exp()[:, None, :], li).clamp(0, 1))
            loss = ((torch.sort(lab(got[:, :, None, :]), 1)[0] - want) ** 2).mean(1).sum()
            opt.zero_grad()
            loss.backward()
        opt.step()
        with torch.no_grad():
            log_a.clamp_(np.log(0.005), 0.0)
    return {c: linear_to_srgb(a).tolist() for c, a in zip(classes, log_a.detach().exp())}


@torch.no_grad()
def _class_texture(acc: dict, srgb: torch.Tensor, labels: torch.Tensor) -> None:
    """acc[c] += (texture energy summed over class c's interior pixels, their count); srgb
    [N, H, W, 3], labels [N, H, W]."""
    tex = texture_energy(lab(srgb)[..., 0])
    for c in labels.unique().tolist():
        if c > 0:
            inner = interior(labels == c)
            a = acc.setdefault(c, [0.0, 0])
            a[0] += float(tex[inner].double().sum())
            a[1] += int(inner.sum())


@torch.no_grad()
def _with_detail(base: torch.Tensor, layer: torch.Tensor, labels: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """base [B, H, W, 3] linear RGB times exp(layer [B, H, W, 3] x the gain of each pixel's
    class (``gains`` [n classes], labels [B, H, W])) -> sRGB [B, H, W, 3]."""
    g = gains.to(layer.device)[labels.clamp(min=0, max=len(gains) - 1)][..., None]
    return linear_to_srgb((base * (layer * g).clamp(-3, 3).exp()).clamp(0, 1))


@torch.no_grad()
def _views_with_layer(bank, textures: dict, albedo: bool, views: int, only: list[str] | None) -> list:
    """``views`` training views as (base linear RGB [1, H, W, 3], detail layer [1, H, W, 3],
    labels [1, H, W]) on the CPU: the base is the image the generator starts from (the
    textured render with albedo textures, else the sim render); labels are 0 outside the
    objects ``only`` (when given)."""
    from .detail_init import spread_views
    out = []
    for _, sc, buf in spread_views(bank, views):
        if sc.anatomy not in textures:
            continue
        feats = textures[sc.anatomy].sample(buf, sc)
        base = lit(srgb_to_linear(to_unit(feats[..., :3]).clamp(0, 1)), buf.light.float()) if albedo \
            else srgb_to_linear(buf.sim_rgb.float())
        labels = buf.labels
        if only is not None:
            mine = torch.tensor([o.name in only for o in sc.objects] + [False], device=labels.device)
            labels = torch.where(mine[buf.object_ids], labels, torch.zeros_like(labels))
        out.append((base.cpu(), feats[..., -3:].float().cpu(), labels.cpu()))
    return out


@torch.no_grad()
def match_detail(bank, real, textures: dict, albedo: bool, views: int = 48, frames: int = 128, rounds: int = 2,
                 limits: tuple[float, float] = (0.25, 4.0), only: list[str] | None = None) -> dict[int, float]:
    """Scale every object's detail layer (``TextureSet.detail``) by one gain per class, so that
    the class's texture energy (``texture_energy`` of L*, what ``class_texture_log_ratio``
    compares) in ``views`` training views rendered with it — the base image times the layer —
    matches its texture in the labelled real frames. The layer is drawn from real detail, but
    sampling it (texel size, prefiltering) and the base's colour change its contrast in the
    render, so the contrast is measured where it is seen.

    The base's own texture (shading, small geometry) and the layer's add roughly like
    independent signals, E(g)^2 = E(0)^2 + g^2 E1^2, so the gain is solved from E(0) and E(g),
    then refined ``rounds`` times; each is kept in ``limits`` (the lower limit where the base
    alone is already as textured as the real class). Each scaled layer is re-centred so
    exp(layer) keeps averaging 1. ``textures``: anatomy -> TextureSet; ``only``: scale just
    these objects' layers (measured on their pixels alone). Returns {class id: gain}."""
    from .detail_init import _unbiased
    want: dict = {}
    for img, lbl in _labelled(real, frames):
        _class_texture(want, img[None], lbl[None])
    n = 1 + max([c for sc in bank.scenes for c in sc.class_names()] + [0])
    seen = _views_with_layer(bank, textures, albedo, views, only)

    def energy(gains: torch.Tensor) -> dict:
        acc: dict = {}
        for base, layer, labels in seen:
            _class_texture(acc, _with_detail(base, layer, labels, gains), labels)
        return {c: a[0] / a[1] for c, a in acc.items() if c in want and min(a[1], want[c][1]) >= 500}

    e0 = energy(torch.zeros(n))
    gains = torch.ones(n)
    for _ in range(1 + rounds):
        eg = energy(gains)
        for c, e in eg.items():
            target = want[c][0] / want[c][1]
            layer_sq = (e ** 2 - e0.get(c, 0.0) ** 2) / max(float(gains[c]) ** 2, 1e-6)
            if layer_sq > 1e-12:
                g = np.sqrt(max(target ** 2 - e0.get(c, 0.0) ** 2, 0.0) / layer_sq)
                gains[c] = float(np.clip(g, *limits))
    for anatomy, tset in textures.items():
        cls = {o.name: o.class_id for sc in bank.anatomies().get(anatomy, []) for o in sc.objects}
        for name, t in tset.detail.items():
            c = cls.get(name)
            if c is not None and c < n and gains[c] != 1.0 and (only is None or name in only):
                top = t.levels[0]
                for a in range(top.shape[0]):
                    top[a] = _unbiased(top[a].float() * gains[c]).to(top.dtype)
    return {c: float(gains[c]) for c in range(1, n) if gains[c] != 1.0}
