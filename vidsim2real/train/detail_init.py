"""The detail layer's start (``texture.detail``): each object's detail texels drawn from the real
frames' tissue detail of its class, at the scale the camera sees that class.

The real frames are the only source (their pixels and label maps, as real footage with
segmentations would give): per class, windows inside the class's label region are high-passed
in log linear RGB (a log-ratio to the local mean: what an albedo pattern multiplies, without the
shading), and the texture planes are quilted from them (Efros & Freeman 2001: patches chosen to
agree in their overlaps, joined along minimum-error cuts, so each texel is one exemplar pixel and
vessels, fold edges and lobule boundaries stay whole). The scale comes from the sim side: the training views' rest-pose
footprint of a pixel on each class, assuming the real frames show tissue at about the distance
the training views do (both are laparoscope views at the render size).
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import torch
import torch.nn.functional as F

from ..shading import srgb_to_linear


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] (zero padding: callers normalise by a blurred mask)."""
    r = int(math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = (k / k.sum()).to(x.device)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0)), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r)), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def log_detail(rgb: torch.Tensor, mask: torch.Tensor, sigma: float = 6.0, clip: float = 1.0) -> torch.Tensor:
    """Tissue detail of one frame inside one region: rgb [3, H, W] sRGB in [0, 1], mask [H, W]
    bool -> [3, H, W] log linear RGB minus its mask-normalised local mean (Gaussian ``sigma``
    px), clipped to +-``clip``; 0 outside the mask. On specular highlights (``highlights``) only
    the brightness is kept: white light on red tissue is a cyan log-ratio, which baked into a
    surface would be cyan spots. Within ~2 sigma of the mask's edge the mean is one-sided (a
    shading gradient leaks in), which is why windows keep that margin."""
    x = torch.log(srgb_to_linear(rgb.clamp(0, 1)) + 1e-3)
    d = highpass(x, mask, sigma)
    w = highlights(d, x, mask)[None]
    return (d + w * (d.mean(0, keepdim=True) - d)).clamp(-clip, clip)


def highlights(d: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, whiter: float = 0.25, grow: int = 2) -> torch.Tensor:
    """How specular each pixel of a region looks, [H, W] in [0, 1]: how much its log detail
    ``d`` [3, H, W] rises in the channel the region has least of (x [3, H, W] log linear RGB,
    its mean inside ``mask``) beyond the one it has most of, in units of ``whiter`` (light added
    white, not an albedo pattern: a vessel or a shadow darkens the channels alike or the weak
    one more), where brighter than the local mean; spread ``grow`` px for the halo."""
    m = mask[None].to(x.dtype)
    mean = (x * m).sum((1, 2)) / m.sum().clamp(min=1)
    lo, hi = int(mean.argmin()), int(mean.argmax())
    w = ((d[lo] - d[hi]) / whiter).clamp(0, 1) * (d.mean(0) > 0) * mask
    return F.max_pool2d(w[None, None], 2 * grow + 1, 1, grow)[0, 0] * mask


