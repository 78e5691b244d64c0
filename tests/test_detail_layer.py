"""The detail layer (texture.detail): real class detail drawn onto the surface, multiplying the
translated frame. Tiny configs at 64x64 on the CPU."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import SCENES, Labelled, tiny_cfg
from vidsim2real.errors import UserError
from vidsim2real.io.checkpoint import load_checkpoint

DETAIL = ["model.type=oneway", "texture.detail=true", "texture.detail_texel_size=0.004",
          "texture.detail_resolution=48"]


def test_detail_multiplies_linear_light_and_zero_leaves_the_frame():
    from vidsim2real.shading import linear_to_srgb, srgb_to_linear
    from vidsim2real.translate.model import detailed
    img = torch.rand(2, 3, 8, 8) * 1.6 - 0.8
    torch.testing.assert_close(detailed(img, torch.zeros_like(img)), img, atol=1e-5, rtol=0)
    d = torch.full_like(img, math.log(0.5))              # half the light in every channel
    lin = srgb_to_linear((img + 1) / 2)
    torch.testing.assert_close(detailed(img, d), linear_to_srgb(lin * 0.5) * 2 - 1, atol=1e-5, rtol=0)


def test_recolour_maps_each_flat_colour_to_its_own_and_keeps_edges_and_shading():
    """model.recolour: a smooth colour matrix gives two sim classes different colours with the
    boundary as sharp as the sim's and each class's shading ratios untouched."""
    from vidsim2real.shading import linear_to_srgb, srgb_to_linear
    from vidsim2real.translate.model import detailed, recoloured_linear
    img = torch.rand(1, 3, 8, 8) * 1.6 - 0.8
    d = torch.randn(1, 3, 8, 8) * 0.2
    torch.testing.assert_close(recoloured_linear(img, torch.zeros(1, 9, 8, 8), 4.0, d), detailed(img, d),
                               atol=1e-5, rtol=0)              # a zero start is the frame x its detail
    # left half a cream class, right half a red one, both shaded by a ramp from 0.3 to 0.9
    xs = torch.linspace(0.3, 0.9, 32)
    shade = xs[None, None, None, :].expand(1, 1, 32, 32)
    cream, red = torch.tensor([0.8, 0.7, 0.5]), torch.tensor([0.6, 0.1, 0.1])
    albedo = torch.where(torch.arange(32)[None, None, None, :] < 16, cream[None, :, None, None], red[None, :, None, None])
    sim = linear_to_srgb(albedo * shade) * 2 - 1
    # one matrix everywhere (smoothing leaves it unchanged): cream -> grey-pink, red -> orange-red
    src = torch.stack([cream, red, torch.tensor([0.0, 0.0, 1.0])], 1)
    dst = torch.stack([torch.tensor([0.7, 0.5, 0.5]), torch.tensor([0.7, 0.3, 0.1]), torch.tensor([0.0, 0.0, 1.0])], 1)
    m = dst @ torch.linalg.inv(src) - torch.eye(3)
    out = recoloured_linear(sim, m.reshape(1, 9, 1, 1).expand(1, 9, 32, 32).contiguous(), 4.0)
    lin = srgb_to_linear((out + 1) / 2)
    torch.testing.assert_close(lin[0, :, :, :16], (dst[:, 0, None, None] * shade[0, :, :, :16]), atol=1e-4, rtol=0)
    torch.testing.assert_close(lin[0, :, :, 16:], (dst[:, 1, None, None] * shade[0, :, :, 16:]), atol=1e-4, rtol=0)
    # a field of matrices that changes across the image is smoothed: no pixel-scale pattern of its own
    noise = torch.randn(1, 9, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.3
    flat = torch.zeros(1, 3, 32, 32) + 0.2
    rough = recoloured_linear(flat, noise, 4.0)
    assert (rough[..., 1:] - rough[..., :-1]).abs().max() < 0.05       # unsmoothed: 1.7, sigma 1 px: 0.36


def test_log_detail_ignores_shading_and_quilting_keeps_contrast():
    from vidsim2real.train.detail_init import log_detail, quilt
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    shading = (0.2 + 0.6 * xs)[None].expand(3, -1, -1)             # a smooth ramp: no detail
    mask = torch.ones(64, 64, dtype=torch.bool)
    assert log_detail(shading, mask)[:, 12:-12, 12:-12].abs().max() < 0.03     # 2 sigma from the edges
    stripes = shading * (1 + 0.3 * torch.sign(torch.sin(ys * 40)))  # fine stripes on the ramp
    d = log_detail(stripes.clamp(0, 1), mask)
    assert d.std() > 0.1
    assert not log_detail(stripes.clamp(0, 1), torch.zeros_like(mask)).any()
    patches = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.2
    tiled = quilt(patches, 100, 70, torch.Generator().manual_seed(1))
    assert tiled.shape == (3, 100, 70)
    assert 0.85 < float(tiled.std() / patches.std()) < 1.15


def test_quilting_keeps_exemplar_structure():
    """Every quilted texel is one exemplar pixel (vessel and lobule edges stay whole; averaging
    overlapping windows would make values no exemplar has), patches are chosen to agree where
    they overlap (seams as smooth as the exemplar, far smoother than random placement), and
    high-contrast patches are not passed over for flat ones."""
    import torch.nn.functional as F
    from vidsim2real.train.detail_init import quilt
    g = torch.Generator().manual_seed(0)
    blobs = F.avg_pool2d(torch.randn(1, 1, 260, 260, generator=g), 9, 1, 4)
    source = torch.where(blobs[0] > 0, 0.3, -0.3).expand(3, -1, -1)            # binary blobs [3, 260, 260]
    ys, xs = torch.randint(0, 260 - 24, (40,), generator=g), torch.randint(0, 260 - 24, (40,), generator=g)
    patches = torch.stack([source[:, y:y + 24, x:x + 24] for y, x in zip(ys.tolist(), xs.tolist())])
    patches[:8] *= 0.1                                                          # a few flat ones
    tiled = quilt(patches, 90, 120, torch.Generator().manual_seed(1))
    assert tiled.shape == (3, 90, 120)
    values = set(patches.unique().tolist())
    assert set(tiled.unique().tolist()) <= values                               # no blended value
    assert float((tiled.abs() > 0.2).float().mean()) > 0.9                      # flat patches rarely chosen

    def jumps(x):          # how often horizontally neighbouring texels differ
        return float((x[..., 1:] != x[..., :-1]).float().mean())
    unmatched = quilt(patches, 90, 120, torch.Generator().manual_seed(1), tolerance=1e9)   # any candidate
    assert jumps(unmatched) > 1.15 * jumps(tiled)
    assert jumps(tiled) < 1.1 * jumps(patches[8:])


def test_highlights_keep_their_brightness_but_not_their_colour():
    """A white specular spot on red tissue would be a cyan log-ratio baked into the surface: the
    drawn detail keeps it as a grey brightening; a dark-red vessel keeps its colour."""
    from vidsim2real.train.detail_init import log_detail
    img = torch.tensor([0.6, 0.15, 0.1])[:, None, None].repeat(1, 64, 64)     # red tissue
    img[:, 20:24, 20:24] = 0.97                                                # a white highlight
    img[:, 40:64, 44:46] = torch.tensor([0.5, 0.09, 0.07])[:, None, None]     # a dark-red vessel
    d = log_detail(img, torch.ones(64, 64, dtype=torch.bool))
    spot, vessel = d[:, 21, 21], d[:, 50, 45]
    assert spot.min() > 0.3                                    # brighter in every channel ...
    assert float(spot.max() - spot.min()) < 0.05               # ... and no colour of its own
    assert vessel.max() < 0 and float(vessel[1] - vessel[0]) < -0.3    # the vessel: darker, redder
    # without the neutralisation the spot would be strongly cyan (blue rises far more than red)
    from vidsim2real.shading import srgb_to_linear
    x = torch.log(srgb_to_linear(img) + 1e-3)
    assert float(x[2, 21, 21] - x[2, 5, 5]) - float(x[0, 21, 21] - x[0, 5, 5]) > 1.0


def test_detail_layer_is_prefiltered_by_pixel_footprint():
    """The layer is sampled like a mipmap: where a pixel covers many texels the pattern is
    averaged (less contrast, no aliasing), where it covers one the finest level is used as is;
    the blend is differentiable and the filtered levels follow the texels when they change."""
    from vidsim2real.render import Renderer
    from vidsim2real.scene import load_scene
    from vidsim2real.texture import TextureConfig, TextureSet, detail_lod, pixel_footprint
    scene = load_scene(SCENES / "liver_edge_breathing.yaml")
    cfg = TextureConfig(channels=4, resolution=16, levels=2, detail=True, detail_texel_size=0.0005,
                        detail_resolution=256)
    ts = TextureSet.for_scene(scene, cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in ts.detail.values():
            t.levels[0].copy_(torch.randn(t.levels[0].shape, generator=gen) * 0.3)   # texel-scale noise
    small, large = (Renderer(scene, (s, s), backend="cpu") for s in (48, 384))
    bs, bl = small.render([0]), large.render([0])
    # footprint: 8x the pixels, 1/8 of the surface per pixel (median over the foreground)
    fs, fl = (pixel_footprint(b.rest_positions, b.object_ids) for b in (bs, bl))
    ratio = float(fs[fs > 0].median() / fl[fl > 0].median())
    assert 6.0 < ratio < 10.0
    lod_s = detail_lod(bs, [t.texel_size() for t in (ts.detail[o.name] for o in scene.objects)], 3)
    assert float(lod_s[bs.object_ids.reshape(-1) >= 0].median()) > 2.0         # minified: coarse levels
    assert lod_s[bs.object_ids.reshape(-1) < 0].abs().max() == 0
    # texture.detail_lod_bias shifts every level by that much (within [0, levels]): -1 is sharper
    sizes = [t.texel_size() for t in (ts.detail[o.name] for o in scene.objects)]
    fg = bs.object_ids.reshape(-1) >= 0
    mid = fg & (lod_s > 1.0) & (lod_s < 2.0)
    torch.testing.assert_close(detail_lod(bs, sizes, 3, -1.0)[mid], lod_s[mid] - 1.0)
    assert detail_lod(bs, sizes, 3, 1.0)[fg].min() >= 1.0 and detail_lod(bs, sizes, 3, -9.0).max() == 0
    def layer_std(buf, lod):
        ts.config.detail_lod = lod
        with torch.no_grad():
            f = ts.sample(buf, scene)[..., -3:]
        return float(f[buf.object_ids >= 0].std())
    assert layer_std(bs, 3) < 0.6 * layer_std(bs, 0)          # averaged where minified
    ts.config.detail_lod_bias = -1.0                           # one level sharper: about 2x the contrast
    sharper = layer_std(bs, 3)
    ts.config.detail_lod_bias = 0.0
    assert 1.4 * layer_std(bs, 3) < sharper < layer_std(bs, 0)
    assert layer_std(bl, 3) > 0.6 * layer_std(bl, 0)          # close up: hardly filtered
    with torch.no_grad():                                      # the kernels and the torch reference agree
        torch.testing.assert_close(ts.sample(bs, scene, backend="cpu"), ts.sample(bs, scene, backend="torch"),
                                   atol=1e-5, rtol=1e-4)
    # the filtered levels follow the texels (cached only while they are unchanged)
    before = layer_std(bs, 3)
    with torch.no_grad():
        for t in ts.detail.values():
            t.levels[0].mul_(2.0)
    assert layer_std(bs, 3) == pytest.approx(2 * before, rel=1e-3)
    # gradients reach the finest texels through the filtered levels
    ts.config.detail_lod = 3
    ts.sample(bs, scene)[..., -3:].sum().backward()
    assert any(t.levels[0].grad is not None and t.levels[0].grad.abs().sum() > 0 for t in ts.detail.values())


def _first_frame(model) -> torch.Tensor:
    """liver_overview's frame 0 at 64x64 translated by ``model`` in style 0: [1, 64, 64, 3]."""
    from vidsim2real.render import Renderer
    from vidsim2real.scene import load_scene
    from vidsim2real.translate.inference import make_style, translate_buffers
    r = Renderer(load_scene(SCENES / "liver_overview.yaml"), (64, 64))
    with torch.no_grad():
        return translate_buffers(model, r, r.render([0]), make_style(model, "0", "cpu"))


