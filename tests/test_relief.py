"""The detail layer as a relief the scope lights (``texture.detail_relief``, ``TextureSet.add_relief``)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _smooth_layers(tset, seed: int = 0) -> None:
    """Every detail layer a smooth random pattern (noise of 1/8 the resolution, upsampled), so
    a central difference one texel wide is the pattern's gradient."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in tset.detail.values():
            lvl = t.levels[0]
            coarse = torch.randn(lvl.shape[0], lvl.shape[1], max(lvl.shape[2] // 8, 2), max(lvl.shape[3] // 8, 2),
                                 generator=gen)
            lvl.copy_(torch.nn.functional.interpolate(coarse, size=lvl.shape[2:], mode="bicubic", align_corners=True))


def _scene_set(lod: int = 0):
    from vidsim2real.render import Renderer
    from vidsim2real.scene import load_scene
    from vidsim2real.texture import TextureConfig, TextureSet
    scene = load_scene(ROOT / "scenes" / "liver_edge_breathing.yaml")
    tset = TextureSet.for_scene(scene, TextureConfig(channels=4, resolution=16, levels=2, detail=True,
                                                     detail_resolution=96, detail_texel_size=0.002, detail_lod=lod))
    _smooth_layers(tset)
    buf = Renderer(scene, (96, 96), backend="torch").render([3])
    counts = torch.bincount(buf.labels.flatten())
    counts[0] = 0
    return scene, tset, buf, int(counts.argmax())


def test_relief_slope_is_the_gradient_of_the_height_it_draws():
    """add_relief makes a class's layer a height of the asked std (metres, over its texels'
    grey) and scales its painted layer by ``paint``, other classes untouched; the slope it
    gives (relief_slope) is the height's gradient: along the rest-pose step to the next pixel it
    is the sampled height's change to that pixel (least-squares ratio near 1, correlation > 0.9);
    the normals tilt on that class only, more with a higher relief; the rows survive the set's
    state, and a set saved before relief existed loads with none."""
    from vidsim2real.texture import TextureSet, sample_lod
    scene, tset, buf, c = _scene_set()
    name = next(o.class_name for o in scene.objects if o.class_id == c)
    others = {n: t.levels[0].clone() for n, t in tset.detail.items()
              if next(o.class_id for o in scene.objects if o.name == n) != c}
    mine = [n for n in tset.detail if n not in others]
    before = {n: tset.detail[n].levels[0].clone() for n in mine}
    assert not tset.has_bumps()
    got = tset.add_relief([scene], [name], 0.002, blur=0.0, paint=0.5)
    assert set(got) == {name} and tset.has_bumps()
    grey = torch.cat([tset.detail[n].levels[0].detach().mean(1).flatten() for n in mine])
    assert abs(got[name] * float(grey.std()) - 0.002) < 1e-6          # the asked std, after the paint
    for n in mine:
        torch.testing.assert_close(tset.detail[n].levels[0], 0.5 * before[n])
    for n, lvl in others.items():
        assert torch.equal(tset.detail[n].levels[0], lvl)

    # the slope against the sampled height's change to the next pixel across, within the class
    obj = buf.object_ids.reshape(-1)
    args = (obj, buf.rest_positions.reshape(-1, 3), buf.rest_normals.reshape(-1, 3),
            buf.fragments.pix_to_face.reshape(-1), buf.fragments.bary.reshape(-1, 3), scene.face_offsets)
    layers = [tset.detail[o.name] for o in scene.objects]
    with torch.no_grad():
        height = got[name] * sample_lod(layers, torch.zeros(len(obj)), 0, args, None, "torch").mean(1)
    slope = tset.relief_slope(buf, scene).detach().view(*buf.object_ids.shape, 3)
    h = height.view(buf.object_ids.shape)
    cls = buf.labels == c
    both = cls[:, :, :-1] & cls[:, :, 1:]
    step = buf.rest_positions[:, :, 1:] - buf.rest_positions[:, :, :-1]
    change = (h[:, :, 1:] - h[:, :, :-1])[both]
    mid = 0.5 * (slope[:, :, 1:] + slope[:, :, :-1])
    predicted = (mid * step).sum(-1)[both]
    assert both.sum() > 200
    ratio = float((predicted * change).sum() / (predicted * predicted).sum())
    corr = float(torch.corrcoef(torch.stack([predicted, change]))[0, 1])
    assert 0.8 < ratio < 1.25 and corr > 0.9, (ratio, corr)
    assert torch.equal(slope[~cls], torch.zeros_like(slope[~cls]))

    tilted = tset.bump_normals(buf, scene).detach()
    assert torch.equal(tilted[~cls], buf.normals[~cls])
    tilt = float((tilted[cls] - buf.normals[cls]).norm(dim=-1).mean())
    assert tilt > 0.02
    tset.set_relief({c: (2 * got[name], 0.0)})
    assert float((tset.bump_normals(buf, scene).detach()[cls] - buf.normals[cls]).norm(dim=-1).mean()) > 1.5 * tilt

    state = tset.state_dict()
    assert TextureSet.relief_in(state) == tset.class_relief()
    again = TextureSet.from_state(tset.config, state, tset.anatomy)
    assert again.class_relief() == tset.class_relief()
    old = {k: v for k, v in state.items() if k != "detail_relief"}
    assert TextureSet.from_state(tset.config, old, tset.anatomy).class_relief() == {}
    tset.set_relief({c: (0.0, 0.0)})
    assert not tset.has_bumps() and tset.class_relief() == {}
    with pytest.raises(ValueError):
        tset.add_relief([scene], [name], 0.002, paint=0.0)
    flat = next(o.class_name for o in scene.objects if o.class_id != c and o.name in tset.detail)
    for t in tset.detail.values():
        if next(o.class_name for o in scene.objects if o.name in tset.detail and tset.detail[o.name] is t) == flat:
            t.levels[0].data.zero_()
    assert tset.add_relief([scene], [flat], 0.002) == {} and tset.class_relief() == {}   # a flat layer: none
    assert tset.add_relief([scene], ["no_such_class"], 0.002) == {} and tset.class_relief() == {}   # no layer: none


def test_relief_blur_softens_and_fades_it():
    """A relief sampled levels coarser (``detail_relief_blur``) is gentler than the same height
    at the layer's own level: the prefiltered pattern has smaller slopes."""
    scene, tset, buf, c = _scene_set(lod=3)
    name = next(o.class_name for o in scene.objects if o.class_id == c)
    per = tset.add_relief([scene], [name], 0.002, blur=0.0)[name]
    sharp = tset.relief_slope(buf, scene).detach().norm(dim=-1)
    tset.set_relief({c: (per, 3.0)})
    soft = tset.relief_slope(buf, scene).detach().norm(dim=-1)
    mine = (buf.labels == c).reshape(-1)
    assert float(soft[mine].mean()) < 0.7 * float(sharp[mine].mean())


def test_relief_from_the_config_relights_translations_and_travels(tmp_path, real_frames, cli):
    """texture.detail_relief on a 0-step run: the class's layer becomes a relief (its row in the
    checkpoint, its painted layer scaled, the run says so); translations relight it (the frame
    differs where the class is, and with the row removed it is the frame without); fit-textures
    on a new anatomy keeps the class's row; bad settings are one-line errors;
    benchmarks/with_relief.py adds one to a checkpoint without training and refuses a class
    its scenes lack (exit 2, nothing written)."""
    import subprocess
    import sys

    import yaml
    from conftest import mini_scene_dict, tiny_cfg

    from vidsim2real.errors import UserError
    from vidsim2real.io.checkpoint import load_checkpoint
    from vidsim2real.render import Renderer
    from vidsim2real.scene import load_scene
    from vidsim2real.train.loop import train
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    base = ("steps=0", "model.type=oneway", "model.recolour=true", "loss.view_warmup=0", "texture.detail=true",
            "texture.detail_resolution=48", "texture.detail_match=true")
    for bad, field in ((["texture.detail_relief=0.002"], "texture.detail_relief"),
                       (["texture.detail_relief=0.002", "texture.detail_relief_classes=[liver]", "steps=2"],
                        "texture.detail_relief"),
                       (["texture.detail_relief_paint=0"], "texture.detail_relief_paint")):
        with pytest.raises(UserError, match=field):
            tiny_cfg(tmp_path, real_frames, *base, *bad)
    cfg = tiny_cfg(tmp_path, real_frames, *base, "texture.detail_relief=0.01", "texture.detail_relief_classes=[liver]",
                   "texture.detail_relief_paint=0.5")
    model_path = train(cfg, progress=False).model
    p = load_checkpoint(model_path)
    scene = load_scene(ROOT / "scenes" / "liver_edge_breathing.yaml")
    liver = next(o.class_id for o in scene.objects if o.class_name == "liver")
    rows = {a: st["detail_relief"] for a, st in p["textures"].items()}
    assert all(r[liver, 0] > 0 for r in rows.values()), rows

    model = load_model(model_path)
    r = Renderer(scene, (64, 64), backend="torch")
    buf = r.render([3])
    style = make_style(model, "1", "cpu")
    relit = translate_buffers(model, r, buf, style)
    tset = model.textures[scene.anatomy]
    kept = tset.class_relief()
    tset.set_relief({liver: (0.0, 0.0)})
    flat = translate_buffers(model, r, buf, style)
    mine = buf.labels == liver
    diff = (relit - flat).abs().amax(-1)
    assert float(diff[mine].mean()) > 0.005 and float(diff[mine].mean()) > 3 * float(diff[~mine].mean())

    d = mini_scene_dict(tmp_path)
    d["anatomy"] = "mini"
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(d))
    rc, out, err = cli("fit-textures", model_path, tmp_path / "mini.yaml", "--steps", "1", "-o", tmp_path / "fit.pt",
                       "--real", real_frames, "--device", "cpu")
    assert rc == 0, err
    fitted = load_checkpoint(tmp_path / "fit.pt")["textures"]["mini"]["detail_relief"]
    torch.testing.assert_close(fitted[liver], torch.tensor(kept[liver]))

    script = [sys.executable, str(ROOT / "benchmarks" / "with_relief.py"), str(model_path)]
    ran = subprocess.run(script + [str(tmp_path / "no.pt"), "--classes", "no_such_class", "--scene",
                                   str(ROOT / "scenes" / "liver_edge_breathing.yaml")], capture_output=True, text=True)
    assert ran.returncode == 2 and "no_such_class" in ran.stderr and len(ran.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "no.pt").exists()
    ran = subprocess.run(script + [str(tmp_path / "yes.pt"), "--classes", "liver", "--relief", "0.003", "--scene",
                                   str(ROOT / "scenes" / "liver_edge_breathing.yaml")], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    made = load_checkpoint(tmp_path / "yes.pt")
    assert made["texture_config"]["detail_relief"] == 0.003
    assert load_model(tmp_path / "yes.pt").textures[scene.anatomy].class_relief()[liver][0] > 0