def highpass(x: torch.Tensor, mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """x [C, H, W] minus its local mean inside ``mask`` [H, W] (Gaussian ``sigma`` px, normalised
    by the blurred mask, so pixels outside never leak in); 0 outside the mask."""
    m = mask[None, None].to(x.dtype)
    mean = _blur(x[None] * m, sigma) / _blur(m, sigma).clamp(min=1e-3)
    return ((x[None] - mean) * m)[0]


@torch.no_grad()
def real_detail_patches(real, size: int = 48, per_class: int = 96, frames: int = 64,
                        seed: int = 0, scan: int = 2000, matte: bool = False) -> dict[int, torch.Tensor]:
    """Per class id: up to ``per_class`` windows [N, 3, s, s] of ``log_detail`` lying wholly
    inside the class's label region (with a margin of 2 sigma), high-passed at sigma = s / 8
    (what varies within a window, not across it). s is the largest of ``size`` (at most a
    quarter of a frame's shorter side), halved down to 8 px, that some frame's region of the
    class holds (small organs get small windows). Every labelled frame of ``real``
    (domains.real.RealFrames, frames at the render scale; at most ``scan`` of them, evenly
    spread, for large sets) is searched, by a distance transform of its label map; the windows
    come from up to ``frames`` of the frames holding s, spread over the set — a class seen large in a few frames only (the abdominal wall) still gets
    windows of its full size. ``matte``: only windows free of specular highlights (``specular``),
    unless fewer than half of ``per_class`` are. Classes with no window at all are left out."""
    import cv2
    gen = torch.Generator().manual_seed(int(seed))
    room: dict[int, list[tuple[int, int]]] = {}       # class -> (frame, largest window size held)
    labelled = [i for i in range(len(real)) if real.label_paths[i] is not None]
    for i in (labelled[int(k)] for k in np.linspace(0, len(labelled) - 1, min(scan, len(labelled))).round()):
        lab = real.label(i)
        if lab is None:
            continue
        top = max(8, min(size, min(lab.shape[:2]) // 8 * 2))
        for c in np.unique(lab).tolist():
            if c <= 0:
                continue
            m = np.pad((lab == c).astype(np.uint8), 1)        # the frame's border is outside
            # chessboard distance to the nearest outside pixel: a window of side s plus its
            # margin 2 * (s / 4) fits centred on a pixel whose distance is > (s + 2 * pad) / 2
            dist = float(cv2.distanceTransform(m, cv2.DIST_C, 3).max())
            s_ = top
            while s_ >= 8 and dist <= (s_ + 2 * int(s_ / 4)) / 2:
                s_ //= 2
            if s_ >= 8:
                room.setdefault(c, []).append((i, s_))
    out = {}
    for c, held in room.items():
        s_ = max(v for _, v in held)
        pad = int(s_ / 4)
        idx = [i for i, v in held if v == s_]
        idx = [idx[int(k)] for k in np.linspace(0, len(idx) - 1, min(frames, len(idx))).round()]
        per_frame = max(1, -(-per_class * 2 // len(idx)))
        found, glossy = [], []
        for i in dict.fromkeys(idx):
            img, lab = real.frame(i), real.label(i)
            if img is None or lab is None:
                continue
            rgb = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0
            m = torch.from_numpy(lab.astype(np.int64)) == c
            k = s_ + 2 * pad          # erosion by a k x k square, separably: where a window fits
            inside = _fits(m, k)
            if not inside.any():
                continue
            clean = inside
            if matte:                 # windows free of highlights, where the region has them
                h, w = inside.shape
                clean = inside & _fits(~specular(rgb, m), s_)[pad:pad + h, pad:pad + w]
            d = log_detail(rgb, m, s_ / 8)
            for pool, where in ((found, clean), (glossy, inside & ~clean)):
                ys, xs = torch.nonzero(where, as_tuple=True)
                for j in (torch.randint(len(ys), (per_frame,), generator=gen).tolist() if len(ys) else []):
                    y, x = int(ys[j]) + pad, int(xs[j]) + pad
                    pool.append(d[:, y:y + s_, x:x + s_])
        if len(found) < per_class // 2:      # mostly glossy tissue: its highlights are its detail
            found += glossy
        if found:
            keep = torch.randperm(len(found), generator=gen)[:per_class].tolist()
            out[c] = torch.stack([found[k] for k in keep])
    return out


def _fits(mask: torch.Tensor, k: int) -> torch.Tensor:
    """[H, W] bool -> [H - k + 1, W - k + 1]: where a k x k window (top-left corner) lies wholly in
    ``mask`` (erosion by a square, separably)."""
    m = mask[None, None].float()
    return (-F.max_pool2d(F.max_pool2d(-m, (k, 1), 1), (1, k), 1))[0, 0] > 0.5


def specular(rgb: torch.Tensor, mask: torch.Tensor, grow: int = 2) -> torch.Tensor:
    """Specular highlights of one region: rgb [3, H, W] sRGB in [0, 1], mask [H, W] bool ->
    [H, W] bool, pixels whose weakest channel is brighter than the region's median strongest
    channel (white light on tissue: no albedo is whiter than its own tissue's brightest channel),
    grown by ``grow`` px for the halo. A highlight belongs to the surface's shape and the light,
    so a detail window that holds one would paint it onto the surface."""
    if not mask.any():
        return torch.zeros_like(mask)
    spec = (rgb.min(0)[0] > rgb.max(0)[0][mask].median()) & mask
    return F.max_pool2d(spec[None, None].float(), 2 * grow + 1, 1, grow)[0, 0] > 0.5


def spread_views(bank, views: int):
    """``views`` rendered training views (renderer, scene, FrameBuffers of one frame), spread
    evenly over each scene of ``bank`` (train.data.SceneBank) and along its camera path."""
    n = len(bank.scenes)
    per_scene = -(-views // n)
    for v in range(views):
        r, sc = bank.renderers[v % n], bank.scenes[v % n]
        yield r, sc, r.render([int(sc.frames * (v // n + 0.5) / per_scene) % sc.frames])


def add_class_sums(acc: dict, labels: torch.Tensor, values: torch.Tensor) -> None:
    """acc[class id] += (sum of ``values`` [H, W, K] over the class's pixels, pixel count)."""
    for c in labels.unique().tolist():
        if c > 0:
            m = labels == c
            a = acc.setdefault(c, [torch.zeros(values.shape[-1], dtype=torch.float64), 0])
            a[0] += values[m].double().sum(0)
            a[1] += int(m.sum())


@torch.no_grad()
def real_class_means(real, frames: int = 64) -> dict[int, torch.Tensor]:
    """Per class id: the mean linear RGB [3] (float64) of its pixels in up to ``frames``
    labelled frames of ``real``."""
    acc: dict = {}
    idx = [i for i in range(len(real)) if real.label_paths[i] is not None]
    for i in idx[::max(1, len(idx) // frames)][:frames]:
        img, lab = real.frame(i), real.label(i)
        if img is not None and lab is not None:
            add_class_sums(acc, torch.from_numpy(lab.astype(np.int64)),
                            srgb_to_linear(torch.from_numpy(np.ascontiguousarray(img)).float() / 255.0))
    return {c: a[0] / max(a[1], 1) for c, a in acc.items()}


@torch.no_grad()
def class_footprints(bank, views: int = 12) -> dict[int, float]:
    """Per class id: the median rest-pose distance (metres) between neighbouring pixels of one
    object, over ``views`` training views (``spread_views``): how much surface one pixel of the
    render size covers."""
    found: dict[int, list] = {}
    for _, _, buf in spread_views(bank, views):
        rp, oid, lab = buf.rest_positions[0].cpu(), buf.object_ids[0].cpu(), buf.labels[0].cpu()
        for a, b in (((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
                     ((slice(None), slice(1, None)), (slice(None), slice(None, -1)))):
            same = (oid[a] == oid[b]) & (oid[a] >= 0)
            dist, cls = (rp[a] - rp[b]).norm(dim=-1), lab[a]
            for c in cls[same].unique().tolist():
                found.setdefault(c, []).append(dist[same & (cls == c)])
    return {c: float(torch.cat(d).median()) for c, d in found.items() if c > 0}


def quilt(patches: torch.Tensor, height: int, width: int, gen: torch.Generator, overlap: float = 0.25,
          tolerance: float = 0.1, choices: int = 16, turns: bool = True) -> torch.Tensor:
    """Image quilting (Efros & Freeman 2001) of ``patches`` [N, C, p, p] (with their flips and,
    with ``turns``, quarter turns; without, only the flips, which keep a pattern's axis: folds
    that run across the patches keep running across the canvas) into [C, height, width]:
    patches are placed in raster order on a grid of hop p - ``overlap`` * p; each one is drawn at random among the candidates whose squared error
    in the overlap with what is already placed (relative to the energy of both, so flat patches
    do not win for having little to mismatch) is within (1 + ``tolerance``) of the best, or
    among the ``choices`` best (fewer would repeat patches), and joins it along the
    minimum-error cut through that overlap. Every texel comes from one
    exemplar pixel, so vessels, fold edges and lobule boundaries stay whole (averaging
    overlapping windows would cross-hatch them into a crumpled-paper pattern)."""
    n, c, p, _ = patches.shape
    ov = max(1, int(round(p * overlap)))
    hop = p - ov
    if turns:
        cand = torch.cat([torch.rot90(patches, k, (2, 3)) for k in range(4)])
        cand = torch.cat([cand, cand.flip(3)])                    # [8N, C, p, p]
    else:
        cand = torch.cat([patches, patches.flip(3), patches.flip(2), patches.flip((2, 3))])
    gh, gw = -(-max(height - ov, 1) // hop), -(-max(width - ov, 1) // hop)
    canvas = torch.zeros(c, gh * hop + ov, gw * hop + ov, dtype=patches.dtype)
    for gy in range(gh):
        for gx in range(gw):
            y, x = gy * hop, gx * hop
            region = canvas[:, y:y + p, x:x + p]
            err, energy = torch.zeros(len(cand), dtype=patches.dtype), torch.zeros(len(cand), dtype=patches.dtype)
            pairs = ([(cand[:, :, :, :ov], region[None, :, :, :ov])] if gx else []) + \
                ([(cand[:, :, :ov, :], region[None, :, :ov, :])] if gy else [])
            for a, b in pairs:
                err += ((a - b) ** 2).sum((1, 2, 3))
                energy += (a ** 2).sum((1, 2, 3)) + (b ** 2).sum()
            err = err / (energy + 1e-9)       # relative: a flat patch must not win by having little to mismatch
            ok = torch.argsort(err)[:max(int((err <= err.min() * (1 + tolerance) + 1e-12).sum()), choices)]
            t = cand[ok[int(torch.randint(len(ok), (1,), generator=gen))]]
            keep = torch.zeros(p, p, dtype=torch.bool)            # True: the canvas keeps its texel
            if gx:
                keep[:, :ov] |= _min_cut(((t[:, :, :ov] - region[:, :, :ov]) ** 2).sum(0))
            if gy:
                keep[:ov, :] |= _min_cut(((t[:, :ov, :] - region[:, :ov, :]) ** 2).sum(0).T).T
            canvas[:, y:y + p, x:x + p] = torch.where(keep, region, t)
    return canvas[:, :height, :width]


def across(patches: torch.Tensor) -> torch.Tensor:
    """``patches`` [N, C, p, p] each turned a quarter where its pattern runs closer to up-down
    than across (its mean channel's brightness changes more across the window than up it: the
    structure tensor's larger axis), so every pattern runs within 45 degrees of across. Quilted
    without quarter turns (``quilt(turns=False)``), a class whose detail has a direction (the
    stomach's folds, which run side by side in any one real frame) keeps one on the surface
    instead of patches of stripes crossing at right angles."""
    g = patches.float().mean(1)
    gx, gy = (g[:, :-1, 1:] - g[:, :-1, :-1]), (g[:, 1:, :-1] - g[:, :-1, :-1])
    upright = (gx ** 2).sum((1, 2)) > (gy ** 2).sum((1, 2))
    out = patches.clone()
    out[upright] = torch.rot90(patches[upright], 1, (2, 3))
    return out


def _min_cut(err: torch.Tensor) -> torch.Tensor:
    """The minimum-error top-to-bottom path through err [H, W] (dynamic programming, one column
    step per row) -> [H, W] bool, True left of the path (the side already placed)."""
    e = err.double().numpy()
    h, w = e.shape
    acc = e.copy()
    for i in range(1, h):
        prev = acc[i - 1]
        best = prev.copy()
        best[1:] = np.minimum(best[1:], prev[:-1])
        best[:-1] = np.minimum(best[:-1], prev[1:])
        acc[i] += best
    cols = np.empty(h, dtype=np.int64)
    cols[-1] = int(acc[-1].argmin())
    for i in range(h - 2, -1, -1):
        j = cols[i + 1]
        lo, hi = max(0, j - 1), min(w, j + 2)
        cols[i] = lo + int(acc[i, lo:hi].argmin())
    return torch.from_numpy(np.arange(w)[None, :] < cols[:, None])


def _scaled(canvas: torch.Tensor, r: int) -> torch.Tensor:
    """[C, h, w] -> [C, r, r] (area-filtered when shrinking, so fine detail averages out instead
    of aliasing)."""
    return F.interpolate(canvas[None], size=(r, r), mode="bilinear", align_corners=False,
                         antialias=max(canvas.shape[1:]) > r)[0]


def _unbiased(d: torch.Tensor) -> torch.Tensor:
    """A detail layer [3, H, W] shifted so that exp(d) averages 1 per channel: the layer
    carries detail, not a change of the mean colour (a zero-mean log pattern would brighten)."""
    return d - d.exp().mean(dim=(1, 2), keepdim=True).log()


@torch.no_grad()
def init_detail(textures, scenes: list, patches: dict[int, torch.Tensor], footprint: dict[int, float],
                seed: int = 0, strength: float = 1.0, only: list[str] | None = None,
                streams: str = "object", aligned: bool = False) -> list[str]:
    """Set the detail layer (``TextureSet.detail``, 3 channels, one level) of every object of
    ``textures`` (texture.TextureSet) whose class has ``patches`` and a ``footprint``:
    ``quilt``-ed real detail, resampled from real pixels to texels (texel size over footprint),
    times ``strength`` (``only``: just these objects). ``streams`` "object": each object draws
    from its own random stream (``seed`` and its name), so its layer does not depend on which
    objects are drawn before it or how large they are; "shared": one stream for all in turn (how
    the shipped checkpoint was drawn; ``texture.detail_streams``). ``aligned``
    (``texture.detail_aligned``): the windows are turned to run across (``across``) and quilted
    without quarter turns, each triplanar plane's canvas with its pattern along the object's
    longer side in that plane. Returns the objects set."""
    shared = torch.Generator().manual_seed(int(seed)) if streams == "shared" else None
    objects = {o.name: o for sc in scenes for o in sc.objects}
    done = []
    for name, t in textures.detail.items():
        o = objects.get(name)
        if o is None or (only is not None and name not in only) or o.class_id not in patches or o.class_id not in footprint:
            continue
        c, f = o.class_id, max(footprint[o.class_id], 1e-5)
        gen = shared if shared is not None else \
            torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % 2 ** 63)
        top = t.levels[0]
        r = top.shape[2]
        if t.kind == "triplanar":
            ext = (t.hi - t.lo).cpu()
            pats = across(patches[c]) if aligned else patches[c]
            for a, (i, j) in enumerate(((1, 2), (0, 2), (0, 1))):      # plane a: width along i, height along j
                hw = (max(8, round(float(ext[j]) / f)), max(8, round(float(ext[i]) / f)))
                if aligned and ext[j] > ext[i]:       # along the longer side: quilt across, then stand it up
                    halves = [_scaled(quilt(pats, hw[1], hw[0], gen, turns=False).transpose(1, 2), r)
                              for _ in range(2)]
                else:
                    halves = [_scaled(quilt(pats, *hw, gen, turns=not aligned), r) for _ in range(2)]
                top[a] = _unbiased(torch.cat(halves, 2) * strength).to(top.dtype)
        else:       # uv: an atlas of unknown scale; the median bounding-box extent stands for its side
            v = o.mesh.vertices
            side = max(8, round(float(np.median(v.max(0) - v.min(0))) / f))
            pats = across(patches[c]) if aligned else patches[c]
            top[0] = _unbiased(_scaled(quilt(pats, side, side, gen, turns=not aligned), r) * strength).to(top.dtype)
        done.append(name)
    return done
