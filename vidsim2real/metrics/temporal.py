"""Temporal consistency metrics with exact ground truth from the rasterizer.

All frames are float [T, H, W, 3] in [0, 1] (torch), aligned with the scene frames of a
``SceneGT``; any sequence whose ``[t]`` gives frame t as [H, W, 3] works (``io.video.VideoFrames``
streams a video from disk), and every measure visits frames one or two at a time. Only pixels that see a surface count (the black void of an open cavity has no
motion to be consistent with).
"""
from __future__ import annotations

import numpy as np
import torch

from ..layout import nchw_to_nhwc, nhwc_to_nchw
from ..raster import warp
from .gt import SceneGT, offsets_for

MAX_PAIRS = 40   # frame pairs evaluated per offset (evenly spaced), bounds the cost of long clips


def _pairs(T: int, k: int, limit: int = MAX_PAIRS) -> list[int]:
    starts = np.arange(0, T - k)
    if len(starts) > limit:
        starts = np.unique(np.linspace(0, T - k - 1, limit).round().astype(int))
    return starts.tolist()


def warp_error_pair(frames: torch.Tensor, gt: SceneGT, t: int, k: int) -> float | None:
    """Lai et al. (ECCV 2018): mean over non-occluded pixels of ||V_t - W(V_{t+k})||_2^2, where
    W warps frame t+k back to t along the exact flow; None when no pixel is valid."""
    c = gt.corr(t, t + k)
    m = c.valid[0]
    if not m.any():
        return None
    dev = c.uv.device                     # frames may live on the CPU, the ground truth on a GPU
    warped = nchw_to_nhwc(warp(nhwc_to_nchw(frames[t + k][None].to(dev)), c.uv))[0]
    err = ((frames[t].to(dev) - warped) ** 2).sum(-1)
    return float(err[m].mean())


def warp_error(frames: torch.Tensor, gt: SceneGT, offsets: list[int] | None = None) -> dict:
    """{'warp_error': mean over consecutive pairs, 'warp_error_by_offset': {k: value}}."""
    return pair_measures(frames, gt, offsets, orb=False)


def pair_schedule(T: int, offsets: list[int], reach: int, warp: bool = True, orb: bool = True) -> list[tuple]:
    """The frame pairs (t, t + k) the pair measures visit, as (k, t, warp?, orb?): warp error at
    every start for k = 1 and ``_pairs`` otherwise, ORB at ``_pairs``. Ordered so the ground
    truth's bounded cache renders each frame about once per pass: the offsets up to ``reach``
    together, frame by frame (the cache holds t .. t + reach), then each longer offset alone.
    Within an offset the starts ascend, so every mean sums in the same order as one offset at
    a time would."""
    def warp_starts(k):
        return set(range(T - 1)) if k == 1 else set(_pairs(T, k))
    starts = {k: (warp_starts(k) if warp else set(), set(_pairs(T, k)) if orb else set()) for k in offsets}
    near = sorted((t, k) for k in offsets if k <= reach for t in starts[k][0] | starts[k][1])
    order = [(k, t) for t, k in near] + [(k, t) for k in offsets if k > reach for t in sorted(starts[k][0] | starts[k][1])]
    return [(k, t, t in starts[k][0], t in starts[k][1]) for k, t in order]


class _OrbPairs:
    """ORB keypoints (OpenCV, computed once per frame) matched between frame t and t + k."""

    def __init__(self, frames, tol: float, n_features: int):
        import cv2
        self.frames, self.tol = frames, tol
        self.orb = cv2.ORB_create(nfeatures=n_features)
        self.bf = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
        self.cache: dict[int, tuple] = {}

    def feats(self, t: int):
        if t not in self.cache:
            self.cache[t] = self.orb.detectAndCompute(_gray_u8(self.frames[t]), None)
        return self.cache[t]

    def pair(self, gt: SceneGT, t: int, k: int) -> tuple[int, int]:
        """(consistent matches, matches whose keypoint has a valid correspondence)."""
        kp1, d1 = self.feats(t)
        kp2, d2 = self.feats(t + k)
        if d1 is None or d2 is None:
            return 0, 0
        c = gt.corr(t, t + k)
        uv, valid = c.uv[0].cpu().numpy(), c.valid[0].cpu().numpy()
        H, W = valid.shape
        good = total = 0
        for m in self.bf.match(d1, d2):
            x1, y1 = kp1[m.queryIdx].pt
            xi, yi = min(int(round(x1)), W - 1), min(int(round(y1)), H - 1)
            if not valid[yi, xi]:
                continue
            total += 1
            # exact correspondence of the keypoint's own (sub-pixel) position
            gx = uv[yi, xi, 0] + (x1 - xi)
            gy = uv[yi, xi, 1] + (y1 - yi)
            x2, y2 = kp2[m.trainIdx].pt
            good += (x2 - gx) ** 2 + (y2 - gy) ** 2 <= self.tol * self.tol
        return good, total