def test_detail_layer_is_drawn_from_real_frames_trained_and_translated(tmp_path, real_frames, cli, capsys):
    """A detail run: layers drawn from the labelled real frames for classes they show, zero for
    the rest; one step moves them; the slim model translates and its detail shows in the frame;
    fine-tuning from a model without the layer keeps its weights and draws the layer."""
    from vidsim2real.train.loop import train
    from vidsim2real.translate.inference import load_model
    src = train(tiny_cfg(tmp_path / "a", real_frames, "steps=0", "model.type=oneway"), progress=False).model
    cfg = tiny_cfg(tmp_path / "b", real_frames, "steps=1", *DETAIL, f"init_from={src}")
    run = train(cfg, progress=False)
    log = capsys.readouterr().out
    assert "detail layer drawn from the real frames' class detail" in log
    tex = load_checkpoint(run.model)["textures"]["openhelp"]
    old = load_checkpoint(src)["textures"]["openhelp"]
    assert all(k in tex for k in old)                    # the features came from the source run
    layers = {k.split(".")[1]: v.float() for k, v in tex.items() if k.startswith("detail.") and ".levels." in k}
    assert layers and all(v.shape[1] == 3 for v in layers.values())
    assert layers["liver"].abs().mean() > 1e-3          # the real set shows liver
    # it carries detail, not colour: exp(layer) averages 1 on every plane and channel
    torch.testing.assert_close(layers["liver"].exp().mean(dim=(2, 3)), torch.ones(3, 3), atol=2e-3, rtol=0)
    assert max(v.shape[-2] for v in layers.values()) <= 48
    model = load_model(run.model)
    assert model.net.detail and model.net.feat_channels == cfg.texture.channels + 3
    rc, _, err = cli("translate", run.model, SCENES / "liver_overview.yaml", "-o", tmp_path / "v.mp4",
                     "--size", "64x64", "--frames", "0:2")
    assert rc == 0, err
    # without its detail layer the same model renders another frame
    a = _first_frame(model)
    with torch.no_grad():
        for t in model.textures["openhelp"].detail.values():
            t.levels[0].zero_()
    assert (a - _first_frame(model)).abs().max() > 0.02
    # fit-textures on a new anatomy: its liver-class object draws its layer from the real frames
    import yaml
    from conftest import mini_scene_dict
    d = mini_scene_dict(tmp_path)
    d["anatomy"] = "mini"
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(d))
    rc, _, err = cli("fit-textures", run.model, tmp_path / "mini.yaml", "--steps", "1", "-o", tmp_path / "fit.pt",
                     "--real", real_frames, "--device", "cpu")
    assert rc == 0, err
    fitted = load_checkpoint(tmp_path / "fit.pt")["textures"]
    assert fitted["mini"]["detail.ball.levels.0"].float().abs().mean() > 1e-3
    assert all(torch.equal(v, fitted["openhelp"][k]) for k, v in tex.items())
    # from a detail checkpoint its layers are kept; texture.detail_redraw draws them afresh, and
    # texture.detail_sharpness is the layer's triplanar blend, kept by the slim model
    kept = train(tiny_cfg(tmp_path / "c", real_frames, "steps=0", *DETAIL, f"init_from={run.model}"), progress=False)
    redrawn = train(tiny_cfg(tmp_path / "d", real_frames, "steps=0", *DETAIL, f"init_from={run.model}",
                             "texture.detail_redraw=true", "texture.detail_sharpness=16"), progress=False)
    key = "detail.liver.levels.0"
    assert torch.equal(load_checkpoint(kept.model)["textures"]["openhelp"][key], tex[key])
    assert not torch.allclose(load_checkpoint(redrawn.model)["textures"]["openhelp"][key].float(), tex[key].float())
    sharp = load_model(redrawn.model).textures["openhelp"]
    assert {t.sharpness for t in sharp.detail.values()} == {16.0} and {t.sharpness for t in sharp.textures.values()} == {4.0}


