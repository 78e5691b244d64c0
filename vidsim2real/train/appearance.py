"""What a run's start takes from the labelled real frames' class statistics: each class's
albedo (``real_class_albedo``), the contrast of each class's detail layer (``match_detail``)
and the camera's noise, field, blur, black level and colour casts (``real_noise``, ``real_field``,
``real_blur``, ``real_black``, ``real_cast``), fitted
on the training views against the real frames' pixels of the same class (unpaired:
distributions, never a real frame matched to a view). Also the image statistics they and
``metrics.realism`` share (L*a*b*, texture energy, interiors)."""
from __future__ import annotations

import functools
import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ..layout import nchw_to_nhwc, nhwc_to_nchw, to_unit
from ..shading import linear_to_srgb, lit, srgb_to_linear
from ..texture.cells import BORDER_WIDTHS
from ..translate.networks import (BLACK_ROWS, FIELD_KNOTS, GLOSS_CLASSES, NOISE_FLOOR, chroma_fit,
                                  coarse_centred, coarse_chroma_moments, coarse_samples, curve_fit, field_gain, lens_blur,
                                  level_fit, noise_std, radius2, soften_edges)


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


def _labelled_native(real, frames: int):
    """As ``_labelled``, at the footage's own resolution (``RealFrames.native``)."""
    idx = [i for i in range(len(real)) if real.label_paths[i] is not None]
    for i in idx[::max(1, len(idx) // frames)][:frames]:
        img, lbl = real.native(i)
        if img is not None and lbl is not None:
            yield (torch.from_numpy(np.ascontiguousarray(img)).float() / 255.0,
                   torch.from_numpy(lbl.astype(np.int64)))


def _draw(rows: list, n: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.cat(rows)
    return x[torch.randint(len(x), (n,), generator=gen)]


@torch.no_grad()
def _class_samples(bank, real, views: int, frames: int, textures: dict | None, field: torch.Tensor | None,
                   white: bool, geometry: bool = False) -> tuple[list, dict, dict]:
    """Per class id, the labelled real frames' pixels (sRGB [n, 3]) and the training views'
    pixels as rows [n, 8] (diffuse light, specular light, the diffuse term's multiplier
    exp(layer) x field (3), the specular term's (3): the field, and the layer unless ``white``);
    with ``geometry`` also [n, 3] more: falloff x exposure, n.l and the ambient term x exposure
    (``real_gloss``, ``real_diffuse``). Returns (classes on both sides, real pixels, view rows)."""
    from .detail_init import spread_views
    real_px: dict[int, list] = {}
    for img, lbl in _labelled(real, frames):
        for c in lbl.unique().tolist():
            if c > 0:
                real_px.setdefault(c, []).append(img[lbl == c])
    light: dict[int, list] = {}
    ones = torch.full((GLOSS_CLASSES, 3), 1.0)              # k_s 1, s 1, m 1 (Lambert)
    for renderer, sc, buf in spread_views(bank, views):
        lbl, li = buf.labels[0].cpu(), buf.light[0].cpu().float()
        layer, gain = torch.ones(*li.shape[:-1], 3), torch.ones(*li.shape[:-1], 3)
        if textures is not None and sc.anatomy in textures:
            layer = textures[sc.anatomy].sample(buf, sc)[0, ..., -3:].float().cpu().clamp(-3, 3).exp()
        if field is not None:
            gain = gain * field_gain(field.float().cpu(), *li.shape[:2])[..., None]
        rows = [li, layer * gain, gain if white else layer * gain]
        if geometry:                       # k_s = 1: the specular term is falloff (s = 0), falloff x n.l (s = 1)
            fall = renderer.light(buf, gloss=ones * torch.tensor([1.0, 0.0, 1.0]))[0, ..., 1:].cpu().float()
            lam = renderer.light(buf, gloss=ones)[0].cpu().float()      # (falloff x n.l + ambient, falloff x n.l)
            rows += [fall, lam[..., 1:] / fall.clamp(min=1e-12), lam[..., :1] - lam[..., 1:]]
        li = torch.cat(rows, -1)
        for c in lbl.unique().tolist():
            if c > 0:
                light.setdefault(c, []).append(li[lbl == c])
    return sorted(set(real_px) & set(light)), real_px, light


def _fit_albedo(want_srgb: torch.Tensor, li: torch.Tensor, mult: torch.Tensor, mult_s: torch.Tensor,
                steps: int) -> torch.Tensor:
    """The log linear albedo [K, 3] with which K classes' view pixels (light li [K, N, 2],
    multipliers of the diffuse and specular terms [K, N, 3] each) take the sorted L*a*b*
    values of the real pixels ``want_srgb`` [K, N, 3] channel by channel (Adam on the 1-D
    Wasserstein-2 distances), starting from the moment ratio; kept in [0.005, 1]."""
    want = torch.sort(lab(want_srgb[:, :, None, :]), 1)[0]
    start = (srgb_to_linear(want_srgb).mean(1) - li[..., 1:].mean(1)) / li[..., :1].mean(1).clamp(min=1e-3)
    log_a = torch.nn.Parameter(start.clamp(0.005, 1.0).log())                         # [K, 3]
    opt = torch.optim.Adam([log_a], lr=0.05)
    for _ in range(steps):
        with torch.enable_grad():      # callers may run under no_grad
            got = _rendered(log_a.exp(), li, mult, mult_s)
            loss = ((torch.sort(lab(got[:, :, None, :]), 1)[0] - want) ** 2).mean(1).sum()
            opt.zero_grad()
            loss.backward()
        opt.step()
        with torch.no_grad():
            log_a.clamp_(np.log(0.005), 0.0)
    return log_a.detach()


def _rendered(albedo: torch.Tensor, li: torch.Tensor, mult: torch.Tensor, mult_s: torch.Tensor) -> torch.Tensor:
    """sRGB [K, N, 3] of linear albedos [K, 3] under li [K, N, 2] with the terms' multipliers."""
    return linear_to_srgb((albedo[:, None, :] * li[..., :1] * mult + li[..., 1:] * mult_s).clamp(0, 1))


def real_class_albedo(bank, real, views: int = 48, frames: int = 128, samples: int = 8192, steps: int = 200,
                      seed: int = 0, textures: dict | None = None,
                      field: torch.Tensor | None = None, white: bool = False) -> dict[int, list[float]]:
    """Per class id: the albedo (sRGB [3] in [0, 1]) with which the class's pixels in the
    training views (``bank``, at the exposure the model sees), shaded by their scope light
    (``shading.lit``), take the colours of the class's pixels in the labelled real frames.

    Fitted on ``samples`` pixels of each side per class by matching the sorted L*a*b* values of
    every channel (a 1-D Wasserstein-2 distance per channel, so the spread of light over the
    views counts, not just its mean), starting from the moment ratio (E[real] - E[specular]) /
    E[diffuse] in linear RGB; all classes in one batch; linear albedo kept in [0.005, 1].
    ``textures`` (anatomy -> TextureSet with a detail layer): the views are seen times their
    detail layer, exp(layer), as the translator starts (a multiplicative pattern of mean 1 in
    linear RGB still darkens the mean L*, and its bright texels clip); ``field`` [K]: and times
    the camera's lens field (``networks.field_gain``), darker towards the corners; ``white``:
    the specular term is added after the layer, untouched by it (``model.specular: white``).
    Classes absent from either side are left out."""
    gen = torch.Generator().manual_seed(int(seed))
    classes, real_px, light = _class_samples(bank, real, views, frames, textures, field, white)
    if not classes:
        return {}
    want_srgb = torch.stack([_draw(real_px[c], samples, gen) for c in classes])        # [K, N, 3]
    li = torch.stack([_draw(light[c], samples, gen) for c in classes])                 # [K, N, 8]
    log_a = _fit_albedo(want_srgb, li[..., :2], li[..., 2:5], li[..., 5:8], steps)
    return {c: linear_to_srgb(a).tolist() for c, a in zip(classes, log_a.detach().exp())}


GLOSS_STRENGTHS = (0.1, 0.25, 0.5, 1.0)      # specular strengths k_s tried per class ...
GLOSS_SHININESS = (10.0, 40.0, 160.0)        # ... with each of these exponents
GLOSS_TIE = 2.0              # a gloss replaces the scene's only where it is closer by this many noise levels


def sliced_lab_distance(a_srgb: torch.Tensor, b_srgb: torch.Tensor, directions: int = 32, seed: int = 0) -> torch.Tensor:
    """Sliced Wasserstein-2 distance in L*a*b* between K pairs of pixel sets of equal size:
    [K, N, 3] sRGB each -> [K]: the root mean square over ``directions`` unit directions (the
    three axes and random ones) of the sorted projections' distance. Unlike a distance per
    channel it sees how colour goes with lightness (a white highlight on red tissue)."""
    g = torch.Generator().manual_seed(seed)
    d = torch.cat([torch.eye(3), torch.nn.functional.normalize(torch.randn(max(directions - 3, 0), 3, generator=g), dim=1)])
    pa = torch.sort(lab(a_srgb[:, :, None, :])[:, :, 0] @ d.T, 1)[0]
    pb = torch.sort(lab(b_srgb[:, :, None, :])[:, :, 0] @ d.T, 1)[0]
    return ((pa - pb) ** 2).mean((1, 2)).sqrt()


@torch.no_grad()
def real_gloss(bank, real, textures: dict | None = None, field: torch.Tensor | None = None, white: bool = False,
               views: int = 48, frames: int = 128, samples: int = 8192, steps: int = 150,
               seed: int = 0) -> tuple[dict[int, tuple[float, float]], dict[int, tuple[float, float]]]:
    """Per class id: the specular strength k_s and shininess s (``shading.class_gloss``) with
    which the class's pixels in the training views, each with the albedo fitted for that gloss
    (``real_class_albedo``'s fit: views as the translator starts, layer and field on), come
    closest in colour to the class's pixels in the labelled real frames: the least
    ``sliced_lab_distance`` over ``GLOSS_STRENGTHS`` x ``GLOSS_SHININESS``, taken only where it
    is below the scene's own gloss's by more than ``GLOSS_TIE`` x the distance between two
    draws of the real pixels themselves (what sampling alone gives: a smaller gain is a tie). Wet tissue differs in how much of it
    shines and how sharply (a liver's narrow white streaks against a dull wall); the sim gives
    every class the scene's one highlight. Unpaired: distributions per class, the real frames'
    colours only. Returns ({class id: (k_s, s)} for the classes that changed, {class id:
    (distance with the scene's gloss, with the chosen one)})."""
    gen = torch.Generator().manual_seed(int(seed))
    classes, real_px, light = _class_samples(bank, real, views, frames, textures, field, white, geometry=True)
    classes = [c for c in classes if c < GLOSS_CLASSES]          # what a model's gloss table holds
    if not classes:
        return {}, {}
    want = torch.stack([_draw(real_px[c], samples, gen) for c in classes])             # [K, N, 3]
    li = torch.stack([_draw(light[c], samples, gen) for c in classes])                 # [K, N, 11]
    mult, mult_s, fall, ndl = li[..., 2:5], li[..., 5:8], li[..., 8:9], li[..., 9:10].clamp(0, 1)

    def distance(spec: torch.Tensor) -> torch.Tensor:
        lk = torch.cat([li[..., :1], spec], -1)
        return sliced_lab_distance(_rendered(_fit_albedo(want, lk, mult, mult_s, steps).exp(), lk, mult, mult_s), want)

    noise = sliced_lab_distance(torch.stack([_draw(real_px[c], samples, gen) for c in classes]), want)
    return _best_per_class(classes, distance(li[..., 1:2]), noise,
                           {(ks, sh): distance(fall * ks * ndl ** sh) for ks in GLOSS_STRENGTHS for sh in GLOSS_SHININESS})


DIFFUSE_EXPONENTS = (0.5, 1.5, 2.0, 3.0)      # diffuse exponents m tried per class (1: Lambert, the scene's)


@torch.no_grad()
def real_diffuse(bank, real, textures: dict | None = None, field: torch.Tensor | None = None, white: bool = False,
                 views: int = 48, frames: int = 128, samples: int = 8192, steps: int = 150,
                 seed: int = 0) -> tuple[dict[int, float], dict[int, tuple[float, float]]]:
    """Per class id: the diffuse exponent m (``shading.scope_light_buffer``: falloff x (n.l)^m)
    with which the class's pixels in the training views, each with the albedo fitted for it (as
    ``real_gloss`` does), come closest in colour to the class's pixels in the labelled real
    frames: the least ``sliced_lab_distance`` over ``DIFFUSE_EXPONENTS``, taken only where it
    is below Lambert's (m = 1) by more than ``GLOSS_TIE`` x the distance between two draws of
    the real pixels. Tissue differs in how fast it darkens towards grazing angles (the real
    liver spreads from near black to bright where a Lambert liver stays mid-tone); the sim
    shades every class alike. Unpaired: distributions per class, the real frames' colours only.
    Returns ({class id: m} for the classes that changed, {class id: (distance at m = 1, at
    the chosen m)})."""
    gen = torch.Generator().manual_seed(int(seed))
    classes, real_px, light = _class_samples(bank, real, views, frames, textures, field, white, geometry=True)
    classes = [c for c in classes if c < GLOSS_CLASSES]
    if not classes:
        return {}, {}
    want = torch.stack([_draw(real_px[c], samples, gen) for c in classes])             # [K, N, 3]
    li = torch.stack([_draw(light[c], samples, gen) for c in classes])                 # [K, N, 11]
    mult, mult_s, fall, ndl, amb = li[..., 2:5], li[..., 5:8], li[..., 8:9], li[..., 9:10].clamp(0, 1), li[..., 10:11]

    def distance(m: float) -> torch.Tensor:
        lk = torch.cat([fall * ndl ** m + amb, li[..., 1:2]], -1)
        return sliced_lab_distance(_rendered(_fit_albedo(want, lk, mult, mult_s, steps).exp(), lk, mult, mult_s), want)

    noise = sliced_lab_distance(torch.stack([_draw(real_px[c], samples, gen) for c in classes]), want)
    return _best_per_class(classes, distance(1.0), noise, {m: distance(m) for m in DIFFUSE_EXPONENTS})


def _best_per_class(classes: list, own: torch.Tensor, noise: torch.Tensor, tried: dict) -> tuple[dict, dict]:
    """{class: the candidate key with the least distance} where it beats ``own`` by more than
    GLOSS_TIE x ``noise`` (per class [K] each; ``tried``: key -> distances [K]), and {class:
    (own distance, best distance)}."""
    best = own.clone()
    choice: dict = {}
    for key, d in tried.items():
        for k, c in enumerate(classes):
            if d[k] < best[k] and d[k] < own[k] - GLOSS_TIE * noise[k]:
                best[k] = d[k]
                choice[c] = key
    return choice, {c: (float(own[k]), float(best[k])) for k, c in enumerate(classes)}


@torch.no_grad()
def translated_class_albedo(bank, real, colours: dict, translate, apply, rounds: int = 3, views: int = 48,
                            frames: int = 128, limits: tuple[float, float] = (0.001, 1.0),
                            statistic: str = "mean") -> tuple[dict, list]:
    """Close the loop on the class colours: correct ``colours`` {class id: albedo sRGB [3] in
    [0, 1]} (``real_class_albedo``'s fit) until the model's own translations of ``views``
    training views have, class by class, the mean L*a*b* colour of the class's pixels in the
    labelled real frames. The fit matches each channel's distribution through a model of the
    translator (render, layer, field), which one albedo per class cannot do exactly; the mean
    colour of the generator's actual output (its colour network, clipping, the style, sensor
    noise included) is what ``class_delta_e`` compares. Unpaired: the class means of two sets,
    never a real frame matched to a view.

    ``translate(renderer, scene, buf, k)`` -> [1, H, W, 3] sRGB in [0, 1]: the translation of
    view k (its own style); ``apply(colours)`` puts colours into the textures. Each round
    multiplies a class's linear albedo, per channel, by the ratio of the real mean colour to
    the translated one (both as linear RGB of their mean L*a*b*), kept in ``limits``: a fixed
    point iteration, exact where the translator is linear in the albedo. Classes absent from
    either side keep their colour. Returns (the colours, the pixel-weighted class ΔE of the
    translations before each round and after the last).

    ``statistic`` "median": the per-channel median L*a*b* of each class's pixels on both sides
    instead of the mean (the returned ΔE too): the tissue's body colour, which a bright tail
    the views lack (specular streaks) does not pull up. "relative": each class's colour against
    the classes beside it in the same frames (``_relative_colour``; the ΔE too), which does not
    depend on how close the two sets' views see it."""
    from .detail_init import spread_views
    want = _class_colour(_labelled(real, frames), statistic)
    todo = list(spread_views(bank, views))           # rendered once, translated every round
    colours = {c: list(v) for c, v in colours.items()}
    history = []
    for r in range(rounds + 1):
        got = _class_colour(((translate(renderer, sc, buf, k)[0].float().cpu(), buf.labels[0].cpu())
                             for k, (renderer, sc, buf) in enumerate(todo)), statistic)
        both = sorted(c for c in set(want) & set(got) & set(colours))
        if not both:
            break
        means = torch.stack([got[c][0] for c in both])
        goal = torch.stack([want[c][0] for c in both])
        n = torch.tensor([float(got[c][1]) for c in both], dtype=torch.float64)
        history.append(float(((means - goal).norm(dim=1) * n).sum() / n.sum()))
        if r == rounds:
            break
        ratio = _lab_to_linear(goal) / _lab_to_linear(means).clamp(min=1e-4)
        for c, q in zip(both, ratio):
            a = srgb_to_linear(torch.tensor(colours[c], dtype=torch.float32)) * q.float()
            colours[c] = linear_to_srgb(a.clamp(*limits)).tolist()
        apply(colours)
    return colours, history


def _class_colour(frames, statistic: str = "mean", min_pixels: int = 500, keep: int = 65536) -> dict:
    """Per class id of frames [(sRGB [H, W, 3], labels [H, W])]: (its colour, L*a*b* [3]
    float64: the mean of its pixels, or with ``statistic`` "median" the per-channel median of
    up to ``keep`` of them taken evenly, or with "relative" ``_relative_colour``; pixel count);
    classes under ``min_pixels`` left out."""
    from .detail_init import add_class_sums
    if statistic == "relative":
        return _relative_colour(list(frames), min_pixels)
    sums: dict = {}
    px: dict = {}
    for img, lbl in frames:
        L = lab(img)
        add_class_sums(sums, lbl, L)
        if statistic == "median":
            for c in lbl.unique().tolist():
                if c > 0:
                    px.setdefault(c, []).append(L[lbl == c].double())
    out = {}
    for c, (s, n) in sums.items():
        if n < min_pixels:
            continue
        if statistic == "median":
            x = torch.cat(px[c])
            x = x[torch.linspace(0, len(x) - 1, min(keep, len(x))).long()]
            out[c] = (x.median(0).values, n)
        else:
            out[c] = (s / n, n)
    return out


GRADE_GAINS = (0.25, 2.0)     # the residual chroma gain a class grade may take
GRADE_FRAMES = 16             # frames a class must be seen in, on each side, to be graded


def class_chroma_moments(frames, min_pixels: int = 300, samples: dict | None = None,
                         means: dict | None = None) -> dict[int, tuple[torch.Tensor, int]]:
    """Per class id of frames [(sRGB [H, W, 3] in [0, 1], labels [H, W])]: the pooled
    within-frame moments of its coarse band (``networks.coarse_chroma_moments`` [6]) over the
    frames that show it on at least ``min_pixels`` pixels, and how many frames those are. With
    ``samples`` (a dict), each such frame's ``networks.coarse_samples`` [N, 3] are appended to
    ``samples[class id]`` as well (drawn reproducibly); with ``means``, its mean L*a*b* [3] to
    ``means[class id]``."""
    acc: dict[int, tuple[torch.Tensor, int]] = {}
    gen = torch.Generator().manual_seed(0)
    for img, lbl in frames:
        L = nhwc_to_nchw(lab(img[None]))
        ids, counts = lbl.unique(return_counts=True)
        for c, n in zip(ids.tolist(), counts.tolist()):
            if c > 0 and n >= min_pixels:
                mask = (lbl == c)[None].to(L.device)
                d = coarse_centred(L, mask)       # one blur per class and frame for both
                m, k = acc.get(c, (0, 0))
                acc[c] = (m + coarse_chroma_moments(L, mask, centred=d), k + 1)
                if samples is not None:
                    samples.setdefault(c, []).append(coarse_samples(L, mask, gen=gen, centred=d).cpu())
                if means is not None:
                    means.setdefault(c, []).append(L[0][:, mask[0]].mean(1).cpu())
    return acc


def real_grade(real, ours, frames: int = 128, limits: tuple[float, float] = GRADE_GAINS,
               min_frames: int | None = None, curve: bool = False, level: bool = False
               ) -> tuple[dict, dict, dict, dict]:
    """``model.grade: real``: per class id, how its chroma varies across it in the labelled
    real frames against the model's own translations ``ours`` (frames [(sRGB [H, W, 3],
    labels [H, W])] of training views): the rows of ``networks.ClassGrade`` (s_a, s_b: the
    slopes of a* and b* on L* in the coarse band of ours; t_a, t_b: of the real frames; g_a,
    g_b: the real residual chroma std over ours, kept in ``limits``). Unpaired: each side's
    class statistics pooled over its frames, each frame less its own mean. Classes seen in
    fewer than ``min_frames`` (None: ``GRADE_FRAMES``) frames on either side get no row (a few frames' shading is not
    the class's). ``curve`` (``model.grade: curve``): also each class's ``networks.curve_fit``
    knots, ours then the real ones ([6, GRADE_KNOTS]), and the gains about those curves instead
    of the lines. ``level`` (``model.grade_level``): also each graded class's
    ``networks.level_fit`` row, how its mean a* and b* per frame follow its mean L* across
    frames, ours and the real frames'. Returns (rows, {class id: (real, ours) ``chroma_fit``
    tuples and the two frame counts}, curves ({} without ``curve``), levels ({} without
    ``level``))."""
    want_s, got_s = ({}, {}) if curve else (None, None)
    want_m, got_m = ({}, {}) if level else (None, None)
    want = class_chroma_moments(_labelled(real, frames), samples=want_s, means=want_m)
    got = class_chroma_moments(ours, samples=got_s, means=got_m)
    rows, fits, curves, levels = {}, {}, {}, {}
    for c in sorted(set(want) & set(got)):
        (mw, kw), (mg, kg) = want[c], got[c]
        t, s = chroma_fit(mw), chroma_fit(mg)
        fits[c] = (t, s, kw, kg)
        if min(kw, kg) < (GRADE_FRAMES if min_frames is None else min_frames):
            continue
        spread_t, spread_s = t[2:], s[2:]
        if curve:
            (kt, spread_t), (ks, spread_s) = (curve_fit(torch.cat(x[c])) for x in (want_s, got_s))
            curves[c] = torch.cat([ks, kt])
        gains = [min(max(rt / max(rs, 1e-6), limits[0]), limits[1]) for rt, rs in zip(spread_t, spread_s)]
        rows[c] = (s[0], s[1], t[0], t[1], *gains)
        if level:
            levels[c] = level_fit(torch.stack(got_m[c]), torch.stack(want_m[c]))
    return rows, fits, curves, levels

def _lab_to_linear(lab_: torch.Tensor) -> torch.Tensor:
    """L*a*b* colours [N, 3] -> linear RGB [N, 3] (float32; out-of-gamut clipped)."""
    import kornia
    return srgb_to_linear(kornia.color.lab_to_rgb(lab_.float()[:, :, None, None], clip=True)[:, :, 0, 0])


def _relative_colour(frames: list, min_pixels: int = 500) -> dict:
    """Per class id: (L*a*b* [3] float64, pixel count), the class's own colour from
    ``class_frame_fit`` — what is left of its frames' mean colour once each frame's common grey
    factor (distance, exposure: what it did to all its classes at once) is taken out; a
    per-channel factor would also hand a class's hue to the classes it is seen with — brought to
    the set's overall level: the pixel-weighted mean log over classes equals that of their pooled
    means. Two sets whose views see a class from other distances (a liver seen from afar in one,
    close in the other) then still agree on how it compares with the classes beside it, where
    pooled means would not. Classes never shown on ``min_pixels`` in one frame keep their pooled
    mean."""
    import kornia
    pooled = _class_colour(frames, "mean", min_pixels)
    own = class_frame_fit(frames, min_pixels, grey=True)[0]
    both = sorted(c for c in pooled if c in own)
    if not both:
        return pooled
    log_pooled = torch.log(_lab_to_linear(torch.stack([pooled[c][0] for c in both])).double().clamp(min=1e-6))
    mine = torch.stack([own[c] for c in both])
    w = torch.tensor([float(pooled[c][1]) for c in both], dtype=torch.float64)[:, None]
    level = ((log_pooled - mine) * w).sum(0) / w.sum()
    rgb = linear_to_srgb(torch.exp(mine + level).clamp(0, 1).float())
    labs = kornia.color.rgb_to_lab(rgb[:, :, None, None])[:, :, 0, 0].double()
    return {**pooled, **{c: (labs[i], pooled[c][1]) for i, c in enumerate(both)}}


@torch.no_grad()
def real_black(real, gain=None, frames: int = 128, rows: int = BLACK_ROWS, min_frames: int = 4,
               min_share: float = 0.003) -> torch.Tensor | None:
    """The real footage's black levels from the background (label 0) of the labelled real
    frames: [rows, 3], per row a linear-light pedestal (r, g, b).

    A camera lifts its blacks by flare and its black offset, which differ from clip to clip; a
    rendered background is exactly 0. Per frame (``RealFrames.native``: at the footage's own
    resolution), the background away from every object (the label map's 0 eroded by a 40th of
    the shorter side, at least 2 px; skipped where less than ``min_share`` of the frame is left)
    gives the per-channel median of its linear light divided by the lens's gain there
    (``gain(H, W)`` -> [H, W], the camera's lens field and vignetting; None: 1). The frames,
    ordered by their mean pedestal, are resampled at ``rows`` evenly spaced quantiles, so rows
    drawn at random have the footage's spread. None when fewer than ``min_frames`` frames show
    enough background (or none has a label map)."""
    got = []
    for img, lbl in _labelled_native(real, frames):
        H, W = lbl.shape
        r = max(2, min(H, W) // 40)
        objects = (lbl != 0).float()[None, None]
        bg = F.max_pool2d(F.pad(objects, (r,) * 4, value=1.0), 2 * r + 1, 1)[0, 0] == 0
        if bg.float().mean() < min_share:
            continue
        g = gain(H, W).to(img) if gain is not None else torch.ones(H, W)
        got.append((srgb_to_linear(img)[bg] / g[bg][:, None]).median(dim=0).values)
    if len(got) < min_frames:
        return None
    got = torch.stack(got)
    got = got[got.mean(1).argsort()]
    at = ((torch.arange(rows) + 0.5) / rows * len(got)).long().clamp(max=len(got) - 1)
    return got[at]


NEAR_CLIP = 235.0 / 255.0    # sRGB: a pixel with a channel this high is at (or next to) the sensor's clip
PROTECT_SHARES = (0.5, 0.3, 0.2, 0.1, 0.05)   # protect levels tried: those that lower this share of the views
PROTECT_TIE = 0.9            # a level replaces exposure 1 only where its distance is below this share of 1's


def clip_share(srgb: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Of one frame's labelled pixels (labels [H, W] > 0; srgb [H, W, 3] in [0, 1]), the share
    with a channel at or above NEAR_CLIP; None when it shows no labelled pixel."""
    m = labels > 0
    return float((srgb[m].max(-1).values >= NEAR_CLIP).float().mean()) if m.any() else None


def _w1(a: list[float], b: list[float], points: int = 256) -> float:
    """The 1-Wasserstein distance between two samples of numbers (their quantile functions
    compared at ``points`` levels)."""
    q = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    return float((torch.quantile(torch.tensor(a, dtype=torch.float64), q)
                  - torch.quantile(torch.tensor(b, dtype=torch.float64), q)).abs().mean())


@torch.no_grad()
def real_protect(bank, real, translate, set_level, views: int = 96, frames: int = 128,
                 shares: tuple[float, ...] = PROTECT_SHARES) -> tuple[float, dict]:
    """``model.exposure: protect``: the highlight level at which the model's translations of the
    training views clip as often as the labelled real frames do. Per frame, the share of its
    labelled pixels with a channel at or above NEAR_CLIP (``clip_share``); the distance of two
    sets is the 1-Wasserstein distance of those per-frame shares (unpaired).

    A real scope lowers its exposure when tissue comes close and its highlights would burn
    out; a render at exposure 1 does not, so close views clip over more of the frame than real
    ones. The levels tried are the views' own highlight quantiles (``Renderer.metered``: the sim
    render at exposure 1) above which ``shares`` of them lie, i.e. levels that lower that share
    of the views; ``set_level(level)`` (0: exposure 1) sets the model's level and
    ``translate(renderer, scene, buf, k)`` -> [1, H, W, 3] sRGB translates view k with it.
    Returns (the level: 0 unless one is closer than PROTECT_TIE x exposure 1's distance to the
    real frames, {level: distance} for every level tried)."""
    from .detail_init import spread_views
    want = [v for v in (clip_share(img, lbl) for img, lbl in _labelled(real, frames)) if v is not None]
    todo = list(spread_views(bank, views))           # rendered once, translated at every level
    high = torch.tensor([float(r.metered(int(b.frames[0]))[int(b.frames[0]), 1]) for r, _, b in todo])
    tried: dict[float, float] = {}
    for level in [0.0] + [float(torch.quantile(high, 1.0 - s)) for s in shares]:
        set_level(level)
        got = [clip_share(translate(r, sc, b, k)[0].float().cpu(), b.labels[0].cpu()) for k, (r, sc, b) in enumerate(todo)]
        tried[level] = _w1([g for g in got if g is not None], want) if want else float("nan")
    best = min(tried, key=lambda k: tried[k])
    level = best if tried[best] < PROTECT_TIE * tried[0.0] else 0.0
    set_level(level)
    return level, tried


def frame_casts(frames, min_pixels: int = 500, rounds: int = 5) -> torch.Tensor:
    """The colour cast of each labelled frame [(sRGB [H, W, 3], labels [H, W])]: [N, 3] log gains
    (r, g, b) in linear light, one per frame showing a class of ``min_pixels`` or more; their
    mean over frames is 0.

    The log of a class's mean linear light in a frame is taken as the class's own colour plus the
    frame's cast, both unknown; ``rounds`` alternations fit them: each class's colour as its mean
    over the frames that show it less their casts, each frame's cast as the per-channel median
    over its classes of what is left (what its white balance and exposure did to every tissue at
    once, which one class, a reddened liver, does not decide alone). Frames showing different
    classes are compared through the classes they share with others."""
    return class_frame_fit(frames, min_pixels, rounds)[1].float()


def class_frame_fit(frames, min_pixels: int = 500, rounds: int = 5,
                    grey: bool = False) -> tuple[dict, torch.Tensor, dict]:
    """The fit behind ``frame_casts``, of labelled frames [(sRGB [H, W, 3], labels [H, W])]: the log
    of each class's mean linear light in a frame as the class's own colour plus the frame's cast
    (``grey``: one gain for all three channels, what distance and exposure do; else per channel).
    Returns (own {class id: [3] float64 log linear r, g, b}, cast [N, 3] float64 with mean 0 over
    the N frames that show a class of ``min_pixels`` or more, pixels {class id: count})."""
    logs, pixels = [], {}
    for img, lbl in frames:
        lin = srgb_to_linear(img.double())
        got = {}
        for c in lbl.unique().tolist():
            m = lbl == c
            n = int(m.sum())
            if c > 0 and n >= min_pixels:
                got[c] = torch.log(lin[m].mean(0).clamp(min=1e-6))
                pixels[c] = pixels.get(c, 0) + n
        if got:
            logs.append(got)
    if not logs:
        return {}, torch.zeros(0, 3, dtype=torch.float64), {}
    cast = torch.zeros(len(logs), 3, dtype=torch.float64)
    for r in range(rounds + 1):
        own: dict = {}
        for f, got in enumerate(logs):
            for c, v in got.items():
                own.setdefault(c, []).append(v - cast[f])
        own = {c: torch.stack(v).mean(0) for c, v in own.items()}
        if r == rounds:
            break
        if grey:
            cast = torch.stack([torch.stack([(v - own[c]).mean() for c, v in got.items()]).median()
                                for got in logs])[:, None].expand(-1, 3)
        else:
            cast = torch.stack([torch.stack([v - own[c] for c, v in got.items()]).median(0).values for got in logs])
        cast = cast - cast.mean(0)
    return own, cast, pixels


@torch.no_grad()
def real_cast(real, ours: torch.Tensor | None = None, frames: int = 128, rows: int = BLACK_ROWS, seed: int = 0,
              min_frames: int = 8, limit: float = 1.0) -> tuple[torch.Tensor, dict] | None:
    """The real footage's colour casts from the labelled real frames' class colours
    (``frame_casts``): ([rows, 3] log gains in linear light, one row per video; the fit's
    statistics), None with fewer than ``min_frames`` frames that show a class.

    Each frame's cast is split into its exposure (the mean of its three log gains) and its
    white balance (the rest). Part of both spreads comes from the scene, not the camera: a frame
    close to the tissue is brighter, a reddened view redder. ``ours`` [M, 3] (``frame_casts`` of
    the model's own translations of training views, no cast) holds that part as the renderer
    already draws it, so each component is shrunk towards its mean by sqrt(1 - var ours / var
    real): the rows add only the spread the views lack (None: kept whole). The frames, ordered
    along the casts' widest direction, are resampled at ``rows`` evenly spaced quantiles, so
    the rows keep the spread where it is largest, then shuffled with ``seed`` (a
    clip's cast tells nothing of its black level), clamped to +-``limit`` and centred so that the
    rows' mean gain is 1 per channel: the casts move each clip's colour, not the set's."""
    got = frame_casts(_labelled(real, frames))
    if len(got) < min_frames:
        return None

    def split(c: torch.Tensor):
        e = c.mean(1, keepdim=True)
        return e, c - e

    e, w = split(got)
    var = (float(e.var()), float((w - w.mean(0)).pow(2).sum(1).mean()))
    shrink = (1.0, 1.0)
    if ours is not None and len(ours) >= 2:
        oe, ow = split(ours)
        seen = (float(oe.var()), float((ow - ow.mean(0)).pow(2).sum(1).mean()))
        shrink = tuple(float(np.sqrt(max(0.0, 1.0 - b / a))) if a > 0 else 0.0 for a, b in zip(var, seen))
    else:
        seen = None
    got = (e - e.mean()) * shrink[0] + (w - w.mean(0)) * shrink[1]
    axis = torch.linalg.svd(got, full_matrices=False).Vh[0]           # the casts' widest direction
    got = got[(got @ axis).argsort()]
    at = ((torch.arange(rows) + 0.5) / rows * len(got)).long().clamp(max=len(got) - 1)
    table = got[at][torch.randperm(rows, generator=torch.Generator().manual_seed(seed))].clamp(-limit, limit)
    table = table - torch.log(torch.exp(table).mean(0, keepdim=True))
    stats = {"frames": len(got), "std_real": tuple(float(np.sqrt(v)) for v in var),
             "std_views": None if seen is None else tuple(float(np.sqrt(v)) for v in seen), "shrink": shrink,
             "std_rows": (float(table.mean(1).std()), float((table - table.mean(1, keepdim=True)).std(0).norm()))}
    return table, stats


NOISE_BINS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0)     # brightness bins of the noise fit (below: clipped at 0)
_IMMERKAER = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])[None, None]
_IMMERKAER_SCALE = float(np.sqrt(np.pi / 2.0) / 6.0)


@functools.lru_cache(maxsize=8)
def _quantile_bias(block: int, quantile: float) -> float:
    """The ``quantile`` of Immerkaer's block estimates (``block`` x ``block``) on white noise of
    std 1: the factor by which taking the smoothest blocks underestimates pure noise (0.89 for
    16 px blocks at the 10th percentile). Measured once on a fixed draw."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 64 * block + 2, 64 * block + 2, generator=gen)
    r = F.avg_pool2d(F.conv2d(x, _IMMERKAER).abs() * _IMMERKAER_SCALE, block)
    return float(r.flatten().quantile(quantile))


@torch.no_grad()
def real_noise(real, frames: int = 128, block: int = 16, quantile: float = 0.1,
               min_blocks: int = 20) -> tuple[float, float] | None:
    """The sensor noise of the labelled real frames' grain in the camera model's form
    (``networks.noise_std``: std sigma (floor + (1 - floor) sqrt(y)) at brightness y in [0, 1]):
    (sigma, floor).

    Immerkaer's estimate (the mean |3x3 second-difference response| x sqrt(pi / 2) / 6, unbiased
    for white noise on a locally planar image) in every ``block`` x ``block`` block (an eighth of a
    smaller frame's side) wholly inside one label region, the background (label 0) included, per
    channel. Texture only adds to it, so in each brightness bin (``NOISE_BINS``) the blocks' low
    ``quantile`` (the smoothest tissue, or the empty background) is taken as the noise there,
    divided by that quantile's own shortfall on pure noise (``_quantile_bias``). The background
    pins the dark end, where a camera's read noise dominates; sigma and floor come from a
    least-squares fit of A + B sqrt(y) to the bins (A, B >= 0; each bin weighs by its blocks).
    Unpaired and content-free. None when no brightness bin holds ``min_blocks`` blocks (e.g. no
    label maps, or frames all but black)."""
    rs, ys = [], []
    for img, lbl in _labelled(real, frames):
        b = max(4, min(block, min(lbl.shape) // 8))          # small frames: smaller blocks
        x = nhwc_to_nchw(img[None])[0][:, None]                                    # [3, 1, H, W]
        r = F.avg_pool2d(F.conv2d(x, _IMMERKAER).abs() * _IMMERKAER_SCALE, b)[:, 0]
        r = r / _quantile_bias(b, quantile)
        y = F.avg_pool2d(x[:, :, 1:-1, 1:-1], b)[:, 0]                               # [3, h, w]
        labels = lbl[1:-1, 1:-1]
        for c in labels.unique().tolist():
            whole = F.avg_pool2d((labels == c).float()[None, None], b)[0, 0] > 0.999
            if whole.any():
                rs.append(r[:, whole].flatten())
                ys.append(y[:, whole].flatten())
    if not rs:
        return None
    r, y = torch.cat(rs), torch.cat(ys)
    s, g, w = [], [], []
    for lo, hi in zip(NOISE_BINS, NOISE_BINS[1:]):
        inside = (y >= lo) & (y < hi)
        if int(inside.sum()) >= min_blocks:
            s.append(float(r[inside].quantile(quantile)))
            g.append(float(y[inside].median().sqrt()))
            w.append(float(inside.sum()))
    if not s:
        return None
    s, g, w = np.array(s), np.array(g), np.array(w)
    if len(s) < 2:                  # one brightness: the share cannot be told, keep the default
        t = NOISE_FLOOR + (1.0 - NOISE_FLOOR) * g
        return float((w * s * t).sum() / (w * t * t).sum()), NOISE_FLOOR
    design = np.stack([np.ones_like(g), g], 1) * np.sqrt(w)[:, None]
    (a, b_), *_ = np.linalg.lstsq(design, s * np.sqrt(w), rcond=None)
    if a < 0 or b_ < 0:             # one term only: the one that fits better
        only = [(float((w * s * t).sum() / (w * t * t).sum()), t) for t in (np.ones_like(g), g)]
        err = [float((w * (s - k * t) ** 2).sum()) for k, t in only]
        k = only[int(np.argmin(err))][0]
        a, b_ = (k, 0.0) if err[0] <= err[1] else (0.0, k)
    sigma = float(a + b_)
    return (sigma, float(a) / sigma) if sigma > 0 else (0.0, NOISE_FLOOR)


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
def _with_detail(base: torch.Tensor, layer: torch.Tensor, labels: torch.Tensor, gains: torch.Tensor,
                 spec=0.0) -> torch.Tensor:
    """base [B, H, W, 3] linear RGB times exp(layer [B, H, W, 3] x the gain of each pixel's
    class (``gains`` [n classes], labels [B, H, W])), plus ``spec`` (a white specular term
    [B, H, W, 1] the layer does not touch, ``model.specular: white``; 0: none) -> sRGB [B, H, W, 3]."""
    g = gains.to(layer.device)[labels.clamp(min=0, max=len(gains) - 1)][..., None]
    return linear_to_srgb((base * (layer * g).clamp(-3, 3).exp() + spec).clamp(0, 1))


def _with_domes(renderer, scene, buf, tset, rows: dict | None = None):
    """``buf`` relit with the domes of ``tset``'s cells (``rows``: these cell rows instead;
    ``TextureSet.bump_normals``), as a translation shades it; ``buf`` itself where there are none."""
    if rows is None and not tset.has_bumps():
        return buf
    out = replace(buf, normals=tset.bump_normals(buf, scene, rows))
    out.light = renderer.light(out)
    out.sim_rgb = renderer.under(out, out.light)
    return out


def _view_base(tset, scene, buf, albedo: bool, white: bool, feats=None) -> tuple:
    """A rendered view's (sampled features [1, H, W, C], base linear RGB [1, H, W, 3], white
    specular [1, H, W, 1] or 0.0): the base is the image the generator starts from (the textured
    render with albedo textures, else the sim render); with ``white`` (and albedo) its specular
    term is kept apart, as ``model.specular: white`` adds it after the colour and the layer.
    ``feats``: the view's features, where already sampled."""
    feats = tset.sample(buf, scene) if feats is None else feats
    light, spec = buf.light.float(), 0.0
    if albedo and white:
        light, spec = light * torch.tensor([1.0, 0.0], device=light.device), light[..., 1:].cpu()
    base = lit(srgb_to_linear(to_unit(feats[..., :3]).clamp(0, 1)), light) if albedo \
        else srgb_to_linear(buf.sim_rgb.float())
    return feats, base, spec


@torch.no_grad()
def _views_with_layer(bank, textures: dict, albedo: bool, views: int, only: list[str] | None,
                      white: bool = False) -> list:
    """``views`` training views as (base linear RGB [1, H, W, 3], detail layer [1, H, W, 3],
    labels [1, H, W], geometric edges [1, H, W] bool, white specular [1, H, W, 1] or 0.0) on
    the CPU: the base is the image the generator starts from (the textured render with albedo
    textures, else the sim render); with ``white`` (and albedo) its specular term is kept apart,
    as ``model.specular: white`` adds it after the colour and the layer; labels are 0 outside
    the objects ``only`` (when given)."""
    from .detail_init import spread_views
    out = []
    for r, sc, buf in spread_views(bank, views):
        if sc.anatomy not in textures:
            continue
        buf = _with_domes(r, sc, buf, textures[sc.anatomy])
        feats, base, spec = _view_base(textures[sc.anatomy], sc, buf, albedo, white)
        labels = buf.labels
        if only is not None:
            mine = torch.tensor([o.name in only for o in sc.objects] + [False], device=labels.device)
            labels = torch.where(mine[buf.object_ids], labels, torch.zeros_like(labels))
        out.append((base.cpu(), feats[..., -3:].float().cpu(), labels.cpu(), buf.edges.cpu(), spec))
    return out


def _camera_look(x: torch.Tensor, blur: float, noise: tuple[float, float], gen: torch.Generator,
                 edges: torch.Tensor | None = None, edge_blur: float = 0.0) -> torch.Tensor:
    """sRGB views [B, H, W, 3] as the camera model shows them: its lens blur (std ``blur`` px)
    and edge blur (std ``edge_blur`` px on ``edges`` [B, H, W]), then sensor noise ``noise``
    (sigma, read-noise share: ``networks.noise_std``) drawn from ``gen``."""
    if blur > 0 or (edges is not None and edge_blur > 0):
        x = nchw_to_nhwc(soften_edges(lens_blur(nhwc_to_nchw(x), blur), edges, edge_blur))
    if noise[0] > 0:
        x = (x + noise_std(x, *noise) * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    return x


def band_energy(srgb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sharpness of frames [N, H, W, 3] in [0, 1] with class labels [N, H, W]: the energy
    (sum of squares, grey level) of the fine band (the image minus its Gaussian blur of std
    0.8 px) and of the mid band (that blur minus one of 2 px), [4]: (fine, mid) over the pixels
    whose 13 x 13 window lies inside one class region, then (fine, mid) over the tissue pixels
    within 6 px of a boundary between classes. A ratio fine / mid falls as a lens blurs and
    does not change with contrast."""
    import kornia
    y = srgb.float().mean(-1)[:, None]
    b1 = kornia.filters.gaussian_blur2d(y, (7, 7), (0.8, 0.8), border_type="reflect")
    b2 = kornia.filters.gaussian_blur2d(y, (13, 13), (2.0, 2.0), border_type="reflect")
    inner = torch.zeros_like(labels, dtype=torch.bool)
    for c in labels.unique().tolist():
        if c > 0:
            inner |= interior(labels == c, 13)
    edge = interior(labels > 0, 13) & ~inner
    fine, mid = ((y - b1) ** 2)[:, 0], ((b1 - b2) ** 2)[:, 0]
    return torch.stack([fine[inner].sum(), mid[inner].sum(), fine[edge].sum(), mid[edge].sum()]).double()


def _first_crossing(ratio, goal: float, top: float, grid: int = 8, rounds: int = 8) -> float:
    """The smallest sigma in [0, ``top``] at which ``ratio(sigma)`` comes down to ``goal``: a
    scan over ``grid`` steps, then bisection inside the step that crosses (a wide blur also
    empties the mid band, so the ratio rises again past its minimum). 0 when ``ratio(0)`` is
    already at or below the goal; where it never gets there, the sigma of its minimum."""
    steps = [top * i / grid for i in range(grid + 1)]
    vals = [ratio(steps[0])]
    if vals[0] <= goal:
        return 0.0
    for i in range(1, len(steps)):
        vals.append(ratio(steps[i]))
        if vals[-1] <= goal:
            lo, hi = steps[i - 1], steps[i]
            for _ in range(rounds):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if ratio(mid) > goal else (lo, mid)
            return 0.5 * (lo + hi)
    return steps[int(np.argmin(vals))]


@torch.no_grad()
def real_blur(bank, real, textures: dict, albedo: bool, views: int = 48, frames: int = 128,
              noise: tuple[float, float] = (0.0, NOISE_FLOOR),
              max_sigma: float = 2.0, white: bool = False) -> dict:
    """The camera's lens and edge blur (``networks.CameraModel.blur``) from the labelled real
    frames' sharpness: ``views`` rendered training views (the base image times the detail
    layer, as the translator starts, with sensor noise ``noise``: (sigma, read-noise share)) are blurred until
    their ratio of fine to mid band energy (``band_energy``) is the real frames' — first inside
    class regions by the lens blur (a Gaussian over the frame), then at boundaries between
    classes by the edge blur (a Gaussian on the pixels of geometric edges, ``render.edge_mask``).
    The real frames, as the model sees them (optics, pixel area, compression, resizing), are
    softer than a rasterized render, above all at outlines, where a rasterizer samples one
    surface per pixel; a ratio does not depend on how much detail either side has, only on how
    sharp it is. Unpaired. Each std is the smallest in [0, ``max_sigma``] that gets there
    (``_first_crossing``); 0 where the views are already as soft (a blur cannot sharpen).
    Returns {"lens", "edge": sigma in pixels, "real": the real frames' (inside, edge) ratios,
    "views": the unblurred views' ones}; zeros and NaNs without labelled frames."""
    want = torch.zeros(4, dtype=torch.float64)
    for img, lbl in _labelled(real, frames):
        want += band_energy(img[None], lbl[None])
    seen = _views_with_layer(bank, textures, albedo, views, None, white)
    nan = (float("nan"), float("nan"))
    if want[1] <= 0 or want[3] <= 0 or not seen:
        return {"lens": 0.0, "edge": 0.0, "real": nan, "views": nan}
    goal = (float(want[0] / want[1]), float(want[2] / want[3]))
    ones = torch.ones(1 + max(int(v[2].max()) for v in seen))
    shown = [(_with_detail(base, layer, labels, ones, spec), labels, edges) for base, layer, labels, edges, spec in seen]

    def ratios(lens: float, edge: float) -> tuple[float, float]:
        acc = torch.zeros(4, dtype=torch.float64)
        gen = torch.Generator().manual_seed(0)           # the same grain at every sigma
        for x, labels, edges in shown:
            acc += band_energy(_camera_look(x, lens, noise, gen, edges, edge), labels)
        return float(acc[0] / acc[1].clamp(min=1e-12)), float(acc[2] / acc[3].clamp(min=1e-12))

    lens = _first_crossing(lambda s: ratios(s, 0.0)[0], goal[0], max_sigma)
    edge = _first_crossing(lambda s: ratios(lens, s)[1], goal[1], max_sigma)
    return {"lens": lens, "edge": edge, "real": goal, "views": ratios(0.0, 0.0)}


OCTAVES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)     # Gaussian stds (px) whose differences are the octave bands


def octave_energy(srgb: torch.Tensor, labels: torch.Tensor, margin: int | None = None) -> dict[int, torch.Tensor]:
    """How each class's texture spreads over scale: frames [N, H, W, 3] sRGB in [0, 1], labels
    [N, H, W] -> {class id: [6] float64}: the summed squared difference of Gaussians of log grey
    level in the octave bands 0.5-1, 1-2, 2-4, 4-8, 8-16 px, then the pixel count, over the
    class's interior (``margin`` px in, so outlines are not counted; None: 33, the widest band's
    reach, less on frames under 256 px). A pattern drawn twice as large moves its energy one
    band up."""
    import kornia
    if margin is None:
        margin = min(33, 2 * (min(srgb.shape[1:3]) // 16) + 1)
    y = torch.log(srgb.float().clamp(0, 1).mean(-1) + 0.02)[:, None]
    # a reflected border must be narrower than the frame: frames of 48 px or less replicate theirs
    levels = [y] + [kornia.filters.gaussian_blur2d(y, (2 * int(3 * s) + 1,) * 2, (s, s), border_type="reflect"
                                                   if int(3 * s) < min(y.shape[2:]) else "replicate")
                    for s in OCTAVES]
    bands = [((levels[k] - levels[k + 1]) ** 2)[:, 0] for k in range(len(OCTAVES))]
    out = {}
    for c in labels.unique().tolist():
        if c > 0:
            inner = interior(labels == c, margin)
            if inner.any():
                out[c] = torch.tensor([float(v[inner].sum()) for v in bands[:-1]] + [float(inner.sum())],
                                      dtype=torch.float64)
    return out


def add_octaves(acc: dict, part: dict) -> None:
    """acc[class id] += part[class id] (``octave_energy`` sums; classes new to acc are added)."""
    for c, v in part.items():
        acc[c] = acc[c] + v if c in acc else v


def octave_distance(seen: dict, want: dict, min_pixels: int = 1000) -> dict[int, float]:
    """Per class in both (at least ``min_pixels`` interior pixels each): the mean |log| of the
    ratio of their ``octave_energy`` per pixel over the five bands — 0 when the texture has the
    same contrast at every scale."""
    return {c: float((seen[c][:-1] / seen[c][-1] / (want[c][:-1] / want[c][-1])).clamp(min=1e-12).log().abs().mean())
            for c in sorted(seen) if c in want and min(seen[c][-1], want[c][-1]) >= min_pixels
            and bool((want[c][:-1] > 0).all())}


def real_octaves(real, frames: int = 128) -> dict[int, torch.Tensor]:
    """``octave_energy`` of up to ``frames`` labelled real frames, summed per class."""
    acc: dict = {}
    for img, lbl in _labelled(real, frames):
        add_octaves(acc, octave_energy(img[None], lbl[None]))
    return acc


@torch.no_grad()
def view_octaves(bank, textures: dict, albedo: bool, views: int = 48,
                 noise: tuple[float, float] = (0.0, NOISE_FLOOR), blur: float = 0.0,
                 only: list[str] | None = None, white: bool = False) -> dict[int, torch.Tensor]:
    """``octave_energy`` of ``views`` training views as the translator starts from them (the
    base image times the detail layer, through the camera's lens blur and sensor noise), per
    class."""
    acc: dict = {}
    gen = torch.Generator().manual_seed(0)
    for base, layer, labels, _, spec in _views_with_layer(bank, textures, albedo, views, only, white):
        ones = torch.ones(1 + int(labels.max()))
        add_octaves(acc, octave_energy(_camera_look(_with_detail(base, layer, labels, ones, spec), blur, noise, gen),
                                        labels))
    return acc


CELL_SIZES = (4.0, 6.0, 8.0, 12.0, 16.0, 24.0)   # cell sizes tried, in pixels of the class's footprint
CELL_GAINS = (0.15, 0.3, 0.5, 0.8, 1.2)          # border log-gains tried (exp(-g) at a border's middle)
CELL_LAYER = (1.0, 0.5, 0.0)                     # the drawn layer's gains tried with them
BUMP_HEIGHTS = (0.0, 0.03, 0.06, 0.12)           # dome heights tried (x the cell size; texture.detail_bumps: fit)
CELL_TIE = 1.1                                   # cells are kept only if their octave distance is this much lower


@torch.no_grad()
def match_cells(bank, real, textures: dict, albedo: bool, views: int = 48, frames: int = 128,
                only: list[str] | None = None, noise: tuple[float, float] = (0.0, NOISE_FLOOR), blur: float = 0.0,
                white: bool = False, classes: set[int] | None = None, heights=(0.0,),
                widths=tuple(BORDER_WIDTHS.values())) -> dict[int, tuple]:
    """Fit cell borders (``texture.detail_cells``, ``TextureSet.set_cells``) per class from the
    labelled real frames: for every combination of a cell size (``CELL_SIZES`` x the class's pixel
    footprint in the training views), a border width (``widths``, cell units; default: each of
    ``cells.BORDER_WIDTHS``), a border gain
    (``CELL_GAINS``) and a gain on the drawn detail layer (``CELL_LAYER``), the texture over octaves (``octave_distance``) of ``views``
    training views (the base image times layer and borders, through the camera's blur and noise,
    as ``view_octaves``) is predicted from renders of the base, the layer and each size's and
    width's borders. Then, at the size chosen, each dome height of ``heights`` (``texture.detail_bumps``;
    x the cell size, ``cells.cell_slope``) relights the base (one render each) and the width and
    gains are chosen again on it; the height whose best combination is nearest wins (0 in
    ``heights``: flat cells compete).
    Each class keeps the combination nearest the real frames' if, rendered, it is ``CELL_TIE``
    times nearer than the layer alone, else keeps its layer unchanged. The layer gain is applied to the layers' texels (``only``: of
    these objects) and kept with the cells, so ``fit-textures`` can give new objects the same.
    ``classes``: only these class ids may get cells (None: every class).
    Returns {class id: (cell size m, border gain, layer gain, border width, dome height, distance
    before, distance after)} of every class measured (border gain 0: no cells)."""
    from ..texture import pixel_footprint
    from ..texture.cells import cell_pattern, object_seed
    from .detail_init import class_footprints, spread_views
    want = real_octaves(real, frames)
    foot = class_footprints(bank)
    seen, kept = [], []
    shapes = [(k, w) for w in widths for k in CELL_SIZES]
    domes = any(h > 0 for h in heights)
    for r, sc, buf in spread_views(bank, views):
        if sc.anatomy not in textures:
            continue
        feats, base, spec = _view_base(textures[sc.anatomy], sc, buf, albedo, white)
        labels, obj = buf.labels.cpu(), buf.object_ids.cpu()
        mine = torch.tensor([only is None or o.name in only for o in sc.objects] + [False])
        labels = torch.where(mine[obj], labels, torch.zeros_like(labels))
        pos = buf.rest_positions.reshape(-1, 3).cpu()
        fp = pixel_footprint(buf.rest_positions, buf.object_ids).reshape(-1).cpu()
        seed = torch.tensor([0] + [object_seed(o.name) for o in sc.objects])[obj.reshape(-1) + 1]
        unit = torch.tensor([0.0] + [foot.get(c, 0.0) for c in range(1, 1 + int(labels.max()))])
        unit = unit[labels.reshape(-1).clamp(min=0, max=len(unit) - 1)]
        allowed = labels.reshape(-1) > 0
        if classes is not None:         # patterns only where they may be chosen
            allowed &= torch.isin(labels.reshape(-1), torch.tensor(sorted(classes), dtype=labels.dtype))
        idx = torch.nonzero(allowed & (unit > 0)).squeeze(1)
        pats = []
        for k, w in shapes:
            p = torch.zeros(labels.numel())
            if len(idx):
                p[idx] = cell_pattern(pos[idx], fp[idx], k * unit[idx], seed[idx], w)
            pats.append(p.view(labels.shape)[..., None])
        seen.append((base.cpu(), feats[..., -3:].float().cpu(), labels, pats, spec))
        if domes:                       # relit with domes below: the view and its sampled features
            kept.append((r, sc, buf, feats))
    if not seen:
        return {}
    n = 1 + max([c for sc in bank.scenes for c in sc.class_names()] + [0])
    ones = torch.ones(n)

    def energy(layer_gain: float, k: int, g: float, bases=None) -> dict:
        acc: dict = {}
        gen = torch.Generator().manual_seed(0)          # the same grain for every render
        for i, (base, layer, labels, pats, spec) in enumerate(seen):
            if bases is not None:
                base, spec = bases[i]
            d = layer_gain * layer - g * pats[k]
            add_octaves(acc, octave_energy(_camera_look(_with_detail(base, d, labels, ones, spec), blur, noise, gen),
                                           labels))
        return acc

    def relit(rows: dict) -> list:
        """Every view's (base, white specular) with the domes of ``rows`` ({class: cell row})."""
        out = []
        for r, sc, buf, feats in kept:
            t = textures[sc.anatomy]
            _, base, spec = _view_base(t, sc, _with_domes(r, sc, buf, t, rows), albedo, white, feats)
            out.append((base.cpu(), spec))
        return out

    # Rendering every combination is too slow on a CPU (a minute each); the base, the layer and
    # the borders add in log grey level like independent signals (as in _solved_gain), so each
    # band's energy is predicted as E0 + m^2 (E_layer - E0) + g^2 (E_cells(shape) - E0) from
    # 2 + 12 renders, and only the chosen combination is rendered to report its distance.
    e0, e1 = energy(0.0, 0, 0.0), energy(1.0, 0, 0.0)
    ek = [energy(0.0, j, 1.0) for j in range(len(shapes))]
    before = octave_distance(e1, want)

    def search(c: int, base: torch.Tensor, js) -> tuple:
        """The (distance, shape, gain, layer gain) predicted nearest for class c on base energy ``base``."""
        out = (float("inf"), 0, 0.0, 1.0)
        for m in CELL_LAYER:
            for j in js:
                for g in CELL_GAINS:
                    v = base + m * m * (e1[c] - e0[c]) + g * g * (ek[j][c] - e0[c])
                    v[-1] = e1[c][-1]
                    d = octave_distance({c: v.clamp(min=1e-12)}, {c: want[c]}).get(c, float("inf"))
                    if d < out[0]:
                        out = (d, j, g, m)
        return out

    best = {c: (d, 0, 0.0, 1.0, 0.0) for c, d in before.items()}    # (distance, shape, gain, layer gain, height)
    for c in before:
        if not all(c in e for e in ek) or c not in e0 or (classes is not None and c not in classes):
            continue
        found = search(c, e0[c], range(len(shapes)))
        if (0.0 in heights or not domes) and found[0] < best[c][0]:
            best[c] = (*found, 0.0)
        elif domes:                     # the size is chosen flat; domes at that size compete below
            best[c] = (float("inf"), *found[1:], 0.0)
    # domes at each class's chosen size (their slope does not depend on the width): one render per height
    sized = {c: shapes[j][0] * foot.get(c, 0.0) for c, (_, j, g, _, _) in best.items() if g > 0}
    for h in (h for h in heights if h > 0 and sized):
        eh = energy(0.0, 0, 0.0, relit({c: (s, 1.0, 1.0, 1.0, h) for c, s in sized.items()}))
        for c, s in sized.items():
            if c in eh:
                k = shapes[best[c][1]][0]
                found = search(c, eh[c], [j for j, (kj, _) in enumerate(shapes) if kj == k])
                if found[0] < best[c][0]:
                    best[c] = (*found, h)
    # the chosen combinations, rendered together (each class its own), decide
    pick = {c: (j, g, m) for c, (_, j, g, m, _) in best.items()}
    rows = {c: (shapes[j][0] * foot.get(c, 0.0), g, m, shapes[j][1], h) for c, (_, j, g, m, h) in best.items()
            if g > 0 and h > 0}
    bases = relit(rows) if rows else None
    acc: dict = {}
    gen = torch.Generator().manual_seed(0)
    for i, (base, layer, labels, pats, spec) in enumerate(seen):
        if bases is not None:
            base, spec = bases[i]
        d = layer.clone()
        for c, (k, g, m) in pick.items():
            here = (labels == c)[..., None]
            d = torch.where(here, m * layer - g * pats[k], d)
        add_octaves(acc, octave_energy(_camera_look(_with_detail(base, d, labels, ones, spec), blur, noise, gen), labels))
    after = octave_distance(acc, want)
    out, cells = {}, {}
    for c, (_, j, g, m, h) in best.items():
        d = after.get(c, before[c])
        size, w = shapes[j][0] * foot.get(c, 0.0), shapes[j][1]
        if not g or d * CELL_TIE > before[c]:
            d, size, g, m, w, h = before[c], 0.0, 0.0, 1.0, 0.0, 0.0
        else:
            cells[c] = (size, g, m, w, h)
        out[c] = (size, g, m, w, h, before[c], d)
    for t in textures.values():
        t.set_cells(cells)
    layer_gains(bank, textures, only)
    return out


@torch.no_grad()
def layer_gains(bank, textures: dict, only: list[str] | None = None) -> dict:
    """Scale the detail layers (of ``only``, or all) of classes with cell borders by the layer
    gain fitted with them (``match_cells``; ``TextureSet.class_cells``). Returns {class id: gain}."""
    out = {}
    for anatomy, t in textures.items():
        cells = t.class_cells()
        if cells:
            gains = torch.ones(1 + max(cells))
            for c, row in cells.items():
                gains[c] = row[2]
            out.update(_set_gains(bank, {anatomy: t}, gains, only, lambda x, g: x * g))
    return out


@torch.no_grad()
def match_detail(bank, real, textures: dict, albedo: bool, views: int = 48, frames: int = 128, rounds: int = 2,
                 limits: tuple[float, float] = (0.25, 4.0), only: list[str] | None = None,
                 noise: tuple[float, float] = (0.0, NOISE_FLOOR), blur: float = 0.0, white: bool = False,
                 bands: bool = False) -> dict:
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
    these objects' layers (measured on their pixels alone); ``noise``: the views are measured
    with the camera's sensor noise (sigma, read-noise share) on (``networks.noise_std``; the real frames'
    grain is part of their texture, so the layer need not paint it); ``blur``: and through the
    camera's lens blur of that std in pixels (``networks.lens_blur``; it takes fine texture the
    layer then makes up). Returns {class id: gain}. ``bands``: two gains per class instead
    (``_match_detail_bands``), returned as {class id: (broad gain, fine gain)}."""
    if bands:
        return _match_detail_bands(bank, real, textures, albedo, views, frames, only, noise, blur, white, limits)
    want: dict = {}
    for img, lbl in _labelled(real, frames):
        _class_texture(want, img[None], lbl[None])
    n = 1 + max([c for sc in bank.scenes for c in sc.class_names()] + [0])
    seen = _views_with_layer(bank, textures, albedo, views, only, white)

    def energy(gains: torch.Tensor) -> dict:
        acc: dict = {}
        gen = torch.Generator().manual_seed(0)          # the same grain in every round
        for base, layer, labels, _, spec in seen:
            x = _camera_look(_with_detail(base, layer, labels, gains, spec), blur, noise, gen)
            _class_texture(acc, x, labels)
        return {c: a[0] / a[1] for c, a in acc.items() if c in want and min(a[1], want[c][1]) >= 500}

    e0 = energy(torch.zeros(n))
    gains = torch.ones(n)
    for _ in range(1 + rounds):
        eg = energy(gains)
        for c, e in eg.items():
            gains[c] = _solved_gain(e, e0.get(c, 0.0), want[c][0] / want[c][1], float(gains[c]), limits)
    return _set_gains(bank, textures, gains, only, lambda x, g: x * g)


def _solved_gain(e: float, e0: float, target: float, gain: float, limits: tuple[float, float]) -> float:
    """The gain on a layer that gives a class the ``target`` energy, from its energy ``e`` with the
    layer at ``gain`` and ``e0`` without it, taking the two as independent signals (E(g)^2 =
    E(0)^2 + g^2 E1^2), kept in ``limits``; ``gain`` unchanged where the layer adds nothing."""
    layer_sq = (e ** 2 - e0 ** 2) / max(gain ** 2, 1e-6)
    if layer_sq <= 1e-12:
        return gain
    return float(np.clip(np.sqrt(max(target ** 2 - e0 ** 2, 0.0) / layer_sq), *limits))


def _set_gains(bank, textures: dict, gains: torch.Tensor, only: list[str] | None, scaled) -> dict:
    """Apply per-class ``gains`` [n] to every object's detail layer (of ``only``, or all):
    each triplanar plane becomes ``scaled(plane [3, R, C], gain)``, re-centred so exp(layer)
    keeps averaging 1. Returns {class id: gain} of the classes changed."""
    from .detail_init import _unbiased
    n = len(gains)
    for anatomy, tset in textures.items():
        cls = {o.name: o.class_id for sc in bank.anatomies().get(anatomy, []) for o in sc.objects}
        for name, t in tset.detail.items():
            c = cls.get(name)
            if c is not None and c < n and gains[c] != 1.0 and (only is None or name in only):
                top = t.levels[0]
                for a in range(top.shape[0]):
                    top[a] = _unbiased(scaled(top[a].float(), float(gains[c]))).to(top.dtype)
    return {c: float(gains[c]) for c in range(1, n) if gains[c] != 1.0}


LUMA = (0.2126, 0.7152, 0.0722)   # linear RGB -> luminance: a layer's grey part is its luminance log-ratio
CHROMA_BAND = (1.5, 8.0)  # px: the a*b* band a chroma match compares, between Gaussians of these stds inside a
                          # class (finer is the sensor's colour noise, which H.264's halved chroma takes anyway)


def split_chroma(layer: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """A detail layer (log-ratios in linear RGB, channels on ``dim``) -> (its grey part, the
    luminance-weighted mean log-ratio, with ``dim`` kept as size 1; its chroma, layer - grey).
    grey + g x chroma changes the pattern's colour but, to first order, not its brightness."""
    w = torch.tensor(LUMA, dtype=layer.dtype, device=layer.device)
    shape = [1] * layer.dim()
    shape[dim] = 3
    grey = (layer * w.view(shape)).sum(dim, keepdim=True)
    return grey, layer - grey


def _class_chroma(acc: dict, srgb: torch.Tensor, labels: torch.Tensor, min_pixels: int = 500) -> None:
    """acc[c] += (a*b* energy summed over class c's interior pixels, their count): per frame
    and class, the band of a* and b* between Gaussian means of stds ``CHROMA_BAND`` px inside
    the class's region (``detail_init.highpass``: no other class leaks in), squared and summed
    over the two channels. srgb [N, H, W, 3], labels [N, H, W]."""
    from .detail_init import highpass
    ab = nhwc_to_nchw(lab(srgb)[..., 1:]).double()
    for i in range(len(labels)):
        for c in labels[i].unique().tolist():
            m = labels[i] == c
            if c <= 0 or int(m.sum()) < min_pixels:
                continue
            inner = interior(m[None])[0]
            fine, broad = CHROMA_BAND
            e = (highpass(ab[i], m, broad) - highpass(ab[i], m, fine)).pow(2).sum(0)[inner]
            a = acc.setdefault(c, [0.0, 0])
            a[0] += float(e.sum())
            a[1] += int(inner.sum())


@torch.no_grad()
def match_chroma(bank, real, textures: dict, albedo: bool, views: int = 48, frames: int = 128, rounds: int = 2,
                 limits: tuple[float, float] = (0.1, 4.0), only: list[str] | None = None,
                 noise: tuple[float, float] = (0.0, NOISE_FLOOR), blur: float = 0.0, white: bool = False) -> dict:
    """Scale the colour of every object's detail layer by one gain per class, so that the
    class's a*b* variation over ``CHROMA_BAND`` (``_class_chroma``) in ``views`` training
    views rendered with it matches the labelled real frames'; its brightness pattern (what
    ``match_detail`` matched) stays: the layer becomes grey + g x chroma (``split_chroma``).
    ``match_detail`` scales the layer's brightness contrast only; its colour comes from the real
    windows as drawn, and sampling and the base change how much of it shows. Solved as ``match_detail`` solves its gain (the base's own colour
    variation and the layer's add as independent signals), in ``limits``, ``rounds`` times
    refined; a class whose views vary no more in colour with its layer's colour than without
    keeps it. The views as ``match_detail`` renders them (``noise``, ``blur``, ``white``).
    Returns {class id: gain} of the classes changed."""
    want: dict = {}
    for img, lbl in _labelled(real, frames):
        _class_chroma(want, img[None], lbl[None])
    n = 1 + max([c for sc in bank.scenes for c in sc.class_names()] + [0])
    seen = _views_with_layer(bank, textures, albedo, views, only, white)
    ones = torch.ones(n)

    def energy(gains: torch.Tensor) -> dict:
        acc: dict = {}
        gen = torch.Generator().manual_seed(0)          # the same grain in every round
        for base, layer, labels, _, spec in seen:
            grey, chroma = split_chroma(layer)
            g = gains[labels.clamp(min=0, max=n - 1)][..., None]
            x = _camera_look(_with_detail(base, grey + g * chroma, labels, ones, spec), blur, noise, gen)
            _class_chroma(acc, x, labels)
        return {c: (a[0] / a[1]) ** 0.5 for c, a in acc.items() if c in want and min(a[1], want[c][1]) >= 500}

    e0 = energy(torch.zeros(n))
    gains = torch.ones(n)
    for _ in range(1 + rounds):
        for c, e in energy(gains).items():
            gains[c] = _solved_gain(e, e0.get(c, 0.0), (want[c][0] / want[c][1]) ** 0.5, float(gains[c]), limits)

    def recoloured(x: torch.Tensor, g: float) -> torch.Tensor:
        grey, chroma = split_chroma(x, dim=0)
        return grey + g * chroma
    return _set_gains(bank, textures, gains, only, recoloured)


DETAIL_SPLIT = 1.5        # texels: the detail layer's fine band is what a Gaussian of this std removes
BAND_EDGES = (1.0, 2.0, 6.0)   # px: the two L* bands the band match compares, 1-2 and 2-6 px


def class_bands(acc: dict, srgb: torch.Tensor, labels: torch.Tensor) -> None:
    """acc[c] += (energy of L* in the 1-2 px band, in the 2-6 px band, pixel count) over class c's
    interior: srgb [N, H, W, 3] in [0, 1], labels [N, H, W]. Differences of Gaussians of L*
    (``BAND_EDGES``); the bands start at 1 px so that sensor grain, which the real frames have
    and the views may lack, counts little."""
    import kornia
    y = lab(srgb)[..., 0][:, None]
    g = [kornia.filters.gaussian_blur2d(y, (2 * int(3 * s) + 1,) * 2, (s, s), border_type="reflect")
         for s in BAND_EDGES]
    e = [((g[0] - g[1]) ** 2)[:, 0], ((g[1] - g[2]) ** 2)[:, 0]]
    for c in labels.unique().tolist():
        if c > 0:
            inner = interior(labels == c, 13)
            a = acc.setdefault(c, [0.0, 0.0, 0])
            a[0] += float(e[0][inner].double().sum())
            a[1] += float(e[1][inner].double().sum())
            a[2] += int(inner.sum())


def _texel_blur(top: torch.Tensor, sigma: float, halves: int = 2) -> torch.Tensor:
    """A layer's texels [P, C, R, halves x R] blurred (Gaussian ``sigma`` texels, reflect
    border), each half of a triplanar plane (``halves`` 2; a uv atlas: 1) on its own so no
    texel mixes two sides."""
    import kornia
    k = 2 * int(math.ceil(3 * sigma)) + 1
    return torch.cat([kornia.filters.gaussian_blur2d(h.float(), (k, k), (sigma, sigma), border_type="reflect")
                      for h in top.chunk(halves, dim=3)], 3)


@torch.no_grad()
def _match_detail_bands(bank, real, textures: dict, albedo: bool, views: int, frames: int, only, noise, blur, white,
                        limits: tuple[float, float]) -> dict:
    """``match_detail`` with two gains per class: each layer is split in texel space into its
    broad part (a Gaussian of ``DETAIL_SPLIT`` texels) and its fine rest, and each class takes
    the pair of gains (within ``limits``, every pair in half-octave steps) with which its
    rendered training views have the real frames' L* energy in both bands of ``class_bands``
    (least squared log ratios). One gain raises a blurred line's contrast until its energy
    fits, which draws thin real vessels as wide dark bands; two let the fine part carry what
    the sampling blurred and the broad part stay at the real contrast. Sampling is linear in
    the texels, so the views are rendered once per part and every pair is a weighted sum.
    Returns {class id: (broad, fine)}."""
    from .detail_init import _unbiased
    want: dict = {}
    for img, lbl in _labelled(real, frames):
        class_bands(want, img[None], lbl[None])
    layers = [(name, t) for tset in textures.values() for name, t in tset.detail.items()
              if only is None or name in only]
    whole = {name: t.levels[0].detach().clone() for name, t in layers}
    broad = {name: _texel_blur(whole[name], DETAIL_SPLIT, 2 if t.kind == "triplanar" else 1).to(whole[name].dtype)
             for name, t in layers}
    parts = []
    for part in (broad, {name: whole[name] - broad[name] for name in whole}):
        for name, t in layers:
            t.levels[0].copy_(part[name])
        parts.append(_views_with_layer(bank, textures, albedo, views, only, white))
    for name, t in layers:
        t.levels[0].copy_(whole[name])
    n = 1 + max([c for sc in bank.scenes for c in sc.class_names()] + [0])
    lo, hi = math.log2(limits[0]), math.log2(limits[1])
    best: dict = {}                                # class -> (error, broad gain, fine gain)

    def score(pairs: torch.Tensor) -> None:
        """Score log2 gains ``pairs`` [n, 2] (a pair per class id) on every view and keep, per
        class, what beats its best; each class's pixels are scored on their own."""
        acc: dict = {}
        gen = torch.Generator().manual_seed(0)         # the same grain for every try
        g = 2.0 ** pairs
        for (base, lb, labels, _, spec), (_, lf, _, _, _) in zip(*parts):
            c = labels.clamp(0, n - 1)[..., None]
            x = _with_detail(base, g[:, 0][c] * lb + g[:, 1][c] * lf, labels, torch.ones(n), spec)
            class_bands(acc, _camera_look(x, blur, noise, gen), labels)
        for c, a in acc.items():
            w = want.get(c)
            if w is None or c >= n or min(a[2], w[2]) < 500:
                continue
            err = sum(float(np.log(max(a[k] / a[2], 1e-12) / max(w[k] / w[2], 1e-12))) ** 2 for k in (0, 1))
            if c not in best or err < best[c][0]:
                best[c] = (err, float(g[c, 0]), float(g[c, 1]))

    # every pair of the half-octave grid (a coarse grid refined around its best lands in other
    # minima of a flat error valley: the wall x2 / x1 instead of x1.41 / x2)
    steps = torch.arange(lo, hi + 1e-6, 0.5)
    for b in steps:
        for f in steps:
            score(torch.tensor([[float(b), float(f)]] * n))
    cls = {o.name: o.class_id for sc in bank.scenes for o in sc.objects}
    for name, t in layers:
        c = cls.get(name)
        if c in best:
            _, gb, gf = best[c]
            mixed = gb * broad[name].float() + gf * (whole[name].float() - broad[name].float())
            for a in range(mixed.shape[0]):
                t.levels[0][a] = _unbiased(mixed[a]).to(t.levels[0].dtype)
    return {c: (gb, gf) for c, (_, gb, gf) in sorted(best.items())}


@torch.no_grad()
def real_field(bank, real, textures: dict, albedo: bool, detail: bool = True, views: int = 48,
               frames: int = 600, knots: int = FIELD_KNOTS, min_pixels: int = 2000, white: bool = False,
               within_frame: bool = False) -> torch.Tensor:
    """The camera's lens field (``networks.CameraModel.field``) from the labelled real frames:
    how much darker, in log linear light, the real frames' tissue gets towards the image
    corners than the rendered training views' (the base image times the detail layer, as the
    translator starts, ``_views_with_layer``; without ``detail`` the base alone). Unpaired and
    content-free: each pixel's log brightness is taken relative to its class's mean on its own
    side, so which organs lie where and their colours cancel; what is left is the optics (the
    real scope's field falls off towards the corners, the render's does not). With
    ``within_frame`` the fit has an offset per class and frame instead (a fixed-effects least
    squares: pixels and tent weights both taken relative to their class in their frame): how
    bright a frame is as a whole (its distance, its exposure) then cancels too, where over all
    frames a class seen at the corners mostly from afar would pass its distance off as the lens's.

    Returns the log gain [knots] at radii evenly spaced from the centre to the corner: the real
    profile minus the rendered one, each a piecewise-linear profile fitted by least squares
    (every pixel weighs on its two neighbouring knots), zero at the centre (the mean over
    r < 0.7 is subtracted: the field does not change exposure), in [-3, 0.5]. Knots with less
    than ``min_pixels`` weight on either side take the nearest knot's value."""
    def add(acc: dict, y: torch.Tensor, labels: torch.Tensor) -> None:
        # each pixel's tent weights on its two neighbouring knots: [n, knots], for a least-squares
        # fit of the piecewise-linear profile (a plain average per knot would flatten its curve)
        r = (radius2(*labels.shape).sqrt() / np.sqrt(2.0) * (knots - 1)).double()
        k = r.floor().long().clamp(max=knots - 2)
        t = (r - k).clamp(max=1.0)
        for c in labels.unique().tolist():
            if c > 0:
                m = labels == c
                w = torch.zeros(int(m.sum()), knots, dtype=torch.float64)
                w.scatter_(1, k[m][:, None], (1 - t[m])[:, None])
                w.scatter_add_(1, k[m][:, None] + 1, t[m][:, None])
                v = y[m].double()
                a = acc.setdefault(c, {"y": 0.0, "n": 0, "wy": 0.0, "w": 0.0, "ww": 0.0})
                a["w"] = a["w"] + w.sum(0)
                if within_frame:         # an offset per class and frame: both sides taken within it
                    v, w = v - v.mean(), w - w.mean(0)
                a["y"] += float(v.sum())
                a["n"] += len(v)
                a["wy"] = a["wy"] + w.T @ v
                a["ww"] = a["ww"] + w.T @ w

    def profile(acc: dict) -> tuple[torch.Tensor, torch.Tensor]:
        # least squares over every class's pixels, each relative to its class's mean
        A = torch.zeros(knots, knots, dtype=torch.float64)
        b = torch.zeros(knots, dtype=torch.float64)
        for a in acc.values():
            A += a["ww"]
            b += a["wy"] - a["y"] / a["n"] * a["w"]
        n_ = sum((a["w"] for a in acc.values()), torch.zeros(knots, dtype=torch.float64))   # pixel weight per knot
        return torch.linalg.solve(A + 1e-6 * n_.max().clamp(min=1) * torch.eye(knots, dtype=torch.float64), b), n_

    ours: dict = {}
    for base, layer, labels, _, spec in _views_with_layer(bank, textures, albedo, views, None, white):
        y = ((base * layer.clamp(-3, 3).exp() if detail else base) + spec)[0].mean(-1)
        add(ours, torch.log(y + 1e-3), labels[0])
    theirs: dict = {}
    for img, lbl in _labelled(real, frames):
        add(theirs, torch.log(srgb_to_linear(img).mean(-1) + 1e-3), lbl)
    (po, no), (pr, nr) = profile(ours), profile(theirs)
    d = pr - po
    ok = (no >= min_pixels) & (nr >= min_pixels)
    if not ok.any():
        return torch.zeros(knots)
    valid = torch.nonzero(ok)[:, 0]
    for k in range(knots):          # knots without pixels: the nearest knot's value
        if not ok[k]:
            d[k] = d[valid[(valid - k).abs().argmin()]]
    inner = torch.arange(knots) / (knots - 1) * np.sqrt(2.0) < 0.7
    w = (no * nr).sqrt() * inner * ok
    return (d - (d * w).sum() / w.sum()).clamp(-3.0, 0.5).float()
