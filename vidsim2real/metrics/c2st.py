"""Classifier two-sample test (Lopez-Paz & Oquab 2017) trained until it stops learning, with its
power checked on cases it must get right.

A small CNN learns to tell crops of a video from crops of real frames; its accuracy on frames it
never trained on is the figure (0.5: indistinguishable, 1: always told apart). A classifier
stopped after a fixed handful of steps is too weak to steer anything (it cannot tell the plain
sim render from the real domain), so every run here trains until its accuracy on a held-out
validation block stops rising, and keeps the weights of its best validation check.

Power: the same test must tell the sim render from the real domain (accuracy >= POWER_SIM_MIN)
and must not tell two samples of the real domain apart (another patient's, or another clip's,
accuracy <= POWER_NULL_MAX); where it does not, its figures are reported as underpowered
instead of as numbers (``power``).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..layout import nhwc_to_nchw, to_signed

POWER_SIM_MIN = 0.93      # the sim render must be told from the real domain at least this often
POWER_NULL_MAX = 0.62     # ... and another sample of the real domain at most this often
# Early stopping counts only after this many steps: in a measured run the classifier sat at
# chance for up to ~1,200 steps before it began to learn; runs stopped in that plateau scored
# 0.42-0.48 among runs at 0.9-1.0 on the same data (docs/results.md, "A C2ST run that stops too soon").
MIN_STEPS = 2000
FOLDS = 4                 # contiguous blocks per clip: each run tests on one, validates on the next
VERSION = 3               # of the test's procedure: keys cached results (1 was a fixed 200-step classifier;
                          # 2 could stop a run in the classifier's first plateau, before it began to learn)
# What the classifier may see of both sets (``view``): everything, or one cue at a time, to find
# which cues give a set away (a set told apart in every view has several independent tells).
VIEWS = ("full", "grey", "coarse", "fine")
VIEW_SIGMA = 1.0          # px: "coarse" keeps what a Gaussian of this std keeps, "fine" the rest
FINE_GAIN = 4.0           # the fine band is a few levels of sRGB: scaled into the range of a frame


class CropClassifier(torch.nn.Module):
    """Tells crops [B, 3, S, S] (values in [-1, 1]) of two sets apart: four stride-2 3x3 convs
    (width w, 2w, 4w, 4w; group norm after the first, which keeps absolute colour in the first
    layer), global average pooling, one logit [B]."""

    def __init__(self, width: int = 16):
        super().__init__()
        layers, cin = [], 3
        for i, cout in enumerate((width, 2 * width, 4 * width, 4 * width)):
            layers.append(torch.nn.Conv2d(cin, cout, 3, 2, 1))
            if i > 0:               # normalised deeper layers learn several times faster
                layers.append(torch.nn.GroupNorm(4, cout))
            layers.append(torch.nn.LeakyReLU(0.2))
            cin = cout
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(cin, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))[:, 0]


def view_of(x: torch.Tensor, view: str) -> torch.Tensor:
    """What the classifier sees of frames x [N, 3, H, W] in [-1, 1] -> [N, 3, H, W]: ``full``
    (as they are), ``grey`` (Rec. 709 luma in all three channels: no colour), ``coarse`` (a
    Gaussian blur of VIEW_SIGMA px: colour and shapes, no grain or finest texture) or ``fine``
    (the frame minus that blur, x FINE_GAIN: only the finest band — grain, hard edges, the
    smallest texture)."""
    if view == "full":
        return x
    if view == "grey":
        w = torch.tensor([0.2126, 0.7152, 0.0722], dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    if view not in VIEWS:
        raise ValueError(f"unknown c2st view {view!r} (one of {', '.join(VIEWS)})")
    import kornia
    k = 2 * int(math.ceil(3 * VIEW_SIGMA)) + 1
    blur = kornia.filters.gaussian_blur2d(x, (k, k), (VIEW_SIGMA, VIEW_SIGMA), border_type="reflect")
    return blur if view == "coarse" else FINE_GAIN * (x - blur)


def _groups(x, view: str = "full") -> list[torch.Tensor]:
    """A set given as one clip [T, H, W, 3] or a list of clips (e.g. one per scene) -> list of
    NCHW clips in [-1, 1] on the CPU, as the classifier sees them (``view_of``)."""
    clips = [x] if isinstance(x, torch.Tensor) else list(x)
    return [view_of(to_signed(nhwc_to_nchw(c.float().cpu())), view) for c in clips]


def _blocks(n: int, k: int) -> list[range]:
    """k contiguous blocks of range(n) (neighbouring frames never straddle train and test)."""
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [range(edges[i], edges[i + 1]) for i in range(k)]


def _take(clips: list[torch.Tensor], k: int, which: list[int]) -> torch.Tensor:
    """The blocks ``which`` (of k contiguous blocks) of every clip, concatenated: [N, 3, H, W]."""
    parts = []
    for c in clips:
        blocks = _blocks(len(c), k)
        parts += [c[blocks[b].start:blocks[b].stop] for b in which]
    return torch.cat(parts)


def _crops(x: torch.Tensor, n: int, size: int, gen: torch.Generator, flip: bool) -> torch.Tensor:
    """n random size x size crops [n, 3, size, size] of frames x [N, 3, H, W] (random frames
    and positions, random horizontal flips when ``flip``)."""
    N, _, H, W = x.shape
    t = torch.randint(0, N, (n,), generator=gen).tolist()
    ys = torch.randint(0, H - size + 1, (n,), generator=gen).tolist()
    xs = torch.randint(0, W - size + 1, (n,), generator=gen).tolist()
    out = torch.stack([x[a, :, b:b + size, c:c + size] for a, b, c in zip(t, ys, xs)])
    if flip:
        f = torch.rand(n, generator=gen) < 0.5
        out = torch.where(f[:, None, None, None], out.flip(3), out)
    return out


def _per_frame_crops(x: torch.Tensor, k: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """k random size x size crops of every frame of x [N, 3, H, W]: [N, k, 3, size, size]."""
    return torch.stack([_crops(x[i:i + 1], k, size, gen, False) for i in range(len(x))])


def _scores(net, crops: torch.Tensor, device) -> torch.Tensor:
    """Logits [N, k] of per-frame crops [N, k, 3, S, S] (in chunks, no graph)."""
    with torch.no_grad():
        flat = crops.flatten(0, 1)
        out = torch.cat([net(flat[j:j + 256].to(device)).cpu() for j in range(0, len(flat), 256)])
    return out.view(crops.shape[:2])


def _balanced(sa: torch.Tensor, sb: torch.Tensor) -> float:
    """Balanced accuracy of logits sa (of label 0) and sb (of label 1)."""
    return 0.5 * (float((sa < 0).float().mean()) + float((sb > 0).float().mean()))


def _auc(sa: torch.Tensor, sb: torch.Tensor) -> float:
    """Area under the ROC curve of logits sa [N] (label 0) and sb [M] (label 1): the chance that
    a frame of b scores above one of a (ties count half). Unlike the accuracy it needs no
    threshold, so a classifier whose logits all shift on the held-out block (another patient
    of the reference, another stretch of the video) but still rank the two sets apart keeps
    its score."""
    d = sb[None, :] - sa[:, None]
    return float((d > 0).float().mean() + 0.5 * (d == 0).float().mean())


def _one_sided(sa: torch.Tensor, sb: torch.Tensor) -> bool:
    """Whether every frame of both sets falls on one side of the threshold (accuracy exactly
    0.5 whatever the ranking: all called real, or all called not real)."""
    both = torch.cat([sa, sb])
    return bool((both > 0).all() or (both < 0).all())


def _accuracy(net, a: torch.Tensor, b: torch.Tensor, device, per_frame: bool) -> float:
    """Balanced accuracy on per-frame crops a (label 0) and b (label 1), [N, k, 3, S, S]: of
    every crop, or (``per_frame``) of every frame judged by the mean logit of its crops."""
    sa, sb = _scores(net, a, device), _scores(net, b, device)
    if per_frame:
        sa, sb = sa.mean(1), sb.mean(1)
    return _balanced(sa, sb)


def _fit(tv: torch.Tensor, tr: torch.Tensor, val: tuple, gen: torch.Generator, seed: int, max_steps: int,
         check_every: int, patience: int, batch: int, crop: int, device,
         min_steps: int = 0) -> tuple[CropClassifier, int, int]:
    """Train a fresh ``CropClassifier`` (weights seeded by ``seed``) on frames tv (label 0) and
    tr (label 1), [N, 3, H, W] in [-1, 1], until its crop accuracy on ``val`` (per-frame crops of
    both) stops rising, but at least ``min_steps`` (above ``max_steps``: to the end): the
    classifier sits at chance for its first several hundred steps before it begins to learn,
    and a stop inside that plateau would score two separable sets as one. Returns it with the weights of its best check, that step, and
    the steps trained."""
    target = torch.cat([torch.zeros(batch // 2), torch.ones(batch // 2)]).to(device)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = CropClassifier().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    best, best_state, best_step, since = -1.0, None, 0, 0
    for step in range(1, max_steps + 1):
        x = torch.cat([_crops(tv, batch // 2, crop, gen, True), _crops(tr, batch // 2, crop, gen, True)])
        loss = F.binary_cross_entropy_with_logits(net(x.to(device)), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % check_every == 0 or step == max_steps:
            acc = _accuracy(net, *val, device, per_frame=False)
            if acc > best:
                best, best_state, best_step, since = acc, copy.deepcopy(net.state_dict()), step, 0
            else:
                since += 1
                if since >= patience and step >= min_steps:
                    break
    net.load_state_dict(best_state)
    return net, best_step, step


def evidence_maps(frames, real, show, folds: int = 4, max_steps: int = 3000, check_every: int = 100,
                  patience: int = 6, batch: int = 32, crop: int = 64, seed: int = 0, device="cpu",
                  min_steps: int = MIN_STEPS) -> dict:
    """Where the two-sample test sees its evidence: the classifier of ``c2st``'s first run
    (seed ``seed``, test block 0: trained on blocks 2.., validated on block 1) of ``frames`` against
    ``real`` (clips or lists of clips, as ``c2st``), then its logit at every location of
    ``show`` (frames [N, H, W, 3] in [0, 1], best taken from the test block): the linear head
    applied to the features before global pooling, upsampled -> [N, H, W] (the frame's logit
    is their mean; > 0: real-looking, < 0: told apart as not real; a class-activation map,
    Zhou et al. 2016). Returns {"maps": [N, H, W], "crop_accuracy": on the test block}."""
    if folds < 3:
        raise ValueError("evidence_maps needs folds >= 3 (train, validation and test blocks)")
    V, R = _groups(frames), _groups(real)
    crop = min(crop, *V[0].shape[2:], *R[0].shape[2:])
    gen = torch.Generator().manual_seed(seed * 1000)
    train_ids = list(range(2, folds))
    val, test = (tuple(_per_frame_crops(_take(g, folds, [b]), 16, crop, gen) for g in (V, R)) for b in (1, 0))
    net, _, _ = _fit(_take(V, folds, train_ids), _take(R, folds, train_ids), val, gen, seed * 1000, max_steps,
                     check_every, patience, batch, crop, device, min_steps)
    x = _groups(show)[0].to(device)
    with torch.no_grad():
        f = net.features(x)
        m = torch.einsum("nchw,c->nhw", f, net.head.weight[0]) + net.head.bias[0]
        m = F.interpolate(m[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    return {"maps": m.cpu(), "crop_accuracy": _accuracy(net, *test, device, per_frame=False)}


def c2st(frames, real, folds: int = FOLDS, seeds: int = 3, max_steps: int = 3000, check_every: int = 100,
         patience: int = 6, batch: int = 32, crop: int = 64, test_crops: int = 16, seed: int = 0,
         device="cpu", view: str = "full", min_steps: int = MIN_STEPS, on_run=None) -> dict:
    """Classifier two-sample test of ``frames`` against ``real``: each is one clip [T, H, W, 3]
    or a list of clips (one per scene; the clips of a set share H, W), values in [0, 1]; the
    classifier sees both as ``view`` makes them (``view_of``: ``full``, or one cue alone).

    Every clip is cut into ``folds`` contiguous blocks. Run (seed s, fold i) trains a fresh
    ``CropClassifier`` on blocks other than i and i + 1 of every clip of both sets (balanced
    batches of random ``crop``² crops with flips, Adam), checks its accuracy on block i + 1
    every ``check_every`` steps, stops after ``patience`` checks without a new best once it has
    trained ``min_steps`` (or at ``max_steps``) and keeps the best weights, then judges every
    frame of block i by the mean logit of ``test_crops`` crops of it. Neighbouring frames never straddle training and testing. Seeded: the same
    inputs give the same figures (on one device; crops are cut on the CPU).

    Returns {"c2st_accuracy": mean test accuracy over folds x seeds, "c2st_std": its std over
    those runs, "c2st_seed_std": the std of the per-seed means, "c2st_steps": mean steps of the
    kept weights, "c2st_trained_steps": mean steps trained, "c2st_runs": folds x seeds,
    "c2st_crop_accuracy": the same per crop instead of per frame, "c2st_per_clip": per clip of ``frames`` / ``real`` (zipped; the longer list's rest
    alone), the share of its test frames judged right, mean over runs, as [video, real] (None
    for a side without that clip) — which clips give the set away, and which real clips the
    classifier takes for the video's}, "c2st_run_accuracy": every run's test accuracy,
    [seeds][folds] (``paired``), "c2st_auc" / "c2st_auc_std" / "c2st_run_auc": the same runs'
    frame scores as an ROC AUC (threshold-free: 0.5 none, 1 every real frame above every video
    frame, below 0.5 ranked the wrong way round), "c2st_one_sided_runs": how many runs called
    every test frame the same (accuracy exactly 0.5 whatever the ranking); NaN figures when a
    clip has fewer frames than folds. ``on_run``: called after each run (a progress bar's step).
    """
    if folds < 3:
        raise ValueError("c2st needs folds >= 3 (train, validation and test blocks)")
    V, R = _groups(frames, view), _groups(real, view)
    if min(len(c) for c in V + R) < folds:
        nan = float("nan")
        return {"c2st_accuracy": nan, "c2st_std": nan, "c2st_seed_std": nan, "c2st_steps": nan,
                "c2st_trained_steps": nan, "c2st_runs": 0,
                "c2st_crop_accuracy": nan, "c2st_per_clip": [], "c2st_run_accuracy": [],
                "c2st_auc": nan, "c2st_auc_std": nan, "c2st_run_auc": [], "c2st_one_sided_runs": 0}
    crop = min(crop, *V[0].shape[2:], *R[0].shape[2:])      # small videos: crops as large as they allow
    accs, crop_accs, steps = np.zeros((seeds, folds)), np.zeros((seeds, folds)), np.zeros((seeds, folds))
    trained, aucs, one_sided = np.zeros((seeds, folds)), np.zeros((seeds, folds)), np.zeros((seeds, folds), bool)
    told = [np.zeros((seeds, folds, len(g))) for g in (V, R)]      # per run and clip: share judged right
    for s in range(seeds):
        for i in range(folds):
            val_i = (i + 1) % folds
            train_ids = [b for b in range(folds) if b not in (i, val_i)]
            tv, tr = _take(V, folds, train_ids), _take(R, folds, train_ids)
            gen = torch.Generator().manual_seed((seed + s) * 1000 + i)

            def held(which):
                a, b = _take(V, folds, [which]), _take(R, folds, [which])
                return _per_frame_crops(a, test_crops, crop, gen), _per_frame_crops(b, test_crops, crop, gen)
            val, test = held(val_i), held(i)
            net, best_step, trained[s, i] = _fit(tv, tr, val, gen, (seed + s) * 1000 + i, max_steps, check_every,
                                                 patience, batch, crop, device, min_steps)
            sa, sb = _scores(net, test[0], device), _scores(net, test[1], device)
            accs[s, i], steps[s, i] = _balanced(sa.mean(1), sb.mean(1)), best_step
            aucs[s, i], one_sided[s, i] = _auc(sa.mean(1), sb.mean(1)), _one_sided(sa.mean(1), sb.mean(1))
            crop_accs[s, i] = _balanced(sa, sb)
            for k, (g, right) in enumerate(zip((V, R), (sa.mean(1) < 0, sb.mean(1) > 0))):
                sizes = [len(_blocks(len(c), folds)[i]) for c in g]
                told[k][s, i] = [float(p.float().mean()) for p in right.split(sizes)]
            if on_run is not None:
                on_run()
    per_clip = [[float(t[..., c].mean()) if c < t.shape[-1] else None for t in told]
                for c in range(max(len(V), len(R)))]
    return {"c2st_accuracy": float(accs.mean()), "c2st_std": float(accs.std()),
            "c2st_seed_std": float(accs.mean(1).std()), "c2st_steps": float(steps.mean()),
            "c2st_trained_steps": float(trained.mean()),
            "c2st_runs": int(accs.size), "c2st_crop_accuracy": float(crop_accs.mean()), "c2st_per_clip": per_clip,
            "c2st_run_accuracy": accs.tolist(), "c2st_auc": float(aucs.mean()), "c2st_auc_std": float(aucs.std()),
            "c2st_run_auc": aucs.tolist(), "c2st_one_sided_runs": int(one_sided.sum())}


def paired(a: dict, b: dict, key: str = "c2st_run_accuracy") -> dict:
    """Two videos' C2ST results against the same real frames with the same folds and seeds
    (``key``, [seeds][folds]: the runs' accuracies, or ``c2st_run_auc`` their AUCs), compared
    run by run: run (seed s, fold i) of both
    held out the same real block with the same classifier seed, so what a fold's real block
    does to the figure (most of ``c2st_std``) cancels. Returns {"difference": mean of a - b,
    "std": its std over the runs, "seed_std": the std of its per-seed means, "folds_lower": how
    many folds have a below b (mean over seeds), "folds": their number}."""
    ra, rb = (np.asarray(r.get(key, []), dtype=float) for r in (a, b))
    if ra.size == 0 or ra.shape != rb.shape:
        raise ValueError(f"paired C2ST needs both results' {key} with the same seeds and folds")
    d = ra - rb
    return {"difference": float(d.mean()), "std": float(d.std()), "seed_std": float(d.mean(1).std()),
            "folds_lower": int((d.mean(0) < 0).sum()), "folds": int(d.shape[1])}


def power(sim_accuracy: float, null_accuracy: float) -> dict:
    """Whether the test has power: it tells the sim render from the real domain at least
    POWER_SIM_MIN of the time and two samples of the real domain apart at most POWER_NULL_MAX.
    Returns {"powered": bool, "sim": ..., "null": ..., "why": "" or what failed}."""
    why = []
    if not sim_accuracy >= POWER_SIM_MIN:
        why.append(f"sim render told apart {sim_accuracy:.3f} < {POWER_SIM_MIN}")
    if not null_accuracy <= POWER_NULL_MAX:
        why.append(f"real vs real told apart {null_accuracy:.3f} > {POWER_NULL_MAX}")
    return {"powered": not why, "sim": float(sim_accuracy), "null": float(null_accuracy), "why": "; ".join(why)}


def power_of(sim: dict, null: dict) -> dict:
    """``power`` of two ``c2st`` results, the sim render's and the null case's: of their
    accuracies, and under "auc" of the same runs' AUC (a result cached without it: None)."""
    auc = power(sim["c2st_auc"], null["c2st_auc"]) if "c2st_auc" in sim and "c2st_auc" in null else None
    return {**power(sim["c2st_accuracy"], null["c2st_accuracy"]), "auc": auc}


def describe_power(pw: dict) -> str:
    """One line for reports: both power figures with their limits and the verdict (and the
    same for the runs' AUC where ``pw`` holds it under "auc")."""
    def line(p):
        verdict = "powered" if p["powered"] else f"underpowered ({p['why']})"
        return (f"sim render told apart {p['sim']:.3f} (>= {POWER_SIM_MIN}), real vs real "
                f"{p['null']:.3f} (<= {POWER_NULL_MAX}): {verdict}")
    return f"c2st power: {line(pw)}" + (f"; as AUC: {line(pw['auc'])}" if pw.get("auc") else "")


def split_real(real: torch.Tensor, folds: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint samples of one real set [R, H, W, 3] for the null case of ``power``: its
    frames cut into 2 x ``folds`` contiguous chunks (frames of one clip stay together), even
    chunks to the first sample, odd ones to the second. ``c2st`` with the same ``folds`` then
    tests each sample on one whole chunk that none of its training chunks shares frames with."""
    blocks = _blocks(len(real), 2 * folds)
    a = torch.cat([real[b.start:b.stop] for b in blocks[0::2]])
    b = torch.cat([real[b.start:b.stop] for b in blocks[1::2]])
    return a, b