def test_detail_layer_gets_gradients_and_config_errors(tmp_path, real_frames):
    from test_train import make_trainer
    from vidsim2real.train.loop import real_crops, start_detail
    cfg = tiny_cfg(tmp_path, real_frames, "loss.view_warmup=0", "loss.detail=1", *DETAIL)
    trainer, sampler, real = make_trainer(cfg)
    drawn = start_detail(sampler.bank, real, dict(trainer.textures.items()), report=False)
    assert drawn
    before = {n: p.detach().clone() for n, p in trainer.textures.named_parameters() if ".detail." in f".{n}"}
    trainer.training_step(sampler.batch(1, real, real_crops=real_crops(cfg)))
    after = dict(trainer.textures.named_parameters())
    assert before and any(not torch.equal(before[n], after[n]) for n in before)
    with pytest.raises(UserError, match="texture.detail"):
        tiny_cfg(tmp_path / "x", real_frames, "texture.detail=true")            # munit: no such layer
    with pytest.raises(UserError, match="detail_strength"):
        tiny_cfg(tmp_path / "z", real_frames, *DETAIL, "texture.detail_strength=5")
    with pytest.raises(UserError, match="detail_lod"):
        tiny_cfg(tmp_path / "l", real_frames, *DETAIL, "texture.detail_lod=-1")
    with pytest.raises(UserError, match="detail_streams"):
        tiny_cfg(tmp_path / "r", real_frames, *DETAIL, "texture.detail_streams=each")
    with pytest.raises(UserError, match="detail_lod_bias"):
        tiny_cfg(tmp_path / "b", real_frames, *DETAIL, "texture.detail_lod_bias=9")
    with pytest.raises(UserError, match="detail_texel_size"):
        tiny_cfg(tmp_path / "y", real_frames, *DETAIL, "texture.detail_texel_size=0")
    with pytest.raises(UserError, match="detail_sharpness"):
        tiny_cfg(tmp_path / "s", real_frames, *DETAIL, "texture.detail_sharpness=0")


