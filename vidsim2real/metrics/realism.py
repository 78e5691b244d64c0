"""Realism metrics: sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al.
2018), colour-histogram distance, structure kept from the sim render (MS-SSIM on brightness),
per-class colour and texture. Frames are float [N, H, W, 3] in [0, 1] (torch). The classifier
two-sample test is in ``c2st.py``; ``outline_auc`` asks whether edges stay on the scene's outlines."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..layout import nchw_to_nhwc, nhwc_to_nchw, to_signed
from ..train.appearance import add_octaves, interior, lab, octave_distance, octave_energy, texture_energy
from ..train.detail_init import highpass
from ..train.losses import msssim_loss_brightness


def _gauss_kernel(device) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device)
    k = torch.outer(k, k)
    return (k / k.sum())[None, None].repeat(3, 1, 1, 1)


def laplacian_pyramid(x: torch.Tensor, min_size: int = 16) -> list[torch.Tensor]:
    """[N, 3, H, W] -> band-pass levels (finest first) and the coarsest low-pass at >= min_size."""
    k = _gauss_kernel(x.device)
    levels = []
    cur = x
    while min(cur.shape[-2:]) // 2 >= min_size:
        blur = F.conv2d(F.pad(cur, (2, 2, 2, 2), mode="reflect"), k, groups=3)
        down = blur[..., ::2, ::2]
        up = F.interpolate(down, size=cur.shape[-2:], mode="bilinear", align_corners=False)
        levels.append(cur - up)
        cur = down
    levels.append(cur)
    return levels


def frame_chunks(frames, chunk: int = 16):
    """Float [n, H, W, 3] stacks of at most ``chunk`` consecutive frames of a frame set (a
    tensor [N, H, W, 3] or any sequence whose ``[i]`` is frame i as [H, W, 3]): set measures
    visit a long set a few frames at a time."""
    for s in range(0, len(frames), chunk):
        yield torch.stack([frames[i] for i in range(s, min(s + chunk, len(frames)))]).float()


def _pyramid_patches(frames, size: tuple[int, int], per_image: int, gen: torch.Generator, patch: int = 7,
                     chunk: int = 16) -> list[torch.Tensor]:
    """``per_image`` random ``patch``² patches of every frame at every Laplacian pyramid
    level (frames resized to ``size`` (H, W)), shuffled: per level [N * per_image, 3 * p²].
    Frames are visited ``chunk`` at a time (memory flat in the set's length); per level the
    generator draws the rows, the columns, then the shuffle."""
    N, draws, out = len(frames), None, None
    for s, x in enumerate(frame_chunks(frames, chunk)):
        x = nhwc_to_nchw(x)
        x = F.interpolate(x, size=size, mode="area") if x.shape[2:] != size else x
        levels = laplacian_pyramid(x)
        if draws is None:         # level sizes are known once the first chunk is decomposed
            draws = []
            for lv in levels:
                H, W = lv.shape[-2:]
                ys = torch.randint(0, H - patch + 1, (N, per_image), generator=gen)
                xs = torch.randint(0, W - patch + 1, (N, per_image), generator=gen)
                draws.append((ys, xs, torch.randperm(N * per_image, generator=gen)))
            out = [[] for _ in levels]
        for lv, (ys, xs, _), acc in zip(levels, draws, out):
            for n in range(len(lv)):
                i = s * chunk + n
                for y, x0 in zip(ys[i].tolist(), xs[i].tolist()):
                    acc.append(lv[n, :, y:y + patch, x0:x0 + patch].reshape(-1))
    return [torch.stack(acc)[perm] for acc, (_, _, perm) in zip(out, draws)]


def _channel_stats(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q = p.view(p.shape[0], 3, -1)
    return q.mean(dim=(0, 2), keepdim=True), q.std(dim=(0, 2), keepdim=True).clamp(min=1e-8)


def _normalise(p: torch.Tensor, stats) -> torch.Tensor:
    """Zero mean, unit std per colour channel with the given (reference) statistics."""
    mean, std = stats
    return ((p.view(p.shape[0], 3, -1) - mean) / std).view(p.shape[0], -1)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_dirs: int = 512, repeats: int = 4,
                       gen: torch.Generator | None = None) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of the projections
    (equal-size sets: the larger one is truncated)."""
    gen = gen or torch.Generator().manual_seed(0)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    vals = []
    for _ in range(repeats):
        d = torch.randn(a.shape[1], n_dirs, generator=gen)
        d = d / d.norm(dim=0, keepdim=True)
        pa, _ = torch.sort(a @ d, dim=0)
        pb, _ = torch.sort(b @ d, dim=0)
        vals.append(float((pa - pb).abs().mean()))
    return float(np.mean(vals))


def swd(frames, real, patches_per_image: int = 128, seed: int = 0) -> dict:
    """SWD (x 1e3) between the videos' and the real frames' Laplacian pyramid 7x7 patches, per
    level and averaged (Karras et al. 2018); either set [N, H, W, 3] or a frame sequence. Both
    sets are resized to the smaller one's size and contribute the same number of patches; each
    set's patch positions come from its own generator with the same seed, so SWD(x, x) = 0
    exactly.

    Unlike Karras et al., who normalise each set's patches by that set's own per-channel mean
    and std (which hides a global colour shift), both sets are normalised with the *real*
    set's statistics, so a colour cast counts as a difference."""
    (H1, W1), (H2, W2) = frames[0].shape[:2], real[0].shape[:2]
    size = (min(H1, H2), min(W1, W2))
    total = patches_per_image * min(len(frames), len(real))   # patches per set and level
    per_x, per_y = -(-total // len(frames)), -(-total // len(real))
    gx, gy = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    gd = torch.Generator().manual_seed(seed + 1)
    per_level = []
    for pa, pb in zip(_pyramid_patches(frames, size, per_x, gx), _pyramid_patches(real, size, per_y, gy)):
        stats = _channel_stats(pb)
        pa, pb = _normalise(pa, stats)[:total], _normalise(pb, stats)[:total]
        per_level.append(sliced_wasserstein(pa, pb, gen=gd) * 1e3)
    return {"swd": float(np.mean(per_level)), "swd_by_level": per_level}


def color_hist_distance(frames, real, bins: int = 16) -> float:
    """Hellinger distance (0 = identical, 1 = disjoint) between the 3-D RGB histograms
    (``bins`` per channel) of all pixels of both sets ([N, H, W, 3] or frame sequences)."""
    def hist(frames):
        h = torch.zeros(bins ** 3, dtype=torch.float64)
        for x in frame_chunks(frames):
            q = (x.clamp(0, 1 - 1e-6) * bins).long().reshape(-1, 3)
            h += torch.bincount((q[:, 0] * bins + q[:, 1]) * bins + q[:, 2], minlength=bins ** 3).double().cpu()
        return h / h.sum()
    p, q = hist(frames), hist(real)
    return float(torch.sqrt((1 - torch.sqrt(p * q).sum()).clamp(min=0)))


def ms_ssim_lum(frames: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean MS-SSIM between the channel-mean brightness of frames and reference [T, H, W, 3]."""
    vals = []
    for i in range(0, len(frames), 8):
        a = to_signed(nhwc_to_nchw(frames[i:i + 8]))
        b = to_signed(nhwc_to_nchw(reference[i:i + 8]))
        vals.append((1 - float(msssim_loss_brightness(a, b))) * len(a))
    return float(np.sum(vals) / len(frames))


def _outlines(labels: torch.Tensor) -> torch.Tensor:
    """[N, H, W] class ids -> [N, H, W] bool: pixels whose 4-neighbour has another id."""
    b = torch.zeros_like(labels, dtype=torch.bool)
    dx, dy = labels[:, :, 1:] != labels[:, :, :-1], labels[:, 1:] != labels[:, :-1]
    b[:, :, 1:] |= dx
    b[:, :, :-1] |= dx
    b[:, 1:] |= dy
    b[:, :-1] |= dy
    return b


def _grown(mask: torch.Tensor, r: int) -> torch.Tensor:
    return F.max_pool2d(mask[:, None].float(), 2 * r + 1, 1, r)[:, 0] > 0.5


def outline_auc(frames, labels, min_pixels: int = 50) -> float:
    """Structure kept, whatever the surface detail: how well a frame's edges fall on the scene's
    outlines. Per frame, the ROC AUC (ties counted half) of the L* gradient magnitude (Sobel of
    a 1 px Gaussian) separating outline pixels (where the class id changes, +-1 px) from tissue
    pixels 3 px or more away from any outline; the mean over frames with ``min_pixels`` of
    each (NaN if none). 1: edges only on the outlines; 0.5: edges unrelated to them. Unlike
    MS-SSIM against the sim render it does not count detail the sim render lacks as lost
    structure (docs/metrics.md). frames [N, H, W, 3] in [0, 1] (or a sequence of such
    frames), labels [N, H, W] class ids (or a sequence: ``SceneGT.labels``)."""
    import kornia
    aucs = []
    for i in range(0, len(frames), 16):
        x = torch.stack([torch.as_tensor(frames[j]).float() for j in range(i, min(i + 16, len(frames)))])
        lbl = torch.stack([torch.as_tensor(labels[j]) for j in range(i, min(i + 16, len(frames)))]).long()
        y = kornia.filters.gaussian_blur2d(lab(x.clamp(0, 1))[..., 0][:, None], (7, 7), (1.0, 1.0),
                                           border_type="reflect")
        g = kornia.filters.spatial_gradient(y, mode="sobel", normalized=False)[:, 0].norm(dim=1)    # [n, H, W]
        edge = _outlines(lbl)
        on, off = _grown(edge, 1), ~_grown(edge, 3) & (lbl > 0)
        for k in range(len(x)):
            pos, neg = g[k][on[k]], g[k][off[k]].sort()[0]
            if len(pos) < min_pixels or len(neg) < min_pixels:
                continue
            below = torch.searchsorted(neg, pos, right=False).double()
            upto = torch.searchsorted(neg, pos, right=True).double()
            aucs.append(float((below + upto).sum() / 2 / (len(pos) * len(neg))))
    return float(np.mean(aucs)) if aucs else float("nan")


# -- per-class colour and texture ----------------------------------------------------------------

def class_stats(frames: torch.Tensor, labels: torch.Tensor) -> dict[int, dict]:
    """Per class id: pixel count, mean L*a*b* colour, the texture (``_detail``) summed over the
    class's interior pixels with their count, and the octave energy (``oct``,
    ``train.appearance.octave_energy``), of frames [N, H, W, 3] in [0, 1] with
    class labels [N, H, W] (0 = background, skipped). Accumulable: sums, so sets can be
    processed in chunks (``merge_class_stats``)."""
    lab_ = lab(frames)
    tex = texture_energy(lab_[..., 0])
    octaves: dict = {}
    for i in range(0, len(frames), 32):         # in chunks: the band images are 13 planes per frame
        add_octaves(octaves, octave_energy(frames[i:i + 32], labels[i:i + 32]))
    out = {}
    for c in torch.unique(labels).tolist():
        if c == 0:
            continue
        m = labels == c
        inner = interior(m)
        out[int(c)] = {"n": int(m.sum()), "lab": lab_[m].double().sum(0),
                       "tex": float(tex[inner].double().sum()), "n_tex": int(inner.sum()),
                       "oct": octaves.get(c, torch.zeros(6, dtype=torch.float64))}
    return out


def merge_class_stats(a: dict, b: dict) -> dict:
    """Sum of two ``class_stats`` results."""
    out = {c: dict(v) for c, v in a.items()}
    for c, v in b.items():
        if c in out:
            out[c] = {k: out[c][k] + v[k] for k in ("n", "lab", "tex", "n_tex", "oct")}
        else:
            out[c] = dict(v)
    return out


def class_stats_json(stats: dict, names: dict | None = None) -> dict:
    """A ``class_stats`` result as plain numbers keyed by class name (``names``: id -> name;
    the id as a string without one), e.g. to pool scenes scored in other processes."""
    return {(names or {}).get(c, str(c)): {k: (v[k].tolist() if torch.is_tensor(v[k]) else v[k])
                                           for k in ("n", "lab", "tex", "n_tex", "oct")} for c, v in stats.items()}


def pooled_class_realism(pairs: list) -> dict:
    """``class_realism`` over several scenes' pixels pooled: ``pairs`` [(video, real)] of
    ``class_stats_json`` results (classes matched by name). A class seen in a sliver of one
    scene weighs as its pixels do, not as much as the same class filling another scene's
    frames (which a mean of per-scene figures would give it)."""
    def tensors(d):
        return {c: {k: (torch.tensor(v[k], dtype=torch.float64) if k in ("lab", "oct") else v[k]) for k in v}
                for c, v in d.items()}
    video, real = {}, {}
    for v, r in pairs:
        video, real = merge_class_stats(video, tensors(v)), merge_class_stats(real, tensors(r))
    return class_realism(video, real)


def class_realism(video: dict, real: dict, names: dict | None = None, min_pixels: int = 500) -> dict:
    """Per-class realism from two ``class_stats``: colour distance ΔE76 between the classes'
    mean L*a*b* colours, the ratio of their texture (``_detail``; 1 = as textured as the real
    set, a flat render is far below 1), and how their texture spreads over scale
    (``octave_distance``: mean |log ratio| of ``train.appearance.octave_energy`` per pixel over
    the bands 0.5-16 px, 0 = the real contrast at every octave; NaN where either side has fewer
    than ``min_pixels`` pixels far enough inside the class). Classes with fewer than
    ``min_pixels`` pixels on either side are left out. Returns the per-class values and their
    pixel-weighted means ``class_delta_e``, ``class_texture_log_ratio`` (mean |log ratio|) and
    ``class_octave_distance`` (over the classes that have one)."""
    per, w, de, lr, od = {}, [], [], [], []
    for c in sorted(set(video) & set(real)):
        v, r = video[c], real[c]
        if min(v["n"], r["n"], v["n_tex"], r["n_tex"]) < min_pixels:
            continue
        d = float((v["lab"] / v["n"] - r["lab"] / r["n"]).norm())
        ratio = (v["tex"] / v["n_tex"] + 1e-3) / (r["tex"] / r["n_tex"] + 1e-3)
        o = octave_distance({c: v["oct"]}, {c: r["oct"]}, min_pixels).get(c, float("nan"))
        per[(names or {}).get(c, str(c))] = {"delta_e": d, "texture_ratio": float(ratio), "octave_distance": o}
        w.append(v["n"])
        de.append(d)
        lr.append(abs(np.log(ratio)))
        od.append(o)
    if not w:
        return {"class_delta_e": float("nan"), "class_texture_log_ratio": float("nan"),
                "class_octave_distance": float("nan"), "per_class": {}}
    w = np.asarray(w, float) / np.sum(w)
    od = np.asarray(od, float)
    has = ~np.isnan(od)
    return {"class_delta_e": float(np.dot(w, de)), "class_texture_log_ratio": float(np.dot(w, lr)),
            "class_octave_distance": float(np.dot(w[has], od[has]) / w[has].sum()) if has.any() else float("nan"),
            "per_class": per}


def class_means_lab(stats: dict) -> dict[int, torch.Tensor]:
    """Per class id: the mean L*a*b* colour [3] (float32) of a ``class_stats`` result."""
    return {c: (v["lab"] / max(v["n"], 1)).float() for c, v in stats.items()}


def recoloured(frames: torch.Tensor, labels: torch.Tensor, target: dict[int, torch.Tensor]) -> torch.Tensor:
    """frames [N, H, W, 3] in [0, 1] with every class's pixels (labels [N, H, W]) shifted in
    L*a*b* by one offset per class, so that the class's mean colour over the set becomes
    ``target[class]`` [3] (L*a*b*; classes without a target and the background keep their
    pixels) -> [N, H, W, 3]. What ``class_delta_e`` = 0 would look like with everything else kept
    (up to clipping to the sRGB gamut): a diagnostic of how much a realism measure rests on class
    colour, not a correction (the target is the reference itself)."""
    import kornia
    lab_ = lab(frames)
    out = frames.float().clamp(0, 1).clone()
    for c in torch.unique(labels).tolist():
        if c in target:
            m = labels == c
            lab_[m] = lab_[m] + (target[c].to(lab_) - lab_[m].double().mean(0).to(lab_))
            out[m] = nchw_to_nhwc(kornia.color.lab_to_rgb(nhwc_to_nchw(lab_[m][None, None])).clamp(0, 1))[0, 0]
    return out


SWAP_PARTS = ("all", "low", "high", "mean", "shape", "rim", "inside")


def with_class_from(frames: torch.Tensor, labels: torch.Tensor, source: torch.Tensor, classes,
                    part: str = "all", sigma: float = 3.0) -> torch.Tensor:
    """frames [T, H, W, 3] in [0, 1] with the pixels whose label [T, H, W] is one of ``classes``
    given (part of) what ``source`` (same shape: the same frames in another domain) has there,
    frame by frame, inside those pixels only (Gaussian ``sigma`` px normalised by the blurred
    mask, so neither side's other classes leak in) -> [T, H, W, 3]:
    ``all`` the source's pixels; ``low`` its band above ``sigma`` (colour, shading, blotches,
    lobules larger than a few px) on the frames' finer band; ``high`` the reverse (cell borders,
    grain, vessels); ``mean`` its mean colour over the region, on the frames' pattern; ``shape``
    the low band without the mean (how brightness and colour vary across the region); ``rim``
    all of the source's pixels within 2 ``sigma`` px of the region's outline (in the frame),
    ``inside`` all of them farther in (the outline's darkening, blur and seams against the
    tissue away from it). A diagnostic of which part of a class gives a translation away (benchmarks/c2st_cues.py
    ``--swap``), not a correction."""
    if part not in SWAP_PARTS:
        raise ValueError(f"part: '{part}' is not one of {', '.join(SWAP_PARTS)}")
    m = torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype))
    out = frames.clone()
    if part in ("rim", "inside"):
        inner = interior(m, 2 * int(round(2 * sigma)) + 1)     # 2 sigma px in from the outline
        m = m & ~inner if part == "rim" else inner
        part = "all"
    if part == "all":
        out[m] = source[m]
        return out
    for t in range(len(frames)):
        mt = m[t]
        if not mt.any():
            continue
        a, b = nhwc_to_nchw(frames[t][None].float())[0], nhwc_to_nchw(source[t][None].float())[0]
        if part in ("mean", "shape"):
            shift = b[:, mt].mean(1) - a[:, mt].mean(1)
        if part == "mean":
            new = a + shift[:, None, None]
        else:
            ha, hb = highpass(a, mt, sigma), highpass(b, mt, sigma)
            new = a - ha + hb if part == "high" else ha + b - hb
            if part == "shape":
                new = new - shift[:, None, None]
        out[t][mt] = nchw_to_nhwc(new.clamp(0, 1)[None])[0][mt].to(out.dtype)
    return out