def pair_measures(frames: torch.Tensor, gt: SceneGT, offsets: list[int] | None = None, warp: bool = True,
                  orb: bool = True, tol: float = 3.0, n_features: int = 1000, reach: int | None = None) -> dict:
    """``warp_error`` and ``orb_consistency`` (either or both) in one pass over the frame
    pairs (``pair_schedule``; ``reach`` defaults to ``gt.reach``, 0 visits one offset at a
    time): each pair's exact correspondence is computed once for both, and a long clip renders
    its ground truth a few times instead of twice per offset and measure."""
    T = len(gt)
    offsets = offsets or offsets_for(T)
    w_vals = {k: [] for k in offsets}
    o_good, o_all, o_counts = ({k: 0 for k in offsets}, {k: 0 for k in offsets}, {k: [] for k in offsets})
    matcher = _OrbPairs(frames, tol, n_features) if orb else None
    schedule = pair_schedule(T, offsets, gt.reach if reach is None else reach, warp, orb)
    last = {f: n for n, (k, t, _, do_orb) in enumerate(schedule) if do_orb for f in (t, t + k)}
    for n, (k, t, do_warp, do_orb) in enumerate(schedule):
        if do_warp and (v := warp_error_pair(frames, gt, t, k)) is not None:
            w_vals[k].append(v)
        if do_orb:
            good, total = matcher.pair(gt, t, k)
            o_good[k] += good
            o_all[k] += total
            o_counts[k].append(good)
            for f in (t, t + k):          # a frame's keypoints go once its last pair is done
                if last[f] == n:
                    matcher.cache.pop(f, None)
    out = {}
    if warp:
        by = {k: float(np.mean(v)) if v else float("nan") for k, v in w_vals.items()}
        out.update({"warp_error": by.get(1, float("nan")), "warp_error_by_offset": {str(k): v for k, v in by.items()}})
    if orb:
        ratio = {k: o_good[k] / o_all[k] if o_all[k] else float("nan") for k in offsets}
        count = {k: float(np.mean(c)) if c else 0.0 for k, c in o_counts.items()}
        finite = [v for v in ratio.values() if np.isfinite(v)]
        out.update({"orb_consistent_ratio": float(np.mean(finite)) if finite else float("nan"),
                    "orb_consistent_count": float(np.mean(list(count.values()))) if count else 0.0,
                    "orb_consistent_ratio_by_offset": {str(k): v for k, v in ratio.items()},
                    "orb_consistent_count_by_offset": {str(k): v for k, v in count.items()}})
    return out


def texel_std(frames: torch.Tensor, gt: SceneGT, cells: int = 3) -> float:
    """Long-term consistency: each visible pixel is mapped to its surface point (face id and a
    cell of a cells x cells barycentric grid); per frame the colours of a point are averaged,
    then the standard deviation of that colour over all frames where the point is visible is
    taken (per channel, averaged), and averaged over points seen in at least two frames."""
    F = gt.renderer.faces.shape[0]
    n_bins = F * cells * cells
    s1 = torch.zeros(n_bins, 3, dtype=torch.float64)
    s2 = torch.zeros(n_bins, 3, dtype=torch.float64)
    cnt = torch.zeros(n_bins, dtype=torch.float64)
    for t in range(len(gt)):
        m = gt.mask(t)
        f = gt.face_ids(t)[m].long().cpu()
        b = gt.bary(t)[m].cpu()
        u = (b[:, 1] * cells).long().clamp(max=cells - 1)
        v = (b[:, 2] * cells).long().clamp(max=cells - 1)
        key = (f * cells + u) * cells + v
        col = frames[t][m.cpu()].double()
        uniq, inv = torch.unique(key, return_inverse=True)
        k_sum = torch.zeros(len(uniq), 3, dtype=torch.float64).index_add_(0, inv, col)
        k_cnt = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, torch.ones(len(inv), dtype=torch.float64))
        mean = k_sum / k_cnt[:, None]
        s1.index_add_(0, uniq, mean)
        s2.index_add_(0, uniq, mean * mean)
        cnt.index_add_(0, uniq, torch.ones(len(uniq), dtype=torch.float64))
    seen = cnt >= 2
    if not seen.any():
        return float("nan")
    mu = s1[seen] / cnt[seen, None]
    var = (s2[seen] / cnt[seen, None] - mu * mu).clamp(min=0)
    return float(var.sqrt().mean())


def _gray_u8(frame: torch.Tensor) -> np.ndarray:
    import cv2
    img = (frame.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def orb_consistency(frames: torch.Tensor, gt: SceneGT, offsets: list[int] | None = None, tol: float = 3.0,
                    n_features: int = 1000) -> dict:
    """OpenCV ORB keypoints of frame t matched (Hamming, cross-check) in frame t+k; a match is
    consistent when the matched keypoint lies within ``tol`` pixels of the keypoint's exact
    correspondence. Matches whose keypoint has no valid correspondence are not counted.
    Returns the consistent fraction and the mean consistent count per pair, per offset and
    averaged over offsets."""
    return pair_measures(frames, gt, offsets, warp=False, tol=tol, n_features=n_features)


def farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import cv2
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def tof(frames: torch.Tensor, reference: torch.Tensor, mask=None) -> float:
    """TecoGAN's tOF (Chu et al. 2020): mean L1 difference between the optical flow (OpenCV
    Farneback) of consecutive frames of the video and of the reference (the sim render), over
    the pixels of ``mask(t)`` [H, W] (a function of the frame index) when given."""
    vals = []
    prev_v, prev_r = _gray_u8(frames[0]), _gray_u8(reference[0])
    for t in range(1, len(frames)):
        cur_v, cur_r = _gray_u8(frames[t]), _gray_u8(reference[t])
        d = np.abs(farneback(prev_v, cur_v) - farneback(prev_r, cur_r)).sum(-1)
        if mask is not None:
            m = mask(t - 1).cpu().numpy()
            d = d[m] if m.any() else d
        vals.append(float(d.mean()))
        prev_v, prev_r = cur_v, cur_r
    return float(np.mean(vals)) if vals else float("nan")