def test_each_object_draws_its_layer_from_its_own_random_stream():
    """An object's drawn layer depends on the seed and its name only: drawing it alone or after
    other objects (whose canvases use up random draws) gives the same texels."""
    from vidsim2real.scene import load_scene
    from vidsim2real.texture import TextureConfig, TextureSet
    from vidsim2real.train.detail_init import init_detail
    scene = load_scene(SCENES / "liver_overview.yaml")
    cfg = TextureConfig(channels=4, resolution=16, levels=2, detail=True, detail_texel_size=0.004, detail_resolution=48)
    gen = torch.Generator().manual_seed(0)
    patches = {c: torch.randn(12, 3, 8, 8, generator=gen) * 0.2 for c in range(1, 7)}
    foot = {c: 0.004 for c in patches}
    every, alone, seed2 = (TextureSet.for_scene(scene, cfg) for _ in range(3))
    assert "stomach" in init_detail(every, [scene], patches, foot, seed=5)
    assert init_detail(alone, [scene], patches, foot, seed=5, only=["stomach"]) == ["stomach"]
    init_detail(seed2, [scene], patches, foot, seed=6, only=["stomach"])
    layer = lambda ts: ts.detail["stomach"].levels[0]
    assert layer(every).abs().mean() > 1e-3
    assert torch.equal(layer(every), layer(alone))
    assert not torch.allclose(layer(every), layer(seed2))
    # texture.detail_streams: shared — one stream in turn (how the shipped checkpoint was drawn):
    # the first object drawn is the same alone or with the rest, a later one is not
    first = next(o.name for o in scene.objects if o.class_id in patches)
    shared_all, shared_one, shared_first = (TextureSet.for_scene(scene, cfg) for _ in range(3))
    init_detail(shared_all, [scene], patches, foot, seed=5, streams="shared")
    init_detail(shared_one, [scene], patches, foot, seed=5, streams="shared", only=["stomach"])
    init_detail(shared_first, [scene], patches, foot, seed=5, streams="shared", only=[first])
    assert first != "stomach" and torch.equal(shared_all.detail[first].levels[0], shared_first.detail[first].levels[0])
    assert not torch.equal(layer(shared_all), layer(shared_one))


