"""What a run takes from the real frames' class statistics (train/appearance.py) and the
exposure a model sees its frames at (model.exposure)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import SCENES, Labelled, approach_scene, tiny_cfg

from vidsim2real.errors import UserError
from vidsim2real.render import Renderer
from vidsim2real.scene import load_scene
from vidsim2real.scene.scene import Exposure

ONEWAY = ["model.type=oneway", "model.recolour=true", "loss.view_warmup=0"]


def write_labelled(root: Path, labelled: Labelled) -> Path:
    """Write an in-memory labelled set as a real footage folder: root/frames/NNN.png with
    root/labels/NNN.png beside; returns the frames folder."""
    import cv2
    for sub in ("frames", "labels"):
        (root / sub).mkdir(parents=True)
    for i, (img, lbl) in enumerate(zip(labelled.frames, labelled.labels)):
        cv2.imwrite(str(root / "frames" / f"{i:03d}.png"), img[..., ::-1])
        cv2.imwrite(str(root / "labels" / f"{i:03d}.png"), lbl)
    return root / "frames"


def test_at_exposure_is_the_render_at_that_exposure():
    """Re-exposing an auto-exposed render gives the render at the fixed exposure, to float
    precision, without rasterizing again, and the other way round."""
    scene = load_scene(SCENES / "liver_edge_breathing.yaml")
    auto = Renderer(scene, (64, 64), backend="torch")
    fixed = Renderer(scene, (64, 64), backend="torch", exposure=Exposure("fixed", 1.0))
    buf, ref = auto.render([0, 7]), fixed.render([0, 7])
    assert (buf.light - ref.light).abs().max() > 0.01          # auto exposure is not 1 here
    sim, light = auto.at_exposure(buf, Exposure("fixed", 1.0))
    torch.testing.assert_close(light, ref.light, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sim, ref.sim_rgb, atol=1e-5, rtol=0)
    assert auto.at_exposure(buf, None)[0] is buf.sim_rgb
    back = fixed.at_exposure(ref, Exposure())                 # and back to the auto exposure
    torch.testing.assert_close(back[1], buf.light, atol=1e-6, rtol=1e-5)


def test_protect_level_is_fitted_to_how_often_the_real_frames_clip(tmp_path):
    """model.exposure: protect — real_protect finds the highlight level the 'real' frames were
    shot at (training views rendered at one of its candidate levels stand for them) and keeps
    exposure 1 when they were shot at exposure 1, though close views clip there."""
    import numpy as np
    from vidsim2real.train.appearance import PROTECT_SHARES, clip_share, real_protect
    from vidsim2real.train.data import SceneBank
    from vidsim2real.train.detail_init import spread_views
    from vidsim2real.translate.config import model_exposure
    bank = SceneBank([approach_scene(tmp_path), SCENES / "liver_edge_breathing.yaml"], (64, 64), "cpu",
                     backend="torch", check=False, exposure=Exposure("fixed", 1.0))
    level = {"now": 0.0}

    def translate(r, sc, buf, k):          # a translator that is the sim render at the model's exposure
        return r.at_exposure(buf, model_exposure("protect", level["now"]))[0]

    views = list(spread_views(bank, 16))
    high = torch.tensor([float(r.metered(int(b.frames[0]))[int(b.frames[0]), 1]) for r, _, b in views])
    truth = float(torch.quantile(high, 1.0 - PROTECT_SHARES[1]))
    fits = {}
    for shot_at in (truth, 0.0):
        level["now"] = shot_at
        frames = [(translate(r, sc, b, k)[0].numpy() * 255).round().astype(np.uint8) for k, (r, sc, b) in
                  enumerate(views)]
        real = Labelled(frames, [b.labels[0].numpy().astype(np.uint8) for _, _, b in views])
        fits[shot_at] = real_protect(bank, real, translate, lambda v: level.__setitem__("now", v), views=16, frames=16)
        assert level["now"] == fits[shot_at][0]                  # the model is left at the fitted level
    found, tried = fits[truth]
    assert found == pytest.approx(truth) and tried[found] < 0.5 * tried[0.0]
    assert fits[0.0][0] == 0.0
    shares = [clip_share(torch.from_numpy(f).float() / 255, torch.from_numpy(lbl)) for f, lbl in zip(frames, real.labels)]
    assert max(s for s in shares if s is not None) > 0.3              # exposure 1 clips the close views


def test_fixed_exposure_model_ignores_the_scene_exposure(tmp_path, real_frames):
    """model.exposure: fixed — the model is trained and translates at exposure 1, so a scene's
    own exposure setting does not change its translation; with 'scene' it does; 'protect' (its
    level fitted at the start and kept in the checkpoint) does not either."""
    from vidsim2real.io.checkpoint import load_checkpoint
    from vidsim2real.train.loop import train
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    scene = load_scene(SCENES / "liver_edge_breathing.yaml")
    outs = {}
    for mode in ("fixed", "scene", "protect"):
        cfg = tiny_cfg(tmp_path / mode, real_frames, "steps=1", *ONEWAY, f"model.exposure={mode}")
        run = train(cfg, progress=False)
        model = load_model(run.model)
        assert model.net.exposure == mode
        level = model.net.exposure_level                 # protect: fitted at the start, kept in the checkpoint
        assert level == load_checkpoint(run.model)["config"]["model"]["exposure_level"]
        if mode == "protect":                            # a resumed run keeps the level its start fitted
            again = tiny_cfg(tmp_path / mode, real_frames, "steps=2", *ONEWAY, f"model.exposure={mode}")
            assert load_model(train(again, resume=True, progress=False).model).net.exposure_level == level
            cfg.model.exposure_level = level
        bank_exposure = {r.exposure_spec.mode for r in run_bank(cfg)}
        assert bank_exposure == ({"fixed"} if mode == "fixed" or (mode == "protect" and not level) else
                                 {"protect"} if mode == "protect" else {scene.exposure.mode})
        style = make_style(model, "1", "cpu")
        outs[mode] = [translate_buffers(model, r, r.render([3]), style) for r in
                      (Renderer(scene, (64, 64), backend="torch"),
                       Renderer(scene, (64, 64), backend="torch", exposure=Exposure("fixed", 3.0)))]
    for mode in ("fixed", "protect"):
        torch.testing.assert_close(outs[mode][0], outs[mode][1], atol=1e-5, rtol=0)
    assert (outs["scene"][0] - outs["scene"][1]).abs().max() > 0.05
    with pytest.raises(UserError, match="model.exposure"):
        tiny_cfg(tmp_path / "bad", real_frames, *ONEWAY, "model.exposure=auto")
    with pytest.raises(UserError, match="model.exposure_level.*needs model.exposure: protect"):
        tiny_cfg(tmp_path / "bad", real_frames, *ONEWAY, "model.exposure=fixed", "model.exposure_level=0.5")


def run_bank(cfg):
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build
    return build(cfg, Dist(), torch.device("cpu"), Path(cfg.run_dir), progress=False)[0].renderers


def test_class_albedo_renders_with_the_real_class_colours(tmp_path, real_frames):
    """texture.albedo_init: real — shaded by the training views' light, each fitted albedo gives
    its class the colours of that class in the real frames (mean L*a*b* within ΔE 6), far
    closer than the scene colours do."""
    from vidsim2real.shading import linear_to_srgb, lit, srgb_to_linear
    from vidsim2real.train.appearance import lab, real_class_albedo
    from vidsim2real.train.detail_init import spread_views
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build
    cfg = tiny_cfg(tmp_path, real_frames, *ONEWAY, "texture.albedo=true", "texture.albedo_init=real",
                   "model.exposure=fixed")
    bank, real, _ = build(cfg, Dist(), torch.device("cpu"), Path(cfg.run_dir), progress=False)
    colours = real_class_albedo(bank, real, views=16, samples=4000, steps=150)
    want: dict = {}
    for i in range(len(real)):
        lbl = torch.from_numpy(real.label(i).astype("int64"))
        img = torch.from_numpy(real.frame(i).copy()).float() / 255
        for c in colours:
            want.setdefault(c, []).append(img[lbl == c])
    got: dict = {}
    scene_colour: dict = {}
    for r, sc, buf in spread_views(bank, 16):
        for o in sc.objects:
            m = buf.labels[0] == o.class_id
            if o.class_id in colours and m.any():
                a = srgb_to_linear(torch.tensor(colours[o.class_id]))
                got.setdefault(o.class_id, []).append(linear_to_srgb(lit(a, buf.light[0][m]).clamp(0, 1)))
                s = srgb_to_linear(torch.tensor(o.color, dtype=torch.float32))
                scene_colour.setdefault(o.class_id, []).append(linear_to_srgb(lit(s, buf.light[0][m]).clamp(0, 1)))
    mean_lab = lambda px: lab(torch.cat(px)[:, None, None, :]).mean(0)[0, 0]     # noqa: E731
    checked = 0
    for c in got:
        if sum(len(p) for p in want[c]) < 200 or sum(len(p) for p in got[c]) < 200:
            continue
        fitted = float((mean_lab(got[c]) - mean_lab(want[c])).norm())
        flat = float((mean_lab(scene_colour[c]) - mean_lab(want[c])).norm())
        assert fitted < 6.0 and fitted < 0.35 * flat, (c, fitted, flat)
        checked += 1
    assert checked >= 2


def test_detail_match_gives_each_class_the_real_texture(tmp_path, real_frames, capsys):
    """texture.detail_match: after the layers are scaled per class, the class's texture in the
    rendered training views is the real frames' (within 10 %) wherever the gain is inside its
    limits, and each layer still averages 1 in exp (detail, not colour); a run logs the gains."""
    from vidsim2real.io.checkpoint import load_checkpoint
    from vidsim2real.texture import TextureSet
    from vidsim2real.train.appearance import _class_texture, _labelled, _views_with_layer, match_detail
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build, start_detail, train
    DETAIL = ["texture.detail=true", "texture.detail_resolution=48"]
    cfg = tiny_cfg(tmp_path, real_frames, "steps=0", *ONEWAY, *DETAIL, "texture.detail_match=true")
    bank, real, _ = build(cfg, Dist(), torch.device("cpu"), Path(cfg.run_dir), progress=False)
    textures = {a: TextureSet.for_scenes(sc, cfg.texture, seed=0) for a, sc in bank.anatomies().items()}
    start_detail(bank, real, textures, report=False)
    want = {}
    for img, lbl in _labelled(real, 128):
        _class_texture(want, img[None], lbl[None])

    def ratios() -> dict:
        got: dict = {}
        for base, layer, labels, _, _ in _views_with_layer(bank, textures, False, 48, None):
            from vidsim2real.shading import linear_to_srgb
            _class_texture(got, linear_to_srgb((base * layer.exp()).clamp(0, 1)), labels)
        return {c: (got[c][0] / got[c][1]) / (want[c][0] / want[c][1]) for c in got
                if c in want and min(got[c][1], want[c][1]) >= 500}
    before = ratios()
    gains = match_detail(bank, real, textures, albedo=False)
    after = ratios()
    inside = [c for c, g in gains.items() if 0.25 < g < 4.0]
    assert inside and any(abs(before[c] - 1) > 0.15 for c in inside), (before, gains)
    assert all(abs(after[c] - 1) < 0.1 for c in inside), (after, gains)
    run = train(cfg, progress=False)
    assert "detail layer contrast matched to the real frames' per class: class" in capsys.readouterr().out
    liver = load_checkpoint(run.model)["textures"]["openhelp"]["detail.liver.levels.0"].float()
    torch.testing.assert_close(liver.exp().mean(dim=(2, 3)), torch.ones(3, 3), atol=2e-3, rtol=0)


def test_detail_bands_give_back_a_layer_s_fine_and_broad_contrast(tmp_path, real_frames):
    """texture.detail_bands: frames rendered with a known layer stand for the real ones; the
    same layer with its broad part x2 and its fine part x0.5 (which no single gain undoes) is
    matched back — each class's pair of gains is within one grid step of (0.5, 2) and its band
    energies end within 15 % of the frames'; exp(layer) still averages 1. The option needs
    detail_match (one line naming the field)."""
    import numpy as np
    from conftest import views_as_real

    from vidsim2real.texture import TextureSet
    from vidsim2real.train.appearance import DETAIL_SPLIT, _texel_blur, class_bands, match_detail
    from vidsim2real.train.detail_init import _unbiased
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build, start_detail
    DETAIL = ["texture.detail=true", "texture.detail_resolution=48", "texture.detail_match=true"]
    cfg = tiny_cfg(tmp_path, real_frames, "steps=0", *ONEWAY, *DETAIL)
    bank, real, _ = build(cfg, Dist(), torch.device("cpu"), Path(cfg.run_dir), progress=False)

    def fresh() -> dict:
        textures = {a: TextureSet.for_scenes(sc, cfg.texture, seed=0) for a, sc in bank.anatomies().items()}
        start_detail(bank, real, textures, report=False)
        with torch.no_grad():                       # a layer with broad and fine parts of equal weight
            for t in (t for tset in textures.values() for t in tset.detail.values()):
                t.levels[0].mul_(3.0)
        return textures

    def frames(textures) -> Labelled:
        return views_as_real(bank, textures)

    def band_errors(textures, truth) -> dict:
        want, got = {}, {}
        for img, lbl in zip(truth.frames, truth.labels):
            class_bands(want, torch.from_numpy(img)[None].float() / 255, torch.from_numpy(lbl.astype(np.int64))[None])
        seen = frames(textures)
        for img, lbl in zip(seen.frames, seen.labels):
            class_bands(got, torch.from_numpy(img)[None].float() / 255, torch.from_numpy(lbl.astype(np.int64))[None])
        return {c: [abs(float(np.log(got[c][k] / want[c][k]))) for k in (0, 1)]
                for c in want if min(want[c][2], got[c][2]) >= 500}

    def distorted() -> dict:
        textures = fresh()
        with torch.no_grad():
            for t in (t for tset in textures.values() for t in tset.detail.values()):
                top = t.levels[0]
                broad = _texel_blur(top, DETAIL_SPLIT)
                mixed = 2.0 * broad + 0.5 * (top.float() - broad)
                for a in range(top.shape[0]):
                    top[a] = _unbiased(mixed[a]).to(top.dtype)
        return textures
    truth = frames(fresh())
    two = distorted()
    pairs = match_detail(bank, truth, two, albedo=False, bands=True)
    err_two = band_errors(two, truth)
    assert pairs and set(pairs) >= set(err_two), (pairs, err_two)
    for c in err_two:
        broad, fine = pairs[c]
        assert 0.35 <= broad <= 0.71 and 1.41 <= fine <= 2.83, (c, pairs[c])
        assert max(err_two[c]) < np.log(1.15), (c, err_two[c])
    for t in (t for tset in two.values() for t in tset.detail.values()):
        torch.testing.assert_close(t.levels[0].float().exp().mean(dim=(2, 3)), torch.ones(3, 3), atol=2e-3, rtol=0)
    with pytest.raises(UserError, match="texture.detail_bands"):
        tiny_cfg(tmp_path / "b", real_frames, "steps=0", *ONEWAY, "texture.detail=true", "texture.detail_bands=true")


def test_detail_chroma_gives_back_a_layer_s_colour_variation(tmp_path, real_frames, capsys, monkeypatch):
    """texture.detail_chroma: frames rendered with a known layer stand for the real ones; the
    same layer with its colour (log-ratios less their grey part) x2.5 is matched back — each
    class's gain within 20 % of 1 / 2.5 and its a*b* variation within 10 % of the frames' —
    while its grey part (the brightness pattern ``match_detail`` matched) is kept up to a
    constant and exp(layer) still averages 1; a run logs the gains, and fit-textures on its model
    matches the layers it draws; the option needs detail_match (one line naming the field)."""
    import numpy as np

    from vidsim2real.shading import linear_to_srgb
    from vidsim2real.texture import TextureSet
    from vidsim2real.train.appearance import _class_chroma, _texel_blur, _views_with_layer, match_chroma, split_chroma
    from vidsim2real.train.detail_init import _unbiased
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build, start_detail, train
    DETAIL = ["texture.detail=true", "texture.detail_resolution=48", "texture.detail_match=true"]
    cfg = tiny_cfg(tmp_path, real_frames, "steps=0", *ONEWAY, *DETAIL, "data.render_size=[128,128]")
    bank, real, _ = build(cfg, Dist(), torch.device("cpu"), Path(cfg.run_dir), progress=False)
    textures = {a: TextureSet.for_scenes(sc, cfg.texture, seed=0) for a, sc in bank.anatomies().items()}
    start_detail(bank, real, textures, report=False)
    layers = [t for tset in textures.values() for t in tset.detail.values()]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():       # a known layer whose colour shows beside the scenes' shading: coloured blobs
        for t in layers:
            top = t.levels[0]
            blobs = _texel_blur(torch.randn(top.shape, generator=gen), 1.5)
            top.copy_(_unbiased(0.4 * blobs / blobs.std()).to(top.dtype))

    def frames() -> Labelled:
        imgs, labels = [], []
        for base, layer, lbl, _, _ in _views_with_layer(bank, textures, False, 48, None):
            imgs.append((linear_to_srgb((base * layer.exp()).clamp(0, 1))[0].numpy() * 255 + 0.5).astype(np.uint8))
            labels.append(lbl[0].numpy().astype(np.uint8))
        return Labelled(imgs, labels)

    def chroma(frames_: Labelled) -> dict:
        acc: dict = {}
        for img, lbl in zip(frames_.frames, frames_.labels):
            _class_chroma(acc, torch.from_numpy(img)[None].float() / 255, torch.from_numpy(lbl.astype(np.int64))[None])
        return {c: (a[0] / a[1]) ** 0.5 for c, a in acc.items() if a[1] >= 500}
    truth = frames()
    want = chroma(truth)
    with torch.no_grad():
        for t in layers:
            top = t.levels[0]
            for a in range(top.shape[0]):
                grey, col = split_chroma(top[a].float(), dim=0)
                top[a] = _unbiased(grey + 2.5 * col).to(top.dtype)
    grey_before = [split_chroma(t.levels[0].detach().float(), dim=1)[0] for t in layers]
    far = chroma(frames())
    assert all(far[c] > 1.5 * want[c] for c in want), (far, want)        # the distortion shows
    gains = match_chroma(bank, truth, textures, albedo=False)
    assert set(gains) >= set(want), (gains, want)
    got = chroma(frames())
    for c in want:
        assert abs(gains[c] * 2.5 - 1) < 0.2, (c, gains[c])
        assert abs(got[c] / want[c] - 1) < 0.1, (c, got[c], want[c])
    for t, before in zip(layers, grey_before):
        moved = split_chroma(t.levels[0].detach().float(), dim=1)[0] - before
        assert float((moved - moved.mean(dim=(2, 3), keepdim=True)).abs().max()) < 1e-4
        torch.testing.assert_close(t.levels[0].float().exp().mean(dim=(2, 3)), torch.ones(3, 3), atol=2e-3, rtol=0)
    run = train(tiny_cfg(tmp_path / "run", real_frames, "steps=0", *ONEWAY, *DETAIL, "texture.detail_chroma=true"),
                progress=False)
    assert "detail layer colour matched to the real frames' a*b* variation per class:" in capsys.readouterr().out
    # fit-textures matches the colour of the layers it draws for a model that has the option
    import yaml
    from conftest import mini_scene_dict

    from vidsim2real.train import fit
    calls = []
    real_match = fit.match_chroma
    monkeypatch.setattr(fit, "match_chroma", lambda *a, **k: calls.append(k.get("only")) or real_match(*a, **k))
    d = mini_scene_dict(tmp_path)
    d["anatomy"] = "mini"
    d["objects"][0].update(name="pancreas_ball", class_id=5, class_name="pancreas")
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(d))
    fit.fit_textures(run.model, tmp_path / "mini.yaml", tmp_path / "fit.pt", steps=1, real=[real_frames],
                     device="cpu", progress=False)
    assert calls == [["pancreas_ball"]], calls
    with pytest.raises(UserError, match="texture.detail_chroma"):
        tiny_cfg(tmp_path / "b", real_frames, "steps=0", *ONEWAY, "texture.detail=true", "texture.detail_chroma=true")


def test_albedo_refit_with_the_detail_layer_keeps_the_class_colours(tmp_path, real_frames, capsys):
    """texture.albedo_with_detail: a detail layer of mean 1 in linear RGB still shifts a class's
    mean L*a*b* (bright texels clip, L* is concave), so the albedo fitted without it is off once
    the layer is on; refitted with the layer on, the rendered training views take the real class
    colours again, closer than without the refit. A run logs the refit; the option needs a
    detail layer and a real albedo."""
    from vidsim2real.metrics.realism import class_realism, class_stats, merge_class_stats
    from vidsim2real.texture import TextureSet
    from vidsim2real.train.appearance import _labelled, _views_with_layer, _with_detail, real_class_albedo
    from vidsim2real.train.detail_init import _unbiased
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build, train
    DETAIL = ["texture.detail=true", "texture.detail_resolution=48", "texture.detail_match=true",
              "texture.albedo=true", "texture.albedo_init=real", "model.exposure=fixed"]
    cfg = tiny_cfg(tmp_path, real_frames, "steps=0", *ONEWAY, *DETAIL)
    bank, real, _ = build(cfg, Dist(), torch.device("cpu"), Path(cfg.run_dir), progress=False)
    textures = {a: TextureSet.for_scenes(sc, cfg.texture, seed=0) for a, sc in bank.anatomies().items()}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():            # a strong pattern of mean 1 in exp, as a matched layer can be
        for tset in textures.values():
            for t in tset.detail.values():
                for a in range(t.levels[0].shape[0]):
                    t.levels[0][a] = _unbiased(torch.randn(t.levels[0][a].shape, generator=gen) * 0.8)
    want: dict = {}
    for img, lbl in _labelled(real, 128):
        want = merge_class_stats(want, class_stats(img[None], lbl[None]))

    def delta_e(colours, white: bool = False) -> float:
        for anatomy, scenes in bank.anatomies().items():
            textures[anatomy].set_albedo(colours, scenes)
        got: dict = {}
        for base, layer, labels, _, spec in _views_with_layer(bank, textures, True, 16, None, white):
            got = merge_class_stats(got, class_stats(_with_detail(base, layer, labels, torch.ones(16), spec), labels))
        return class_realism(got, want, min_pixels=200)["class_delta_e"]

    plain = real_class_albedo(bank, real, views=16, samples=4000, steps=150)
    refit = real_class_albedo(bank, real, views=16, samples=4000, steps=150, textures=textures)
    before, after = delta_e(plain), delta_e(refit)
    assert after < 0.7 * before, (before, after)
    # model.specular: white (the highlight added after the layer): the fit models that order too
    white = real_class_albedo(bank, real, views=16, samples=4000, steps=150, textures=textures, white=True)
    before, after = delta_e(plain, True), delta_e(white, True)
    assert after < 0.7 * before, (before, after)
    train(tiny_cfg(tmp_path / "run", real_frames, "steps=0", *ONEWAY, *DETAIL, "texture.albedo_with_detail=true"),
          progress=False)
    assert "albedo from the real frames' class colours with the detail layer on" in capsys.readouterr().out
    for bad in (["texture.albedo_init=scene"], ["texture.detail=false", "texture.detail_match=false"]):
        with pytest.raises(UserError, match="albedo_with_detail"):
            tiny_cfg(tmp_path / "bad", real_frames, *ONEWAY, *DETAIL, *bad, "texture.albedo_with_detail=true")
    with pytest.raises(UserError, match="detail_matte"):
        tiny_cfg(tmp_path / "bad2", real_frames, *ONEWAY, "texture.detail_matte=true")


class Refilmed:
    """A labelled real set with every frame (uint8 [H, W, 3]) passed through ``change``: the same
    tissue seen by another camera."""

    def __init__(self, real, change):
        self.real, self.change, self.label_paths = real, change, real.label_paths

    def __len__(self):
        return len(self.real)

    def label(self, i):
        return self.real.label(i)

    def frame(self, i):
        return self.change(self.real.frame(i))


def test_albedo_translated_closes_the_loop_on_the_class_colours(tmp_path, real_frames, capsys):
    """texture.albedo_translated: the albedo fit sees the views through a model of the
    translator; a translator that moves colour further (here: red down, blue up) leaves every
    class off its real colour, and the closed loop brings the translations of the training views
    back to the real class colours (ΔE at most a third of the start's, under 2); red goes
    down; matched as relative colours it closes as well. A run logs the correction; the option
    needs a real albedo."""
    from vidsim2real.layout import to_unit
    from vidsim2real.shading import linear_to_srgb, lit, srgb_to_linear
    from vidsim2real.texture import TextureSet
    from vidsim2real.train.appearance import real_class_albedo, translated_class_albedo
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build, train
    ALBEDO = ["texture.albedo=true", "texture.albedo_init=real", "model.exposure=fixed"]
    cfg = tiny_cfg(tmp_path, real_frames, "steps=0", *ONEWAY, *ALBEDO)
    bank, real, _ = build(cfg, Dist(), torch.device("cpu"), Path(cfg.run_dir), progress=False)
    textures = {a: TextureSet.for_scenes(sc, cfg.texture, seed=0) for a, sc in bank.anatomies().items()}

    def apply(colours):
        for anatomy, scenes in bank.anatomies().items():
            textures[anatomy].set_albedo(colours, scenes)

    def translate(renderer, scene, buf, k):
        a = srgb_to_linear(to_unit(textures[scene.anatomy].sample(buf, scene)[..., :3]).clamp(0, 1))
        return linear_to_srgb((lit(a, buf.light.float()) * torch.tensor([1.25, 1.0, 0.75])).clamp(0, 1))

    colours = real_class_albedo(bank, real, views=16, samples=4000, steps=150)
    apply(colours)
    fixed, de = translated_class_albedo(bank, real, colours, translate, apply, rounds=3, views=16)
    assert len(de) == 4 and de[-1] < min(de[0] / 3, 2.0), de
    moved = [fixed[c][0] - colours[c][0] for c in colours if fixed[c] != colours[c]]
    assert moved and all(r < 0 for r in moved), moved
    train(tiny_cfg(tmp_path / "run", real_frames, "steps=0", *ONEWAY, *ALBEDO, "texture.albedo_translated=true"),
          progress=False)
    assert "albedo corrected until the translated training views have the real frames' class colours" \
        in capsys.readouterr().out
    with pytest.raises(UserError, match="albedo_translated"):
        tiny_cfg(tmp_path / "bad", real_frames, *ONEWAY, "texture.albedo_translated=true")

    # texture.albedo_statistic median: white streaks on a tenth of every class's real pixels (the
    # real liver's specular tail) pull the mean-matched albedo up, the median-matched one hardly
    def streaked(img):
        img = img.copy()
        img[::10] = 255
        return img

    def fit(frames, statistic):
        apply(colours)
        return translated_class_albedo(bank, frames, colours, translate, apply, rounds=2, views=8,
                                       statistic=statistic)[0]
    body, tail = fit(real, "median"), fit(Refilmed(real, streaked), "median")
    mean_body, mean_tail = fit(real, "mean"), fit(Refilmed(real, streaked), "mean")
    gap = lambda a, b: max(abs(x - y) for c in a for x, y in zip(a[c], b[c]))  # noqa: E731
    assert gap(body, tail) < 0.25 * gap(mean_body, mean_tail) and gap(mean_body, mean_tail) > 0.05, \
        (body, tail, mean_body, mean_tail)
    assert all(sum(mean_tail[c]) >= sum(mean_body[c]) - 1e-6 for c in mean_body)      # brighter (or at the limit)
    # texture.albedo_statistic relative: the loop runs on the relative colours and closes as well
    apply(colours)
    _, rel = translated_class_albedo(bank, real, colours, translate, apply, rounds=2, views=8, statistic="relative")
    assert len(rel) == 3 and rel[-1] < rel[0] / 2, rel
    with pytest.raises(UserError, match="albedo_statistic"):
        tiny_cfg(tmp_path / "bad3", real_frames, *ONEWAY, *ALBEDO, "texture.albedo_statistic=mode")


def test_lens_field_is_fitted_from_the_real_frames_and_darkens_the_corners(tmp_path, real_frames, capsys):
    """model.camera_field: real — real frames whose corners a lens darkens by a known profile
    give that profile (relative to the same frames without it, within 0.1 log at every knot
    with pixels), and so does real_frame (an offset per class and frame), which a brightness per
    frame that follows where the tissue lies leaves unmoved (the pooled fit moves); the camera
    applies it in linear light; a model saved before the field existed loads with none and
    renders exactly as before; a run logs it."""
    import numpy as np

    from vidsim2real.shading import linear_to_srgb, srgb_to_linear
    from vidsim2real.texture import TextureSet
    from vidsim2real.train.appearance import real_class_albedo, real_field
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build, train
    from vidsim2real.translate.networks import FIELD_KNOTS, CameraModel, field_gain, radius2
    cfg = tiny_cfg(tmp_path, real_frames, "steps=0", *ONEWAY, "texture.albedo=true", "model.exposure=fixed",
                   "model.camera=true", "model.camera_field=real")
    bank, real, _ = build(cfg, Dist(), torch.device("cpu"), Path(cfg.run_dir), progress=False)
    assert real.labelled
    textures = {a: TextureSet.for_scenes(sc, cfg.texture, seed=0) for a, sc in bank.anatomies().items()}
    lens = torch.tensor([0.0, 0.0, -0.05, -0.15, -0.3, -0.5, -0.75, -1.0, -1.3])

    def darkened(frame):             # the same real frames through a lens with that field
        img = torch.from_numpy(frame.copy()).float() / 255
        out = linear_to_srgb(srgb_to_linear(img) * field_gain(lens, *img.shape[:2])[..., None])
        return (out * 255).round().clamp(0, 255).to(torch.uint8).numpy()

    plain = real_field(bank, real, textures, albedo=True, detail=False, views=8, min_pixels=50)
    dark = real_field(bank, Refilmed(real, darkened), textures, albedo=True, detail=False, views=8, min_pixels=50)
    got = dark - plain
    got = got - got[:4].mean() + lens[:4].mean()        # both are anchored over the centre alike
    assert (got - lens).abs().max() < 0.1, (got, lens)
    # real_frame: the same lens comes back with each class taken within its own frame, and a
    # frame's own brightness is no lens: frames the darker the farther out their tissue lies (as
    # frames seen from afar are) move the field fitted over all frames, not the one within each
    plain_f = real_field(bank, real, textures, albedo=True, detail=False, views=8, min_pixels=50, within_frame=True)
    got_f = real_field(bank, Refilmed(real, darkened), textures, albedo=True, detail=False, views=8, min_pixels=50,
                       within_frame=True) - plain_f
    got_f = got_f - got_f[:4].mean() + lens[:4].mean()
    assert (got_f - lens).abs().max() < 0.1, (got_f, lens)

    class FarIsDark(Refilmed):
        def frame(self, i):
            tissue = torch.from_numpy(self.real.label(i) > 0)
            r = float(radius2(*tissue.shape).sqrt()[tissue].mean()) if tissue.any() else 0.0
            img = torch.from_numpy(self.real.frame(i).copy()).float() / 255
            out = linear_to_srgb(srgb_to_linear(img) * float(np.exp(-4.0 * (r - 0.7))))
            return (out * 255).round().clamp(0, 255).to(torch.uint8).numpy()

    pooled = real_field(bank, FarIsDark(real, None), textures, albedo=True, detail=False, views=8, min_pixels=50) - plain
    within = real_field(bank, FarIsDark(real, None), textures, albedo=True, detail=False, views=8, min_pixels=50,
                        within_frame=True) - plain_f
    assert within.abs().max() < 0.005 and pooled.abs().max() > 2 * within.abs().max(), (pooled, within)
    # an albedo fitted through the field is brighter: the field darkens what the views show
    plain_a = real_class_albedo(bank, real, views=8, samples=2000, steps=60)
    through = real_class_albedo(bank, real, views=8, samples=2000, steps=60, field=lens)
    assert plain_a and all(sum(through[c]) > sum(plain_a[c]) for c in plain_a), (plain_a, through)
    # the camera applies a field in linear light; zeros leave the frame exactly as it was
    cam, x = CameraModel().requires_grad_(False), torch.rand(1, 3, 16, 16) * 2 - 1
    ref = cam(x)
    cam.set_field(lens)
    y = cam(x)
    want = linear_to_srgb(srgb_to_linear((x + 1) / 2) * field_gain(lens, 16, 16))
    vig = 1 - 0.8 * torch.sigmoid(cam.vignette_logit) * radius2(16, 16)
    torch.testing.assert_close((y + 1) / 2, want * vig, atol=1e-5, rtol=0)
    assert float(y[..., 0, 0].mean()) < float(ref[..., 0, 0].mean())
    old = {k: v for k, v in cam.state_dict().items() if k != "field"}
    fresh = CameraModel().requires_grad_(False)
    fresh.load_state_dict(old)
    assert not fresh.field.any() and torch.equal(fresh(x), ref)
    assert FIELD_KNOTS == len(lens) and np.isfinite(plain.numpy()).all()
    train(tiny_cfg(tmp_path / "run", real_frames, "steps=0", *ONEWAY, "model.camera=true",
                   "model.camera_field=real_frame"), progress=False)
    assert "lens field from the real frames" in capsys.readouterr().out
    with pytest.raises(UserError, match="camera_field"):
        tiny_cfg(tmp_path / "bad", real_frames, *ONEWAY, "model.camera_field=real")


def test_sensor_noise_level_is_measured_from_the_real_frames_grain(tmp_path, real_frames, capsys):
    """model.camera_noise: real — frames of flat tissue on a dark background with sensor noise of a
    known level and read-noise share (the camera model's form) give both back (level within 10 %,
    share within 0.12), though part of one region is finely textured: the mostly read noise of
    a real scope (share 0.8) is told from mostly photon noise (0.3), as the dark background pins
    the low end. Noise-free frames give almost none (8-bit steps). A run logs the fit (and
    matches the detail layer's contrast with the grain on) and the model renders with it; the
    option needs the camera model."""
    import numpy as np

    from vidsim2real.train.appearance import real_noise
    from vidsim2real.train.loop import train
    from vidsim2real.translate.inference import load_model
    from vidsim2real.translate.networks import noise_std

    def frames(sigma, floor):        # labelled frames: two flat organs (one half textured), background
        gen = torch.Generator().manual_seed(1)
        imgs, labels = [], []
        for _ in range(6):
            lbl = np.zeros((128, 192), np.uint8)
            lbl[:, 64:128], lbl[:, 128:] = 1, 2
            img = torch.full((128, 192, 3), 0.03)                   # a dark background, off the black clip
            img[:, 64:128], img[:, 128:] = torch.tensor([0.75, 0.45, 0.35]), torch.tensor([0.35, 0.12, 0.15])
            img[:64, 64:128] += 0.15 * (torch.arange(64) % 2).float()[None, :, None]    # fine stripes
            img = img + noise_std(img, sigma, floor) * torch.randn(img.shape, generator=gen)
            imgs.append((img.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
            labels.append(lbl)
        return Labelled(imgs, labels)

    for floor in (0.8, 0.3):
        sigma, got = real_noise(frames(0.012, floor), min_blocks=10)
        assert abs(sigma / 0.012 - 1) < 0.1 and abs(got - floor) < 0.12, (floor, sigma, got)
    assert real_noise(frames(0.0, 0.5), min_blocks=10)[0] < 0.002
    run = train(tiny_cfg(tmp_path / "run", real_frames, "steps=0", *ONEWAY, "model.camera=true",
                         "model.camera_noise=real", "texture.albedo=true", "texture.detail=true",
                         "texture.detail_match=true"), progress=False)
    line = [ln for ln in capsys.readouterr().out.splitlines() if "sensor noise from the real frames" in ln]
    assert line, "no log line"
    camera = load_model(run.model).net.camera
    level, share = float(camera.noise_sigma.detach()), float(camera.noise_floor)
    assert 0.001 < level < 0.03 and f"sigma {level:.4f}, read-noise share {share:.2f}" in line[0], (level, line)
    with pytest.raises(UserError, match="camera_noise"):
        tiny_cfg(tmp_path / "bad", real_frames, *ONEWAY, "model.camera_noise=real")


def test_lens_and_edge_blur_are_fitted_to_the_real_frames_sharpness(tmp_path, real_frames, capsys):
    """model.camera_blur: real — "real" frames that are the training views themselves through
    a Gaussian lens of a known std give that std back (within 0.1 px) and no edge blur; the
    views with only their geometric edges blurred give that edge std back and no lens blur;
    the views as they are give neither (below 0.3 px: a neighbour weighs < 0.4 %). The camera
    applies both after the field and vignetting, the edge blur only on the edges passed to it;
    a model saved before the blur existed loads with none and renders exactly as before; a run
    logs the fit (again after the detail match), trains a step with it and the saved model
    renders with it; the option needs the camera model."""
    from vidsim2real.layout import nchw_to_nhwc, nhwc_to_nchw
    from vidsim2real.render import edge_mask
    from vidsim2real.texture import TextureSet
    from vidsim2real.train.appearance import _views_with_layer, _with_detail, real_blur
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build, train
    from vidsim2real.translate.inference import load_model
    from vidsim2real.translate.networks import CameraModel, lens_blur, soften_edges
    cfg = tiny_cfg(tmp_path, real_frames, "steps=0", *ONEWAY, "texture.albedo=true", "texture.detail=true",
                   "model.camera=true")
    bank, real, _ = build(cfg, Dist(), torch.device("cpu"), Path(cfg.run_dir), progress=False)
    textures = {a: TextureSet.for_scenes(sc, cfg.texture, seed=0) for a, sc in bank.anatomies().items()}
    for t in textures.values():          # a detail layer with fine texture to blur
        for d in t.detail.values():
            d.levels[0].data.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(3))
    seen = _views_with_layer(bank, textures, True, 8, None)
    assert all(e.any() and not e.all() for *_, e, _ in seen)

    def views_as_real(lens, edge):
        imgs, labels = [], []
        for base, layer, lbl, edges, _ in seen:
            x = nhwc_to_nchw(_with_detail(base, layer, lbl, torch.ones(1 + int(lbl.max()))))
            x = nchw_to_nhwc(soften_edges(lens_blur(x, lens), edges, edge))[0]
            imgs.append((x.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
            labels.append(lbl[0].numpy())
        return Labelled(imgs, labels)

    got = real_blur(bank, views_as_real(0.9, 0.0), textures, albedo=True, views=8)
    assert abs(got["lens"] - 0.9) < 0.1 and got["edge"] < 0.3, got
    assert got["real"][0] < got["views"][0], got
    got = real_blur(bank, views_as_real(0.0, 1.0), textures, albedo=True, views=8)
    assert got["lens"] < 0.3 and abs(got["edge"] - 1.0) < 0.15, got
    got = real_blur(bank, views_as_real(0.0, 0.0), textures, albedo=True, views=8)
    assert got["lens"] < 0.3 and got["edge"] < 0.3, got      # below 0.3 px a neighbour weighs < 0.4 %
    # edges: both sides of an outline and of a depth jump on one object; not the frame border
    ids = torch.full((1, 6, 6), -1)
    ids[:, :, 3:] = 0
    depth = torch.where(ids >= 0, 1.0, 0.0)
    depth[:, 3:, 3:] = 2.0
    e = edge_mask(ids, depth)[0]
    assert e[:, 2:4].all() and not e[:, :2].any(), e                      # the outline, both sides
    assert e[2:4, 3:].all() and not e[[0, 1, 4, 5], 4:].any(), e          # the depth jump; not the border
    # the camera blurs its output (the edge blur on the edges only); zeros leave frames as they were
    cam, x = CameraModel().requires_grad_(False), torch.rand(1, 3, 24, 24) * 2 - 1
    edges = torch.zeros(1, 24, 24, dtype=torch.bool)
    edges[:, :, 11:13] = True
    ref = cam(x, edges)
    assert torch.equal(ref, cam(x))
    cam.set_blur(0.9, 1.5)
    torch.testing.assert_close(cam(x), lens_blur(ref, 0.9), atol=1e-5, rtol=0)
    y = cam(x, edges)
    torch.testing.assert_close(y[..., :, :11], lens_blur(ref, 0.9)[..., :, :11], atol=1e-5, rtol=0)
    torch.testing.assert_close(y[..., 11:13], lens_blur(lens_blur(ref, 0.9), 1.5)[..., 11:13], atol=1e-5, rtol=0)
    fresh = CameraModel().requires_grad_(False)
    fresh.load_state_dict({k: v for k, v in cam.state_dict().items() if k != "blur"})
    assert not fresh.blur.any() and torch.equal(fresh(x, edges), ref)
    run = train(tiny_cfg(tmp_path / "run", real_frames, "steps=1", *ONEWAY, "model.camera=true",     # a step: the
                         "model.camera_blur=real", "texture.albedo=true", "texture.detail=true",    # trainer passes
                         "texture.detail_match=true"), progress=False)                              # the edges
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "edge blur from the real frames" in ln]
    assert len(lines) == 2 and "(detail matched)" in lines[1], lines
    lens, edge = load_model(run.model).net.camera.blur.tolist()
    assert f"sigma {lens:.2f} px and {edge:.2f} px on edges" in lines[1], (lens, edge, lines)
    assert edge > 0.3, lines         # the surrogate's outlines are soft too (so the step used the edges)
    with pytest.raises(UserError, match="camera_blur"):
        tiny_cfg(tmp_path / "bad", real_frames, *ONEWAY, "model.camera_blur=real")


def test_fit_textures_gives_new_objects_their_class_albedo(tmp_path, real_frames, cli):
    """fit-textures with an albedo model: an object of a class the real frames show but the
    checkpoint has no texture of starts from its class's real albedo; one of a class no real
    frame shows keeps its scene colour as albedo (the plain fallback), not an average of others;
    the fit leaves albedo channels as they start (the frozen discriminator would paint stripes)."""
    import yaml
    from conftest import mini_scene_dict

    from vidsim2real.io.checkpoint import load_checkpoint
    from vidsim2real.train.loop import train
    cfg = tiny_cfg(tmp_path, real_frames, "steps=0", *ONEWAY, "texture.albedo=true", "texture.albedo_init=real",
                   "model.exposure=fixed")
    model = train(cfg, progress=False).model
    d = mini_scene_dict(tmp_path)
    d["anatomy"] = "mini"
    ball = d["objects"][0]
    ball.update(name="spleen_ball", class_id=6, class_name="spleen", color=[0.2, 0.6, 0.2])
    d["objects"].append(dict(ball, name="novel_ball", class_id=99, class_name="novel_tissue", color=[0.1, 0.3, 0.9]))
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(d))
    rc, out, err = cli("fit-textures", model, tmp_path / "mini.yaml", "--steps", "2", "-o", tmp_path / "fit.pt",
                       "--real", real_frames, "--device", "cpu")
    assert rc == 0, err
    tex = load_checkpoint(tmp_path / "fit.pt")["textures"]["mini"]
    top = max(int(k.rsplit(".", 1)[1]) for k in tex if k.startswith("textures.novel_ball.levels."))
    albedo = {n: tex[f"textures.{n}.levels.{top}"][:, :3].float().mean(dim=(0, 2, 3)) / 2 + 0.5
              for n in ("spleen_ball", "novel_ball")}
    torch.testing.assert_close(albedo["novel_ball"], torch.tensor([0.1, 0.3, 0.9]), atol=1e-2, rtol=0)
    assert (albedo["spleen_ball"] - torch.tensor([0.2, 0.6, 0.2])).abs().max() > 0.2     # not its scene colour
    assert albedo["spleen_ball"][0] > albedo["spleen_ball"][1]          # spleen tissue is red, not green
    # fitting never moves the albedo: still flat on the coarsest level, zero on the finer ones
    for n in ("spleen_ball", "novel_ball"):
        coarse = tex[f"textures.{n}.levels.{top}"][:, :3].float()
        assert torch.equal(coarse, coarse[:1, :, :1, :1].expand_as(coarse)), n
        assert not any(tex[f"textures.{n}.levels.{k}"][:, :3].float().any() for k in range(top))


def test_detail_scale_is_chosen_by_the_real_frames_texture_over_octaves(tmp_path, real_frames, capsys):
    """texture.detail_scale: real — a pattern drawn twice as large moves its energy one octave
    band up, and the octave distance tells it from the pattern itself; the fit chooses, per
    class, the largest tried scale within the tie of the least distance, keeps it in the
    texture set and the checkpoint (old sets load with none: 1); the option needs
    texture.detail. (Whether the chosen scale transfers to scenes no model trained on is
    measured on the shipped recipe, docs/results.md: the tiny frames are too small to place a
    pattern.)"""
    import re

    import torch.nn.functional as F
    from vidsim2real.io.checkpoint import load_checkpoint
    from vidsim2real.strict_yaml import read_dataclass
    from vidsim2real.texture import TextureConfig, TextureSet
    from vidsim2real.train.appearance import octave_distance, octave_energy
    from vidsim2real.train.loop import SCALE_TIE, SCALES, choose_scale, train
    gen = torch.Generator().manual_seed(0)
    x = F.avg_pool2d(torch.rand(1, 3, 260, 260, generator=gen), 5, 1)[0].permute(1, 2, 0)   # 2-3 px blobs
    big = F.interpolate(x[None, :128, :128].permute(0, 3, 1, 2), scale_factor=2, mode="bicubic",
                        align_corners=False)[0].permute(1, 2, 0).clamp(0, 1)
    lbl = torch.ones(1, 256, 256, dtype=torch.long)
    e, e2 = octave_energy(x[None, :256, :256], lbl)[1], octave_energy(big[None], lbl)[1]
    def centre(v):
        return float((v[:-1] * torch.arange(5)).sum() / v[:-1].sum())
    assert abs(centre(e2) - centre(e) - 1.0) < 0.3, (e, e2)
    assert octave_distance({1: e}, {1: e}) == {1: 0.0} and octave_distance({1: e2}, {1: e})[1] > 0.5

    # the largest scale within the tie of the least distance; a class not measured at each is left out
    assert choose_scale({1: [(0.25, 0.35), (0.5, 0.5), (0.7, 0.71), (0.9, 1.0)],
                         2: [(0.30, 0.35), (0.29, 0.5), (0.31, 0.71), (0.31, 1.0)],
                         3: [(0.9, 0.35), (0.5, 0.5), (0.6, 0.71), (0.7, 1.0)], 4: [(0.1, 0.35)]}) == \
        {1: 0.35, 2: 1.0, 3: 0.5}
    capsys.readouterr()
    out = train(tiny_cfg(tmp_path / "a", real_frames, "steps=0", *ONEWAY, "texture.albedo=true", "texture.detail=true",
                         "texture.detail_match=true", "texture.detail_scale=real"), progress=False)
    line = [ln for ln in capsys.readouterr().out.splitlines() if "detail scale per class" in ln]
    assert len(line) == 1, line
    got = {int(c): (float(k), [float(d) for d in ds.split()]) for c, k, ds in
           re.findall(r"class (\d+) x([\d.]+) \(([\d. ]+)\)", line[0])}
    assert got and all(len(ds) == len(SCALES) for _, ds in got.values()), line
    for c, (k, ds) in got.items():           # the logged choice follows the rule (distances rounded)
        assert k in SCALES and ds[SCALES.index(k)] <= SCALE_TIE * min(ds) + 0.011, (c, line)
        assert all(d > SCALE_TIE * min(ds) - 0.011 for s_, d in zip(SCALES, ds) if s_ > k), (c, line)
    p = load_checkpoint(out.model)                          # kept in the set and the checkpoint
    (anatomy, state), = p["textures"].items()
    cfg = read_dataclass(TextureConfig, p["texture_config"], "ckpt", "texture_config")
    tset = TextureSet.from_state(cfg, state, anatomy)
    assert all(tset.class_detail_scale(c) == k for c, (k, _) in got.items()) and tset.class_detail_scale(99) == 1.0
    old = TextureSet.from_state(cfg, {k: v for k, v in state.items() if k != "detail_scales"}, anatomy)
    assert len(old.detail_scales) == 0 and old.class_detail_scale(1) == 1.0
    old.set_detail_scale({3: 0.5})
    assert old.detail_scales.tolist() == [1.0, 1.0, 1.0, 0.5]
    with pytest.raises(UserError, match="detail_scale"):
        tiny_cfg(tmp_path / "bad", real_frames, *ONEWAY, "texture.detail_scale=real")
    with pytest.raises(UserError, match="detail_scale"):
        tiny_cfg(tmp_path / "bad", real_frames, *ONEWAY, "texture.detail=true", "texture.detail_scale=big")


def _class_seen_most(views) -> int:
    counts = torch.bincount(torch.cat([b.labels.flatten() for _, _, b in views]).cpu())
    counts[0] = 0
    return int(counts.argmax())


def _views_shaded_with(bank, table) -> Labelled:
    """"Real" frames: the bank's training views rendered with the per-class gloss table."""
    from vidsim2real.train.detail_init import spread_views
    bank.set_gloss(table)
    frames, labels = [], []
    for _, _, b in spread_views(bank, 8):
        frames.append((b.sim_rgb[0].cpu() * 255).round().clamp(0, 255).to(torch.uint8).numpy())
        labels.append(b.labels[0].cpu().numpy())
    bank.set_gloss(None)
    return Labelled(frames, labels)


def test_surface_gloss_is_fitted_from_the_real_frames_and_rendered_by_the_model(tmp_path, real_frames, capsys,
                                                                              monkeypatch):
    """model.gloss: real — "real" frames that are the training views with one class made
    glossier (k_s 1, shininess 10: broad strong highlights) give that class that gloss and leave the others the scene's;
    a class's gloss changes only its own pixels' specular light, and a table of -1 none; the
    model keeps it through its slim checkpoint and renders every translation with it; a model
    saved before it existed loads with none; a run logs the fit."""
    from vidsim2real.shading import class_gloss, scope_light_buffer
    from vidsim2real.train.appearance import real_gloss
    from vidsim2real.train.detail_init import spread_views
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build, train
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    from vidsim2real.translate.networks import GLOSS_CLASSES, SurfaceGloss
    cfg = tiny_cfg(tmp_path, real_frames, "steps=0", *ONEWAY, "texture.albedo=true", "texture.albedo_init=real",
                   "model.exposure=fixed", "model.gloss=real")
    bank, _, _ = build(cfg, Dist(), torch.device("cpu"), Path(cfg.run_dir), progress=False)
    views = list(spread_views(bank, 8))
    c = _class_seen_most(views)
    table = torch.full((GLOSS_CLASSES, 2), -1.0)
    table[c] = torch.tensor([1.0, 10.0])
    r, _, buf = views[0]
    params = r.lighting.expand(1, -1)
    plain = scope_light_buffer(buf.positions, buf.normals, buf.mask, buf.cam_pos, params)
    none = scope_light_buffer(buf.positions, buf.normals, buf.mask, buf.cam_pos, params,
                              gloss=class_gloss(buf.labels, params, torch.full((GLOSS_CLASSES, 2), -1.0)))
    glossy = scope_light_buffer(buf.positions, buf.normals, buf.mask, buf.cam_pos, params,
                                gloss=class_gloss(buf.labels, params, table))
    torch.testing.assert_close(none, plain, rtol=1e-6, atol=0)
    changed = ((glossy - plain).abs() > 1e-6 * plain.abs().clamp(min=1e-6)).any(-1)
    assert changed.any() and (buf.labels[changed] == c).all() and torch.equal(glossy[..., 0], plain[..., 0])
    shaded = _views_shaded_with(bank, table)
    from vidsim2real.train import appearance           # a smaller grid (with the scene's and the true gloss)
    monkeypatch.setattr(appearance, "GLOSS_STRENGTHS", (0.25, 1.0))
    monkeypatch.setattr(appearance, "GLOSS_SHININESS", (10.0, 40.0))
    got, dist = real_gloss(bank, shaded, views=8, samples=4000, steps=100)
    assert got == {c: (1.0, 10.0)}, str((got, dist, c))
    assert dist[c][1] < 0.5 * dist[c][0], dist
    # the model keeps it and renders with it; a model saved before it existed has none
    monkeypatch.setattr(appearance, "GLOSS_STRENGTHS", (1.0,))
    monkeypatch.setattr(appearance, "GLOSS_SHININESS", (10.0,))
    run = train(tiny_cfg(tmp_path / "run", real_frames, "steps=0", *ONEWAY, "texture.albedo=true",
                         "texture.albedo_init=real", "model.exposure=fixed", "model.gloss=real"), progress=False)
    assert "specular gloss per class from the real frames" in capsys.readouterr().out
    model = load_model(run.model)
    model.net.gloss.set({c: (1.0, 10.0)})
    state = model.net.deploy_state_dict()
    fresh = SurfaceGloss()
    fresh.load_state_dict({k[len("gloss."):]: v for k, v in state.items() if k.startswith("gloss.")})
    assert fresh.active and torch.equal(fresh.table[:, :2], table) and (fresh.table[:, 2] == -1).all()
    two = SurfaceGloss()                                  # saved before the diffuse exponent: [C, 2]
    two.load_state_dict({"table": table})
    assert two.active and torch.equal(two.table[:, :2], table) and two.fitted() == ({c: (1.0, 10.0)}, {})
    old = SurfaceGloss()
    old.load_state_dict({})
    assert not old.active
    r = bank.renderers[0]
    b = r.render([0])
    style = make_style(model, "0", "cpu")
    with_gloss = translate_buffers(model, r, b, style)
    model.net.gloss.set({})
    without = translate_buffers(model, r, b, style)
    diff = (with_gloss - without).abs().amax(-1)[0] > 1e-4
    assert diff.any() and (b.labels[0][diff] == c).all()
    with pytest.raises(UserError, match="model.gloss"):
        tiny_cfg(tmp_path / "bad", real_frames, *ONEWAY, "model.gloss=real")          # no albedo


def test_diffuse_exponent_is_fitted_from_the_real_frames_and_rendered_by_the_model(tmp_path, real_frames, capsys,
                                                                                 monkeypatch):
    """model.diffuse: real — "real" frames that are the training views with one class shaded
    falloff x (n.l)^3 (darker towards grazing angles) give that class m = 3 and leave the others
    Lambert's; the exponent changes only its class's diffuse light (m = 1 and an unset table
    nothing); the model keeps it through its slim checkpoint (with a gloss fitted after it) and
    renders every translation with it; a run logs the fit; it needs a real albedo."""
    from vidsim2real.shading import class_gloss, scope_light_buffer
    from vidsim2real.train import appearance
    from vidsim2real.train.appearance import real_diffuse
    from vidsim2real.train.detail_init import spread_views
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build, train
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    from vidsim2real.translate.networks import GLOSS_CLASSES, SurfaceGloss
    args = ("steps=0", *ONEWAY, "texture.albedo=true", "texture.albedo_init=real", "model.exposure=fixed")
    cfg = tiny_cfg(tmp_path, real_frames, *args, "model.diffuse=real")
    bank, _, _ = build(cfg, Dist(), torch.device("cpu"), Path(cfg.run_dir), progress=False)
    views = list(spread_views(bank, 8))
    c = _class_seen_most(views)
    table = torch.full((GLOSS_CLASSES, 3), -1.0)
    table[c, 2] = 3.0
    r, _, buf = views[0]
    params = r.lighting.expand(1, -1)
    light = lambda t: scope_light_buffer(buf.positions, buf.normals, buf.mask, buf.cam_pos, params,  # noqa: E731
                                         gloss=None if t is None else class_gloss(buf.labels, params, t))
    plain, steep = light(None), light(table)
    lambert = table.clone()
    lambert[c, 2] = 1.0
    torch.testing.assert_close(light(lambert), plain, rtol=1e-6, atol=0)
    torch.testing.assert_close(light(torch.full((GLOSS_CLASSES, 3), -1.0)), plain, rtol=1e-6, atol=0)
    changed = (steep - plain).abs() > 1e-6 * plain.abs().clamp(min=1e-6)
    assert changed[..., 0].any() and not changed[..., 1].any() and (buf.labels[changed[..., 0]] == c).all()
    assert (steep[..., 0] <= plain[..., 0] + 1e-7).all()             # (n.l)^3 <= n.l: darker, never brighter
    shaded = _views_shaded_with(bank, table)
    monkeypatch.setattr(appearance, "DIFFUSE_EXPONENTS", (0.5, 3.0))
    got, dist = real_diffuse(bank, shaded, views=8, samples=4000, steps=100)
    assert got == {c: 3.0}, str((got, dist, c))
    assert dist[c][1] < 0.5 * dist[c][0], dist
    # a run fits and logs it, the model keeps it beside a gloss and renders with it
    monkeypatch.setattr(appearance, "DIFFUSE_EXPONENTS", (3.0,))
    run = train(tiny_cfg(tmp_path / "run", real_frames, *args, "model.diffuse=real"), progress=False)
    assert "diffuse exponent per class from the real frames" in capsys.readouterr().out
    model = load_model(run.model)
    model.net.gloss.set({c: (1.0, 10.0)}, {c: 3.0})
    fresh = SurfaceGloss()
    fresh.load_state_dict({k[len("gloss."):]: v for k, v in model.net.deploy_state_dict().items()
                           if k.startswith("gloss.")})
    assert fresh.active and fresh.fitted() == ({c: (1.0, 10.0)}, {c: 3.0})
    r = bank.renderers[0]
    b = r.render([0])
    style = make_style(model, "0", "cpu")
    model.net.gloss.set({}, {c: 3.0})
    steep = translate_buffers(model, r, b, style)
    model.net.gloss.set({})
    without = translate_buffers(model, r, b, style)
    diff = (steep - without).abs().amax(-1)[0] > 1e-4
    assert diff.any() and (b.labels[0][diff] == c).all()
    with pytest.raises(UserError, match="model.diffuse"):
        tiny_cfg(tmp_path / "bad", real_frames, *ONEWAY, "model.diffuse=real")          # no albedo


def test_black_level_is_fitted_from_the_real_frames_background_and_added_per_video(tmp_path, real_frames, capsys):
    """model.camera_black: real — noisy "real" frames whose background (label 0) is lifted by a
    known pedestal per clip (under a lens field darkening towards the corners) give those
    pedestals back (within 1/255); frames without background, or without label maps, give
    none. The camera adds a row per video: without a table or a video the frames are
    bit-identical to before; with one, a black frame becomes that row's pedestal under the
    lens's gain, with the sensor noise of that brightness on top; one clip keeps one row (the
    translation's noise seed, ``video_row``; consecutive seeds spread over the rows). A run
    fits, logs, saves and reloads the table; the option needs the camera model."""
    import numpy as np

    from vidsim2real.shading import linear_to_srgb, srgb_to_linear
    from vidsim2real.train.appearance import real_black
    from vidsim2real.train.loop import train
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers, video_row
    from vidsim2real.translate.networks import BLACK_ROWS, CameraModel, field_gain, noise_std

    field = torch.linspace(0.0, -0.6, 9)                      # a lens darkening towards the corners
    levels = [0.0, 4.0, 9.0, 13.0, 17.0, 21.0]                 # each clip's pedestal (sRGB, of 255)

    def frames(noise=1.5, background=True):
        gen = torch.Generator().manual_seed(3)
        gain = field_gain(field, 96, 128)[..., None]
        imgs, labels = [], []
        for level in levels:
            for _ in range(2):                                 # two frames per clip
                lbl = np.zeros((96, 128), np.uint8)
                lbl[20:70, 30:90] = 1
                if not background:
                    lbl[:] = 1
                lin = srgb_to_linear(torch.full((96, 128, 3), level / 255)) * gain
                img = linear_to_srgb(lin)
                img[20:70, 30:90] = torch.tensor([0.7, 0.4, 0.3])
                img = img + noise / 255 * torch.randn(img.shape, generator=gen)
                imgs.append((img.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
                labels.append(lbl)
        return Labelled(imgs, labels)

    cam = CameraModel()
    cam.set_field(field)
    table = real_black(frames(), cam.gain)
    assert table is not None and table.shape == (BLACK_ROWS, 3)
    got = linear_to_srgb(table).mean(1) * 255
    assert got.diff().min() >= 0                                              # rows ordered by level
    assert abs(float(got[0]) - levels[0]) < 1.0 and abs(float(got[-1]) - levels[-1]) < 1.0, got
    assert {round(float(v)) for v in got} <= {round(v) for v in levels} | {round(v) + d for v in levels for d in (-1, 1)}
    assert real_black(frames(background=False)) is None
    assert real_black(Labelled([], [])) is None

    # the camera: no table or no video = as before; a black frame takes its row's pedestal
    x = torch.rand(2, 3, 96, 128) * 2 - 1
    eps = torch.randn(2, 3, 96, 128)
    before = cam.add_noise(x, eps)
    assert torch.equal(before, cam.add_noise(x, eps, torch.tensor([0, 5])))     # no table yet
    cam.set_black(table)
    assert cam.has_black and torch.equal(before, cam.add_noise(x, eps))
    black = -torch.ones(2, 3, 96, 128)
    rows = torch.tensor([BLACK_ROWS - 1, BLACK_ROWS + 3])                      # modulo the rows
    out = (cam.add_noise(black, torch.zeros_like(black), rows).detach() + 1) / 2
    want = linear_to_srgb(table[[BLACK_ROWS - 1, 3], :, None, None] * cam.gain(96, 128))
    assert torch.allclose(out, want, atol=1e-5)
    assert float(out[0, :, 48, 64].mean()) * 255 == pytest.approx(levels[-1], abs=1.0)
    assert float(out[0, :, 0, 0].mean()) < float(out[0, :, 48, 64].mean())      # under the lens's gain
    grain = (cam.add_noise(black, eps, rows).detach() + 1) / 2 - out            # the sensor noise of the lifted black
    assert torch.allclose(grain, noise_std(out, cam.noise_sigma.detach(), cam.noise_floor) * eps, atol=1e-6)
    first = [video_row(s) for s in range(22)]                                # seeds spread over the rows
    assert len(set(first)) == 22 and sorted(first[:4]) == [3, 11, 16, 23], first[:4]

    # a run fits, logs, saves and reloads it; a video translated again is the same video
    run = train(tiny_cfg(tmp_path / "run", write_labelled(tmp_path / "real", frames()), "steps=2", *ONEWAY,
                         "model.camera=true", "model.camera_black=real"), progress=False)
    line = [ln for ln in capsys.readouterr().out.splitlines() if "black levels from the real frames' background" in ln]
    assert len(line) == 1 and "pedestal" in line[0], line
    model = load_model(run.model)
    assert model.net.camera.has_black
    scene = load_scene(SCENES / "liver_overview.yaml")
    r = Renderer(scene, size=(48, 48))
    buf = r.render([0, 1])
    with torch.no_grad():
        a = translate_buffers(model, r, buf, make_style(model, "0", r.device), noise_seed=0)
        b = translate_buffers(model, r, buf, make_style(model, "0", r.device), noise_seed=0)
    assert torch.equal(a, b)
    with pytest.raises(UserError, match="camera_black"):
        tiny_cfg(tmp_path / "bad", real_frames, *ONEWAY, "model.camera_black=real")
    with pytest.raises(UserError, match="camera_black"):
        tiny_cfg(tmp_path / "bad", real_frames, *ONEWAY, "model.camera=true", "model.camera_black=maybe")


def test_colour_casts_are_fitted_from_the_real_frames_and_applied_per_video(tmp_path, capsys):
    """model.camera_cast: real — "real" clips shot with known white balances and exposures (the
    same tissue colours under a log gain per clip) give those casts back, less the spread the
    model's own views already have: none when they have all of it, the difference (in variance)
    when half. The camera multiplies each video's linear light by its row (before the black
    level); without a table or a video, frames are bit-identical to before. A run fits, logs,
    saves and reloads the table; the option needs the camera model."""
    import numpy as np

    from vidsim2real.shading import linear_to_srgb, srgb_to_linear
    from vidsim2real.train.appearance import frame_casts, real_cast
    from vidsim2real.train.loop import train
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    from vidsim2real.translate.networks import BLACK_ROWS, CameraModel

    gen = torch.Generator().manual_seed(5)
    casts = torch.randn(24, 3, generator=gen) * torch.tensor([0.15, 0.08, 0.12]) + 0.2 * torch.randn(24, 1, generator=gen)
    tissue = torch.tensor([[0.6, 0.3, 0.25], [0.5, 0.4, 0.3], [0.35, 0.1, 0.1]])     # linear class colours

    def frames(noise=1.0):
        imgs, labels = [], []
        for i, c in enumerate(casts):
            lbl = np.zeros((96, 128), np.uint8)
            lin = torch.zeros(96, 128, 3)
            for k in range(3):
                if (i + k) % 3 != 2:                                        # two of the three classes per frame
                    lbl[10:80, 40 * k:40 * k + 36] = k + 1
                    lin[10:80, 40 * k:40 * k + 36] = tissue[k] * torch.exp(c)
            img = linear_to_srgb(lin.clamp(0, 1)) + noise / 255 * torch.randn(96, 128, 3, generator=gen)
            imgs.append((img.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
            labels.append(lbl)
        return Labelled(imgs, labels)

    got = frame_casts((torch.from_numpy(f).float() / 255, torch.from_numpy(lb.astype(np.int64)))
                      for f, lb in zip(frames().frames, frames().labels))
    want = casts - casts.mean(0)                   # relative to the clips' mean (each class's mean over frames)
    assert got.shape == (24, 3)
    assert float((got - got.mean(0) - want).abs().max()) < 0.03, (got - got.mean(0) - want).abs().max()

    full, stats = real_cast(frames())
    assert full.shape == (BLACK_ROWS, 3) and stats["frames"] == 24 and stats["shrink"] == (1.0, 1.0)
    assert torch.allclose(torch.exp(full).mean(0), torch.ones(3), atol=1e-5)     # the set's colour kept
    exposure, balance = full.mean(1), full - full.mean(1, keepdim=True)
    real_e, real_w = casts.mean(1), casts - casts.mean(1, keepdim=True)
    assert float(exposure.std()) == pytest.approx(float(real_e.std()), rel=0.2)
    assert float(balance.std(0).norm()) == pytest.approx(float(real_w.std(0).norm()), rel=0.2)
    assert full.mean(1).unique().numel() > 16                                  # rows spread over the clips
    same, stats = real_cast(frames(), ours=got)
    assert max(stats["shrink"]) < 0.1 and float(same.abs().max()) < 0.05         # the views have all of it
    half = torch.cat([got[:, :1] * 0, got[:, 1:] * 0], 1) + (got - got.mean(0)) * np.sqrt(0.5)
    part, stats = real_cast(frames(), ours=half)
    assert stats["shrink"][0] == pytest.approx(np.sqrt(0.5), abs=0.05) and stats["shrink"][1] == pytest.approx(
        np.sqrt(0.5), abs=0.05)
    assert float(part.mean(1).std()) == pytest.approx(float(full.mean(1).std()) * np.sqrt(0.5), rel=0.1)
    assert real_cast(Labelled(frames().frames[:4], frames().labels[:4])) is None   # too few frames
    assert real_cast(Labelled([], [])) is None

    # the camera: no table or no video = as before; a row multiplies linear light, then the black level
    cam = CameraModel()
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    eps = torch.randn(2, 3, 32, 48)
    before = cam.add_noise(x, eps)
    assert not cam.has_rows and torch.equal(before, cam.add_noise(x, eps, torch.tensor([0, 5])))
    cam.set_cast(full)
    assert cam.has_rows and not cam.has_black and torch.equal(before, cam.add_noise(x, eps))
    grey = torch.full((2, 3, 32, 48), 0.0)                                    # sRGB 0.5
    rows = torch.tensor([3, BLACK_ROWS + 7])
    out = (cam.add_noise(grey, torch.zeros_like(grey), rows).detach() + 1) / 2
    want = linear_to_srgb((srgb_to_linear(torch.tensor(0.5)) * torch.exp(full[[3, 7]])).clamp(max=1))
    assert torch.allclose(out[:, :, 5, 5], want, atol=1e-5)
    cam.set_black(torch.full((BLACK_ROWS, 3), 0.01))
    out = (cam.add_noise(grey, torch.zeros_like(grey), rows).detach() + 1) / 2
    want = linear_to_srgb((srgb_to_linear(torch.tensor(0.5)) * torch.exp(full[[3, 7]]) + 0.01).clamp(max=1))
    assert torch.allclose(out[:, :, 16, 24], want, atol=1e-5)
    state = {k: v for k, v in CameraModel().state_dict().items() if k != "cast"}     # saved before casts existed
    old = CameraModel()
    old.set_cast(full)
    old.load_state_dict(state)
    assert not old.has_rows and float(old.cast.abs().max()) == 0

    # a run fits, logs, saves and reloads it; a video translated again is the same video
    run = train(tiny_cfg(tmp_path / "run", write_labelled(tmp_path / "real", frames()), "steps=2", *ONEWAY,
                         "model.camera=true", "model.camera_cast=real"), progress=False)
    line = [ln for ln in capsys.readouterr().out.splitlines() if "colour casts from the real frames" in ln]
    assert len(line) == 1 and "the views' own" in line[0], line
    model = load_model(run.model)
    assert model.net.camera.has_rows and not model.net.camera.has_black
    scene = load_scene(SCENES / "liver_overview.yaml")
    r = Renderer(scene, size=(48, 48))
    buf = r.render([0, 1])
    with torch.no_grad():
        a, b = (translate_buffers(model, r, buf, make_style(model, "0", r.device), noise_seed=s) for s in (0, 0))
        c = translate_buffers(model, r, buf, make_style(model, "0", r.device), noise_seed=1)
    assert torch.equal(a, b)
    assert float((a.mean((0, 1, 2)) - c.mean((0, 1, 2))).abs().max()) > 0.005    # another clip, another cast
    with pytest.raises(UserError, match="camera_cast"):
        tiny_cfg(tmp_path / "bad", tmp_path / "real/frames", *ONEWAY, "model.camera_cast=real")
    with pytest.raises(UserError, match="camera_cast"):
        tiny_cfg(tmp_path / "bad", tmp_path / "real/frames", *ONEWAY, "model.camera=true", "model.camera_cast=yes")


def test_relative_class_colour_does_not_depend_on_where_the_views_stand():
    """texture.albedo_statistic: relative — two sets of the same two tissues, one whose views
    see the red class close (bright) and the grey one from afar, the other the reverse: their
    pooled class means disagree by far, their relative colours (each frame's common factor
    fitted out) agree within 1 ΔE and keep the true red-to-grey ratio, at the pooled means'
    overall level. The fit behind it gives frames shot at known exposures their casts back, per
    channel or (as the relative colour uses it) as one grey gain."""
    from vidsim2real.shading import linear_to_srgb, srgb_to_linear
    from vidsim2real.train.appearance import _class_colour, class_frame_fit
    red, grey = torch.tensor([0.40, 0.08, 0.06]), torch.tensor([0.20, 0.20, 0.20])

    def frames(red_close: bool):
        out = []
        for k in range(12):
            near = k % 2 == 0
            gain = 1.0 if near else 0.15                       # the view's distance, in linear light
            share = 48 if near == red_close else 16            # the class seen close fills the frame
            lbl = torch.full((64, 64), 2, dtype=torch.long)
            lbl[:, :share] = 1
            lin = torch.where((lbl == 1)[..., None], red, grey) * gain
            out.append((linear_to_srgb(lin), lbl))
        return out
    close, far = frames(True), frames(False)
    gap = lambda a, b: max(float((a[c][0] - b[c][0]).norm()) for c in (1, 2))  # noqa: E731
    assert gap(_class_colour(close), _class_colour(far)) > 10
    rel_close, rel_far = _class_colour(close, "relative"), _class_colour(far, "relative")
    assert gap(rel_close, rel_far) < 1.0, (rel_close, rel_far)
    import kornia
    lin = lambda v: srgb_to_linear(kornia.color.lab_to_rgb(v.float()[None, :, None, None])[0, :, 0, 0])  # noqa: E731
    assert torch.allclose(lin(rel_close[1][0]) / lin(rel_close[2][0]), red / grey, rtol=0.03)
    own, cast, pixels = class_frame_fit(close)
    assert cast.shape == (12, 3) and torch.allclose(cast[::2] - cast[1::2], torch.tensor(1 / 0.15).log().double()
                                                    .expand(6, 3), atol=1e-3)
    assert set(own) == {1, 2} and pixels[1] + pixels[2] == 12 * 64 * 64
    # one grey gain per frame (what the relative colour uses): a white balance stays the class's
    tint = lambda k: torch.tensor([1.0, 0.8, 0.8] if k % 3 == 0 else [1.0, 1.0, 1.0])  # noqa: E731
    tinted = [(linear_to_srgb(srgb_to_linear(img) * tint(k)), lbl) for k, (img, lbl) in enumerate(close)]
    grey_cast = class_frame_fit(tinted, grey=True)[1]
    assert torch.equal(grey_cast[:, 0], grey_cast[:, 1]) and torch.equal(grey_cast[:, 1], grey_cast[:, 2])
    assert not torch.allclose(class_frame_fit(tinted)[1][:, 0], class_frame_fit(tinted)[1][:, 1])


def test_class_grade_gives_each_class_the_real_frames_chroma_across_it(tmp_path, real_frames, capsys, monkeypatch):
    """model.grade: real — "real" frames whose tissue turns whiter as it brightens (its chroma
    flat across the organ) against ours that keep their hue under a shading ramp and carry a
    blotch of red apart from it: the fit gives the grade that makes ours' coarse chroma follow
    L* as the real ones' does, its spread apart from L* too, while each frame's mean colour,
    a class the two sides share as they are, and the background stay; inactive or without
    labels it is the identity, an old checkpoint loads without one, and a run fits, logs,
    saves and reloads it."""
    import numpy as np

    from vidsim2real.shading import linear_to_srgb
    from vidsim2real.train.appearance import class_chroma_moments, lab, real_grade
    from vidsim2real.train.loop import train
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    from vidsim2real.translate.networks import ClassGrade, chroma_fit

    gen = torch.Generator().manual_seed(3)
    tissue = torch.tensor([[0.55, 0.2, 0.12], [0.45, 0.35, 0.2]])             # linear class colours
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 128), indexing="ij")

    def frames(real: bool, n: int = 16):
        out = []
        for i in range(n):
            lbl = torch.zeros(96, 128, dtype=torch.int64)
            lbl[8:88, 6:60], lbl[8:88, 68:122] = 1, 2
            light = (0.25 + 0.7 * ((ys + 0.3 * i / n) % 1.0))[..., None]       # a shading ramp across the organ
            lin = torch.zeros(96, 128, 3)
            body = tissue[0] * (1 - 0.6 * light) + 0.6 * light * tissue[0].mean() if real else tissue[0]
            if not real:      # ours: a red blotch apart from the shading
                body = body * torch.stack([1 + 0.12 * torch.sin(6.0 * xs + i), torch.ones_like(xs), torch.ones_like(xs)], -1)
            lin[lbl == 1] = (light * body)[lbl == 1]
            lin[lbl == 2] = (light * tissue[1])[lbl == 2]
            img = linear_to_srgb(lin.clamp(0, 1)) + torch.randn(96, 128, 3, generator=gen) / 255
            out.append((img.clamp(0, 1), lbl))
        return out

    ours, want = frames(False), frames(True)
    real = Labelled([(f.numpy() * 255).round().astype(np.uint8) for f, _ in want],
                    [lb.numpy().astype(np.uint8) for _, lb in want])
    rows, fits, curves, levels = real_grade(real, ours)
    assert curves == {} and levels == {} and sorted(rows) == [1, 2] and fits[1][2:] == (16, 16)
    assert real_grade(real, ours, min_frames=17)[0] == {}          # seen in too few frames: no grade
    grade = ClassGrade()
    grade.set(rows)
    x = torch.stack([f for f, _ in ours]).permute(0, 3, 1, 2) * 2 - 1
    lbl = torch.stack([lb for _, lb in ours])
    y = grade(x, lbl)
    graded = [((g.permute(1, 2, 0) + 1) / 2, lb) for g, lb in zip(y, lbl)]
    before, after = ({c: m for c, (m, _) in class_chroma_moments(fr).items()} for fr in (ours, graded))
    truth = {c: m for c, (m, _) in class_chroma_moments([(torch.from_numpy(f).float() / 255, torch.from_numpy(lb.astype(np.int64)))
                                  for f, lb in zip(real.frames, real.labels)]).items()}
    t, b, a = chroma_fit(truth[1]), chroma_fit(before[1]), chroma_fit(after[1])
    assert abs(b[0] - t[0]) > 0.1 and abs(a[0] - t[0]) < 0.25 * abs(b[0] - t[0]), (t, b, a)     # a* on L*
    assert abs(b[1] - t[1]) > 0.1 and abs(a[1] - t[1]) < 0.25 * abs(b[1] - t[1]), (t, b, a)     # b* on L*
    assert b[2] > 2 * t[2] and a[2] == pytest.approx(t[2], rel=0.25), (t, b, a)                 # red apart from L*
    t2, a2 = chroma_fit(truth[2]), chroma_fit(after[2])
    assert all(abs(u - v) < 0.05 for u, v in zip(t2[:2], a2[:2])) and a2[2] == pytest.approx(t2[2], abs=0.3)
    assert float((y - x)[lbl[:, None].expand_as(x) == 2].abs().mean()) < 2 / 255
    assert torch.equal(y[lbl[:, None].expand_as(x) == 0], x[lbl[:, None].expand_as(x) == 0])
    for f, g, lb in zip(x, y, lbl):          # each frame keeps its class's mean colour
        m = lb == 1
        ab = lab(((torch.stack([f, g]).permute(0, 2, 3, 1) + 1) / 2))[:, m].mean(1)
        assert float((ab[0] - ab[1]).norm()) < 1.0, ab
    assert torch.equal(grade(x, None), x) and torch.equal(ClassGrade()(x, lbl), x)
    old = ClassGrade()
    old.set(rows)
    old.load_state_dict({})                # a model saved before the grade existed
    assert not old.active and torch.equal(old(x, lbl), x)
    again = ClassGrade()
    again.load_state_dict(grade.state_dict())
    assert again.fitted() == grade.fitted() and torch.equal(again(x, lbl), y)

    monkeypatch.setattr("vidsim2real.train.appearance.GRADE_FRAMES", 2)     # the tiny set has 8 frames
    run = train(tiny_cfg(tmp_path / "run", real_frames, "steps=0", *ONEWAY, "model.grade=real"), progress=False)
    line = [ln for ln in capsys.readouterr().out.splitlines() if "class grade from the real frames" in ln]
    assert len(line) == 1 and "class " in line[0].split("):", 1)[1], line
    model = load_model(run.model)
    assert model.net.grade.active
    scene = load_scene(SCENES / "liver_overview.yaml")
    r = Renderer(scene, size=(48, 48))
    buf = r.render([0, 1])
    with torch.no_grad():
        a_, b_ = (translate_buffers(model, r, buf, make_style(model, "0", r.device)) for _ in range(2))
        model.net.grade.set({})
        c_ = translate_buffers(model, r, buf, make_style(model, "0", r.device))
    assert torch.equal(a_, b_) and not torch.equal(a_, c_)
    assert torch.equal(a_[buf.labels.cpu() == 0], c_[buf.labels.cpu() == 0])
    # benchmarks/with_grade.py: the same fit onto a checkpoint; refuses a model it cannot grade
    # and a real set too small to grade from (one line, exit 2, nothing written)
    import importlib.util
    import subprocess
    import sys
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "with_grade.py"
    spec = importlib.util.spec_from_file_location("with_grade", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    plain = tmp_path / "plain.pt"
    model.net.grade.set({})
    from vidsim2real.io.checkpoint import load_checkpoint, save_checkpoint
    p = load_checkpoint(run.model)
    p["model"]["grade.table"] = model.net.grade.table.clone()
    p["config"]["model"]["grade"] = "none"
    save_checkpoint(plain, p)
    assert not load_model(plain).net.grade.active
    got = mod.with_grade(str(plain), str(tmp_path / "graded.pt"), str(run.model.parent))
    made = load_model(tmp_path / "graded.pt").net.grade.fitted()
    assert got and sorted(made) == sorted(got)
    assert all(v == pytest.approx(got[c], abs=1e-5) for c, v in made.items())
    assert load_checkpoint(tmp_path / "graded.pt")["config"]["model"]["grade"] == "real"
    got = mod.with_grade(str(plain), str(tmp_path / "curve.pt"), str(run.model.parent), "curve")
    curved = load_model(tmp_path / "curve.pt")
    assert load_checkpoint(tmp_path / "curve.pt")["config"]["model"]["grade"] == "curve"
    assert got and curved.net.grade.curved == set(got) == set(curved.net.grade.fitted())
    with torch.no_grad():
        d_ = translate_buffers(curved, r, buf, make_style(curved, "0", r.device))
    assert torch.equal(d_[buf.labels.cpu() == 0], c_[buf.labels.cpu() == 0]) and not torch.equal(d_, c_)
    ran = subprocess.run([sys.executable, str(script), str(plain), str(tmp_path / "no.pt"), "--run-dir",
                          str(run.model.parent)], capture_output=True, text=True)      # 8 real frames < 16
    assert ran.returncode == 2 and "nothing to grade" in ran.stderr and len(ran.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "no.pt").exists()
    got = mod.with_grade(str(plain), str(tmp_path / "level.pt"), str(run.model.parent), "real", level=True)
    levelled = load_model(tmp_path / "level.pt")
    assert load_checkpoint(tmp_path / "level.pt")["config"]["model"]["grade_level"] is True
    assert got and set(levelled.net.grade.levelled) == set(got) and levelled.net.grade.curved == set()
    with torch.no_grad():
        e_ = translate_buffers(levelled, r, buf, make_style(levelled, "0", r.device))
    assert torch.equal(e_[buf.labels.cpu() == 0], c_[buf.labels.cpu() == 0]) and not torch.equal(e_, a_)
    for bad, why in ((["model.grade=sharp"], r"model\.grade\b.*must be none, real or curve"),
                     (["model.grade=real"], r"model\.grade\b.*needs model.type: oneway"),
                     ([*ONEWAY, "model.grade_level=true"], r"model\.grade_level\b.*needs model.grade: real or curve")):
        with pytest.raises(UserError, match=why):
            tiny_cfg(tmp_path / "bad", real_frames, *bad)


def _grade_sets(ours, want):
    """Synthetic grade frames [(sRGB [H, W, 3], labels [H, W])] as the grade sees them: the
    "real" ones as a labelled real set (uint8), ours as x [N, 3, H, W] in [-1, 1] and labels."""
    real = Labelled([(f.numpy() * 255).round().astype("uint8") for f, _ in want],
                    [lb.numpy().astype("uint8") for _, lb in want])
    return real, torch.stack([f for f, _ in ours]).permute(0, 3, 1, 2) * 2 - 1, torch.stack([lb for _, lb in ours])


def test_class_grade_curve_gives_the_highlights_the_real_frames_height_and_whiteness():
    """model.grade: curve — ours' organ carries a highlight 30 L* above it that keeps the
    tissue's hue (a* and b* rise with L*), the real one's is 18 L* high and turns whiter. The
    line grade (``real``) cannot lower a highlight; the curve's tone curve brings the
    brightest 2 % of the organ to the real height and its chroma to the real whiteness, while
    each frame keeps its class's mean colour and the background stays. A state dict without a
    curve (saved before it existed) loads as the line grade."""
    import kornia

    from vidsim2real.train.appearance import real_grade
    from vidsim2real.translate.networks import GRADE_KNOTS, ClassGrade, coarse_samples

    ys, xs = torch.meshgrid(torch.arange(96.0), torch.arange(128.0), indexing="ij")

    def frames(real: bool, n: int = 20):
        out = []
        for i in range(n):
            lbl = torch.zeros(96, 128, dtype=torch.int64)
            lbl[6:90, 6:122] = 1
            cy, cx = 30 + 36 * (i % 2), 30 + 3.5 * i
            spot = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * 7.0 ** 2))
            L = 48 + 12 * ys / 96 + (18 if real else 30) * spot
            a = 20 - 10 * spot if real else 20 + 0.25 * (L - 48)
            b = 16 - 8 * spot if real else 16 + 0.15 * (L - 48)
            img = kornia.color.lab_to_rgb(torch.stack([L, a, b])[None])[0].permute(1, 2, 0).clamp(0, 1)
            img[lbl == 0] = 0.05
            out.append((img, lbl))
        return out

    ours, want = frames(False), frames(True)
    real, x, lbl = _grade_sets(ours, want)

    def top(frames_):     # the brightest 2 % of the organ's coarse band above its mean, and their a*
        s = torch.cat([coarse_samples(kornia.color.rgb_to_lab(f.permute(2, 0, 1)[None]), (lb == 1)[None])
                       for f, lb in frames_])
        hi = s[s[:, 0] >= s[:, 0].quantile(0.98)]
        return float(hi[:, 0].mean()), float(hi[:, 1].mean())

    def graded(g):
        y = g(x, lbl)
        return y, [((v.permute(1, 2, 0) + 1) / 2, lb) for v, lb in zip(y, lbl)]

    rows, _, curves, _ = real_grade(real, ours, curve=True)
    assert sorted(curves) == [1] and curves[1].shape == (6, GRADE_KNOTS)
    line, curve = ClassGrade(), ClassGrade()
    line.set(rows)
    curve.set(rows, curves)
    assert line.curved == set() and curve.curved == {1}
    (l_mine, a_mine), (l_real, a_real) = top(ours), top(want)
    assert l_mine > l_real + 4 and a_mine > a_real + 6, (l_mine, l_real, a_mine, a_real)
    l_line, _ = top(graded(line)[1])
    y, out = graded(curve)
    l_curve, a_curve = top(out)
    assert abs(l_line - l_mine) < 0.25 * (l_mine - l_real)                          # a line keeps the highlight
    assert abs(l_curve - l_real) < 0.25 * (l_mine - l_real), (l_curve, l_real)       # the curve lowers it
    assert abs(a_curve - a_real) < 0.35 * (a_mine - a_real), (a_curve, a_real)       # and whitens it
    assert torch.equal(y[lbl[:, None].expand_as(x) == 0], x[lbl[:, None].expand_as(x) == 0])
    for f, g, lb in zip(x, y, lbl):          # each frame keeps its class's mean colour
        m = lb == 1
        ab = kornia.color.rgb_to_lab((torch.stack([f, g]) + 1) / 2)[:, :, m].mean(2)
        assert float((ab[0] - ab[1]).norm()) < 1.0, ab
    old = {"table": curve.state_dict()["table"]}           # saved before the curve existed
    again = ClassGrade()
    again.load_state_dict(old)
    assert again.curved == set() and torch.equal(again(x, lbl), line(x, lbl))
    back = ClassGrade()
    back.load_state_dict(curve.state_dict())
    assert back.curved == {1} and torch.equal(back(x, lbl), y)


def test_class_grade_level_gives_each_class_the_real_frames_colour_from_frame_to_frame():
    """model.grade_level — ours' organ turns yellower as a frame sees it brighter (b* = 4 +
    0.3 L* over the frames' mean L*), the real one barely (b* = 20 + 0.1 L*), each frame's
    colour even across the organ on both sides. The line grade keeps each frame's mean colour;
    with the level rows each frame's mean b* comes onto the real line at its own mean L*,
    while its mean L*, how it varies across the organ, and the background stay. A state
    dict without level rows (saved before them) grades as the line."""
    import kornia

    from vidsim2real.train.appearance import real_grade
    from vidsim2real.translate.networks import LEVEL_COLUMNS, ClassGrade

    ys = torch.arange(96.0)[:, None].expand(96, 128)

    def frames(real: bool, n: int = 24):
        out = []
        for i in range(n):
            lbl = torch.zeros(96, 128, dtype=torch.int64)
            lbl[6:90, 6:122] = 1
            mean_l = 32 + 40 * i / (n - 1)                      # near and far views of the organ
            L = mean_l + 10 * (ys - 48) / 96
            b = (20 + 0.1 * mean_l if real else 4 + 0.3 * mean_l) + 0 * L
            img = kornia.color.lab_to_rgb(torch.stack([L, 12 + 0 * L, b])[None])[0].permute(1, 2, 0).clamp(0, 1)
            img[lbl == 0] = 0.05
            out.append((img, lbl))
        return out

    ours, want = frames(False), frames(True)
    real, x, lbl = _grade_sets(ours, want)
    rows, _, _, levels = real_grade(real, ours, level=True)
    assert sorted(levels) == [1] and len(levels[1]) == LEVEL_COLUMNS
    line, level = ClassGrade(), ClassGrade()
    line.set(rows)
    level.set(rows, levels=levels)
    assert line.levelled == {} and set(level.levelled) == {1}

    def means(y):        # per frame the organ's mean L*a*b*: [N, 3]
        lab = kornia.color.rgb_to_lab((y + 1) / 2)
        return torch.stack([lab[k][:, lbl[k] == 1].mean(1) for k in range(len(y))])

    mine, flat, got = means(x), means(line(x, lbl)), means(level(x, lbl))
    want_b = 20 + 0.1 * mine[:, 0]
    inside = (mine[:, 0] > mine[:, 0].quantile(0.05)) & (mine[:, 0] < mine[:, 0].quantile(0.95))
    assert float((mine[:, 2] - want_b)[inside].abs().max()) > 4                 # ours is off at both ends
    assert float((flat - mine).abs().max()) < 0.5                                # the line keeps the frame's mean
    assert float((got[:, 2] - want_b)[inside].abs().max()) < 1.0, (got[:, 2], want_b)
    assert float((got[:, :2] - mine[:, :2]).abs().max()) < 0.5                   # L* and a* stay
    y = level(x, lbl)
    assert torch.equal(y[lbl[:, None].expand_as(x) == 0], x[lbl[:, None].expand_as(x) == 0])
    across = [kornia.color.rgb_to_lab((v[None] + 1) / 2)[0, 0][lbl[0] == 1].std() for v in (x[3], y[3])]
    assert abs(float(across[0] - across[1])) < 0.3                              # the L* across it stays
    old = {k: v for k, v in level.state_dict().items() if k != "level"}          # saved before the level rows
    again = ClassGrade()
    again.load_state_dict(old)
    assert again.levelled == {} and torch.equal(again(x, lbl), line(x, lbl))
    back = ClassGrade()
    back.load_state_dict(level.state_dict())
    assert back.levelled == level.levelled and torch.equal(back(x, lbl), y)