def test_aligned_quilting_keeps_directed_detail_running_one_way(tmp_path, real_frames):
    """texture.detail_aligned: windows of folds seen at every angle (as real frames show a
    stomach) are turned to run across and quilted without quarter turns, so the folds on the
    surface run side by side (one direction: along each plane's longer side) where plain
    quilting crosses them at right angles; a pattern without a direction is drawn as before."""
    from vidsim2real.scene import load_scene
    from vidsim2real.texture import TextureConfig, TextureSet
    from vidsim2real.train.detail_init import across, init_detail, quilt
    g = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    folds = []
    for k in range(40):         # sinusoidal folds, period 6 px, at angles spread over 180 degrees
        a = math.pi * k / 40
        phase = float(torch.rand(1, generator=g)) * 6.28
        folds.append(0.3 * torch.sin((xs * math.sin(a) + ys * math.cos(a)) * 2 * math.pi / 6 + phase))
    patches = torch.stack(folds)[:, None].expand(-1, 3, -1, -1).contiguous()

    def along_width(x):         # how much more the canvas changes up-down than across: folds across
        m = x.mean(0)
        return float(((m[1:] - m[:-1]) ** 2).mean() / ((m[:, 1:] - m[:, :-1]) ** 2).mean())
    # quilting continues the folds of the patch it starts from, so one canvas has some direction;
    # plain, which one is chance (quarter turns); aligned, every canvas runs across
    plain = [along_width(quilt(patches, 96, 96, torch.Generator().manual_seed(k))) for k in range(1, 7)]
    turned = [quilt(across(patches), 96, 96, torch.Generator().manual_seed(k), turns=False) for k in range(1, 7)]
    assert min(plain) < 1.0, plain
    assert min(along_width(t) for t in turned) > 2.5
    turned = turned[0]
    assert set(turned.unique().tolist()) <= set(patches.unique().tolist())      # still exemplar pixels
    noise = torch.randn(40, 3, 24, 24, generator=g) * 0.2                        # no direction to keep
    assert 0.7 < along_width(quilt(across(noise), 96, 96, torch.Generator().manual_seed(1), turns=False)) < 1.4
    # on an object's triplanar planes the folds run along its longer side in each plane
    scene = load_scene(SCENES / "liver_overview.yaml")
    cfg = TextureConfig(channels=4, resolution=16, levels=2, detail=True, detail_texel_size=0.001,
                        detail_resolution=160, detail_aligned=True)
    ts = TextureSet.for_scene(scene, cfg)
    init_detail(ts, [scene], {c: patches for c in range(1, 7)}, {c: 0.001 for c in range(1, 7)}, seed=5,
                only=["stomach"], aligned=True)
    t = ts.detail["stomach"]
    ext = (t.hi - t.lo).cpu()
    checked = 0
    for a, (i, j) in enumerate(((1, 2), (0, 2), (0, 1))):
        half = t.levels[0][a, :, :, :t.levels[0].shape[2]].detach()     # [3, rows along j, cols along i]
        if abs(float(ext[i] - ext[j])) > 0.2 * float(max(ext[i], ext[j])):
            r = along_width(half) * float(ext[i] / ext[j]) ** 2      # per metre: the square plane stretches a side
            assert (r > 2.0) if ext[i] > ext[j] else (r < 0.5), (a, r, ext.tolist())
            checked += 1
    assert checked >= 2          # the stomach's planes with a longer side (one of them stood up)
    with pytest.raises(UserError, match="detail_aligned"):
        tiny_cfg(tmp_path / "bad", real_frames, "model.type=oneway", "texture.detail_aligned=true")


def test_detail_windows_come_from_every_labelled_frame():
    """A class seen large in one frame of many (the abdominal wall in laparoscopy) still gets
    windows of the full size, from that frame, beside a class that is large everywhere."""
    from vidsim2real.train.detail_init import real_detail_patches
    rng = np.random.default_rng(0)
    frames, labels = [], []
    for i in range(90):
        lab = np.full((128, 128), 2, np.uint8)
        lab[:, 100:] = 1 if i != 80 else 2          # class 1: a thin strip, ...
        if i == 80:
            lab[:, :90] = 1                         # ... large in frame 80 only
        frames.append(rng.integers(60, 200, (128, 128, 3), dtype=np.uint8))
        labels.append(lab)
    patches = real_detail_patches(Labelled(frames, labels), size=32, per_class=12, frames=8)
    assert patches[1].shape == (12, 3, 32, 32) and patches[2].shape == (12, 3, 32, 32)
    assert patches[1].abs().mean() > 0.05           # drawn from the noise of frame 80, not empty
    # a large set is searched in `scan` evenly spread frames (here 10 of 90: frame 80 is not one)
    assert real_detail_patches(Labelled(frames, labels), size=32, per_class=4, frames=8, scan=10)[1].shape[-1] < 32



def test_recolour_model_trains_saves_and_translates(tmp_path, real_frames, cli):
    """model.recolour with the detail layer: learns a colour change from its identity start,
    and the slim model translates from the CLI."""
    from vidsim2real.train.loop import train
    from vidsim2real.translate.inference import load_model
    cfg = tiny_cfg(tmp_path, real_frames, "steps=3", "optim.lr=0.005", "model.recolour=true", *DETAIL)
    run = train(cfg, progress=False)
    model = load_model(run.model)
    assert model.net.recolour
    out = _first_frame(model)
    model.net.dec_r.zero_last()                          # back to the start: sim render x detail layer
    assert (out - _first_frame(model)).abs().mean() > 1e-3          # it learned a colour change
    rc, _, err = cli("translate", run.model, SCENES / "liver_overview.yaml", "-o", tmp_path / "v.mp4",
                     "--size", "64x64", "--frames", "0:2")
    assert rc == 0, err


def test_matte_windows_leave_specular_highlights_out():
    """texture.detail_matte: a window holding a specular highlight would paint the real
    surface's light onto ours, so matte windows avoid them (where the class has enough
    highlight-free tissue); pale tissue is not mistaken for a highlight; a class glossy all over
    keeps its windows."""
    from vidsim2real.train.detail_init import real_detail_patches, specular
    rng = np.random.default_rng(1)
    frames, labels = [], []
    for i in range(12):
        img = np.empty((128, 128, 3), np.uint8)
        img[:, :64] = (170, 50, 40)                              # class 1: red tissue ...
        img[:, 64:] = (235, 205, 150)                            # class 2: pale, yellowish (fat)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        for y, x in rng.integers(8, 120, (6, 2)):
            x = x // 2                                           # ... with white highlights
            img[y - 3:y + 3, x - 3:x + 3] = 255
        lab = np.full((128, 128), 2, np.uint8)
        lab[:, :64] = 1
        frames.append(img)
        labels.append(lab)
    rgb = torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 255
    lab0 = torch.from_numpy(labels[0].astype(np.int64))
    spec = specular(rgb, lab0 == 1)
    white = (rgb.min(0)[0] > 0.99) & (lab0 == 1)
    assert spec[white].all() and spec[lab0 == 1].float().mean() < 0.3    # the blobs (and halo) only
    assert not specular(rgb, lab0 == 2).any()                            # pale fat is not a highlight
    real = Labelled(frames, labels)
    glossy = real_detail_patches(real, size=16, per_class=64, frames=12, seed=0)
    matte = real_detail_patches(real, size=16, per_class=64, frames=12, seed=0, matte=True)
    peak = lambda p: p.mean(1).amax((1, 2))                            # noqa: E731  brightest detail per window
    assert (peak(glossy[1]) > 0.5).float().mean() > 0.2                # highlights drawn as detail ...
    assert (peak(matte[1]) > 0.5).sum() == 0                          # ... unless matte
    assert matte[2].shape == glossy[2].shape
    # a class with a highlight in every window keeps its (glossy) windows rather than none
    for img in frames:
        img[::6, :64] = 255
    assert real_detail_patches(Labelled(frames, labels), size=16, per_class=8, frames=12, matte=True)[1].shape[0] == 8


def test_white_specular_keeps_the_lights_colour_through_colour_matrix_and_layer(tmp_path, real_frames):
    """model.specular: white: the colour matrix and the detail layer act on the diffuse light
    only; a pixel lit by the specular term alone comes out grey-white whatever they are, while
    "tinted" (the old default, unchanged) passes it through both."""
    from vidsim2real.translate.config import ModelConfig
    from vidsim2real.translate.model import OneWayTranslator, recoloured_linear
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 8, 8, generator=g) * 1.6 - 0.8
    coef = torch.randn(1, 9, 8, 8, generator=g) * 0.3
    d = torch.randn(1, 3, 8, 8, generator=g) * 0.3
    spec = torch.rand(1, 1, 8, 8, generator=g) * 0.2
    a, b = recoloured_linear(img, coef, 2.0, d, spec), recoloured_linear(img, coef, 2.0, d)
    from vidsim2real.shading import srgb_to_linear
    lin_a, lin_b = srgb_to_linear((a + 1) / 2), srgb_to_linear((b + 1) / 2)
    ok = (lin_a.amax(1) < 0.99) & (lin_b.amin(1) > 0.01)           # away from clipping: exactly added
    torch.testing.assert_close((lin_a - lin_b)[ok.expand_as(lin_a)], spec.expand_as(lin_a)[ok.expand_as(lin_a)],
                               atol=1e-4, rtol=0)
    nets = {}
    for mode in ("tinted", "white"):
        torch.manual_seed(1)
        m = ModelConfig(type="oneway", dim=8, n_down=1, n_res=1, mlp_dim=16, dis_dim=8, recolour=True,
                        recolour_sigma=2.0, specular=mode)
        nets[mode] = OneWayTranslator(m, 8, albedo=True, detail=True).eval()
    feats = torch.zeros(1, 8, 16, 16)
    feats[:, :3] = torch.tensor([0.6, -0.6, -0.7])[None, :, None, None]      # a red albedo (sRGB in [-1, 1])
    feats[:, -3:] = torch.tensor([0.4, -0.3, -0.5])[None, :, None, None]     # a layer that reddens
    light = torch.zeros(1, 2, 16, 16)
    light[:, 1] = 0.3                                            # specular only: no diffuse light
    sim = torch.zeros(1, 3, 16, 16)
    with torch.no_grad():
        white, tinted = (nets[k].translate(sim, feats, light=light) for k in ("white", "tinted"))
    assert (white.amax(1) - white.amin(1)).max() < 1e-4           # grey: the light's colour
    assert (tinted.amax(1) - tinted.amin(1)).min() > 0.05         # through the layer: reddened
    with pytest.raises(UserError, match="model.specular"):
        tiny_cfg(tmp_path / "w", real_frames, "model.type=oneway", "model.specular=white")   # no recolour
    with pytest.raises(UserError, match="model.specular"):
        tiny_cfg(tmp_path / "v", real_frames, "model.type=oneway", "model.specular=shiny")
